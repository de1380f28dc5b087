"""The BOOTP/DHCP message codec (pure: bytes in, ``DhcpPacket`` out and back).

Owns the fixed header (RFC 2131 section 2, figure 1), the magic cookie (RFC 2131 section 3,
RFC 2132 section 2), option overload (RFC 2132 section 9.3) and the 300-byte BOOTP minimum.
Anything that is not a well-formed message raises ``MalformedPacket`` (with a stable ``reason``
used as a counter label) and nothing else, so the endpoint can count and drop it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from netbootd.core.identity import mac_from_bytes
from netbootd.dhcp.options import (
    DhcpOption,
    MessageType,
    Options,
    decode_options,
    encode_options,
    find_option,
)
from netbootd.errors import MalformedPacket

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1  # ARP hardware type 1 (RFC 1700)

MAGIC_COOKIE = b"\x63\x82\x53\x63"  # 99.130.83.99, RFC 2132 section 2
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_SIZE = _HEADER.size  # 236
MIN_SIZE = HEADER_SIZE + len(MAGIC_COOKIE)  # 240: header and cookie, no options
# RFC 1542 section 2.1 / RFC 951: a BOOTP message is at least 300 bytes; some PXE ROMs drop
# shorter replies, so every encoded message is zero-padded up to this size.
BOOTP_MIN_SIZE = 300

CHADDR_SIZE = 16
SNAME_SIZE = 64
FILE_SIZE = 128

# Option 52 values (RFC 2132 section 9.3): which of file/sname also hold options.
_OVERLOAD_FILE = 1
_OVERLOAD_SNAME = 2

ZERO_IP = "0.0.0.0"
_END = bytes((DhcpOption.END,))


_ZERO_IP_BYTES = bytes(4)
# Each octet of a dotted quad exactly as ipaddress.IPv4Address accepts it: decimal 0..255 with
# no sign, whitespace, leading zero or non-ASCII digit. A lookup is both the check and the value.
_OCTETS = {str(i): i for i in range(256)}


def _ip_from_bytes(raw: bytes) -> str:
    # Four header fields per packet, usually all zero: formatting directly is several times
    # faster than building ipaddress.IPv4Address objects.
    if raw == _ZERO_IP_BYTES:
        return ZERO_IP
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


# Addresses encoded lately: a reply carries the server's address, the relay's and 0.0.0.0,
# the same few strings in every packet. Bounded: a flood of relayed packets with distinct
# giaddrs only refills it.
_ENCODED_IPS: dict[str, bytes] = {ZERO_IP: _ZERO_IP_BYTES}
_ENCODED_IPS_MAX = 256


def _ip_to_bytes(name: str, text: str) -> bytes:
    if isinstance(text, str):
        raw = _ENCODED_IPS.get(text)
        if raw is not None:
            return raw
        parts = text.split(".")
        if len(parts) == 4:
            try:
                raw = bytes([_OCTETS[part] for part in parts])
            except KeyError:
                pass
            else:
                if len(_ENCODED_IPS) >= _ENCODED_IPS_MAX:
                    _ENCODED_IPS.clear()
                    _ENCODED_IPS[ZERO_IP] = _ZERO_IP_BYTES
                _ENCODED_IPS[text] = raw
                return raw
    raise ValueError(f"{name} must be a dotted IPv4 address, got {text!r}")


def _pad(name: str, value: bytes, size: int) -> bytes:
    if len(value) == size and type(value) is bytes:  # parsed fields: already their size
        return value
    if len(value) > size:
        raise ValueError(f"{name} holds at most {size} bytes, got {len(value)}")
    return bytes(value) + b"\x00" * (size - len(value))


def _normalized(options: Options) -> Options:
    """``options`` as a tuple of ``(int, bytes)`` pairs (callers may pass IntEnums, bytearrays)."""
    if type(options) is tuple and all(type(c) is int and type(v) is bytes for c, v in options):
        return options
    return tuple((int(c), bytes(v)) for c, v in options)


@dataclass(frozen=True)
class DhcpPacket:
    """One BOOTP/DHCP message.

    ``chaddr``, ``sname`` and ``file`` are stored NUL-padded to their field sizes (16, 64, 128),
    so a packet built with ``file=b"pxelinux.0"`` equals the same packet parsed back.
    ``options`` is the option area after the magic cookie; when option 52 (overload) is set, the
    options carried in ``file``/``sname`` are found by ``option()`` but ``file``/``sname`` keep
    their raw bytes, so encoding stays lossless. Building a packet whose option 52 is invalid or
    whose overloaded areas do not decode raises ``MalformedPacket``, as parsing it would.
    """

    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: bytes
    sname: bytes
    file: bytes
    options: Options
    # Every option including those overloaded into file/sname, concatenated per RFC 3396.
    _all_options: Options = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chaddr", _pad("chaddr", self.chaddr, CHADDR_SIZE))
        object.__setattr__(self, "sname", _pad("sname", self.sname, SNAME_SIZE))
        object.__setattr__(self, "file", _pad("file", self.file, FILE_SIZE))
        object.__setattr__(self, "options", _normalized(self.options))
        object.__setattr__(self, "_all_options", self._merge_overloaded())

    def _merge_overloaded(self) -> Options:
        overload = find_option(self.options, DhcpOption.OVERLOAD)
        if overload is None:
            return self.options
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise MalformedPacket("bad-overload", f"option 52 must be 1, 2 or 3, got {overload!r}")
        # RFC 3396 section 7: concatenate in the order options, file, sname.
        areas = [self.options]
        if overload[0] & _OVERLOAD_FILE:
            areas.append(decode_options(self.file, area="file")[0])
        if overload[0] & _OVERLOAD_SNAME:
            areas.append(decode_options(self.sname, area="sname")[0])
        if any(find_option(area, DhcpOption.OVERLOAD) is not None for area in areas[1:]):
            # RFC 2132 section 9.3 allows option 52 only in the option area. One inside an
            # overloaded field would point at fields again: a loop a naive decoder follows
            # forever (a classic DHCP parser bug), and never sent by a real client.
            raise MalformedPacket("overload-loop", "option 52 inside an overloaded file/sname")
        order: list[int] = []
        merged: dict[int, bytes] = {}
        for area in areas:
            for code, value in area:
                if code not in merged:
                    order.append(code)
                    merged[code] = b""
                merged[code] += value
        return tuple((code, merged[code]) for code in order)

    @classmethod
    def parse(cls, data: bytes) -> DhcpPacket:
        """Decode one UDP payload; raise ``MalformedPacket`` for anything that is not DHCP."""
        if len(data) < MIN_SIZE:
            raise MalformedPacket("truncated", f"{len(data)} bytes, DHCP needs >= {MIN_SIZE}")
        (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
         file) = _HEADER.unpack_from(data)
        if op not in (BOOTREQUEST, BOOTREPLY):
            raise MalformedPacket("bad-opcode", f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
        if hlen > CHADDR_SIZE:
            raise MalformedPacket("bad-hlen", f"hlen {hlen} exceeds the {CHADDR_SIZE}-byte chaddr")
        cookie = data[HEADER_SIZE:MIN_SIZE]
        if cookie != MAGIC_COOKIE:
            raise MalformedPacket("bad-magic-cookie", f"got {cookie.hex()} (plain BOOTP?)")
        options, _saw_end = decode_options(data[MIN_SIZE:])
        # Every field already has its final type and size (the struct slices chaddr, sname and
        # file to 16/64/128 bytes; decode_options yields (int, bytes) pairs), so __post_init__'s
        # normalisation is skipped: the frozen instance's fields are set directly, once.
        packet = object.__new__(cls)
        packet.__dict__.update(
            op=op, htype=htype, hlen=hlen, hops=hops, xid=xid, secs=secs, flags=flags,
            ciaddr=_ip_from_bytes(ciaddr), yiaddr=_ip_from_bytes(yiaddr),
            siaddr=_ip_from_bytes(siaddr), giaddr=_ip_from_bytes(giaddr),
            chaddr=chaddr, sname=sname, file=file, options=options,
        )
        packet.__dict__["_all_options"] = packet._merge_overloaded()
        return packet

    def to_bytes(self) -> bytes:
        """Encode: header, cookie, options, END, zero padding up to 300 bytes.

        Raises ``ValueError`` when a field is out of range (a bug in the caller, not bad input).
        """
        if self.hlen > CHADDR_SIZE:
            raise ValueError(f"hlen={self.hlen} is out of range 0..{CHADDR_SIZE}")
        try:
            header = _HEADER.pack(
                self.op, self.htype, self.hlen, self.hops, self.xid, self.secs, self.flags,
                _ip_to_bytes("ciaddr", self.ciaddr), _ip_to_bytes("yiaddr", self.yiaddr),
                _ip_to_bytes("siaddr", self.siaddr), _ip_to_bytes("giaddr", self.giaddr),
                self.chaddr, self.sname, self.file,
            )
        except struct.error:
            # The struct checks every integer's range itself (B, H, I are unsigned); only
            # when it refuses are the fields walked to say which one.
            for name, value, limit in (("op", self.op, 0xFF), ("htype", self.htype, 0xFF),
                                       ("hlen", self.hlen, CHADDR_SIZE), ("hops", self.hops, 0xFF),
                                       ("xid", self.xid, 0xFFFFFFFF), ("secs", self.secs, 0xFFFF),
                                       ("flags", self.flags, 0xFFFF)):
                if not 0 <= value <= limit:
                    raise ValueError(f"{name}={value} is out of range 0..{limit}") from None
            raise
        out = b"".join((header, MAGIC_COOKIE, encode_options(self.options), _END))
        return out.ljust(BOOTP_MIN_SIZE, b"\x00")

    def option(self, code: int) -> bytes | None:
        """The value of option ``code`` (concatenated over every instance and overloaded area)."""
        return find_option(self._all_options, code)

    @property
    def all_options(self) -> Options:
        """Every option, including those overloaded into ``file``/``sname``."""
        return self._all_options

    @property
    def message_type(self) -> MessageType | None:
        """Option 53 as a ``MessageType``; None when absent, not one byte, or unknown."""
        raw = self.option(DhcpOption.MESSAGE_TYPE)
        if raw is None or len(raw) != 1:
            return None
        try:
            return MessageType(raw[0])
        except ValueError:
            return None

    @property
    def mac(self) -> str | None:
        """The client MAC from chaddr, for Ethernet (htype 1, hlen 6) only; None otherwise."""
        if self.htype != HTYPE_ETHERNET or self.hlen != 6:
            return None
        return mac_from_bytes(self.chaddr[:6])

    @property
    def bootfile(self) -> str:
        """The ``file`` field up to its first NUL, decoded leniently (for logs and tests).

        Empty when option 52 says ``file`` holds options instead of a name.
        """
        overload = find_option(self.options, DhcpOption.OVERLOAD)
        if overload is not None and overload[0] & _OVERLOAD_FILE:
            return ""
        return self.file.split(b"\x00", 1)[0].decode("utf-8", "replace")
