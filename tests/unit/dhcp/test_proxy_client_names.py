"""What a client calls itself in DHCP: option 12 (host name) and option 77 (user class) are
read into its identity as bounded, printable text, whatever bytes it sent."""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import PxeRequest, classify

MAC = bytes.fromhex("525400abcdef")
VENDOR = b"PXEClient:Arch:00007:UNDI:003000"


def _identity_of(*extra: tuple[int, bytes]) -> PxeRequest:
    options = [(53, b"\x01"), (93, b"\x00\x07"), (60, VENDOR), *extra, "end"]
    raw = bytes(BOOTP(op=1, chaddr=MAC, xid=7) / DHCP(options=options)).ljust(300, b"\x00")
    verdict = classify(DhcpPacket.parse(raw), port=67)
    assert isinstance(verdict, PxeRequest)
    return verdict


@pytest.mark.parametrize(("raw", "expected"), [
    (b"web-01", "web-01"),
    (b"web-01\x00\x00", "web-01"),  # NUL-padded, as some firmware sends it
    (b"<script>window.__pwned=1</script>", "<script>window.__pwned=1</script>"),
    ("h\u00f6st".encode(), "h\u00f6st"),
    (b"a\xffb", "a\ufffdb"),  # not UTF-8: replaced, not refused
    (b"a\x1b[31mb\nc\x7f", "a\ufffd[31mb\ufffdc\ufffd"),  # terminal escapes stay inert
    (b"\x00", None),
])
def test_option_12_is_decoded_safely(raw: bytes, expected: str | None) -> None:
    assert _identity_of((12, raw)).identity.dhcp_hostname == expected


def test_option_12_is_bounded() -> None:
    name = _identity_of((12, b"x" * 255)).identity.dhcp_hostname
    assert name == "x" * 253


def test_absent_options_leave_the_fields_empty() -> None:
    ident = _identity_of().identity
    assert ident.dhcp_hostname is None and ident.user_class is None


def test_option_77_user_class_is_text_and_ipxe_still_detected() -> None:
    req = _identity_of((77, b"<img src=x onerror=alert(1)>\x07"), (12, b"n1"))
    assert req.identity.user_class == "<img src=x onerror=alert(1)>\ufffd"
    assert req.identity.dhcp_hostname == "n1" and not req.is_ipxe
    ipxe = _identity_of((77, b"iPXE"))
    assert ipxe.identity.user_class == "iPXE" and ipxe.is_ipxe
