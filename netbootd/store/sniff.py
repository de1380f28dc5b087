"""What a file looks like from its first bytes, and whether it fits its role in an import
(``check_role`` is pure; ``check_import`` reads each file's first ``HEAD_BYTES``).

Magic numbers, each where its format puts it:

- ISO 9660: ``CD001`` at 0x8001 (ECMA-119 8.4: the first volume descriptor, sector 16);
- squashfs: ``hsqs`` at 0 (little-endian superblock magic);
- x86 bzImage: ``HdrS`` at 0x202 (Documentation/arch/x86/boot.rst);
- arm64 Image: ``ARM\\x64`` at 0x38 (Documentation/arch/arm64/booting.rst);
- PE/EFI: ``MZ`` at 0 (an EFI application, or an EFI-stub kernel that lacks the above);
- cpio ``070701``/``070702`` (newc, what initramfs is), gzip ``1f 8b``, zstd
  ``28 b5 2f fd``, xz ``fd 37 7a 58 5a 00``, lz4 legacy ``02 21 4c 18``: initrds.

Only a positive match refuses: a file nothing here recognises is imported as the operator
says (test fixtures, formats not listed). Compressed files may be initrds, compressed
kernels or compressed disk images, so they fit every role but a root file system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from netbootd.errors import BuildError

HEAD_BYTES: Final = 0x8006

_COMPRESSED: Final = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd",
                      b"\xfd7zXZ\x00": "xz", b"\x02\x21\x4c\x18": "lz4"}


def looks_like(head: bytes) -> str | None:
    """``iso``, ``squashfs``, ``kernel``, ``efi``, ``cpio``, ``gzip``... or None."""
    if head[0x8001:0x8006] == b"CD001":
        return "iso"
    if head[:4] == b"hsqs":
        return "squashfs"
    if head[0x202:0x206] == b"HdrS" or head[0x38:0x3C] == b"ARM\x64":
        return "kernel"
    if head[:2] == b"MZ":
        return "efi"
    if head[:6] in (b"070701", b"070702"):
        return "cpio"
    return next((name for magic, name in _COMPRESSED.items() if head.startswith(magic)), None)


_WHAT: Final = {
    "iso": "an ISO 9660 image (CD001 at 0x8001)",
    "squashfs": "a squashfs file system (hsqs)",
    "kernel": "a Linux kernel (bzImage HdrS at 0x202, or arm64 Image ARM\\x64 at 0x38)",
    "efi": "a PE/EFI executable (MZ)",
    "cpio": "a cpio archive (an initramfs)",
}
_FITS: Final = {
    "iso": "an ESXi installer ISO: --kind esxi; a hybrid ISO to write to a disk: --kind disk",
    "squashfs": "a root file system: --rootfs FILE with --kind linux",
    "kernel": "the kernel: the first FILE of --kind linux",
    "efi": "the kernel (EFI stub): the first FILE of --kind linux",
    "cpio": "an initrd: a FILE after the kernel in --kind linux",
}
_ROLE: Final = {"kernel": "a kernel", "initrd": "an initrd", "rootfs": "a root file system",
                "disk": "a disk image", "esxi": "an ESXi installer ISO"}
# role -> what is refused in it
_REFUSED: Final = {
    "kernel": {"iso", "squashfs", "cpio"},
    "initrd": {"iso", "squashfs", "kernel", "efi"},
    "rootfs": {"iso", "kernel", "efi", "cpio", "gzip", "zstd", "xz", "lz4"},
    "disk": {"squashfs", "kernel", "efi", "cpio"},
    "esxi": {"squashfs", "kernel", "efi", "cpio", "gzip", "zstd", "xz", "lz4"},
}


def check_role(role: str, name: str, head: bytes) -> None:
    """Refuse ``name`` as the ``role`` of an import (kernel, initrd, rootfs, disk, esxi)
    when its bytes say it is something else; the message says which ``--kind`` fits."""
    found = looks_like(head)
    if found is None or found not in _REFUSED[role]:
        if role == "esxi" and found is None and len(head) >= 0x8006:
            raise BuildError(f"{name} is not an ISO 9660 image (no CD001 at 0x8001); "
                             "--kind esxi takes VMware's installer ISO")
        return
    what = _WHAT.get(found, f"{found}-compressed data")
    fits = _FITS.get(found, "an initrd (after the kernel) or a compressed disk image")
    raise BuildError(f"{name} looks like {what}, not {_ROLE[role]}; it fits as {fits}")


def check_import(kind: str, paths: list[Path], rootfs: Path | None = None) -> None:
    """``check_role`` for every regular file of an import (a pipe is not read ahead)."""
    roles = {"linux": ["kernel"] + ["initrd"] * (len(paths) - 1), "disk": ["disk"],
             "esxi": ["esxi"]}.get(kind, [])
    pairs = [*zip(roles, paths, strict=False), *([("rootfs", rootfs)] if rootfs else [])]
    for role, path in pairs:
        if path.is_file():
            with path.open("rb") as f:
                check_role(role, path.name, f.read(HEAD_BYTES))
