"""Boot file choice per arch code, incl. UEFI HTTP Boot (16 x64, 18 ARM32, 19 ARM64)."""

from __future__ import annotations

import pytest

from netbootd.config import DEFAULT_BOOTFILES
from netbootd.core.bootfile import NoLoader, choose_bootfile
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.plan import BootPlan

BASE = "http://10.77.0.1:8080"


def plan(loader: str, arch: Arch) -> BootPlan:
    return BootPlan(identity=ClientIdentity(mac="52:54:00:00:00:01", arch=arch), node=None,
                    group="g", mode="appliance", loader=loader, build=None, hostname="h",
                    cmdline="", user_data=None)


def choose(loader: str, arch: Arch, *, http_boot: bool, is_ipxe: bool = False):  # type: ignore[no-untyped-def]
    return choose_bootfile(plan(loader, arch), arch, is_ipxe=is_ipxe, http_boot=http_boot,
                           bootfiles=DEFAULT_BOOTFILES, http_base=BASE, server_ip="192.0.2.1")


@pytest.mark.parametrize("loader", ["pxelinux", "ipxe"])
def test_x64_http_boot_gets_the_ipxe_efi_binary_by_url(loader: str) -> None:
    # pxelinux cannot be fetched by URL: HTTP Boot always starts iPXE.
    t = choose(loader, Arch.HTTP_X64, http_boot=True)
    assert t.via_http and t.bootfile == f"{BASE}/loaders/ipxe/snponly.efi"


def test_x64_pxe_and_http_boot_differ_only_in_transport() -> None:
    pxe = choose("ipxe", Arch.EFI_BC, http_boot=False)
    assert not pxe.via_http and pxe.bootfile == "ipxe/snponly.efi"
    assert choose("ipxe", Arch.EFI_X64, http_boot=False) == pxe


def test_arm64_http_boot_uses_the_arm64_family() -> None:
    t = choose("ipxe", Arch.HTTP_ARM64, http_boot=True)
    assert t.via_http and t.bootfile == f"{BASE}/loaders/{DEFAULT_BOOTFILES['ipxe']['arm64']}"


def test_arm32_http_boot_has_no_loader() -> None:
    with pytest.raises(NoLoader, match="arch family arm32"):
        choose("ipxe", Arch.HTTP_ARM32, http_boot=True)


def test_ipxe_itself_gets_its_script_whatever_the_arch() -> None:
    for arch in (Arch.BIOS, Arch.EFI_BC, Arch.HTTP_X64):
        t = choose("ipxe", arch, http_boot=False, is_ipxe=True)
        assert t.via_http and t.bootfile == f"{BASE}/ipxe/boot.ipxe"


def test_arm64_grub_by_tftp_and_by_url() -> None:
    """Debian's signed arm64 network GRUB is the arm64 NBP: TFTP for PXE (11), URL for 19."""
    t = choose("grub", Arch.EFI_ARM64, http_boot=False)
    assert not t.via_http and t.bootfile == "grub/grubaa64.efi"
    t = choose("grub", Arch.HTTP_ARM64, http_boot=True)
    assert t.via_http and t.bootfile == f"{BASE}/loaders/grub/grubaa64.efi"


def test_secure_boot_over_http_boot_starts_shim_by_url() -> None:
    """HTTP Boot (16) of a secure_boot node: shim's URL; shim then fetches grubx64.efi from
    the same folder (tests/unit/test_shim_http_path.py)."""
    from dataclasses import replace

    p = replace(plan("grub", Arch.HTTP_X64), secure_boot=True)
    t = choose_bootfile(p, Arch.HTTP_X64, is_ipxe=False, http_boot=True,
                        bootfiles=DEFAULT_BOOTFILES, http_base=BASE, server_ip="192.0.2.1")
    assert t.via_http and t.bootfile == f"{BASE}/loaders/grub/shimx64.efi"
