"""DHCP codec tests on packets built with scapy (not our codec), as real clients send them.

The client table mirrors pxe-facts.md "What clients send": option codes in the observed order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from netbootd.dhcp.options import DhcpOption, MessageType, decode_options, encode_options
from netbootd.dhcp.packet import DhcpPacket
from netbootd.errors import MalformedPacket

MAC = bytes.fromhex("525400123456")
# QEMU -smbios type=1,uuid=8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a, as it is on the wire (opt 97).
GUID_97 = bytes.fromhex("004f5a1c8e7d2b394c9a600f1e2d3c4b5a")
IPXE_PRL = bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                  133, 134, 135, 175, 203])
EDK2_PRL = bytes([1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54,
                  58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])
IPXE_FEATURES = bytes.fromhex(
    "b1050180861000eb0301000017010113010115010110010221010119010118010125010127")


def _ipxe(arch: int, undi: bytes, vendor: bytes) -> list[tuple[int, bytes]]:
    return [(53, b"\x01"), (57, b"\x05\xc0"), (93, arch.to_bytes(2, "big")), (94, undi),
            (60, vendor), (77, b"iPXE"), (55, IPXE_PRL), (175, IPXE_FEATURES),
            (61, b"\x01" + MAC), (97, GUID_97)]


CLIENTS: dict[str, list[tuple[int, bytes]]] = {
    "qemu-bios-ipxe-rom": _ipxe(0, b"\x01\x02\x01", b"PXEClient:Arch:00000:UNDI:002001"),
    "ovmf-edk2-pxe": [(53, b"\x01"), (57, b"\x05\xc0"), (55, EDK2_PRL), (97, GUID_97),
                      (94, b"\x01\x03\x00"), (93, b"\x00\x07"),
                      (60, b"PXEClient:Arch:00007:UNDI:003000")],
    "ipxe-efi": _ipxe(7, b"\x01\x03\x10", b"PXEClient:Arch:00007:UNDI:003010"),
    "syslinux-efi": [(53, b"\x01"), (57, b"\x05\xc0"), (55, bytes([1, 3, 6, 12, 15, 17, 43]))],
    "udhcpc": [(53, b"\x01"), (57, b"\x02\x40"), (55, bytes([1, 3, 6, 12, 15, 28, 42])),
               (60, b"udhcp 1.35.0"), (61, b"\x01" + MAC)],
}


def wire(options: list[tuple[int, bytes]], *, pad: int = 300, **bootp: Any) -> bytes:
    """A request as scapy encodes it, zero-padded to the BOOTP minimum as clients send it."""
    fields: dict[str, Any] = {"op": 1, "chaddr": MAC, "xid": 0x1A2B3C4D, "flags": 0x8000}
    fields.update(bootp)
    raw = bytes(BOOTP(**fields) / DHCP(options=[*options, "end"]))
    return raw.ljust(pad, b"\x00")


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_recorded_client_round_trips_byte_for_byte(name: str) -> None:
    raw = wire(CLIENTS[name])
    packet = DhcpPacket.parse(raw)
    assert packet.to_bytes() == raw
    assert DhcpPacket.parse(packet.to_bytes()) == packet


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_recorded_client_fields_and_option_order(name: str) -> None:
    raw = wire(CLIENTS[name], ciaddr="192.0.2.9", giaddr="198.51.100.1", secs=4)
    packet = DhcpPacket.parse(raw)
    assert [code for code, _ in packet.options] == [code for code, _ in CLIENTS[name]]
    assert dict(packet.options) == dict(CLIENTS[name])
    assert (packet.op, packet.htype, packet.hlen, packet.hops) == (1, 1, 6, 0)
    assert (packet.xid, packet.flags, packet.secs) == (0x1A2B3C4D, 0x8000, 4)
    assert (packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr) == (
        "192.0.2.9", "0.0.0.0", "0.0.0.0", "198.51.100.1")
    assert packet.mac == "52:54:00:12:34:56"
    assert packet.message_type is MessageType.DISCOVER
    assert packet.chaddr == MAC + bytes(10)
    assert len(packet.sname) == 64 and len(packet.file) == 128


def test_unpadded_packet_without_end_is_tolerated() -> None:
    raw = bytes(BOOTP(op=1, chaddr=MAC) / DHCP(options=CLIENTS["ovmf-edk2-pxe"]))
    assert raw[-1] != 0xFF
    packet = DhcpPacket.parse(raw)
    assert packet.option(DhcpOption.VENDOR_CLASS_ID) == b"PXEClient:Arch:00007:UNDI:003000"
    assert packet.option(DhcpOption.CLIENT_MACHINE_ID) == GUID_97
    assert packet.option(DhcpOption.TFTP_SERVER_NAME) is None


def test_bytes_after_end_are_padding() -> None:
    raw = bytes(BOOTP(op=1, chaddr=MAC) / DHCP(options=[(53, b"\x01"), "end"])) + b"\x3c\xff\xff"
    assert DhcpPacket.parse(raw).options == ((53, b"\x01"),)


def test_encoded_packet_is_padded_to_bootp_minimum() -> None:
    packet = DhcpPacket.parse(wire([(53, b"\x01")], pad=0))
    out = packet.to_bytes()
    assert len(out) == 300
    assert BOOTP(out)[DHCP].options[:2] == [("message-type", 1), "end"]


def test_unknown_options_are_kept_raw_and_reencoded() -> None:
    opts = [(53, b"\x01"), (224, b"\x00\xff\x10"), (175, IPXE_FEATURES), (254, b"")]
    raw = wire(opts)
    packet = DhcpPacket.parse(raw)
    assert packet.option(224) == b"\x00\xff\x10"
    assert packet.option(254) == b""
    assert packet.to_bytes() == raw


def test_split_option_instances_are_concatenated_rfc3396() -> None:
    first, second = b"PXEClient:Arch:", b"00007:UNDI:003000"
    raw = wire([(53, b"\x01"), (60, first), (93, b"\x00\x07"), (60, second)])
    packet = DhcpPacket.parse(raw)
    assert packet.option(60) == first + second
    assert [code for code, _ in packet.options] == [53, 60, 93]


def test_long_option_is_encoded_as_255_byte_chunks() -> None:
    long_value = bytes(range(256)) * 2 + b"tail"  # 516 bytes
    packet = DhcpPacket.parse(wire([(53, b"\x01")]))
    longer = replace(packet, options=((53, b"\x01"), (67, long_value)))
    out = longer.to_bytes()
    chunks = [o[1] for o in BOOTP(out)[DHCP].options if o[0] == "boot-file-name"]
    assert [len(c) for c in chunks] == [255, 255, 6]
    assert b"".join(chunks) == long_value
    assert DhcpPacket.parse(out).option(67) == long_value
    assert DhcpPacket.parse(out) == longer


def test_overloaded_file_and_sname_options_are_found() -> None:
    file_opts = bytes([60, 9]) + b"PXEClient" + bytes([93, 2, 0, 7, 255])
    sname_opts = bytes([60, 4]) + b":ext" + bytes([255])
    raw = wire([(53, b"\x01"), (52, b"\x03")], file=file_opts, sname=sname_opts)
    packet = DhcpPacket.parse(raw)
    assert packet.option(60) == b"PXEClient:ext"  # options, then file, then sname
    assert packet.option(93) == b"\x00\x07"
    assert packet.bootfile == ""
    assert packet.to_bytes() == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (b"\x01", "truncated"),
        (wire([(53, b"\x01")])[:239], "truncated"),
        (wire([(53, b"\x01")]).replace(b"\x63\x82\x53\x63", b"\x63\x82\x53\x64"),
         "bad-magic-cookie"),
        (wire([(53, b"\x01")], op=3), "bad-opcode"),
        (wire([(53, b"\x01")], hlen=17), "bad-hlen"),
        (bytes(BOOTP(op=1) / DHCP(options=[(53, b"\x01")]))[:-1], "truncated-option"),
        (bytes(BOOTP(op=1) / DHCP(options=[(53, b"\x01")])) + b"\x3c", "truncated-option"),
        (bytes(BOOTP(op=1) / DHCP(options=[(60, b"PXEClient")]))[:-3], "truncated-option"),
        (wire([(53, b"\x01"), (52, b"\x04")]), "bad-overload"),
        (wire([(53, b"\x01"), (52, b"\x01")], file=bytes([60, 200, 1, 2])), "truncated-option"),
    ],
)
def test_malformed_input_raises_malformed_packet(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket) as info:
        DhcpPacket.parse(raw)
    assert info.value.reason == reason


def test_message_type_and_mac_helpers() -> None:
    assert DhcpPacket.parse(wire([(57, b"\x05\xc0")])).message_type is None
    assert DhcpPacket.parse(wire([(53, b"\x63")])).message_type is None
    assert DhcpPacket.parse(wire([(53, b"\x01\x02")])).message_type is None
    assert DhcpPacket.parse(wire([(53, b"\x08")])).message_type is MessageType.INFORM
    infiniband = DhcpPacket.parse(wire([(53, b"\x01")], htype=32, hlen=0))
    assert infiniband.mac is None


def test_constructed_packet_normalises_and_validates_fields() -> None:
    base = DhcpPacket.parse(wire([(53, b"\x01")]))
    packet = replace(base, file=b"pxelinux.0", chaddr=MAC)
    assert packet.file == b"pxelinux.0" + bytes(118)
    assert packet.bootfile == "pxelinux.0"
    assert DhcpPacket.parse(packet.to_bytes()) == packet
    with pytest.raises(ValueError, match="file"):
        replace(base, file=b"x" * 129)
    with pytest.raises(ValueError, match="siaddr"):
        replace(base, siaddr="10.0.0.256").to_bytes()
    with pytest.raises(ValueError, match="xid"):
        replace(base, xid=1 << 32).to_bytes()
    with pytest.raises(ValueError, match="option code"):
        replace(base, options=((255, b""),)).to_bytes()


def test_option_area_codec_directly() -> None:
    options, saw_end = decode_options(bytes([0, 0, 53, 1, 1, 0, 255, 60, 1]))
    assert (options, saw_end) == (((53, b"\x01"),), True)
    assert decode_options(bytes([53, 1, 1, 0, 0])) == (((53, b"\x01"),), False)
    assert encode_options(((61, b""),)) == bytes([61, 0])
    assert (int(DhcpOption.CLIENT_MACHINE_ID), int(DhcpOption.END)) == (97, 255)
