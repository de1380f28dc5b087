"""Client paths that try to leave a root, over TFTP and HTTP (docs/security.md, "Paths").

A secret file lies next to the served roots; symlinks inside a loader folder and inside a build
point at it. Every attempt must be refused with the RFC 1350 error (1 file not found, 2 access
violation; 4 when the NUL ended the name and the rest became the mode) or the HTTP status in the
table, and the secret's bytes must never come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from helpers import write_build
from hostile import (
    PAYLOAD,
    Served,
    TftpFailure,
    running_service,
    served_config,
    sha256,
    tftp_fetch,
    tftp_rrq,
)
from netbootd.service import Service

SECRET = b"root:secret-that-must-not-leave\n"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Service, Served]]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    served = served_config(tmp_path)
    files = tmp_path / "files"
    (files / "escape").symlink_to(outside / "secret")  # a file symlink out of the root
    (files / "outdir").symlink_to(outside)  # a directory symlink out of the root
    (files / "inside").symlink_to(files / "payload.bin")  # a symlink that stays inside: fine
    # A build whose manifest is honest about sizes and hashes but whose kernel is a symlink
    # out of its directory: the store refuses the whole build.
    build = write_build(tmp_path / "store", "demo", "3.0", {"vmlinuz": SECRET},
                        kind="linux", kernel="vmlinuz", initrds=[])
    (build / "vmlinuz").unlink()
    (build / "vmlinuz").symlink_to(outside / "secret")
    async with running_service(served) as service:
        yield service, served


# name -> TFTP error code
TFTP_CASES: dict[str, int] = {
    "files/../files/payload.bin": 2,
    "../etc/passwd": 2,
    "files/../../outside/secret": 2,
    "files/./payload.bin": 2,
    "//etc/passwd": 2,
    "/etc/passwd": 1,  # one leading "/" means the TFTP root; there is no "etc" prefix
    "files\\..\\..\\outside\\secret": 2,
    "files/pay\x01load.bin": 2,
    "files/payload.bin\x7f": 2,
    "files/escape": 2,
    "files/outdir/secret": 2,
    "files/" + "a" * 300: 2,
    "files/%2e%2e/%2e%2e/outside/secret": 1,  # TFTP does not percent-decode: a literal name
    "builds/demo/3.0/vmlinuz": 1,  # the build with a symlink out is not in the catalog
    "builds/demo/1.0/../../../../outside/secret": 2,
    "builds/demo/1.0/manifest.json": 1,  # only files the manifest lists are served
}


@pytest.mark.parametrize("name", sorted(TFTP_CASES))
async def test_tftp_path_refused(live: tuple[Service, Served], name: str) -> None:
    service, served = live
    reason = {1: "not-found", 2: "access"}[TFTP_CASES[name]]
    before = service.counters.get("tftp_refused", reason=reason)
    with pytest.raises(TftpFailure) as failure:
        await tftp_fetch(served.tftp_port, tftp_rrq(name))
    assert failure.value.code == TFTP_CASES[name], failure.value
    assert service.counters.get("tftp_refused", reason=reason) == before + 1


async def test_tftp_nul_ends_the_name(live: tuple[Service, Served]) -> None:
    """A NUL inside a name ends it (RFC 1350); what follows is read as the mode: error 4."""
    _, served = live
    with pytest.raises(TftpFailure) as failure:
        await tftp_fetch(served.tftp_port, b"\x00\x01files/escape\x00../outside/secret\x00")
    assert failure.value.code == 4


async def test_tftp_symlink_inside_the_root_is_served(live: tuple[Service, Served]) -> None:
    _, served = live
    data, _ = await tftp_fetch(served.tftp_port, tftp_rrq("files/inside"))
    assert sha256(data) == sha256(served.payload)
    data, _ = await tftp_fetch(served.tftp_port, tftp_rrq("/" + PAYLOAD))
    assert sha256(data) == sha256(served.payload)


# raw request path -> HTTP status
HTTP_CASES: dict[str, int] = {
    "/loaders/files/escape": 403,
    "/loaders/files/outdir/secret": 403,
    "/loaders/files/%2e%2e/outside/secret": 403,
    "/loaders/files/%2E%2E%2F%2E%2E%2Foutside%2Fsecret": 403,
    "/loaders/files/..%2f..%2foutside/secret": 403,
    "/loaders/files/%2e%2e%5c%2e%2e%5coutside%5csecret": 403,
    "/loaders/files/payload.bin%00.txt": 403,
    "/loaders/files/pay%0aload.bin": 404,  # the route's pattern does not match a newline
    "/loaders//etc/passwd": 404,  # a leading "/" means the loader root: no "etc" prefix
    "/loaders/files/" + "a" * 1000: 403,
    "/loaders/%2fetc/passwd": 404,
    "/loaders/etc/passwd": 404,
    "/builds/demo/3.0/vmlinuz": 404,
    "/builds/demo/1.0/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fsecret": 404,
    "/builds/demo/1.0/manifest.json": 404,
    "/builds/demo/%2e%2e/demo/1.0/vmlinuz": 404,
}


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with the path bytes exactly as given (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1]), response


@pytest.mark.parametrize("path", sorted(HTTP_CASES))
async def test_http_path_refused(live: tuple[Service, Served], path: str) -> None:
    service, _ = live
    assert service.http_port is not None
    status, response = await raw_get(service.http_port, path)
    assert status == HTTP_CASES[path], response[:300]
    assert SECRET not in response


async def test_http_dot_dot_in_the_raw_path(live: tuple[Service, Served]) -> None:
    """Literal ``..`` segments: aiohttp resolves them before routing, never past the root."""
    service, _ = live
    assert service.http_port is not None
    for path in ("/loaders/files/../../outside/secret", "/../../outside/secret",
                 "/loaders/files/../../../../../../etc/passwd"):
        status, response = await raw_get(service.http_port, path)
        assert status in (403, 404), (path, response[:300])
        assert SECRET not in response and b"root:x:" not in response


async def test_http_serves_what_is_inside(live: tuple[Service, Served]) -> None:
    service, served = live
    async with aiohttp.ClientSession() as http:
        for path in ("/loaders/files/payload.bin", "/loaders/files/inside"):
            async with http.get(f"http://127.0.0.1:{service.http_port}{path}") as r:
                assert r.status == 200 and sha256(await r.read()) == sha256(served.payload)
