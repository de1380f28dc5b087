"""A cancelled reimage order, against a running server (no QEMU): the node's next iPXE answer
is its normal boot again, and the installer's report for the cancelled order, even with the
token it was given, is refused and changes nothing. The same with real firmware, an installer
and a disk: tests/e2e/test_reimage_drill.py."""

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

LAB1 = "52:54:00:00:00:05"  # BASE_CONFIG's lab1: mode local in the config
DB1 = "52:54:00:00:00:02"  # db1: pinned to demo/2.0, appliance
RAW = bytes(range(256)) * 64


@pytest.fixture
async def server(tmp_path: Path, backend: Backend) -> AsyncIterator[tuple[Service, Config]]:
    store = make_store(tmp_path / "store")
    write_build(store, "lab-disk", "1", {"disk.img": RAW}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": len(RAW),
                      "raw_sha256": hashlib.sha256(RAW).hexdigest()})
    config = parse_config(backend.configure(
        loopback_config(tmp_path, reimage={"installer": "demo/2.0"})), "cancel-test")
    service = Service(config)
    await service.start()
    try:
        yield service, config
    finally:
        await service.stop()


@pytest.mark.parametrize(("node", "mac", "normal"), [
    ("lab1", LAB1, ("mode local", "sanboot")),
    ("db1", DB1, ("mode appliance", "/builds/demo/2.0/vmlinuz")),
])
async def test_a_cancelled_order_boots_normally_and_its_report_is_refused(
        server: tuple[Service, Config], node: str, mac: str, normal: tuple[str, ...]) -> None:
    service, config = server
    key = mac.replace(":", "-")
    _, before = await fetch(service, f"/ipxe/node.ipxe?mac={key}")
    assert all(s in before for s in normal), before
    with Admin(config) as admin:
        order = admin.reimage(node, "lab-disk/1", who="test")
    _, script = await fetch(service, f"/ipxe/node.ipxe?mac={key}")
    assert "mode reimage" in script and "netbootd.disk_url=" in script
    found = re.search(rf"netbootd.report=http://127.0.0.1:{service.http_port}"
                      rf"(/reimage/{key}/{order['id']}/[\w.-]+/report)", script)
    assert found is not None, script

    with Admin(config) as admin:
        cancelled = admin.cancel_reimage(node, who="test")
    assert (cancelled["id"], cancelled["state"]) == (order["id"], "cancelled")
    _, after = await fetch(service, f"/ipxe/node.ipxe?mac={key}")
    assert all(s in after for s in normal), after
    assert "mode reimage" not in after and "netbootd.disk_url" not in after

    # An installer that booted before the cancel reports, with its valid token: refused.
    status, body = await fetch(service, found[1], {"status": "done", "sha256": "f" * 64,
                                                   "bytes": str(len(RAW))})
    assert status == 404 and "is cancelled, not open" in body, body
    _, again = await fetch(service, f"/ipxe/node.ipxe?mac={key}")
    assert "mode reimage" not in again
    assert all(s in again for s in normal)
    with Admin(config) as admin:
        view = admin.node(node)
    assert view["reimage"] is None
    assert [(a["state"], a["attempts"]) for a in view["actions"]] == [("cancelled", 0)]
    assert view["override"] is None  # never switched to local by the refused report
    assert "reimage-done" not in [e["kind"] for e in view["timeline"]]
