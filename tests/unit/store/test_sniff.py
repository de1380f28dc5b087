"""Kind checks at import by magic bytes (store/sniff.py): what each header looks like, which
roles refuse it and what the message suggests; unknown bytes are never refused."""

from __future__ import annotations

import pytest

from netbootd.errors import BuildError
from netbootd.store.sniff import check_role, looks_like


def at(offset: int, magic: bytes, size: int = 0x8006) -> bytes:
    data = bytearray(size)
    data[offset:offset + len(magic)] = magic
    return bytes(data)


ISO = at(0x8001, b"CD001")
BZIMAGE = at(0x202, b"HdrS")
ARM64 = at(0x38, b"ARM\x64")
SQUASHFS = at(0, b"hsqs")
CPIO = at(0, b"070701")


@pytest.mark.parametrize(("head", "kind"), [
    (ISO, "iso"), (BZIMAGE, "kernel"), (ARM64, "kernel"), (at(0, b"MZ"), "efi"),
    (SQUASHFS, "squashfs"), (CPIO, "cpio"), (at(0, b"070702"), "cpio"),
    (at(0, b"\x1f\x8b"), "gzip"), (at(0, b"\x28\xb5\x2f\xfd"), "zstd"),
    (at(0, b"\xfd7zXZ\x00"), "xz"), (at(0, b"\x02\x21\x4c\x18"), "lz4"),
    (b"kernel 1.0", None), (b"", None), (bytes(0x9000), None),
])
def test_looks_like(head: bytes, kind: str | None) -> None:
    assert looks_like(head) == kind


@pytest.mark.parametrize(("role", "head", "says"), [
    ("kernel", ISO, "k looks like an ISO 9660 image (CD001 at 0x8001), not a kernel; it fits "
                    "as an ESXi installer ISO: --kind esxi"),
    ("kernel", CPIO, "not a kernel; it fits as an initrd"),
    ("initrd", BZIMAGE, "not an initrd; it fits as the kernel: the first FILE"),
    ("initrd", SQUASHFS, "it fits as a root file system: --rootfs FILE"),
    ("rootfs", at(0, b"\x1f\x8b"), "gzip-compressed data, not a root file system"),
    ("disk", ARM64, "not a disk image"),
    ("esxi", BZIMAGE, "not an ESXi installer ISO"),
    ("esxi", bytes(0x8006), "is not an ISO 9660 image (no CD001 at 0x8001)"),
])
def test_a_file_that_is_plainly_something_else_is_refused(role: str, head: bytes,
                                                          says: str) -> None:
    with pytest.raises(BuildError) as e:
        check_role(role, "k", head)
    assert says in str(e.value)


@pytest.mark.parametrize(("role", "head"), [
    ("kernel", BZIMAGE), ("kernel", ARM64), ("kernel", at(0, b"MZ")),
    ("kernel", at(0, b"\x1f\x8b")), ("kernel", b"kernel 1.0"), ("initrd", CPIO),
    ("initrd", at(0, b"\x28\xb5\x2f\xfd")), ("rootfs", SQUASHFS), ("disk", at(0, b"\xfd7zXZ\x00")),
    ("disk", ISO), ("disk", b"\x01" * 4096), ("esxi", ISO), ("esxi", b"short"),
])
def test_what_fits_or_is_unknown_passes(role: str, head: bytes) -> None:
    check_role(role, "f", head)
