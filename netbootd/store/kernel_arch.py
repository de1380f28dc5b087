"""Which CPU architecture a Linux kernel image is built for, read from its first bytes (pure).

A build records the architecture of the machines it boots (``amd64`` or ``arm64``); at import
it is read from the kernel where its header says so:

- arm64 ``Image`` (Documentation/arch/arm64/booting.rst): the magic ``ARM\\x64`` at offset 0x38.
  Debian's arm64 ``vmlinuz`` is such an image (uncompressed, with an EFI stub and signed).
- PE/COFF (an EFI-stub kernel or an EFI application): ``MZ``, the PE header offset at 0x3c,
  ``PE\\0\\0`` then the COFF machine type (PE format spec: 0x8664 x64, 0xaa64 ARM64).
- x86 bzImage (Documentation/arch/x86/boot.rst): ``HdrS`` at 0x202; boot protocol 2.12+
  sets XLF_KERNEL_64 (bit 0 of xloadflags at 0x236) when the kernel is 64-bit.

A compressed kernel (gzip, zstd...) or anything else gives None: the caller decides.
"""

from __future__ import annotations

import struct
from typing import Final

from netbootd.core.model import ARCHES, DEFAULT_ARCH

__all__ = ["ARCHES", "DEFAULT_ARCH", "HEAD_BYTES", "kernel_arch"]

HEAD_BYTES: Final = 4096  # enough for every header read below

_PE_MACHINES: Final = {0x8664: "amd64", 0xAA64: "arm64"}


def kernel_arch(head: bytes) -> str | None:
    """``amd64``, ``arm64`` or None (not recognised) from the first ``HEAD_BYTES`` of a kernel."""
    if head[0x38:0x3C] == b"ARM\x64":
        return "arm64"
    if head[0x202:0x206] == b"HdrS" and len(head) >= 0x237:
        (version,) = struct.unpack_from("<H", head, 0x206)
        if version >= 0x20C:
            return "amd64" if head[0x236] & 1 else None
        # Older boot protocols do not say; their PE header (below), if any, still does.
    if head[:2] == b"MZ" and len(head) >= 0x40:
        (pe,) = struct.unpack_from("<I", head, 0x3C)
        if pe + 6 <= len(head) and head[pe:pe + 4] == b"PE\0\0":
            (machine,) = struct.unpack_from("<H", head, pe + 4)
            return _PE_MACHINES.get(machine)
    return None
