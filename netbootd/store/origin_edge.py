"""The edge: a netbootd that serves builds pulled from an origin (``[origin] url``).

Ties the catalog sync (store/origin_sync.py) and the blob cache (store/origin_cache.py) to
the running server:

- HTTP and TFTP requests for a build file under ``<store>/.origin/blobs/`` are served once
  the blob is present (verified); a missing one is fetched first, the request waiting on the
  one fetch in flight, or failing cleanly (HTTP 503, TFTP ERROR) when the origin cannot
  deliver it (``FileUnavailable``, error_map.py). The blob is held while it is served.
- Prefetch: the build of each DHCP answer's plan, and every build a channel, an override,
  a reimage order or the config points at, whenever the World changes (a channel moved, a
  manifest arrived), are fetched in the background, one build at a time.
- Pins: the blobs of those same builds are never evicted (store/origin_lru.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from netbootd.answers import World
from netbootd.config import Config
from netbootd.core.intent import Intent
from netbootd.core.model import Build, BuildCatalog
from netbootd.core.plan import BootPlan
from netbootd.errors import NotFound
from netbootd.metrics import Counters
from netbootd.store.origin_cache import BlobCache, BlobUnavailable
from netbootd.store.origin_layout import edge_blob_dir
from netbootd.store.origin_sync import CatalogSync
from netbootd.tftp.session import TftpSource
from netbootd.tftp.sources import FileSource

log = logging.getLogger("netbootd.origin")

# How often the World is looked at for moved channels and new manifests (prefetch).
WATCH_S = 1.0


def pinned_refs(config: Config, intent: Intent) -> set[str]:
    """Builds something points at now: a channel, an override, a reimage order, the
    installer, or a group's or node's ``build``/``channel`` in the config. Pure."""
    refs = set(intent.channels.values())
    refs |= {o.build for o in intent.overrides.values() if o.build}
    refs |= {o.image for o in intent.reimage.values()}
    settings = [g.settings for g in config.groups] + [n.settings for n in config.nodes]
    refs |= {s.build for s in settings if s.build}
    for name in [intent.installer, *(s.channel for s in settings),
                 *(o.channel for o in intent.overrides.values())]:
        if name:
            refs.add(intent.channels.get(name, name))  # a channel's build, or a ref itself
    return {r for r in refs if "/" in r}


class HeldSource:
    """A TFTP source whose blob stays held (not evicted) until the transfer closes it."""

    def __init__(self, inner: FileSource, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release
        self.size = inner.size

    def read(self, offset: int, length: int) -> bytes:
        return self._inner.read(offset, length)

    def close(self) -> None:
        self._inner.close()
        if self._release is not None:
            self._release()
            self._release = None


class Edge:
    def __init__(self, config: Config, store: Path, world: Callable[[], World],
                 counters: Counters) -> None:
        url = config.origin.url
        assert url is not None
        self.config = config
        self.store = store
        self.world = world
        self.counters = counters
        self._session: aiohttp.ClientSession | None = None
        self.cache = BlobCache(store, url, config.origin.cache_max, counters,
                               session=self.session, pinned=self.pinned_blobs,
                               wait=config.origin.wait)
        self.sync = CatalogSync(store, url, counters, session=self.session,
                                keep=lambda: pinned_refs(self.config, self.world().intent))
        self._blob_dir = edge_blob_dir(store)
        self._sizes: weakref.WeakKeyDictionary[BuildCatalog, dict[str, int]] = \
            weakref.WeakKeyDictionary()
        self._prefetching: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_generation: int | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout: a large blob may take minutes; a stalled origin is caught by
            # the read timeout, an unreachable one by the connect timeout.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=30),
                raise_for_status=False)
        return self._session

    async def start(self) -> None:
        self.cache.scan()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.sync.run(self.config.origin.poll)),
                       loop.create_task(self._watch())]
        log.info("edge of origin %s: cache %d of %d bytes in %d blobs", self.config.origin.url,
                 self.cache.used, self.cache.max_bytes, len(self.cache.blobs))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._prefetching.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.cache.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def gauges(self) -> dict[str, tuple[str, float]]:
        """Levels for /metrics (service.py): the cache's fill and whether the origin answers."""
        return {
            "origin_cache_bytes": ("bytes of verified blobs in the edge's cache",
                                   self.cache.used),
            "origin_cache_max_bytes": ("the cache's bound, [origin] cache_max",
                                       self.cache.max_bytes),
            "origin_up": ("1 if the origin's index was read at the last look, else 0",
                          1 if self.sync.reachable else 0),
        }

    def reconfigure(self, config: Config) -> None:
        """A reload: the bound and the wait apply at once; a new url needs a restart."""
        self.config = config
        self.cache.max_bytes = config.origin.cache_max
        self.cache.wait = config.origin.wait

    # -- which blobs ---------------------------------------------------------------------------
    def blob_of(self, path: Path) -> str | None:
        """The sha256 if ``path`` is a blob of this edge's cache (a pulled build's file)."""
        return path.name if path.parent.parent == self._blob_dir else None

    def _size(self, sha256: str) -> int:
        catalog = self.world().catalog
        sizes = self._sizes.get(catalog)
        if sizes is None:
            sizes = {i.sha256: i.size for b in catalog.all() for i in b.manifest.files.values()}
            self._sizes[catalog] = sizes
        try:
            return sizes[sha256]
        except KeyError:
            raise NotFound(f"blob {sha256[:12]} is in no build of the catalog") from None

    def pinned_blobs(self) -> set[str]:
        w = self.world()
        out: set[str] = set()
        for ref in pinned_refs(w.config, w.intent):
            if ref in w.catalog:
                out |= {i.sha256 for i in w.catalog.get(ref).manifest.files.values()}
        return out

    # -- serving -------------------------------------------------------------------------------
    async def ready(self, path: Path) -> str | None:
        """Make ``path`` servable if it is a blob of this edge (fetching it first); returns
        its sha256, acquired (the caller releases it), or None if it is not the edge's."""
        sha = self.blob_of(path)
        if sha is None:
            return None
        if not self.cache.present(sha):
            self.counters.inc("origin_waits")
            await self.cache.ensure(sha, self._size(sha))
        self.cache.acquire(sha)
        self.cache.touch(sha)
        return sha

    def tftp_source(self, path: Path) -> TftpSource | Awaitable[TftpSource] | None:
        """The TFTP source of a pulled build's file (awaitable while it is being fetched);
        None if ``path`` is not a blob of this edge."""
        sha = self.blob_of(path)
        if sha is None:
            return None
        if self.cache.present(sha):
            self.cache.acquire(sha)
            self.cache.touch(sha)
            return self._held(path, sha)
        self._size(sha)  # NotFound at once for a blob no build names
        return self._tftp_later(path)

    async def _tftp_later(self, path: Path) -> TftpSource:
        sha = await self.ready(path)
        assert sha is not None
        return self._held(path, sha)

    def _held(self, path: Path, sha: str) -> TftpSource:
        try:
            return HeldSource(FileSource(path), lambda: self.cache.release(sha))
        except BaseException:
            self.cache.release(sha)
            raise

    # -- prefetch ------------------------------------------------------------------------------
    def on_plan(self, plan: BootPlan) -> None:
        """A DHCP answer named this plan: fetch its build's files if any are missing."""
        if plan.build is not None:
            self.prefetch(plan.build)

    def prefetch(self, build: Build) -> None:
        if build.ref in self._prefetching:
            return
        # In memory only: this runs for every DHCP answer.
        missing = [(i.sha256, i.size) for f, i in sorted(build.manifest.files.items())
                   if self.blob_of(build.paths[f]) is not None and not self.cache.known(i.sha256)]
        if not missing:
            return
        task = asyncio.get_running_loop().create_task(self._prefetch(build.ref, missing))
        self._prefetching[build.ref] = task
        task.add_done_callback(lambda t: self._prefetching.pop(build.ref, None))

    async def _prefetch(self, ref: str, missing: list[tuple[str, int]]) -> None:
        log.info("origin: prefetching %s (%d files)", ref, len(missing))
        for sha, size in missing:
            try:
                await self.cache.ensure(sha, size)
            except BlobUnavailable as e:
                log.info("origin: prefetch of %s stopped: %s", ref, e)
                return
        self.counters.inc("origin_prefetched_builds")

    async def _watch(self) -> None:
        """Prefetch what is pinned whenever the World changes (channel moved, new build)."""
        while True:
            try:
                w = self.world()
                if w.generation != self._seen_generation:
                    self._seen_generation = w.generation
                    for ref in sorted(pinned_refs(w.config, w.intent)):
                        if ref in w.catalog:
                            self.prefetch(w.catalog.get(ref))
            except Exception:
                log.exception("origin: prefetch watch failed")
            await asyncio.sleep(WATCH_S)
