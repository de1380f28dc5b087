"""TFTP packet codec: bytes <-> frozen dataclasses, nothing else.

This module owns the wire format of RFC 1350 (RRQ, WRQ, DATA, ACK, ERROR) and of the option
extension of RFC 2347 (options on requests, OACK, error 8). It knows nothing about sessions,
sockets or files. ``parse_packet`` raises only :class:`netbootd.errors.MalformedPacket`, whose
``reason`` is a short stable label the endpoint uses as a counter key.

Tolerance, because real boot ROMs are sloppy:

- bytes after the last complete NUL-terminated field are ignored (old PXE ROMs pad requests with
  0xFF bytes; some send a dangling option name without a value);
- 0xFF padding glued onto the end of a file name is stripped;
- a request whose mode (or an ERROR whose message) lacks its terminating NUL is accepted;
- names and messages are decoded as latin-1, which maps every byte and so never raises;
- option names and the mode are compared case-insensitively (RFC 1350 section 5, RFC 2347), so
  they are lower-cased here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from netbootd.errors import MalformedPacket

__all__ = [
    "MAX_BLKSIZE",
    "MIN_BLKSIZE",
    "Ack",
    "Data",
    "Error",
    "ErrorCode",
    "Opcode",
    "OptionAck",
    "Packet",
    "ReadRequest",
    "WriteRequest",
    "encode_data",
    "parse_packet",
]

# RFC 2348: the blksize option is valid between 8 and 65464 octets.
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464

_U16 = struct.Struct("!H")
_HDR = struct.Struct("!HH")


class Opcode(IntEnum):
    """TFTP opcodes: RFC 1350 section 5, OACK from RFC 2347."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    """ERROR packet codes: RFC 1350 appendix, 8 from RFC 2347 (option negotiation refused)."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


def _encode_str(text: str) -> bytes:
    # latin-1 mirrors the decoder, so parse -> to_bytes round-trips every byte; characters a
    # caller put in that latin-1 cannot hold become "?" instead of raising.
    return text.encode("latin-1", errors="replace") + b"\x00"


def _encode_options(options: dict[str, str]) -> bytes:
    return b"".join(_encode_str(k) + _encode_str(v) for k, v in options.items())


@dataclass(frozen=True)
class _Request:
    filename: str
    mode: str = "octet"
    options: dict[str, str] = field(default_factory=dict)

    opcode: ClassVar[Opcode]

    def to_bytes(self) -> bytes:
        return (
            _U16.pack(self.opcode)
            + _encode_str(self.filename)
            + _encode_str(self.mode)
            + _encode_options(self.options)
        )


@dataclass(frozen=True)
class ReadRequest(_Request):
    """RRQ: ``mode`` lower-cased; ``options`` (RFC 2347) with lower-cased names, first one wins."""

    opcode: ClassVar[Opcode] = Opcode.RRQ


@dataclass(frozen=True)
class WriteRequest(_Request):
    """WRQ: same layout as RRQ (RFC 1350 section 5); a distinct type so it never passes as RRQ."""

    opcode: ClassVar[Opcode] = Opcode.WRQ


@dataclass(frozen=True)
class Data:
    """DATA: a 16-bit block number and up to blksize bytes of payload."""

    block: int
    payload: bytes

    def to_bytes(self) -> bytes:
        return encode_data(self.block, self.payload)


@dataclass(frozen=True)
class Ack:
    """ACK of one 16-bit block number (0 acknowledges an OACK, RFC 2347)."""

    block: int

    def to_bytes(self) -> bytes:
        return _HDR.pack(Opcode.ACK, self.block & 0xFFFF)


@dataclass(frozen=True)
class Error:
    """ERROR: ``code`` is kept as a plain int, since peers send codes outside :class:`ErrorCode`."""

    code: int
    message: str = ""

    def to_bytes(self) -> bytes:
        return _HDR.pack(Opcode.ERROR, self.code & 0xFFFF) + _encode_str(self.message)


@dataclass(frozen=True)
class OptionAck:
    """OACK (RFC 2347): the options the server accepted, with the values it will use."""

    options: dict[str, str]

    def to_bytes(self) -> bytes:
        return _U16.pack(Opcode.OACK) + _encode_options(self.options)


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck


def encode_data(block: int, payload: bytes) -> bytes:
    """DATA datagram bytes without building a dataclass (the per-block hot path)."""
    return _HDR.pack(Opcode.DATA, block & 0xFFFF) + payload


def _fields(body: bytes) -> tuple[list[bytes], bytes]:
    """Split NUL-terminated fields; returns (complete fields, the NUL-less tail)."""
    parts = body.split(b"\x00")
    return parts[:-1], parts[-1]


def _parse_options(fields: list[bytes]) -> dict[str, str]:
    options: dict[str, str] = {}
    # Pairs only: a trailing name without a value is junk from a sloppy client, not an error.
    for i in range(0, len(fields) - 1, 2):
        name = fields[i].decode("latin-1").lower()
        if not name:
            # An empty name means padding (runs of NULs); nothing after it is trustworthy.
            break
        options.setdefault(name, fields[i + 1].decode("latin-1"))
    return options


def _parse_request(opcode: Opcode, body: bytes) -> ReadRequest | WriteRequest:
    fields, tail = _fields(body)
    if not fields:
        raise MalformedPacket("truncated", "request without a NUL-terminated file name")
    raw_name = fields[0].rstrip(b"\xff")
    if not raw_name:
        raise MalformedPacket("empty-filename", "request with an empty file name")
    if len(fields) >= 2:
        mode = fields[1]
        option_fields = fields[2:]
    else:
        # Mode not NUL-terminated: accept the rest of the datagram as the mode.
        mode = tail
        option_fields = []
    mode = mode.rstrip(b"\xff")
    if not mode:
        raise MalformedPacket("no-mode", "request without a transfer mode")
    cls: type[ReadRequest] | type[WriteRequest] = (
        ReadRequest if opcode is Opcode.RRQ else WriteRequest
    )
    return cls(
        filename=raw_name.decode("latin-1"),
        mode=mode.decode("latin-1").lower(),
        options=_parse_options(option_fields),
    )


def parse_packet(data: bytes) -> Packet:
    """Decode one datagram; raises only :class:`MalformedPacket`."""
    if len(data) < 2:
        raise MalformedPacket("truncated", f"{len(data)} byte(s), no opcode")
    raw_opcode = (data[0] << 8) | data[1]
    try:
        opcode = Opcode(raw_opcode)
    except ValueError:
        raise MalformedPacket("bad-opcode", f"opcode {raw_opcode}") from None
    if opcode is Opcode.RRQ or opcode is Opcode.WRQ:
        return _parse_request(opcode, data[2:])
    if opcode is Opcode.OACK:
        fields, _tail = _fields(data[2:])
        return OptionAck(_parse_options(fields))
    if len(data) < 4:
        raise MalformedPacket("truncated", f"{opcode.name} of {len(data)} bytes")
    number = (data[2] << 8) | data[3]
    if opcode is Opcode.DATA:
        return Data(number, bytes(data[4:]))
    if opcode is Opcode.ACK:
        # Extra bytes after an ACK are padding (some stacks pad to a minimum frame); ignored.
        return Ack(number)
    message = data[4:].split(b"\x00", 1)[0]
    return Error(number, message.decode("latin-1"))
