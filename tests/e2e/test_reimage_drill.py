"""The reimage drill with a real PXE client (issue 3): a node with an empty disk is marked for
reimage; it PXE-boots the installer, which writes the disk image and reports done; the next
power-on PXE-boots to `local` and starts from its disk (whose boot code prints a marker on the
serial console); a third power-on stays local. Each step asserted from netbootd's state."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import BOOT_TIMEOUT, build_reimage_images
from netbootd.lab.demo import lab_config, start_netbootd, timeline, wait_for_event
from netbootd.lab.netlab import Lab, QemuGuest, lab_prerequisites
from netbootd.state.events import BootEvent, StateDB
from netbootd.state.registry import Registry

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites()), reason="; ".join(lab_prerequisites())),
]

ROOT = Path(__file__).resolve().parents[2]
MAC = "52:54:00:e2:1e:01"
MARKER = "NETBOOTD-DISK-lab-disk-1"
# The disk's boot code writes 0x2a to this port; QEMU then exits with status (0x2a << 1) | 1.
EXIT_DEVICE = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
DISK_EXIT_STATUS = (0x2A << 1) | 1


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def netbootd(config: Path, *args: str) -> Any:
    return json.loads(run("-m", "netbootd", *args, "--config", str(config), "--json"))


def power_on(lab: Lab, name: str, disk: Path) -> QemuGuest:
    # Network first, then the disk: what a lab machine's firmware is set to.
    return lab.start_qemu(name, firmware="bios", mac=MAC, disk=disk, boot_order="nc",
                          extra_args=EXIT_DEVICE)


def events_after(state_db: Path, after: int) -> list[BootEvent]:
    return timeline(state_db, MAC, after)


def last_id(state_db: Path) -> int:
    if not state_db.exists():
        return 0
    ev = timeline(state_db, MAC)
    return ev[-1].id if ev else 0


def boots_locally(lab: Lab, state_db: Path, name: str, disk: Path) -> list[BootEvent]:
    """Power on; the node must get mode local from netbootd and start its disk's marker."""
    after = last_id(state_db)
    guest = power_on(lab, name, disk)
    try:
        status = guest.wait(BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        guest.kill()
        raise AssertionError(f"{name}: the disk never booted; console:\n"
                             f"{guest.serial_text()[-3000:]}") from None
    assert status == DISK_EXIT_STATUS, (status, guest.serial_text()[-3000:])
    assert MARKER in guest.serial_text()
    events = events_after(state_db, after)
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["mode"] == "local" and offer.detail["build"] is None
    sent = [e.detail["file"] for e in events if e.kind == "tftp-sent"]
    assert f"bios/pxelinux.cfg/01-{MAC.replace(':', '-')}" in sent
    # nothing of the installer or the image was fetched: it did not loop back
    assert not [e for e in events if e.kind in ("http-sent", "reimage-done", "reimage-failed")]
    return events


@pytest.fixture(scope="module")
def drill_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The installer build and the disk image, built once for this module's tests."""
    work = tmp_path_factory.mktemp("drill")
    return work, build_reimage_images(work, MARKER)


def drill_site(lab: Lab, tmp_path: Path, demo_store: Path, work: Path,
               info: dict[str, Any]) -> Path:
    """A config with node lab7 (default group: demo/1.0) and the three builds imported."""
    config = lab_config(lab, tmp_path, tmp_path / "store", reimage={
        "installer": "netbootd-installer/1.0"}, groups={
        "default": {"default": True, "build": "demo/1.0",
                    "vars": {"power_state": "poweroff"}}},
        nodes={"lab7": {"mac": MAC, "hostname": "lab7"}})
    netbootd(config, "image", "import", "--kind", "tree",
             str(demo_store / "builds" / "demo" / "1.0"))
    netbootd(config, "image", "import", "--kind", "tree",
             str(work / "inst" / "builds" / "netbootd-installer" / "1.0"))
    disk_build = netbootd(config, "image", "import", "--kind", "disk", "--name",
                          "lab-disk", "--version", "1", str(work / "lab.img.gz"))
    assert disk_build["disk"]["raw_sha256"] == info["raw_sha256"]
    return config


def test_reimage_drill(demo_store: Path, tmp_path: Path,
                       drill_builds: tuple[Path, dict[str, Any]]) -> None:
    work, info = drill_builds
    with Lab() as lab:
        config = drill_site(lab, tmp_path, demo_store, work, info)
        order = netbootd(config, "node", "reimage", "lab7", "--image", "lab-disk/1", "--yes")
        assert order["state"] == "pending"
        state_db = tmp_path / "state" / "state.sqlite3"
        nb = start_netbootd(lab, ["serve", "--config", str(config)], tmp_path, state_db)

        disk = tmp_path / "lab7.raw"
        with disk.open("wb") as f:
            f.truncate(16 << 20)  # an empty disk, larger than the image
        # 1. PXE boot: the installer writes the image and reports done.
        guest = power_on(lab, "lab7-install", disk)
        try:
            done = wait_for_event(state_db, MAC, "reimage-done", BOOT_TIMEOUT, guest=guest)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- netbootd log ---\n{nb.log_text()[-3000:]}") \
                from None
        try:
            guest.wait(60)  # the installer powers off after its report
        except subprocess.TimeoutExpired:
            guest.kill()
        assert done.detail["image"] == "lab-disk/1" and done.detail["node"] == "lab7"
        assert info["raw_sha256"] in done.detail["reason"]
        events = events_after(state_db, 0)
        offer = next(e for e in events if e.kind == "dhcp-offer")
        assert offer.detail["mode"] == "reimage"
        assert offer.detail["build"] == "netbootd-installer/1.0"
        http = [e.detail["path"] for e in events if e.kind == "http-sent"]
        assert "/builds/lab-disk/1/disk.img.gz" in http
        with Registry(tmp_path / "state" / "intent.sqlite3") as reg:
            (action,) = reg.actions("lab7")
            assert action.state == "done" and action.attempts == 1
            assert reg.overrides()["lab7"].mode == "local"
        with disk.open("rb") as f:
            assert MARKER.encode() in f.read(1 << 20)  # the boot code carries it
        # 2. and 3. Power on twice more: local both times, the disk boots, no installer.
        boots_locally(lab, state_db, "lab7-local1", disk)
        boots_locally(lab, state_db, "lab7-local2", disk)
        node = netbootd(config, "node", "show", "lab7")
        assert node["override"]["mode"] == "local" and node["reimage"] is None
        with StateDB.open_readonly(state_db) as db:
            kinds = [e.kind for e in db.timeline(MAC)]
        assert kinds.count("reimage-done") == 1 and "reimage-failed" not in kinds
        assert nb.proc.poll() is None


def test_a_cancelled_order_never_writes_the_disk(demo_store: Path, tmp_path: Path,
                                                 drill_builds: tuple[Path, dict[str, Any]]
                                                 ) -> None:
    """Order, cancel (on the running server, from the CLI), power on: the node boots its
    normal appliance (demo/1.0), nothing of the installer or the image is fetched, no report
    arrives, and the disk is byte for byte what it was."""
    work, info = drill_builds
    with Lab() as lab:
        config = drill_site(lab, tmp_path, demo_store, work, info)
        state_db = tmp_path / "state" / "state.sqlite3"
        nb = start_netbootd(lab, ["serve", "--config", str(config)], tmp_path, state_db)
        order = netbootd(config, "node", "reimage", "lab7", "--image", "lab-disk/1", "--yes")
        assert netbootd(config, "node", "show", "lab7")["next"]["mode"] == "reimage"
        cancelled = netbootd(config, "node", "reimage", "lab7", "--cancel")
        assert (cancelled["id"], cancelled["state"]) == (order["id"], "cancelled")
        assert netbootd(config, "node", "show", "lab7")["next"] == {
            "group": "default", "mode": "appliance", "build": "demo/1.0",
            "why": "pin (groups.default.build)"}

        disk = tmp_path / "lab7.raw"
        with disk.open("wb") as f:
            f.truncate(16 << 20)
            f.seek(0)
            f.write(b"KEEP-ME" * 1000)  # something the installer would overwrite
        before = hashlib.sha256(disk.read_bytes()).hexdigest()
        guest = power_on(lab, "lab7-cancelled", disk)
        try:
            ready = wait_for_event(state_db, MAC, "ready", BOOT_TIMEOUT, guest=guest)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- netbootd log ---\n{nb.log_text()[-3000:]}") \
                from None
        try:
            guest.wait(120)  # the demo appliance powers off (power_state = poweroff)
        except subprocess.TimeoutExpired:
            guest.kill()
        assert ready.detail.get("build") in (None, "demo/1.0"), ready.detail
        events = events_after(state_db, 0)
        offer = next(e for e in events if e.kind == "dhcp-offer")
        assert (offer.detail["mode"], offer.detail["build"]) == ("appliance", "demo/1.0")
        http = [e.detail["path"] for e in events if e.kind == "http-sent"]
        assert not [p for p in http if "netbootd-installer" in p or "lab-disk" in p], http
        assert not [e for e in events if e.kind in ("reimage-done", "reimage-failed")]
        assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
        with Registry(tmp_path / "state" / "intent.sqlite3") as reg:
            (action,) = reg.actions("lab7")
            assert (action.state, action.attempts) == ("cancelled", 0)
            assert "lab7" not in reg.overrides()
        assert nb.proc.poll() is None
