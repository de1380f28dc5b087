"""GRUB as the loader (BIOS core.0, UEFI core.efi) and the Secure Boot chain (shim -> signed
GRUB -> signed kernel), booted by real firmware in QEMU (TCG) to a phone-home.

GRUB ignores ProxyDHCP: the site DHCP server (dnsmasq) names netbootd as next-server, the setup
docs/boot-flows.md documents. Every assertion reads netbootd's state database (what it served,
who phoned home, and what the guest reported of itself), never netbootd's log text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import BOOT_TIMEOUT, LabServer
from netbootd.config import DEFAULT_LOADER_DIRS
from netbootd.lab.demo import (
    DEFAULT_CACHE,
    REPO,
    build_demo,
    lab_config,
    start_netbootd,
    timeline,
    wait_for_event,
)
from netbootd.lab.netlab import Lab, QemuGuest, lab_prerequisites, secure_boot_ovmf_files
from netbootd.state.registry import Registry
from netbootd.store.authenticode import inspect_pe, strip_signature
from netbootd.store.importer import import_disk, import_linux
from netbootd.store.manifest import parse_manifest

GRUB_DIR = Path(DEFAULT_LOADER_DIRS["grub"][0])
_missing = lab_prerequisites() + [
    f"{GRUB_DIR}/{f} (run `netbootd loaders grub`, as .ci/install-deps.sh does)"
    for f in ("i386-pc/core.0", "x86_64-efi/core.efi", "shimx64.efi", "grubx64.efi")
    if not (GRUB_DIR / f).is_file()]
if secure_boot_ovmf_files() is None:
    _missing.append("OVMF Secure Boot firmware (package ovmf)")

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(_missing), reason="; ".join(_missing))]

BIOS_MAC = "52:54:00:9b:00:01"
UEFI_MAC = "52:54:00:9b:00:02"
SB_MAC = "52:54:00:9b:00:5b"
SB_BAD_MAC = "52:54:00:9b:00:5c"
SB_LAB_MAC = "52:54:00:9b:1e:01"
DISK_MARKER = "NETBOOTD-DISK-lab-efi-1"
SERVER_IP = "10.77.0.1"  # Lab()'s default server address


@pytest.fixture(scope="module")
def grub_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo/1.0 (Debian's signed kernel) and demo-unsigned/1.0: the same files, the kernel's
    Authenticode signature stripped."""
    store = tmp_path_factory.mktemp("grub-store")
    build = build_demo(store, "1.0")
    m = parse_manifest((build / "manifest.json").read_text(), "demo")
    work = tmp_path_factory.mktemp("unsigned")
    kernel = work / m.kernel
    kernel.write_bytes(strip_signature((build / m.kernel).read_bytes()))
    assert inspect_pe((build / m.kernel).read_bytes()).signed
    assert not inspect_pe(kernel.read_bytes()).signed
    import_linux(store, "demo-unsigned", "1.0", kernel, [build / i for i in m.initrds],
                 cmdline=m.cmdline, description="demo with its kernel's signature removed")
    # The reimage drill's installer and its UEFI disk image (shim + signed GRUB on an ESP).
    subprocess.run([sys.executable, str(REPO / "images/installer/build.py"), "--store",
                    str(store), "--name", "netbootd-installer", "--version", "1.0",
                    "--cache", str(DEFAULT_CACHE)], check=True)
    disk = subprocess.run([sys.executable, str(REPO / "images/disk-efi/build.py"), "--out",
                           str(work / "lab-efi.img.gz"), "--marker", DISK_MARKER,
                           "--compression", "gzip", "--cache", str(DEFAULT_CACHE)],
                          check=True, capture_output=True, text=True)
    info = json.loads(disk.stdout.strip().splitlines()[-1])
    import_disk(store, "lab-disk-efi", "1", work / "lab-efi.img.gz")
    (store / "lab-disk-efi.json").write_text(json.dumps(info))
    return store


GROUPS = {
    "default": {"default": True, "build": "demo/1.0", "loader": "grub",
                "vars": {"power_state": "poweroff"}},
    "sb": {"build": "demo/1.0", "secure_boot": True, "vars": {"power_state": "poweroff"}},
    "sb-unsigned": {"build": "demo-unsigned/1.0", "secure_boot": True,
                    "vars": {"power_state": "poweroff"}},
}
NODES = {
    "grub-bios": {"mac": BIOS_MAC, "hostname": "grub-bios"},
    "grub-uefi": {"mac": UEFI_MAC, "hostname": "grub-uefi"},
    "sb-laptop": {"mac": SB_MAC, "hostname": "sb-laptop", "group": "sb"},
    "sb-tampered": {"mac": SB_BAD_MAC, "hostname": "sb-tampered", "group": "sb-unsigned"},
    "sb-lab7": {"mac": SB_LAB_MAC, "hostname": "sb-lab7", "group": "sb"},
}


@pytest.fixture(scope="module")
def grub_lab(grub_store: Path, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[tuple[LabServer, Path]]:
    work = tmp_path_factory.mktemp("grub-lab")
    with Lab(site_next_server=SERVER_IP) as lab:
        assert lab.server_ip == SERVER_IP
        config = lab_config(lab, work, grub_store, groups=GROUPS, nodes=NODES,
                            dhcp={"site_next_server": SERVER_IP},
                            reimage={"installer": "netbootd-installer/1.0"})
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work,
                            work / "state" / "state.sqlite3")
        yield LabServer(lab, nb), config


def console(guest: QemuGuest) -> str:
    """The serial console without terminal escapes (OVMF's setup screen is mostly those)."""
    return re.sub(r"\x1b\[[0-9;=?]*[A-Za-z]", "", guest.serial_text())[-3000:]


def sent_files(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.detail["file"].lstrip("/") for e in events if e.kind == "tftp-sent"]


def test_grub_bios_boots_with_its_per_node_config(grub_lab: tuple[LabServer, Path]) -> None:
    server, _ = grub_lab
    home, events = server.boot("grub-bios", "bios", BIOS_MAC)
    assert home.detail["hostname"] == "grub-bios" and home.detail["build"] == "demo/1.0"
    assert home.detail["secure_boot"] == "none"
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["bootfile"] == "grub/i386-pc/core.0"
    sent = sent_files(events)
    assert "grub/i386-pc/core.0" in sent
    # GRUB asked for the node's own file first and was served it (no grub.cfg fallback).
    assert "grub/grub.cfg-01-52-54-00-9b-00-01" in sent and "grub/grub.cfg" not in sent
    http = [e.detail["path"] for e in events if e.kind == "http-sent"]
    assert "/builds/demo/1.0/vmlinuz" in http and "/builds/demo/1.0/initrd.img" in http
    assert not any(f.startswith("builds/") for f in sent)  # kernel over HTTP, not TFTP


def test_grub_uefi_boots_with_its_per_node_config(grub_lab: tuple[LabServer, Path]) -> None:
    server, _ = grub_lab
    home, events = server.boot("grub-uefi", "uefi", UEFI_MAC)
    assert home.detail["hostname"] == "grub-uefi" and home.detail["secure_boot"] == "off"
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["bootfile"] == "grub/x86_64-efi/core.efi"
    sent = sent_files(events)
    assert "grub/x86_64-efi/core.efi" in sent
    assert "grub/grub.cfg-01-52-54-00-9b-00-02" in sent
    http = [e.detail["path"] for e in events if e.kind == "http-sent"]
    assert "/builds/demo/1.0/vmlinuz" in http


def test_secure_boot_chain_shim_signed_grub_signed_kernel(
        grub_lab: tuple[LabServer, Path]) -> None:
    server, _ = grub_lab
    after = server.last_event_id(SB_MAC)
    guest = server.lab.start_qemu("sb-laptop", firmware="uefi", mac=SB_MAC, secure_boot=True)
    home = wait_for_event(server.nb.state_db, SB_MAC, "phone-home", BOOT_TIMEOUT,
                          after_id=after, guest=guest)
    events = timeline(server.nb.state_db, SB_MAC, after)
    # The guest itself read SecureBoot=1 from its firmware and said so in its report.
    assert home.detail["secure_boot"] == "on" and home.detail["hostname"] == "sb-laptop"
    assert "secureboot: Secure boot enabled" in guest.serial_text()
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["bootfile"] == "grub/shimx64.efi"
    sent = sent_files(events)
    # shim -> signed GRUB (grubx64.efi, beside shim) -> grub.cfg, which picks the node's file
    # by $net_default_mac (signed GRUB asks no other config name).
    order = [f for f in sent if f in ("grub/shimx64.efi", "grub/grubx64.efi", "grub/grub.cfg")]
    assert order[:3] == ["grub/shimx64.efi", "grub/grubx64.efi", "grub/grub.cfg"]
    assert "grub/grub.cfg-01-52:54:00:9b:00:5b" in sent
    # Debian's signed GRUB has no http module: the kernel came over TFTP.
    assert "builds/demo/1.0/vmlinuz" in sent and "builds/demo/1.0/initrd.img" in sent
    try:
        guest.wait(60)
    except subprocess.TimeoutExpired:
        guest.kill()


def test_secure_boot_refuses_an_unsigned_kernel(grub_lab: tuple[LabServer, Path]) -> None:
    server, config = grub_lab
    # netbootd check says so before anything boots: the key, the build, and the fix.
    check = subprocess.run([sys.executable, "-m", "netbootd", "check", "--config", str(config)],
                           capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert "groups.sb-unsigned" in check.stdout and "demo-unsigned/1.0" in check.stdout
    assert "unsigned" in check.stdout
    after = server.last_event_id(SB_BAD_MAC)
    guest = server.lab.start_qemu("sb-tampered", firmware="uefi", mac=SB_BAD_MAC,
                                  secure_boot=True)
    try:
        # GRUB fetched the kernel, then shim refused it.
        guest.wait_for_serial("bad shim signature", timeout=BOOT_TIMEOUT)
        events = timeline(server.nb.state_db, SB_BAD_MAC, after)
        sent = sent_files(events)
        assert "grub/grubx64.efi" in sent and "builds/demo-unsigned/1.0/vmlinuz" in sent
        assert not any(e.kind in ("firstboot", "phone-home") for e in events)
    finally:
        guest.kill()


def test_secure_boot_reimage_drill(grub_lab: tuple[LabServer, Path], grub_store: Path,
                                   tmp_path: Path) -> None:
    """A Secure Boot laptop: the installer boots through shim/GRUB/signed kernel and writes a
    UEFI disk image; the next power-on is local, and the disk itself boots under Secure Boot
    (shim and signed GRUB on its ESP print the marker)."""
    server, config = grub_lab
    info = json.loads((grub_store / "lab-disk-efi.json").read_text())
    order = subprocess.run([sys.executable, "-m", "netbootd", "node", "reimage", "sb-lab7",
                            "--image", "lab-disk-efi/1", "--config", str(config), "--json",
                            "--yes"],
                           capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert order.returncode == 0, order.stderr
    assert json.loads(order.stdout)["state"] == "pending"
    disk = tmp_path / "sb-lab7.raw"
    with disk.open("wb") as f:
        f.truncate(32 << 20)  # an empty disk, larger than the image
    db = server.nb.state_db

    guest = server.lab.start_qemu("sb-lab7-install", firmware="uefi", mac=SB_LAB_MAC,
                                  secure_boot=True, disk=disk, net_then_disk=True)
    done = wait_for_event(db, SB_LAB_MAC, "reimage-done", BOOT_TIMEOUT, guest=guest)
    try:
        guest.wait(60)  # the installer powers off after its report
    except subprocess.TimeoutExpired:
        guest.kill()
    assert done.detail["image"] == "lab-disk-efi/1" and info["raw_sha256"] in \
        done.detail["reason"]
    events = timeline(db, SB_LAB_MAC)
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["mode"] == "reimage" and offer.detail["bootfile"] == "grub/shimx64.efi"
    assert "builds/netbootd-installer/1.0/vmlinuz" in sent_files(events)
    with Registry(config.parent / "state" / "intent.sqlite3") as reg:
        assert reg.overrides()["sb-lab7"].mode == "local"

    for n in (1, 2):  # local twice: netbootd says local, the disk boots under Secure Boot
        after = server.last_event_id(SB_LAB_MAC)
        guest = server.lab.start_qemu(f"sb-lab7-local{n}", firmware="uefi", mac=SB_LAB_MAC,
                                      secure_boot=True, disk=disk, net_then_disk=True)
        try:
            status = guest.wait(BOOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            guest.kill()
            raise AssertionError(f"the disk never booted:\n{console(guest)}") from None
        assert status == 0 and DISK_MARKER in guest.serial_text(), console(guest)
        events = timeline(db, SB_LAB_MAC, after)
        offer = next(e for e in events if e.kind == "dhcp-offer")
        assert offer.detail["mode"] == "local" and offer.detail["bootfile"] == \
            "grub/shimx64.efi"
        assert "grub/grub.cfg-01-52:54:00:9b:1e:01" in sent_files(events)
        assert not [e for e in events if e.kind in ("http-sent", "reimage-done")]
        assert not any(f.startswith("builds/") for f in sent_files(events))
