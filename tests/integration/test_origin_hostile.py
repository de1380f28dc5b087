"""An edge against an origin that lies: a real HTTP server on loopback answering what a
broken or hostile origin would (a manifest that does not hash to its index entry, a blob with
a wrong byte, too many bytes, too few, an error status, an index that is not one). The edge's
sync and cache run for real against it; nothing they refuse reaches the catalog or the cache,
and each refusal is counted."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from helpers import free_port
from netbootd.metrics import Counters
from netbootd.store.builds import load_store
from netbootd.store.origin_cache import BlobCache, BlobUnavailable
from netbootd.store.origin_layout import edge_blob_dir, edge_staging
from netbootd.store.origin_sync import CatalogSync

GOOD = b"kernel bytes " * 1000


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def manifest(name: str, data: bytes) -> bytes:
    return json.dumps({"format": 1, "name": name, "version": "1", "kind": "linux",
                       "kernel": "vmlinuz",
                       "files": {"vmlinuz": {"size": len(data), "sha256": sha(data)}}}).encode()


class Liar:
    """What the lying origin answers, changed by each test."""

    def __init__(self) -> None:
        self.index: bytes = b""
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, tuple[int, bytes]] = {}


@pytest.fixture
async def liar() -> AsyncIterator[tuple[Liar, str]]:
    state = Liar()

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=state.index)

    async def mf(request: web.Request) -> web.Response:
        body = state.manifests.get(request.match_info["name"])
        return web.Response(body=body) if body is not None else web.Response(status=404)

    async def blob(request: web.Request) -> web.Response:
        status, body = state.blobs.get(request.match_info["hash"], (404, b""))
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_get("/store/v1/builds", index)
    app.router.add_get("/store/v1/builds/{name}/1/manifest.json", mf)
    app.router.add_get("/store/v1/blobs/sha256/{hash}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(socket.SOCK_STREAM)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_lying_manifests_and_indexes_are_refused(liar: tuple[Liar, str],
                                                       tmp_path: Path) -> None:
    state, url = liar
    good, misnamed, broken = manifest("good", GOOD), manifest("other", GOOD), b"{not json"
    state.manifests = {"good": good, "lies": good + b" ", "misnamed": misnamed,
                       "broken": broken}
    state.index = json.dumps({"format": 1, "builds": [
        {"name": "good", "version": "1", "manifest_sha256": sha(good), "size": len(GOOD)},
        {"name": "lies", "version": "1", "manifest_sha256": sha(good), "size": len(GOOD)},
        {"name": "misnamed", "version": "1", "manifest_sha256": sha(misnamed), "size": 1},
        {"name": "broken", "version": "1", "manifest_sha256": sha(broken), "size": 1},
    ]}).encode()
    counters = Counters()
    async with aiohttp.ClientSession() as s:
        sync = CatalogSync(tmp_path, url, counters, session=lambda: s)
        assert await sync.sync_once()
        assert sync.known() == {"good/1"}
        assert counters.get("origin_manifests_refused") == 3
        catalog, problems = load_store(tmp_path)
        assert catalog.refs() == ["good/1"] and problems == []
        for bad in (b"[]", b"\xff\xfe", b'{"format": 1, "builds": [{"name": "../x"}]}'):
            state.index = bad
            assert not await sync.sync_once()
            assert sync.reachable is False
        assert sync.known() == {"good/1"}  # a broken index drops nothing
        assert counters.get("origin_sync_failures") == 3


@pytest.mark.parametrize("status, body, reason", [
    (200, GOOD[:-1] + b"X", "sha256"),
    (200, GOOD + b"more", "size"),
    (200, GOOD[:-10], "size"),
    (500, b"", "http"),
])
async def test_a_lying_blob_is_refused_and_never_cached(liar: tuple[Liar, str], tmp_path: Path,
                                                        status: int, body: bytes,
                                                        reason: str) -> None:
    state, url = liar
    state.blobs = {sha(GOOD): (status, body)}
    counters = Counters()
    async with aiohttp.ClientSession() as s:
        cache = BlobCache(tmp_path, url, 1 << 30, counters, session=lambda: s, wait=30)
        cache.scan()
        with pytest.raises(BlobUnavailable):
            await cache.ensure(sha(GOOD), len(GOOD))
        assert counters.get("origin_blobs_refused", reason=reason) == 1
        assert not cache.present(sha(GOOD)) and cache.used == 0
        assert not list(edge_blob_dir(tmp_path).glob("*/*"))
        assert not list(edge_staging(tmp_path).iterdir())
        # Right away again: refused without a second download (the origin gets a moment).
        with pytest.raises(BlobUnavailable, match="last fetch failed"):
            await cache.ensure(sha(GOOD), len(GOOD))
        assert counters.get("origin_blobs_refused") == 1
        # Once the origin answers right and the hold-off passed, it is fetched and kept.
        state.blobs = {sha(GOOD): (200, GOOD)}
        cache.clock = lambda: 1e12  # the hold-off measured on the cache's own clock
        path = await cache.ensure(sha(GOOD), len(GOOD))
        assert path.read_bytes() == GOOD and counters.get("origin_blobs_verified") == 1
