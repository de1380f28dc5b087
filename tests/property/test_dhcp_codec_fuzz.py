"""Fuzzing the DHCP codec and proxy rules: bad bytes only ever raise MalformedPacket."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP

from netbootd.dhcp.packet import MAGIC_COOKIE, DhcpPacket
from netbootd.dhcp.proxy import BootAnswer, PxeRequest, build_reply, classify, reply_destination
from netbootd.errors import MalformedPacket

MAC = bytes.fromhex("525400123456")
GUID_97 = bytes.fromhex("004f5a1c8e7d2b394c9a600f1e2d3c4b5a")


def _wire(options: list[tuple[int, bytes]], **bootp: Any) -> bytes:
    fields: dict[str, Any] = {"op": 1, "chaddr": MAC, "xid": 0x1A2B3C4D}
    fields.update(bootp)
    return bytes(BOOTP(**fields) / DHCP(options=[*options, "end"])).ljust(300, b"\x00")


# pxe-facts.md client table: QEMU BIOS iPXE ROM DISCOVER, OVMF EDK2 DISCOVER and 4011 REQUEST,
# a UEFI HTTP Boot DISCOVER.
SEEDS = [
    _wire([(53, b"\x01"), (57, b"\x05\xc0"), (93, b"\x00\x00"), (94, b"\x01\x02\x01"),
           (60, b"PXEClient:Arch:00000:UNDI:002001"), (77, b"iPXE"),
           (55, bytes([1, 3, 6, 43, 60, 66, 67, 175])), (175, b"\xb1\x05\x01\x80\x86\x10\x0e"),
           (61, b"\x01" + MAC), (97, GUID_97)]),
    _wire([(53, b"\x01"), (57, b"\x05\xc0"), (55, bytes([1, 3, 43, 60, 66, 67, 97])),
           (97, GUID_97), (94, b"\x01\x03\x00"), (93, b"\x00\x07"),
           (60, b"PXEClient:Arch:00007:UNDI:003000")], flags=0x8000),
    _wire([(53, b"\x03"), (57, b"\x05\xc0"), (97, GUID_97), (93, b"\x00\x07"),
           (60, b"PXEClient:Arch:00007:UNDI:003000")], ciaddr="192.0.2.50"),
    _wire([(53, b"\x01"), (93, b"\x00\x10"), (60, b"HTTPClient:Arch:00016:UNDI:003001")],
          giaddr="198.51.100.1"),
]
ANSWERS = [BootAnswer("192.0.2.1", "bios/lpxelinux.0"),
           BootAnswer("192.0.2.1", "http://192.0.2.1/ipxe/" + "x" * 400)]


def _parse_or_malformed(data: bytes) -> DhcpPacket | None:
    try:
        return DhcpPacket.parse(data)
    except MalformedPacket:
        return None


@given(st.binary(max_size=1500))
def test_any_bytes_parse_or_raise_malformed(data: bytes) -> None:
    packet = _parse_or_malformed(data)
    if packet is not None:
        assert DhcpPacket.parse(packet.to_bytes()) == packet


@given(st.binary(min_size=236, max_size=236), st.binary(max_size=600))
def test_any_option_area_behind_a_valid_cookie(header: bytes, area: bytes) -> None:
    packet = _parse_or_malformed(header + MAGIC_COOKIE + area)
    if packet is not None:
        assert DhcpPacket.parse(packet.to_bytes()) == packet


_ip = st.ip_addresses(v=4).map(str)
_options = st.lists(
    st.tuples(st.integers(1, 254).filter(lambda c: c != 52), st.binary(max_size=600)),
    max_size=12, unique_by=lambda o: o[0],
).map(tuple)


@given(
    op=st.sampled_from([1, 2]), htype=st.integers(0, 255), hlen=st.integers(0, 16),
    hops=st.integers(0, 255), xid=st.integers(0, 2**32 - 1), secs=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFFFF), ciaddr=_ip, yiaddr=_ip, siaddr=_ip, giaddr=_ip,
    chaddr=st.binary(max_size=16), sname=st.binary(max_size=64), file=st.binary(max_size=128),
    options=_options,
)
def test_valid_packets_round_trip(**fields: object) -> None:
    packet = DhcpPacket(**fields)  # type: ignore[arg-type]
    raw = packet.to_bytes()
    assert len(raw) >= 300
    assert DhcpPacket.parse(raw) == packet


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        pos = where % (len(buf) + 1)
        if kind == "flip" and pos < len(buf):
            buf[pos] = value
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf.insert(pos, value)
    return bytes(buf)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.sampled_from(SEEDS), st.lists(_mutation, max_size=6), st.sampled_from(ANSWERS),
       st.booleans())
def test_mutated_pxe_packets_never_break_the_proxy(
    seed: bytes, mutations: list[tuple[str, int, int]], answer: BootAnswer, offer_bootfile: bool,
) -> None:
    packet = _parse_or_malformed(_mutate(seed, mutations))
    if packet is None:
        return
    for port in (67, 4011):
        verdict = classify(packet, port=port)
        if isinstance(verdict, PxeRequest):
            reply = build_reply(packet, verdict, answer, port=port, offer_bootfile=offer_bootfile)
            assert reply.yiaddr == "0.0.0.0"
            assert DhcpPacket.parse(reply.to_bytes()) == reply
            host, dport = reply_destination(packet, ("192.0.2.50", 68), port=port)
            assert host and 0 < dport < 65536


# The header's dotted-quad conversion is hand-written for speed; it must agree with ipaddress
# on every address and reject exactly what ipaddress rejects.
_dotted_like = st.one_of(
    st.text(max_size=20),
    st.lists(st.one_of(st.integers(-1, 999).map(str), st.sampled_from(
        ["", " 1", "1 ", "01", "00", "+1", "1_0", "0x1", "\uff11", "²"])), min_size=1,
        max_size=6).map(".".join),
)


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
def test_header_addresses_match_ipaddress(ciaddr: bytes, giaddr: bytes) -> None:
    raw = bytearray(_wire([(53, b"\x01")]))
    raw[12:16] = ciaddr
    raw[24:28] = giaddr
    packet = DhcpPacket.parse(bytes(raw))
    assert packet.ciaddr == str(ipaddress.IPv4Address(ciaddr))
    assert packet.giaddr == str(ipaddress.IPv4Address(giaddr))
    assert packet.to_bytes()[12:16] == ciaddr
    assert packet.to_bytes()[24:28] == giaddr


@given(_dotted_like)
def test_address_validation_matches_ipaddress(text: str) -> None:
    try:
        expected: bytes | None = ipaddress.IPv4Address(text).packed
    except ValueError:
        expected = None
    packet = DhcpPacket(op=1, htype=1, hlen=6, hops=0, xid=0, secs=0, flags=0,
                        ciaddr="0.0.0.0", yiaddr="0.0.0.0", siaddr=text, giaddr="0.0.0.0",
                        chaddr=MAC, sname=b"", file=b"", options=())
    if expected is None:
        with pytest.raises(ValueError, match="siaddr"):
            packet.to_bytes()
    else:
        assert packet.to_bytes()[20:24] == expected
