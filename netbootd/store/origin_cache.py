"""An edge's blob cache: fetch a blob from the origin by sha256, verify it, keep it bounded.

One fetch per blob at a time (single flight): every request that needs a blob being fetched
waits on the same download, up to ``[origin] wait`` seconds. The bytes stream into a staging
file and are hashed as they arrive; only a file whose size and sha256 both match is renamed
into ``<store>/.origin/blobs/`` (store/origin_layout.py), so a file there is complete and
verified and nothing else is ever served. A wrong byte or a short body is thrown away,
counted (``origin_blobs_refused``) and logged; the next request after ``RETRY_AFTER`` seconds
tries again. Before a blob is added, least recently used blobs are evicted to stay within
``cache_max`` (store/origin_lru.py), never one a pinned build needs or one being served.

Last use is kept in the blob file's atime (set explicitly on every serve, whatever the mount
options), so the order survives a restart; mtime stays the fetch time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO

import aiohttp

from netbootd.errors import FileUnavailable
from netbootd.metrics import Counters
from netbootd.store.layout import fsync_dir
from netbootd.store.origin_layout import edge_blob, edge_blob_dir, edge_staging
from netbootd.store.origin_lru import Cached, choose_evictions

log = logging.getLogger("netbootd.origin")

CHUNK = 1 << 20
# After a refused or failed fetch, requests for that blob fail at once for this long instead
# of each starting a download (a PXE client retries every few seconds; the origin needs a
# moment to be fixed or to come back).
RETRY_AFTER = 3.0


class BlobUnavailable(FileUnavailable):
    """The blob is not cached and cannot be fetched now (origin down, refused, too slow)."""


class BlobCache:
    def __init__(self, store: Path, origin_url: str, max_bytes: int, counters: Counters, *,
                 session: Callable[[], aiohttp.ClientSession],
                 pinned: Callable[[], Collection[str]] = frozenset,
                 wait: float = 120.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.url = origin_url
        self.max_bytes = max_bytes
        self.counters = counters
        self.wait = wait
        self.clock = clock
        self._session = session
        self._pinned = pinned
        self._flights: dict[str, asyncio.Task[Path]] = {}
        self._failed: dict[str, float] = {}  # sha256 -> when its last fetch failed
        self._held: dict[str, int] = {}
        self._incoming: dict[str, int] = {}  # downloads under way: room is kept for them
        self.blobs: dict[str, Cached] = {}

    # -- what is here -------------------------------------------------------------------------
    def scan(self) -> None:
        """Read the cache from disk (at start, also after a restart); partial downloads left
        by a process that is gone are removed (one server per store)."""
        staging = edge_staging(self.store)
        if staging.is_dir():
            for p in staging.iterdir():
                p.unlink(missing_ok=True)
        root = edge_blob_dir(self.store)
        if root.is_dir():
            for p in root.glob("*/*"):
                st = p.stat()
                self.blobs[p.name] = Cached(st.st_size, st.st_atime)

    @property
    def used(self) -> int:
        return sum(c.size for c in self.blobs.values())

    def present(self, sha256: str) -> bool:
        return sha256 in self.blobs and edge_blob(self.store, sha256).is_file()

    def known(self, sha256: str) -> bool:
        """In the cache as far as this process knows (no system call: the DHCP path asks)."""
        return sha256 in self.blobs

    def touch(self, sha256: str) -> None:
        """Record a use (LRU order), in memory and in the file's atime."""
        c = self.blobs.get(sha256)
        if c is None:
            return
        now = self.clock()
        self.blobs[sha256] = Cached(c.size, now)
        with contextlib.suppress(OSError):
            p = edge_blob(self.store, sha256)
            os.utime(p, ns=(int(now * 1e9), p.stat().st_mtime_ns))

    @contextlib.contextmanager
    def hold(self, sha256: str) -> Iterator[None]:
        """While held (a transfer reads it) the blob is not evicted."""
        self._held[sha256] = self._held.get(sha256, 0) + 1
        try:
            yield
        finally:
            self.release(sha256)

    def acquire(self, sha256: str) -> None:
        self._held[sha256] = self._held.get(sha256, 0) + 1

    def release(self, sha256: str) -> None:
        n = self._held.get(sha256, 0) - 1
        if n > 0:
            self._held[sha256] = n
        else:
            self._held.pop(sha256, None)

    async def close(self) -> None:
        """Stop the downloads under way (the server stops); their staging files go."""
        flights = list(self._flights.values())
        for t in flights:
            t.cancel()
        for t in flights:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- getting one ----------------------------------------------------------------------------
    def flight(self, sha256: str, size: int) -> asyncio.Task[Path]:
        """The fetch of ``sha256`` in flight, started if none is (no waiting here)."""
        task = self._flights.get(sha256)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(sha256, size))
            self._flights[sha256] = task
            task.add_done_callback(lambda t: self._flights.pop(sha256, None))
            # A prefetch nobody awaits must not log "exception never retrieved".
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def ensure(self, sha256: str, size: int) -> Path:
        """The path of the verified blob, fetched first if needed (waits ``wait`` at most)."""
        path = edge_blob(self.store, sha256)
        if self.present(sha256):
            return path
        failed = self._failed.get(sha256)
        if failed is not None and self.clock() - failed < RETRY_AFTER \
                and sha256 not in self._flights:
            raise BlobUnavailable(f"blob {sha256[:12]}: the last fetch failed "
                                  f"{self.clock() - failed:.1f}s ago; retrying shortly")
        task = self.flight(sha256, size)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.wait)
        except TimeoutError:
            self.counters.inc("origin_wait_timeouts")
            raise BlobUnavailable(f"blob {sha256[:12]}: still fetching after {self.wait:.0f}s"
                                  ) from None

    async def _fetch(self, sha256: str, size: int) -> Path:
        try:
            return await self._download(sha256, size)
        except BlobUnavailable:
            self._failed[sha256] = self.clock()
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self._failed[sha256] = self.clock()
            self.counters.inc("origin_fetch_errors")
            log.warning("origin: fetching blob %s from %s failed: %s", sha256, self.url,
                        e or type(e).__name__)
            raise BlobUnavailable(f"blob {sha256[:12]}: origin {self.url} unreachable "
                                  f"({e or type(e).__name__})") from e

    async def _download(self, sha256: str, size: int) -> Path:
        self._make_room(size + sum(self._incoming.values()), sha256)
        self._incoming[sha256] = size
        try:
            return await self._stream(sha256, size)
        finally:
            self._incoming.pop(sha256, None)

    async def _stream(self, sha256: str, size: int) -> Path:
        staging = edge_staging(self.store)
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{sha256}.{uuid.uuid4().hex[:8]}"
        url = f"{self.url}/store/v1/blobs/sha256/{sha256}"
        h = hashlib.sha256()
        done = 0
        try:
            async with self._session().get(url) as resp:
                if resp.status != 200:
                    self._refuse(sha256, "http", f"origin answered HTTP {resp.status}")
                with tmp.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        done += len(chunk)
                        if done > size:
                            self._refuse(sha256, "size", f"more than the {size} bytes "
                                         "the manifest says")
                        await asyncio.to_thread(_write_hash, out, h, chunk)
                    if done != size:
                        self._refuse(sha256, "size", f"{done} bytes, the manifest says {size}")
                    if h.hexdigest() != sha256:
                        self._refuse(sha256, "sha256", f"the bytes hash to {h.hexdigest()}")
                    await asyncio.to_thread(_sync, out)
            self.counters.inc("origin_fetched_bytes", done)
            final = edge_blob(self.store, sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)  # only now is it servable: complete and verified
            fsync_dir(final.parent)
        finally:
            tmp.unlink(missing_ok=True)
        self._failed.pop(sha256, None)
        self.blobs[sha256] = Cached(size, self.clock())
        self.counters.inc("origin_blobs_verified")
        log.info("origin: blob %s verified (%d bytes)", sha256, size)
        return final

    def _refuse(self, sha256: str, why: str, detail: str) -> None:
        self.counters.inc("origin_blobs_refused", reason=why)
        log.error("origin: blob %s from %s refused: %s; discarded, not served", sha256,
                  self.url, detail)
        raise BlobUnavailable(f"blob {sha256[:12]} refused: {detail}")

    # -- staying within the bound -----------------------------------------------------------
    def _make_room(self, incoming: int, for_sha: str) -> None:
        pinned = set(self._pinned())
        choice = choose_evictions(self.blobs, self.max_bytes, incoming,
                                  pinned=pinned, held=set(self._held) | set(self._flights))
        for sha in choice.evict:
            edge_blob(self.store, sha).unlink(missing_ok=True)
            size = self.blobs.pop(sha).size
            self.counters.inc("origin_evicted_blobs")
            self.counters.inc("origin_evicted_bytes", size)
            log.info("origin: evicted blob %s (%d bytes, least recently used)", sha, size)
        if choice.over_by:
            self.counters.inc("origin_cache_over_bound")
            log.warning("origin: cache is %d bytes over cache_max %d: what is left is pinned "
                        "by channels/overrides/config or being served (blob %s)",
                        choice.over_by, self.max_bytes, for_sha[:12])


def _write_hash(out: IO[bytes], h: hashlib._Hash, chunk: bytes) -> None:
    out.write(chunk)
    h.update(chunk)


def _sync(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())
