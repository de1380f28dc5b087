"""GRUB as the loader (BIOS core.0, UEFI core.efi) and the Secure Boot chain (shim -> signed
GRUB -> signed kernel), booted by real firmware in QEMU (TCG) to a phone-home.

GRUB ignores ProxyDHCP: the site DHCP server (dnsmasq) names netbootd as next-server, the setup
docs/boot-flows.md documents. Every assertion reads netbootd's state database (what it served,
who phoned home, and what the guest reported of itself), never netbootd's log text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import LabServer
from netbootd.config import DEFAULT_LOADER_DIRS
from netbootd.lab.demo import build_demo, lab_config, start_netbootd
from netbootd.lab.netlab import Lab, lab_prerequisites, secure_boot_ovmf_files
from netbootd.store.authenticode import inspect_pe, strip_signature
from netbootd.store.importer import import_linux
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
}


@pytest.fixture(scope="module")
def grub_lab(grub_store: Path, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[tuple[LabServer, Path]]:
    work = tmp_path_factory.mktemp("grub-lab")
    with Lab(site_next_server=SERVER_IP) as lab:
        assert lab.server_ip == SERVER_IP
        config = lab_config(lab, work, grub_store, groups=GROUPS, nodes=NODES,
                            dhcp={"site_next_server": SERVER_IP})
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work,
                            work / "state" / "state.sqlite3")
        yield LabServer(lab, nb), config


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
