#!/usr/bin/env python3
"""Build a small bootable raw disk image that prints a marker on COM1: the reimage test payload.

Run as::

    python3 images/disk/build.py --out FILE --marker TEXT [--size-mib N] [--compression C]

The image is what a lab's reimage writes onto a node's disk, small enough for CI:

* Sector 0 is an MBR whose boot code (hand-assembled 16-bit x86 below, byte by byte) sets up
  COM1 (I/O port 0x3f8, 115200 8N1), prints ``\\r\\n<marker>\\r\\n`` on it, then writes to I/O
  port 0xf4. With QEMU's ``-device isa-debug-exit,iobase=0xf4,iosize=0x04`` that write ends
  QEMU with exit status ``(0x2a << 1) | 1`` = 85; without that device the write goes nowhere and
  the code halts (``cli; hlt`` in a loop). SeaBIOS loads the sector at 0000:7C00 and jumps to
  it when the last two bytes are 55 AA (the boot signature).
* Every following 4 KiB block is 64 copies of a 64-byte SHAKE-256 digest of (marker, block
  number): deterministic, never all zero, different in every block (so a wrong, shifted or
  partial write changes the sha256) and compressible (so gzip/xz files are smaller than raw).

The file written is the raw image (``--compression none``, the default) or its gzip (mtime 0) or
xz stream; both compressors are deterministic, so the same arguments give the same bytes. One
JSON line on stdout describes it: ``raw_size``, ``raw_sha256``, ``file``, ``file_size``,
``file_sha256``, ``compression`` — what ``netbootd.disk_size`` / ``netbootd.disk_sha256`` /
``netbootd.disk_compression`` on the installer's command line need.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # images/: the shared recipe code
from recipe_common import file_entry

SECTOR = 512
BLOCK = 4096
MIB = 1 << 20
LOAD_ADDRESS = 0x7C00  # where the BIOS loads sector 0 (segment 0)
EXIT_VALUE = 0x2A  # written to isa-debug-exit; QEMU exits with (value << 1) | 1
MAX_MARKER = 200
COMPRESSIONS = ("none", "gzip", "xz")


class DiskError(Exception):
    """Bad arguments; the message says what to change."""


def _u16(v: int) -> bytes:
    return struct.pack("<H", v)


def boot_code(message_address: int) -> bytes:
    """The MBR program up to (excluding) its message; ``message_address`` is where that starts.

    Real mode, CS=DS=SS=0 assumed only after we set them. Every instruction with its encoding
    (Intel SDM vol. 2 opcode tables; 16-bit operand size is the default in real mode).
    """
    com1 = 0x3F8

    def out8(port: int, value: int) -> bytes:
        # BA iw : mov dx, imm16      B0 ib : mov al, imm8      EE : out dx, al
        return b"\xba" + _u16(port) + b"\xb0" + bytes([value]) + b"\xee"

    code = b"".join([
        b"\xfa",                      # cli                 no interrupts while the stack moves
        b"\x31\xc0",                  # xor ax, ax          (31 /r, modrm 11 000 000)
        b"\x8e\xd8",                  # mov ds, ax          (8E /r, sreg 011=ds, rm 000=ax)
        b"\x8e\xd0",                  # mov ss, ax          (sreg 010=ss)
        b"\xbc" + _u16(LOAD_ADDRESS),  # mov sp, 0x7c00     stack grows down below the code
        b"\xfb",                      # sti
        b"\xfc",                      # cld                 lodsb counts upwards
        # 16550 UART init, as Linux's 8250 driver and SeaBIOS do it:
        out8(com1 + 1, 0x00),         # IER = 0             no UART interrupts
        out8(com1 + 3, 0x80),         # LCR = DLAB          next two ports are the divisor
        out8(com1 + 0, 0x01),         # DLL = 1             115200 baud (1.8432 MHz / 16 / 1)
        out8(com1 + 1, 0x00),         # DLM = 0
        out8(com1 + 3, 0x03),         # LCR = 8N1, DLAB off
        out8(com1 + 2, 0xC7),         # FCR = enable + clear FIFOs, 14-byte trigger
        out8(com1 + 4, 0x03),         # MCR = DTR | RTS
        b"\xbe" + _u16(message_address),  # mov si, message
    ])
    # next:                      offset 0 of the loop
    loop = b"".join([
        b"\xac",                      # lodsb               al = [ds:si], si += 1
        b"\x84\xc0",                  # test al, al         (84 /r, modrm 11 000 000)
        b"\x74\x12",                  # jz done             +18: over the 18 bytes below
        b"\x88\xc4",                  # mov ah, al          keep the byte (88 /r, 11 000 100)
        b"\xba" + _u16(com1 + 5),     # mov dx, 0x3fd       line status register
        # wait:
        b"\xec",                      # in al, dx
        b"\xa8\x20",                  # test al, 0x20       THRE: transmit holding reg. empty
        b"\x74\xfb",                  # jz wait             -5: back to "in al, dx"
        b"\x88\xe0",                  # mov al, ah          (88 /r, modrm 11 100 000)
        b"\xba" + _u16(com1),         # mov dx, 0x3f8       transmit holding register
        b"\xee",                      # out dx, al
        b"\xeb\xe9",                  # jmp next            -23: back to lodsb
        # done:
        b"\xb0" + bytes([EXIT_VALUE]),  # mov al, 0x2a
        b"\xe6\xf4",                  # out 0xf4, al        isa-debug-exit: QEMU exits here
        # halt:                       (only reached without isa-debug-exit)
        b"\xfa",                      # cli
        b"\xf4",                      # hlt
        b"\xeb\xfc",                  # jmp halt            -4: back to cli
    ])
    # Jump displacements count from the end of the jump: jz done ends at loop offset 5 and
    # done is at 23; jz wait ends at 15, wait is at 10; jmp next ends at 23, next is at 0.
    if (loop[3:5], loop[13:15], loop[21:23], len(loop)) != (b"t\x12", b"t\xfb", b"\xeb\xe9", 31):
        raise AssertionError("boot code layout changed: recompute the jump displacements")
    return code + loop


def mbr(marker: str) -> bytes:
    """Sector 0: boot code, ``\\r\\n<marker>\\r\\n\\0``, zero padding, boot signature 55 AA."""
    text = b"\r\n" + marker.encode("ascii") + b"\r\n\0"
    probe = boot_code(0)
    code = boot_code(LOAD_ADDRESS + len(probe))
    sector = code + text
    if len(sector) > 446:  # keep clear of the partition table (offset 446, 4 x 16 bytes)
        raise DiskError(f"marker too long: boot sector would need {len(sector)} bytes > 446")
    return sector.ljust(510, b"\0") + b"\x55\xaa"


def data_blocks(marker: str, raw_size: int) -> Iterator[bytes]:
    """The image after sector 0, in chunks of at most 1 MiB."""
    remaining = raw_size - SECTOR
    # block 0 is shortened by one sector so that blocks stay 4 KiB aligned on the disk
    index = 0
    first = True
    while remaining > 0:
        chunk = bytearray()
        while len(chunk) < MIB and remaining - len(chunk) > 0:
            digest = hashlib.shake_256(f"{marker}\0{index}".encode()).digest(64)
            block = digest * (BLOCK // 64)
            if first:
                block = block[SECTOR:]
                first = False
            chunk += block[: remaining - len(chunk)]
            index += 1
        remaining -= len(chunk)
        yield bytes(chunk)


def validate(marker: str, size_mib: int, compression: str) -> None:
    """Raise DiskError listing every problem with the arguments."""
    problems: list[str] = []
    if not marker or len(marker) > MAX_MARKER:
        problems.append(f"--marker must be 1..{MAX_MARKER} characters")
    if not all(0x20 <= ord(c) < 0x7F for c in marker):
        problems.append("--marker must be printable ASCII (it is printed on a serial port)")
    if not 1 <= size_mib <= 65536:
        problems.append("--size-mib must be between 1 and 65536")
    if compression not in COMPRESSIONS:
        problems.append(f"--compression must be one of {', '.join(COMPRESSIONS)}")
    if problems:
        raise DiskError("; ".join(problems))


def _open_compressed(
    f: BinaryIO, compression: str
) -> gzip.GzipFile | lzma.LZMAFile | BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0, filename="")
    if compression == "xz":
        # CRC32 check: what busybox xzcat/unxz verify (it skips unsupported SHA-256 checks)
        return lzma.LZMAFile(f, mode="wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    return f


def build(
    out: Path, marker: str, size_mib: int = 4, compression: str = "none"
) -> dict[str, object]:
    """Write the image to ``out`` (aside, then renamed); its description."""
    validate(marker, size_mib, compression)
    raw_size = size_mib * MIB
    raw_hash = hashlib.sha256()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            stream = _open_compressed(f, compression)
            try:
                for piece in (mbr(marker), *data_blocks(marker, raw_size)):
                    raw_hash.update(piece)
                    stream.write(piece)
            finally:
                if stream is not f:
                    stream.close()
            f.flush()
            os.fsync(f.fileno())
        written = file_entry(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "raw_size": raw_size,
        "raw_sha256": raw_hash.hexdigest(),
        "file": str(out),
        "file_size": written["size"],
        "file_sha256": written["sha256"],
        "compression": compression,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True, help="image file to write")
    ap.add_argument("--marker", required=True, help="text the disk prints on COM1 when booted")
    ap.add_argument("--size-mib", type=int, default=4, help="raw image size in MiB (default 4)")
    ap.add_argument("--compression", default="none", choices=COMPRESSIONS,
                    help="compress the written file (default: none)")
    args = ap.parse_args(argv)
    try:
        info = build(args.out.resolve(), args.marker, args.size_mib, args.compression)
    except (DiskError, OSError) as exc:
        print(f"disk: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
