"""What a build file's first bytes say it is, and whether that fits its role (pure).

``netbootd image import`` takes any file as a kernel; an ISO handed over as ``vmlinuz`` is
stored, served, and only fails on the node ("invalid magic number" from pxelinux, a hang in
iPXE). ``check`` reads each referenced build's kernel head and refuses what is certainly
another kind of file. The signatures (offsets from the start of the file):

- ISO 9660 volume descriptor: ``CD001`` at 0x8001 (ECMA-119 8.1: sector 16, after the type
  byte); an El Torito hybrid ISO also starts with an MBR, so this is read first.
- x86 bzImage: ``HdrS`` at 0x202 (Documentation/arch/x86/boot.rst).
- arm64 ``Image``: ``ARM\\x64`` at 0x38 (Documentation/arch/arm64/booting.rst).
- PE/COFF (EFI-stub kernel, ESXi's ``mboot.efi``): ``MZ`` at 0.
- Archives an initrd may be: gzip ``1f 8b``, zstd ``28 b5 2f fd``, xz ``fd 37 7a 58 5a 00``,
  lz4 ``02 21 4c 18``, bzip2 ``BZh``, cpio ``070701``/``070702``/``070707``.
- A multiboot kernel (ESXi's ``b.b00``): the magic ``0x1BADB002`` within the first 8 KiB.
- QCOW2 ``QFI\\xfb`` and a ``.img`` MBR (``55 aa`` at 510) for disk images.
"""

from __future__ import annotations

from typing import Final

HEAD_BYTES: Final = 0x8010  # through the ISO 9660 signature

_ARCHIVES: Final = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"),
                    (b"\xfd7zXZ\x00", "xz"), (b"\x02\x21\x4c\x18", "lz4"), (b"BZh", "bzip2"),
                    (b"070701", "cpio"), (b"070702", "cpio"), (b"070707", "cpio"))
_MULTIBOOT: Final = (0x1BADB002).to_bytes(4, "little")


def file_kind(head: bytes) -> str:
    """``iso9660``, ``bzimage``, ``arm64-image``, ``pe``, ``multiboot``, an archive name
    (``gzip``, ``cpio``...), ``qcow2``, ``mbr``, ``empty`` or ``unknown``."""
    if not head:
        return "empty"
    if head[0x8001:0x8006] == b"CD001":
        return "iso9660"
    if head[0x202:0x206] == b"HdrS":
        return "bzimage"
    if head[0x38:0x3C] == b"ARM\x64":
        return "arm64-image"
    if head[:2] == b"MZ":
        return "pe"
    for magic, name in _ARCHIVES:
        if head.startswith(magic):
            return name
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if _MULTIBOOT in head[:8192]:
        return "multiboot"
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        return "mbr"
    return "unknown"


KERNEL_KINDS: Final = ("bzimage", "arm64-image", "pe")
# Certainly not a Linux kernel: a loader would refuse these bytes outright.
NOT_A_KERNEL: Final = ("iso9660", "empty", "qcow2", "mbr", "cpio", "multiboot")
# Certainly not an initrd: the kernel unpacks cpio (optionally compressed) only.
NOT_AN_INITRD: Final = ("iso9660", "empty", "qcow2", "mbr", "bzimage", "arm64-image", "pe")


def kernel_verdict(head: bytes) -> tuple[bool, str]:
    """(certainly wrong, what the bytes are) for a Linux build's kernel file. Compressed
    kernels (gzip ``vmlinuz`` on arm64 Debian before 12) and unknown bytes are not certain."""
    kind = file_kind(head)
    return kind in NOT_A_KERNEL, kind


def initrd_verdict(head: bytes) -> tuple[bool, str]:
    """(certainly wrong, what the bytes are) for a Linux build's initrd."""
    kind = file_kind(head)
    return kind in NOT_AN_INITRD, kind


DESCRIBE: Final = {
    "iso9660": "an ISO 9660 image (CD001 at 0x8001)",
    "bzimage": "an x86 bzImage kernel",
    "arm64-image": "an arm64 kernel Image",
    "pe": "a PE/EFI executable",
    "multiboot": "a multiboot kernel",
    "qcow2": "a QCOW2 disk image",
    "mbr": "a disk image (MBR boot signature)",
    "empty": "empty",
    "unknown": "not a recognised format",
}


def describe(kind: str) -> str:
    return DESCRIBE.get(kind, f"a {kind} archive")
