"""An edge's catalog: the origin's index followed into manifests kept on the edge's disk.

Every ``[origin] poll`` seconds the edge reads the origin's index (store/origin_index.py).
A build it does not know yet: its manifest is fetched, its sha256 checked against the index,
parsed like any manifest (name and version must match), then written under
``<store>/.origin/builds/`` with one rename, and the store's generation marker is bumped so
the World is re-read at the next request, as after an import. A build the origin no longer
lists is dropped from the catalog unless something still points at it (``keep``). The
manifests stay on disk: an edge restarted while its origin is down still knows its builds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

import aiohttp

from netbootd.errors import BuildError
from netbootd.metrics import Counters
from netbootd.store.layout import bump_generation, fsync_dir
from netbootd.store.manifest import parse_manifest
from netbootd.store.origin_index import IndexEntry, parse_index
from netbootd.store.origin_layout import edge_manifest, edge_manifests

log = logging.getLogger("netbootd.origin")

MAX_INDEX = 64 << 20  # bytes; an index of many thousand builds is a few MiB
MAX_MANIFEST = 16 << 20


class CatalogSync:
    def __init__(self, store: Path, origin_url: str, counters: Counters, *,
                 session: Callable[[], aiohttp.ClientSession],
                 keep: Callable[[], Collection[str]] = frozenset) -> None:
        self.store = store
        self.url = origin_url
        self.counters = counters
        self._session = session
        self._keep = keep
        self.reachable: bool | None = None  # None: not tried yet

    async def run(self, poll: float) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(poll)

    async def sync_once(self) -> bool:
        """One look at the origin; True if the edge's catalog changed. Never raises for an
        origin that is down or talks nonsense: logged once per outage, counted each time."""
        try:
            entries = parse_index(await self._get(f"{self.url}/store/v1/builds", MAX_INDEX),
                                  f"index of {self.url}")
            changed = await self._follow(entries)
        except (aiohttp.ClientError, TimeoutError, OSError, BuildError) as e:
            self.counters.inc("origin_sync_failures")
            if self.reachable is not False:
                log.warning("origin %s: cannot read its builds (%s); serving the %d builds "
                            "known from the last look", self.url, e or type(e).__name__,
                            len(self.known()))
            self.reachable = False
            return False
        if self.reachable is not True:
            log.info("origin %s: reachable, %d builds", self.url, len(entries))
        self.reachable = True
        self.counters.inc("origin_syncs")
        return changed

    def known(self) -> set[str]:
        root = edge_manifests(self.store)
        return {f"{p.parent.parent.name}/{p.parent.name}"
                for p in root.glob("*/*/manifest.json")} if root.is_dir() else set()

    async def _follow(self, entries: list[IndexEntry]) -> bool:
        changed = False
        for e in entries:
            mf = edge_manifest(self.store, e.name, e.version)
            if mf.is_file():
                continue  # builds are immutable: a manifest once verified stays right
            text = await self._get(f"{self.url}/store/v1/builds/{e.name}/{e.version}/"
                                   "manifest.json", MAX_MANIFEST)
            got = hashlib.sha256(text.encode()).hexdigest()
            if got != e.manifest_sha256:
                self.counters.inc("origin_manifests_refused")
                log.error("origin %s: manifest of %s hashes to %s, its index says %s; "
                          "refused", self.url, e.ref, got, e.manifest_sha256)
                continue
            try:
                m = parse_manifest(text, f"{self.url} {e.ref} manifest.json")
            except BuildError as err:
                self.counters.inc("origin_manifests_refused")
                log.error("origin %s: %s; refused", self.url, err)
                continue
            if (m.name, m.version) != (e.name, e.version):
                self.counters.inc("origin_manifests_refused")
                log.error("origin %s: the manifest listed as %s says %s; refused", self.url,
                          e.ref, m.ref)
                continue
            _write(mf, text)
            self.counters.inc("origin_manifests")
            log.info("origin %s: learnt build %s (%d files, %d bytes)", self.url, e.ref,
                     len(m.files), e.size)
            changed = True
        listed = {e.ref for e in entries}
        keep = set(self._keep())
        for ref in sorted(self.known() - listed - keep):
            name, version = ref.split("/", 1)
            shutil.rmtree(edge_manifest(self.store, name, version).parent, ignore_errors=True)
            log.info("origin %s: no longer lists %s; dropped from this edge's catalog",
                     self.url, ref)
            changed = True
        if changed:
            bump_generation(self.store)
        return changed

    async def _get(self, url: str, limit: int) -> str:
        async with self._session().get(url) as resp:
            if resp.status != 200:
                raise BuildError(f"{url}: HTTP {resp.status}")
            body = await resp.content.read(limit + 1)
            if len(body) > limit:
                raise BuildError(f"{url}: more than {limit} bytes")
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BuildError(f"{url}: not UTF-8 text") from e


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".manifest.{uuid.uuid4().hex[:8]}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
