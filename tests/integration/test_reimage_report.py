"""The installer's report over HTTP (issue 3, item 4): failed keeps the node in reimage with
the reason; done switches it to local for good; reports for another node or a closed order
are refused. The whole drill with real firmware is tests/e2e/test_reimage_drill.py."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import fetch, loopback_config, make_store, write_build
from netbootd.admin import Admin
from netbootd.config import Config, parse_config
from netbootd.service import Service
from pgserver import Backend

LAB7 = "52:54:00:00:00:05"  # BASE_CONFIG's lab1 node, mode local in the config
KEY = LAB7.replace(":", "-")


@pytest.fixture
async def server(tmp_path: Path, backend: Backend) -> AsyncIterator[tuple[Service, Config]]:
    store = make_store(tmp_path / "store")
    raw = bytes(range(256)) * 64
    write_build(store, "lab-disk", "1", {"disk.img": raw}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": len(raw),
                      "raw_sha256": hashlib.sha256(raw).hexdigest()})
    data = backend.configure(
        loopback_config(tmp_path, reimage={"installer": "demo/2.0", "target": "/dev/vdb"}))
    config = parse_config(data, "reimage-test")
    service = Service(config)
    await service.start()
    try:
        yield service, config
    finally:
        await service.stop()


async def test_failed_stays_in_reimage_done_goes_local(server: tuple[Service, Config]) -> None:
    service, config = server
    _, script = await fetch(service, f"/ipxe/node.ipxe?mac={KEY}")
    assert "mode local" in script and "sanboot" in script  # the config says local
    with Admin(config) as admin:
        order = admin.reimage("lab1", "lab-disk/1", who="test")
    _, script = await fetch(service, f"/ipxe/node.ipxe?mac={KEY}")
    assert "mode reimage" in script and "/builds/demo/2.0/vmlinuz" in script
    # The report URL carries lab1's token for this order (docs/security.md, item 6).
    found = re.search(rf"netbootd.report=http://127.0.0.1:{service.http_port}"
                      rf"(/reimage/{KEY}/{order['id']}/[\w.-]+/report)", script)
    assert found is not None, script
    report = found[1]
    for arg in ("netbootd.disk_url=http://127.0.0.1", "/builds/lab-disk/1/disk.img",
                "netbootd.disk_compression=none", "netbootd.disk_size=16384",
                f"netbootd.disk_sha256={hashlib.sha256(bytes(range(256)) * 64).hexdigest()}",
                "netbootd.target=/dev/vdb"):
        assert arg in script, arg
    assert "ds=nocloud" not in script  # the installer has no first-boot config

    status, _ = await fetch(service, report.replace(KEY, "52-54-00-00-00-02"),
                            {"status": "done"})
    assert status == 403  # lab1's token does not open db1's report URL
    db1 = service.responder.urls.at(service.clock()).reimage_report("52-54-00-00-00-02",
                                                                    order["id"])
    status, _ = await fetch(service, db1.removeprefix(config.http_base), {"status": "done"})
    assert status == 404  # db1's MAC, even with its own token, cannot close lab1's order
    status, _ = await fetch(service, f"/reimage/{KEY}/{order['id']}/report", {"status": "done"})
    assert status == 403  # unsigned
    status, _ = await fetch(service, report, {"status": "failed",
                                              "reason": "sha256 mismatch: got abc"})
    assert status == 200
    _, script = await fetch(service, f"/ipxe/node.ipxe?mac={KEY}")
    assert "mode reimage" in script  # still in reimage: the next boot retries
    with Admin(config) as admin:
        node = admin.node("lab1")
    assert node["reimage"]["state"] == "failed"
    assert node["reimage"]["reason"] == "sha256 mismatch: got abc"
    assert [e["kind"] for e in node["timeline"]][-2:] == ["reimage-failed", "ipxe-script"]

    status, _ = await fetch(service, report, {"status": "done", "sha256": "f" * 64,
                                              "bytes": "16384"})
    assert status == 200
    _, script = await fetch(service, f"/ipxe/node.ipxe?mac={KEY}")
    assert "mode local" in script and "sanboot" in script
    status, body = await fetch(service, report, {"status": "done"})
    assert status == 404 and "is done, not open" in body
    with Admin(config) as admin:
        node = admin.node("lab1")
    assert node["override"]["mode"] == "local" and node["reimage"] is None
    assert node["actions"][0]["attempts"] == 2
    # a new order clears the local mode again
    with Admin(config) as admin:
        admin.reimage("lab1", "lab-disk/1", who="test")
    _, script = await fetch(service, f"/ipxe/node.ipxe?mac={KEY}")
    assert "mode reimage" in script
