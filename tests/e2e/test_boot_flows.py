"""Real PXE clients (QEMU, TCG) boot through netbootd in a lab network the test makes.

Site DHCP is dnsmasq with no boot options, in its own namespace; netbootd is the only netboot
server. Every assertion reads netbootd's own record of the boot (its state database: identity,
build, events), never its log text.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import LabServer
from netbootd.core.identity import pxelinux_guid_name
from netbootd.lab.demo import lab_config, start_netbootd
from netbootd.lab.netlab import Lab, lab_prerequisites
from netbootd.state.events import BootEvent

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites()), reason="; ".join(lab_prerequisites())),
]

WEB1 = ("52:54:00:e2:00:01", "6a1f0c3e-5b2d-4e8f-9a71-3c5d7e9f1b2a")
DB1_MAC = "52:54:00:e2:00:02"
SEFI_MAC = "52:54:00:e2:00:5e"
KIOSK_MACS = ("52:54:00:e2:00:a1", "52:54:00:e2:00:a2")


@pytest.fixture(scope="module")
def lab_server(demo_store: Path, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[LabServer]:
    work = tmp_path_factory.mktemp("lab")
    with Lab() as lab:
        config = lab_config(lab, work, demo_store, groups={
            "default": {"default": True, "build": "demo/1.0",
                        "vars": {"power_state": "poweroff"}},
            "uefi": {"match": {"arch": "efi64"}, "build": "demo/1.0", "loader": "ipxe",
                     "vars": {"power_state": "poweroff"}},
        }, nodes={
            "web1": {"uuid": WEB1[1], "hostname": "web1"},
            "db1": {"mac": DB1_MAC, "hostname": "db1", "build": "demo/2.0"},
            # One machine, two NICs: its BIOS side gets the pxelinux menu, its UEFI side
            # (group "uefi" by arch) the iPXE menu; both default to demo/2.0 after 0.1 s.
            "sefi": {"mac": SEFI_MAC, "group": "default"},  # UEFI through syslinux.efi
            "kiosk": {"mac": list(KIOSK_MACS), "hostname": "kiosk", "mode": "menu",
                      "build": "demo/2.0", "vars": {"menu_timeout": 1}},
        })
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work,
                            work / "state" / "state.sqlite3")
        yield LabServer(lab, nb)


def kinds(events: list[BootEvent]) -> list[str]:
    return [e.kind for e in events]


def test_a_bios_pxelinux_config_by_guid_to_phone_home(lab_server: LabServer) -> None:
    mac, guid = WEB1
    home, events = lab_server.boot("bios-web1", "bios", mac, guid)
    assert home.detail["hostname"] == "web1" and home.detail["build"] == "demo/1.0"
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["bootfile"] == "bios/lpxelinux.0" and offer.detail["node"] == "web1"
    assert offer.detail["guid"] == guid and offer.detail["arch"] == "bios"
    sent = [e.detail["file"] for e in events if e.kind == "tftp-sent"]
    # pxelinux asked for its config by GUID, in its own byte order, and got the node's file.
    assert "bios/lpxelinux.0" in sent and "bios/ldlinux.c32" in sent
    assert f"bios/pxelinux.cfg/{pxelinux_guid_name(guid)}" in sent
    assert not any("pxelinux.cfg/01-" in f for f in sent)
    http = [e.detail["path"] for e in events if e.kind == "http-sent"]
    assert http == ["/builds/demo/1.0/vmlinuz", "/builds/demo/1.0/initrd.img"]
    assert [e.detail["file"] for e in events if e.kind == "firstboot"] == \
        ["meta-data", "user-data"]
    assert kinds(events)[-2:] == ["phone-home", "ready"]
    node = lab_server.node(mac)
    assert node.node == "web1" and node.guid == guid and node.current_build == "demo/1.0"
    assert node.state == "ready"


def test_b_uefi_stock_pxe_to_ipxe_script_to_phone_home(lab_server: LabServer) -> None:
    mac = "52:54:00:e2:00:0b"
    home, events = lab_server.boot("uefi-b", "uefi", mac, "0b1d2c3e-4f50-4617-8293-a4b5c6d7e8f9")
    assert home.detail["build"] == "demo/1.0"
    offers = [e for e in events if e.kind in ("dhcp-offer", "dhcp-ack")]
    # First the stock EDK2 PXE client (no iPXE) gets the iPXE EFI binary over TFTP...
    assert offers[0].detail["arch"] in ("efi_bc", "efi_x64") and not offers[0].detail["ipxe"]
    assert offers[0].detail["bootfile"] == "ipxe/snponly.efi"
    # ...then iPXE itself DHCPs and gets its script URL, never the binary again.
    ipxe_offers = [e for e in offers if e.detail["ipxe"]]
    assert ipxe_offers and all(e.detail["bootfile"].endswith("/ipxe/boot.ipxe")
                               for e in ipxe_offers)
    assert "ipxe/snponly.efi" in [e.detail["file"] for e in events if e.kind == "tftp-sent"]
    script = [e for e in events if e.kind == "ipxe-script"]
    assert len(script) == 1 and script[0].detail["group"] == "uefi"
    assert kinds(events)[-2:] == ["phone-home", "ready"]


def test_b2_uefi_stock_pxe_to_syslinux_efi(lab_server: LabServer) -> None:
    """The default loader on UEFI: syslinux.efi, ldlinux.e64, the node's config, HTTP kernel.

    EDK2 first asks for the loader's size only and aborts (error 8), then fetches it
    (pxe-facts.md): the timeline shows both transfers.
    """
    home, events = lab_server.boot("uefi-sefi", "uefi", SEFI_MAC)
    assert home.detail["build"] == "demo/1.0" and home.detail["hostname"] == "sefi"
    tftp = [(e.detail["file"], e.detail["outcome"]) for e in events
            if e.kind in ("tftp-sent", "tftp-ended")]
    assert ("efi64/syslinux.efi", "aborted-by-client") in tftp
    assert [f for f, outcome in tftp if outcome == "completed"][:3] == [
        "efi64/syslinux.efi", "efi64/ldlinux.e64", "efi64/pxelinux.cfg/01-52-54-00-e2-00-5e"]


def test_c_unknown_mac_gets_the_default_group_and_boots(lab_server: LabServer) -> None:
    mac = "52:54:00:e2:00:0c"
    home, events = lab_server.boot("bios-unknown", "bios", mac)
    assert home.detail["hostname"] == "node-525400e2000c"
    assert home.detail["build"] == "demo/1.0"
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["node"] is None and offer.detail["group"] == "default"
    assert "bios/pxelinux.cfg/01-52-54-00-e2-00-0c" in \
        [e.detail["file"] for e in events if e.kind == "tftp-sent"]
    node = lab_server.node(mac)
    assert node.node is None and node.current_build == "demo/1.0"


def test_d_node_pinned_to_build_b_while_default_is_a(lab_server: LabServer) -> None:
    home, events = lab_server.boot("bios-db1", "bios", DB1_MAC)
    assert home.detail["build"] == "demo/2.0" and home.detail["hostname"] == "db1"
    assert home.detail["claimed_build"] == "demo/2.0"  # the image agrees
    assert [e.detail["path"] for e in events if e.kind == "http-sent"] == \
        ["/builds/demo/2.0/vmlinuz", "/builds/demo/2.0/initrd.img"]


@pytest.mark.parametrize(("firmware", "mac"), [("bios", KIOSK_MACS[0]),
                                               ("uefi", KIOSK_MACS[1])])
def test_menu_mode_boots_the_default_entry(lab_server: LabServer, firmware: str,
                                           mac: str) -> None:
    home, events = lab_server.boot(f"menu-{firmware}", firmware, mac)
    assert home.detail["build"] == "demo/2.0" and home.detail["hostname"] == "kiosk"
    sent = [e.detail["file"] for e in events if e.kind == "tftp-sent"]
    if firmware == "bios":  # syslinux's menu module and its libraries came from Debian's tree
        assert {"bios/menu.c32", "bios/libutil.c32"} <= set(sent), sent
    else:
        script = [e for e in events if e.kind == "ipxe-script"]
        assert script and script[-1].detail["mode"] == "menu"


def test_proxy_4011_strategy_with_real_firmware(demo_store: Path, tmp_path: Path) -> None:
    """offer_bootfile = false: bare udp/67 offers, boot file from the udp/4011 ACK.

    SeaBIOS's iPXE ROM and OVMF's stock EDK2 PXE both come back on 4011 (EDK2 from udp/4011
    itself, pxe-facts.md) and must still boot, each answered at its source address and port.
    """
    with Lab() as lab:
        config = lab_config(lab, tmp_path, demo_store, dhcp={"offer_bootfile": False}, groups={
            "default": {"default": True, "build": "demo/1.0",
                        "vars": {"power_state": "poweroff"}},
            "uefi": {"match": {"arch": "efi64"}, "build": "demo/2.0", "loader": "ipxe",
                     "vars": {"power_state": "poweroff"}}})
        nb = start_netbootd(lab, ["serve", "--config", str(config)], tmp_path,
                            tmp_path / "state" / "state.sqlite3")
        server = LabServer(lab, nb)
        for firmware, mac, build in (("bios", "52:54:00:e2:40:01", "demo/1.0"),
                                     ("uefi", "52:54:00:e2:40:02", "demo/2.0")):
            home, events = server.boot(f"p4011-{firmware}", firmware, mac)
            assert home.detail["build"] == build
            acks = [e for e in events if e.kind == "dhcp-ack"]
            assert acks, f"{firmware}: no udp/4011 ACK in {kinds(events)}"
            first_loader = acks[0].detail["bootfile"]
            assert first_loader == ("bios/lpxelinux.0" if firmware == "bios"
                                    else "ipxe/snponly.efi")


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no qemu")
def test_e_quick_mode_boots_bios_and_uefi(demo_store: Path,
                                          tmp_path: Path) -> None:
    build = demo_store / "builds" / "demo" / "1.0"
    with Lab() as lab:
        state_dir = tmp_path / "quick-state"
        nb = start_netbootd(lab, ["boot", str(build / "vmlinuz"), str(build / "initrd.img"),
                                  "--cmdline", "console=ttyS0 panic=-1",
                                  "--interface", lab.bridge, "--state-dir", str(state_dir)],
                            tmp_path, state_dir / "state.sqlite3")
        server = LabServer(lab, nb)
        for firmware, mac in (("bios", "52:54:00:e2:00:e1"), ("uefi", "52:54:00:e2:00:e2")):
            home, events = server.boot(f"quick-{firmware}", firmware, mac, powers_off=False)
            assert home.detail["claimed_build"] == "demo/1.0"  # what the image says it is
            assert home.detail["build"].startswith("quick/")  # what netbootd served
            assert "ipxe-script" in kinds(events)
