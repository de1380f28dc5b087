"""A channel flip while 20 nodes download the old build: no download breaks, the old build's
files stay served, and new plans name the new build at once (issue 3 acceptance)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp

from helpers import loopback_config
from netbootd.admin import Admin
from netbootd.config import parse_config
from netbootd.service import Service
from pgserver import Backend

CLIENTS = 20
SIZE = 8 << 20


async def slow_download(session: aiohttp.ClientSession, url: str,
                        started: asyncio.Event, counter: list[int]) -> str:
    h = hashlib.sha256()
    async with session.get(url) as r:
        assert r.status == 200
        first = True
        async for chunk in r.content.iter_chunked(64 << 10):
            h.update(chunk)
            if first:
                counter[0] += 1
                if counter[0] == CLIENTS:
                    started.set()
                first = False
            await asyncio.sleep(0.01)  # a slow node: the download spans the flip
    return h.hexdigest()


async def test_a_flip_during_twenty_downloads_breaks_none(tmp_path: Path,
                                                        backend: Backend) -> None:
    data = backend.configure(loopback_config(tmp_path, nodes={}))
    data["groups"] = {"default": {"default": True, "channel": "kvm-stable"}}
    config = parse_config(data, "flip-test")
    payload = {v: os.urandom(SIZE) for v in ("1", "2")}
    with Admin(config) as admin:
        for v, blob in payload.items():
            src = tmp_path / f"src{v}"
            src.mkdir()
            (src / "root.squashfs").write_bytes(blob)
            (src / "vmlinuz").write_bytes(f"kernel {v}".encode())
            admin.import_build("linux", name="kvm", version=v,
                               paths=[src / "vmlinuz"], rootfs=src / "root.squashfs",
                               cmdline="root=live:${rootfs_url}")
        admin.channel_set("kvm-stable", "kvm/1", who="test")
    service = Service(config)
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.http_port}"
        url = f"{base}/builds/kvm/1/root.squashfs"
        mac = "52:54:00:12:34:56"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/ipxe/node.ipxe", params={"mac": mac}) as r:
                script = await r.text()
            assert f"root=live:{url}" in script  # the rootfs URL names the exact build
            started = asyncio.Event()
            counter = [0]
            tasks = [asyncio.create_task(slow_download(s, url, started, counter))
                     for _ in range(CLIENTS)]
            await asyncio.wait_for(started.wait(), 60)
            with Admin(config) as admin:  # as the CLI would: another process, another handle
                admin.channel_set("kvm-stable", "kvm/2", who="test", why="flip mid-download")
            async with s.get(f"{base}/ipxe/node.ipxe", params={"mac": mac}) as r:
                after = await r.text()
            assert "/builds/kvm/2/root.squashfs" in after and "/builds/kvm/1/" not in after
            assert not any(t.done() for t in tasks), "downloads ended before the flip"
            digests = await asyncio.wait_for(asyncio.gather(*tasks), 300)
            assert digests == [hashlib.sha256(payload["1"]).hexdigest()] * CLIENTS
            async with s.get(url) as r:  # the old build is still served after the flip
                assert r.status == 200
                assert hashlib.sha256(await r.read()).hexdigest() == \
                    hashlib.sha256(payload["1"]).hexdigest()
    finally:
        await service.stop()
