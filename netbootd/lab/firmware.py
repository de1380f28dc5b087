"""Firmware files and tools the lab's guests need: SeaBIOS, iPXE NIC ROMs, OVMF, AAVMF.

Paths are those of Debian's packages (seabios, ipxe-qemu, ovmf, qemu-efi-aarch64);
:func:`lab_prerequisites` lists what is missing for one kind of guest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

# bios: SeaBIOS; uefi: OVMF (x86-64); aavmf: AAVMF, an ARM64 UEFI guest (qemu-system-aarch64).
Firmware = Literal["bios", "uefi", "aavmf"]

QEMU = "qemu-system-x86_64"
QEMU_AARCH64 = "qemu-system-aarch64"  # package qemu-system-arm
AAVMF_DIR = Path("/usr/share/AAVMF")  # package qemu-efi-aarch64
AAVMF_CODE, AAVMF_VARS = AAVMF_DIR / "AAVMF_CODE.fd", AAVMF_DIR / "AAVMF_VARS.fd"
OVMF_DIR = Path("/usr/share/OVMF")
# (code, vars template) pairs in order of preference; code and vars must come from the same pair.
OVMF_PAIRS: tuple[tuple[str, str], ...] = (
    ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("OVMF_CODE.fd", "OVMF_VARS.fd"),
)
IPXE_ROM_DIR = Path("/usr/lib/ipxe/qemu")
# QEMU 7.2's default option ROM per NIC model (BIOS and EFI images in one file).
NIC_ROMS: dict[str, str] = {
    "virtio-net-pci": "efi-virtio.rom",
    "e1000": "efi-e1000.rom",
    "e1000e": "efi-e1000e.rom",
    "rtl8139": "efi-rtl8139.rom",
}
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
# OVMF reads these fw_cfg files at start (OvmfPkg's NetworkPcds): with both PXE stacks off, its
# boot manager goes to UEFI HTTP Boot at once instead of after ~130 s of PXE timeouts.
OVMF_HTTP_BOOT_ONLY: tuple[tuple[str, str], ...] = (
    ("opt/org.tianocore/IPv4PXESupport", "n"),
    ("opt/org.tianocore/IPv6PXESupport", "n"),
)


def ovmf_files() -> tuple[Path, Path] | None:
    """(OVMF code, OVMF vars template) from the ovmf package, or None when not installed."""
    for code, vars_ in OVMF_PAIRS:
        if (OVMF_DIR / code).is_file() and (OVMF_DIR / vars_).is_file():
            return OVMF_DIR / code, OVMF_DIR / vars_
    return None


SB_OVMF = ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")


def secure_boot_ovmf_files() -> tuple[Path, Path] | None:
    """(OVMF Secure Boot code, vars with Microsoft's keys and Secure Boot on), or None."""
    code, vars_ = OVMF_DIR / SB_OVMF[0], OVMF_DIR / SB_OVMF[1]
    return (code, vars_) if code.is_file() and vars_.is_file() else None


def _base_prerequisites() -> list[str]:
    """What the lab itself needs, whatever the guests' firmware."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, taps)")
    for tool in (QEMU, "dnsmasq", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (not on PATH)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing


def lab_prerequisites(firmware: Firmware | None = None) -> list[str]:
    """What is missing to run the lab (empty list: everything is there).

    ``firmware`` limits the firmware checks to what one kind of guest needs ("bios": SeaBIOS
    and iPXE NIC ROMs; "uefi": OVMF; "aavmf": qemu-system-aarch64 and AAVMF); None checks
    bios and uefi.
    """
    missing = _base_prerequisites()
    if firmware in (None, "bios"):
        if not SEABIOS.is_file():
            missing.append(f"{SEABIOS} (package seabios)")
        for rom in ("efi-virtio.rom", "efi-e1000.rom"):
            if not (IPXE_ROM_DIR / rom).is_file():
                missing.append(f"{IPXE_ROM_DIR / rom} (package ipxe-qemu)")
    if firmware in (None, "uefi") and ovmf_files() is None:
        missing.append(f"{OVMF_DIR}/OVMF_CODE_4M.fd and OVMF_VARS_4M.fd (package ovmf)")
    if firmware == "aavmf":
        if shutil.which(QEMU_AARCH64) is None:
            missing.append(f"{QEMU_AARCH64} (package qemu-system-arm)")
        if not (AAVMF_CODE.is_file() and AAVMF_VARS.is_file()):
            missing.append(f"{AAVMF_CODE} and {AAVMF_VARS.name} (package qemu-efi-aarch64)")
    return missing

