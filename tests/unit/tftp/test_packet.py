"""TFTP codec: round trips, what real ROMs send, and the one exception it may raise."""

from __future__ import annotations

import pytest

from netbootd.errors import MalformedPacket
from netbootd.tftp.packet import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Opcode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    parse_packet,
)


@pytest.mark.parametrize(
    "packet",
    [
        ReadRequest("pxelinux.0", "octet", {}),
        ReadRequest("boot/ipxe.efi", "netascii", {"blksize": "1468", "tsize": "0"}),
        WriteRequest("upload", "octet", {}),
        Data(1, b"x" * 512),
        Data(0, b""),
        Ack(65535),
        Error(ErrorCode.FILE_NOT_FOUND, "file not found"),
        OptionAck({"blksize": "1468", "windowsize": "4"}),
    ],
)
def test_round_trip(packet: object) -> None:
    wire = packet.to_bytes()  # type: ignore[attr-defined]
    assert parse_packet(wire) == packet


def test_rrq_wire_format() -> None:
    wire = ReadRequest("a", "octet", {"tsize": "0"}).to_bytes()
    assert wire == b"\x00\x01a\x00octet\x00tsize\x000\x00"


def test_mode_and_option_names_case_insensitive() -> None:
    pkt = parse_packet(b"\x00\x01pxelinux.0\x00OcTeT\x00BLKSIZE\x001408\x00TSize\x000\x00")
    assert pkt == ReadRequest("pxelinux.0", "octet", {"blksize": "1408", "tsize": "0"})


def test_trailing_ff_junk_after_last_nul_is_ignored() -> None:
    pkt = parse_packet(b"\x00\x01pxelinux.0\x00octet\x00\xff\xff\xff\xff")
    assert pkt == ReadRequest("pxelinux.0", "octet", {})


def test_ff_padding_glued_to_file_name_is_stripped() -> None:
    pkt = parse_packet(b"\x00\x01pxelinux.0\xff\xff\x00octet\x00")
    assert isinstance(pkt, ReadRequest)
    assert pkt.filename == "pxelinux.0"


def test_mode_without_terminating_nul_is_accepted() -> None:
    assert parse_packet(b"\x00\x01file\x00octet") == ReadRequest("file", "octet", {})


def test_dangling_option_name_and_nul_padding_ignored() -> None:
    pkt = parse_packet(b"\x00\x01f\x00octet\x00blksize\x00512\x00tsize\x00")
    assert pkt == ReadRequest("f", "octet", {"blksize": "512"})
    pkt = parse_packet(b"\x00\x01f\x00octet\x00\x00\x00\x00\x00")
    assert pkt == ReadRequest("f", "octet", {})


def test_first_duplicate_option_wins() -> None:
    pkt = parse_packet(b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x001468\x00")
    assert isinstance(pkt, ReadRequest)
    assert pkt.options == {"blksize": "512"}


def test_non_ascii_name_decodes_as_latin1() -> None:
    pkt = parse_packet(b"\x00\x01caf\xe9\x80\x00octet\x00")
    assert isinstance(pkt, ReadRequest)
    assert pkt.filename == "caf\xe9\x80"
    assert pkt.to_bytes() == b"\x00\x01caf\xe9\x80\x00octet\x00"


def test_mail_mode_parses_and_is_refused_later() -> None:
    pkt = parse_packet(b"\x00\x01f\x00MAIL\x00")
    assert isinstance(pkt, ReadRequest)
    assert pkt.mode == "mail"


def test_wrq_is_not_a_read_request() -> None:
    pkt = parse_packet(b"\x00\x02f\x00octet\x00")
    assert isinstance(pkt, WriteRequest)
    assert not isinstance(pkt, ReadRequest)


def test_error_without_nul_and_unknown_code() -> None:
    assert parse_packet(b"\x00\x05\x00\x08abort") == Error(8, "abort")
    assert parse_packet(b"\x00\x05\x01\x00") == Error(256, "")


def test_ack_with_padding() -> None:
    assert parse_packet(b"\x00\x04\x00\x07\x00\x00") == Ack(7)


def test_block_numbers_wrap_on_encode() -> None:
    assert Data(65536, b"").to_bytes() == b"\x00\x03\x00\x00"
    assert Ack(65537).to_bytes() == b"\x00\x04\x00\x01"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),
        (b"\x00\x07abc", "bad-opcode"),
        (b"\xff\xff", "bad-opcode"),
        (b"\x00\x01", "truncated"),
        (b"\x00\x01pxelinux.0", "truncated"),
        (b"\x00\x01\x00octet\x00", "empty-filename"),
        (b"\x00\x01\xff\xff\x00octet\x00", "empty-filename"),
        (b"\x00\x01file\x00", "no-mode"),
        (b"\x00\x03\x00", "truncated"),
        (b"\x00\x04\x00", "truncated"),
        (b"\x00\x05\x00", "truncated"),
    ],
)
def test_malformed(wire: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket) as info:
        parse_packet(wire)
    assert info.value.reason == reason


def test_opcode_and_error_code_values() -> None:
    assert [int(o) for o in Opcode] == [1, 2, 3, 4, 5, 6]
    assert int(ErrorCode.OPTION_REFUSED) == 8
    assert int(ErrorCode.UNKNOWN_TID) == 5
