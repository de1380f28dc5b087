"""UEFI HTTP Boot (OVMF's HTTP client, no PXE) through netbootd in config mode.

OVMF runs with its PXE stacks switched off by fw_cfg, so its boot manager goes straight to HTTP
Boot: a DHCPDISCOVER with vendor class ``HTTPClient`` and arch 16, netbootd's proxy offer names
the iPXE EFI binary by URL, OVMF fetches it over HTTP, iPXE DHCPs again and gets its script.
The site DHCP server (dnsmasq) only hands out addresses. Every assertion reads netbootd's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import LabServer
from netbootd.lab.demo import lab_config, start_netbootd
from netbootd.lab.netlab import OVMF_HTTP_BOOT_ONLY, Lab, lab_prerequisites

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites("uefi")),
                       reason="; ".join(lab_prerequisites("uefi"))),
]

HTTP_MAC = "52:54:00:e2:16:01"
HTTP_GUID = "16b00c7e-0d5a-4c1e-9f30-2a4b6c8d0e16"


@pytest.fixture(scope="module")
def http_lab(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    work = tmp_path_factory.mktemp("httpboot")
    with Lab() as lab:
        config = lab_config(lab, work, demo_store, groups={
            "default": {"default": True, "build": "demo/1.0",
                        "vars": {"power_state": "poweroff"}},
            # Arch 16 (x64 UEFI HTTP) is of the efi64 family: this group matches it.
            "uefi": {"match": {"arch": "efi64"}, "build": "demo/2.0", "loader": "ipxe",
                     "vars": {"power_state": "poweroff"}},
        }, nodes={
            "h1": {"uuid": HTTP_GUID, "hostname": "h1"},
        })
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work,
                            work / "state" / "state.sqlite3")
        yield LabServer(lab, nb)


def test_uefi_http_boot_to_ipxe_script_to_phone_home(http_lab: LabServer) -> None:
    home, events = http_lab.boot("httpboot", "uefi", HTTP_MAC, HTTP_GUID,
                                 fw_cfg=OVMF_HTTP_BOOT_ONLY)
    assert home.detail["build"] == "demo/2.0" and home.detail["hostname"] == "h1"
    offers = [e for e in events if e.kind in ("dhcp-offer", "dhcp-ack")]
    first = offers[0].detail
    # OVMF's HTTP client, by GUID: arch 16, and the boot file is a URL of the iPXE EFI binary.
    assert first["http_boot"] and first["arch"] == "http_x64" and not first["ipxe"]
    assert first["node"] == "h1" and first["guid"] == HTTP_GUID and first["group"] == "uefi"
    assert first["bootfile"].startswith("http://") and \
        first["bootfile"].endswith("/loaders/ipxe/snponly.efi")
    # The loader came over HTTP (OVMF sends HEAD, then GET), not TFTP: no TFTP at all.
    http = [e.detail["path"] for e in events if e.kind == "http-sent"]
    assert "/loaders/ipxe/snponly.efi" in http
    assert not [e for e in events if e.kind.startswith("tftp-")]
    # Then iPXE's own DHCP (PXEClient, arch 7) gets the script URL, never the binary again.
    ipxe_offers = [e.detail for e in offers if e.detail["ipxe"]]
    assert ipxe_offers and all(o["bootfile"].endswith("/ipxe/boot.ipxe") and
                               not o["http_boot"] for o in ipxe_offers)
    script = [e for e in events if e.kind == "ipxe-script"]
    assert len(script) == 1 and script[0].detail["group"] == "uefi"
    assert http.index("/loaders/ipxe/snponly.efi") < http.index("/builds/demo/2.0/vmlinuz")
    kinds = [e.kind for e in events]
    assert kinds.index("ipxe-script") < kinds.index("phone-home")
    node = http_lab.node(HTTP_MAC)
    assert node is not None and node.node == "h1" and node.current_build == "demo/2.0"
