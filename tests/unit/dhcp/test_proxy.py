"""ProxyDHCP decision tests: requests built and replies decoded with scapy, not our codec.

The client table mirrors pxe-facts.md "What clients send" (option codes in the observed order);
reply rules follow pxe-facts.md "The proxy exchange".
"""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from netbootd.core.identity import Arch
from netbootd.dhcp.options import MessageType
from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import (
    BootAnswer,
    Ignored,
    PxeRequest,
    address_hint,
    build_reply,
    classify,
    reply_destination,
)

MAC = bytes.fromhex("525400123456")
GUID_97 = bytes.fromhex("004f5a1c8e7d2b394c9a600f1e2d3c4b5a")
GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
IPXE_PRL = bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                  133, 134, 135, 175, 203])
EDK2_PRL = bytes([1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54,
                  58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])
IPXE_FEATURES = bytes.fromhex("b1050180861000eb03010000170101130101150101")
SERVER = "192.0.2.1"
TFTP_ANSWER = BootAnswer(server_ip=SERVER, bootfile="bios/lpxelinux.0")
LEASE_AND_NETWORK_OPTIONS = ("requested_addr", "lease_time", "renewal_time", "rebinding_time",
                             "subnet_mask", "router", "name_server", "domain")


def _ipxe(arch: int, undi: bytes, vendor: bytes, mtype: int = 1) -> list[tuple[int, bytes]]:
    return [(53, bytes([mtype])), (57, b"\x05\xc0"), (93, arch.to_bytes(2, "big")), (94, undi),
            (60, vendor), (77, b"iPXE"), (55, IPXE_PRL), (175, IPXE_FEATURES),
            (61, b"\x01" + MAC), (97, GUID_97)]


def _edk2(mtype: int = 1) -> list[tuple[int, bytes]]:
    return [(53, bytes([mtype])), (57, b"\x05\xc0"), (55, EDK2_PRL), (97, GUID_97),
            (94, b"\x01\x03\x00"), (93, b"\x00\x07"), (60, b"PXEClient:Arch:00007:UNDI:003000")]


CLIENTS: dict[str, list[tuple[int, bytes]]] = {
    "qemu-bios-ipxe-rom": _ipxe(0, b"\x01\x02\x01", b"PXEClient:Arch:00000:UNDI:002001"),
    "ovmf-edk2-pxe": _edk2(),
    "ipxe-efi": _ipxe(7, b"\x01\x03\x10", b"PXEClient:Arch:00007:UNDI:003010"),
    "syslinux-efi": [(53, b"\x01"), (57, b"\x05\xc0"), (55, bytes([1, 3, 6, 12, 15, 17, 43]))],
    "udhcpc": [(53, b"\x01"), (57, b"\x02\x40"), (55, bytes([1, 3, 6, 12, 15, 28, 42])),
               (60, b"udhcp 1.35.0"), (61, b"\x01" + MAC)],
}
PXE_CLIENTS = ("qemu-bios-ipxe-rom", "ovmf-edk2-pxe", "ipxe-efi")
# name -> (arch, is_ipxe, vendor class)
EXPECTED = {
    "qemu-bios-ipxe-rom": (Arch.BIOS, True, "PXEClient:Arch:00000:UNDI:002001"),
    "ovmf-edk2-pxe": (Arch.EFI_BC, False, "PXEClient:Arch:00007:UNDI:003000"),
    "ipxe-efi": (Arch.EFI_BC, True, "PXEClient:Arch:00007:UNDI:003010"),
}


def wire(options: list[tuple[int, bytes]], **bootp: Any) -> bytes:
    fields: dict[str, Any] = {"op": 1, "chaddr": MAC, "xid": 0x1A2B3C4D, "flags": 0x8000}
    fields.update(bootp)
    return bytes(BOOTP(**fields) / DHCP(options=[*options, "end"])).ljust(300, b"\x00")


def packet_of(options: list[tuple[int, bytes]], **bootp: Any) -> DhcpPacket:
    return DhcpPacket.parse(wire(options, **bootp))


def pxe(packet: DhcpPacket, port: int) -> PxeRequest:
    verdict = classify(packet, port=port)
    if not isinstance(verdict, PxeRequest):
        pytest.fail(f"expected a PXE request, got {verdict}")
    return verdict


def scapy_reply(reply: DhcpPacket) -> tuple[Any, dict[str, Any]]:
    """Decode our reply with scapy; options as name -> value (single-valued ones unwrapped)."""
    raw = reply.to_bytes()
    assert len(raw) >= 300
    decoded = BOOTP(raw)
    opts: dict[str, Any] = {}
    for o in decoded[DHCP].options:
        if isinstance(o, tuple):
            assert o[0] not in opts, f"option {o[0]} repeated"
            opts[o[0]] = o[1] if len(o) == 2 else o[1:]
    return decoded, opts


def answer_for(
    request: PxeRequest, packet: DhcpPacket, *, port: int, offer_bootfile: bool,
    answer: BootAnswer = TFTP_ANSWER,
) -> tuple[Any, dict[str, Any]]:
    return scapy_reply(build_reply(packet, request, answer, port=port,
                                   offer_bootfile=offer_bootfile))


# --- classify ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PXE_CLIENTS)
def test_pxe_clients_are_classified_with_their_identity(name: str) -> None:
    request = pxe(packet_of(CLIENTS[name]), 67)
    arch, is_ipxe, vendor = EXPECTED[name]
    assert request.identity.mac == "52:54:00:12:34:56"
    assert request.identity.guid == GUID
    assert request.identity.arch is arch
    assert request.identity.vendor_class == vendor
    assert request.identity.user_class == ("iPXE" if is_ipxe else None)
    assert request.identity.ip is None
    assert request.is_ipxe is is_ipxe
    assert request.message_type is MessageType.DISCOVER
    assert (request.http_boot, request.relayed) == (False, False)


@pytest.mark.parametrize("name", ["syslinux-efi", "udhcpc"])
@pytest.mark.parametrize("port", [67, 4011])
def test_non_pxe_clients_are_ignored(name: str, port: int) -> None:
    assert classify(packet_of(CLIENTS[name]), port=port) == Ignored("not-pxe")


def test_option_97_all_zero_guid_is_no_identity() -> None:
    options = [(97, bytes(17)) if code == 97 else (code, v) for code, v in _edk2()]
    assert pxe(packet_of(options), 67).identity.guid is None


def test_rfc3004_user_class_and_unknown_arch() -> None:
    options = [*_edk2()[:-1], (77, b"\x03foo\x04iPXE"), (60, b"PXEClient")]
    options = [(93, b"\x00\x63\x00\x07") if c == 93 else (c, v) for c, v in options]
    request = pxe(packet_of(options), 67)
    assert request.is_ipxe
    assert request.identity.user_class == "foo"
    assert request.identity.arch is None  # 99 is not a known arch; only the first counts


def test_http_boot_client_and_relay() -> None:
    options = [(53, b"\x01"), (93, b"\x00\x10"), (97, GUID_97),
               (60, b"HTTPClient:Arch:00016:UNDI:003001")]
    request = pxe(packet_of(options, giaddr="198.51.100.1"), 67)
    assert request.http_boot and request.relayed
    assert request.identity.arch is Arch.HTTP_X64


@pytest.mark.parametrize(("code", "arch", "family"), [
    (16, Arch.HTTP_X64, "efi64"), (18, Arch.HTTP_ARM32, "arm32"), (19, Arch.HTTP_ARM64, "arm64")])
def test_http_boot_arch_codes(code: int, arch: Arch, family: str) -> None:
    """OVMF sends HTTPClient:Arch:00016 (measured); AAVMF's HTTP Boot sends 19 (UEFI 2.5+)."""
    options = [(53, b"\x01"), (93, code.to_bytes(2, "big")), (97, GUID_97),
               (60, b"HTTPClient:Arch:%05d:UNDI:003000" % code)]
    request = pxe(packet_of(options), 67)
    assert request.http_boot and not request.is_ipxe
    assert request.identity.arch is arch and arch.family == family and arch.is_http_boot


@pytest.mark.parametrize(
    ("options", "bootp", "port", "reason"),
    [
        (_edk2(mtype=3), {}, 67, "request-for-site-server"),
        (_edk2(mtype=1), {}, 4011, "unsupported-message-type"),
        (_edk2(mtype=7), {}, 67, "unsupported-message-type"),
        (_edk2(mtype=99), {}, 4011, "unsupported-message-type"),
        (_edk2()[1:], {}, 67, "no-message-type"),
        (_edk2(), {"op": 2}, 67, "not-bootrequest"),
        (_edk2(), {"htype": 32, "hlen": 0}, 67, "no-client-mac"),
        (_edk2(), {"chaddr": bytes(6)}, 67, "no-client-mac"),
        ([(60, b"PXEClien"), (53, b"\x01")], {}, 67, "not-pxe"),
    ],
)
def test_ignored_reasons(options: list[tuple[int, bytes]], bootp: dict[str, object],
                         port: int, reason: str) -> None:
    assert classify(packet_of(options, **bootp), port=port) == Ignored(reason)


@pytest.mark.parametrize("mtype", [MessageType.REQUEST, MessageType.INFORM])
def test_4011_answers_request_and_inform(mtype: MessageType) -> None:
    request = pxe(packet_of(_edk2(mtype=mtype), ciaddr="192.0.2.50"), 4011)
    assert request.message_type is mtype
    assert request.identity.ip == "192.0.2.50"


def test_classify_rejects_unknown_local_port() -> None:
    with pytest.raises(ValueError, match="4011"):
        classify(packet_of(_edk2()), port=6767)


# --- build_reply --------------------------------------------------------------------------------

def _common_reply_checks(decoded: Any, opts: dict[str, Any], packet: DhcpPacket) -> None:
    assert decoded.op == 2
    assert decoded.yiaddr == "0.0.0.0"
    assert decoded.xid == packet.xid and decoded.flags == packet.flags
    assert decoded.giaddr == packet.giaddr
    assert bytes(decoded.chaddr) == packet.chaddr
    assert opts["server_id"] == SERVER
    for name in LEASE_AND_NETWORK_OPTIONS:
        assert name not in opts, name
    sent_97 = packet.option(97)
    if sent_97 is None:
        assert "pxe_client_machine_identifier" not in opts
    else:
        assert opts["pxe_client_machine_identifier"] == sent_97


@pytest.mark.parametrize("name", PXE_CLIENTS)
def test_offer_with_bootfile_strategy(name: str) -> None:
    packet = packet_of(CLIENTS[name])
    decoded, opts = answer_for(pxe(packet, 67), packet, port=67, offer_bootfile=True)
    _common_reply_checks(decoded, opts, packet)
    assert opts["message-type"] == MessageType.OFFER
    assert opts["vendor_class_id"] == b"PXEClient"
    assert decoded.siaddr == SERVER
    assert decoded.file.rstrip(b"\x00") == b"bios/lpxelinux.0"
    assert opts["boot-file-name"] == b"bios/lpxelinux.0"
    assert opts["tftp_server_name"] == SERVER.encode()
    # PXE_DISCOVERY_CONTROL (sub-option 6) = 8: boot the offered file, no discovery, then END.
    assert opts["vendor_specific"] == b"\x06\x01\x08\xff"
    assert decoded.ciaddr == "0.0.0.0"


@pytest.mark.parametrize("name", PXE_CLIENTS)
def test_offer_without_bootfile_sends_client_to_4011(name: str) -> None:
    packet = packet_of(CLIENTS[name])
    decoded, opts = answer_for(pxe(packet, 67), packet, port=67, offer_bootfile=False)
    _common_reply_checks(decoded, opts, packet)
    assert opts["message-type"] == MessageType.OFFER
    assert opts["vendor_class_id"] == b"PXEClient"
    assert decoded.siaddr == SERVER
    assert decoded.file.rstrip(b"\x00") == b""
    for absent in ("vendor_specific", "boot-file-name", "tftp_server_name"):
        assert absent not in opts


@pytest.mark.parametrize("offer_bootfile", [True, False])
@pytest.mark.parametrize(
    ("options", "source_port"),
    [(_edk2(mtype=3), 4011), (_ipxe(7, b"\x01\x03\x10", b"PXEClient:Arch:00007", 3), 68),
     (_edk2(mtype=8), 4011)],
)
def test_4011_ack_carries_the_boot_file(options: list[tuple[int, bytes]], source_port: int,
                                        offer_bootfile: bool) -> None:
    packet = packet_of(options, ciaddr="192.0.2.50", flags=0)
    answer = BootAnswer(server_ip=SERVER, bootfile="efi64/ipxe.efi", tftp_server_name="boot.lan")
    decoded, opts = answer_for(pxe(packet, 4011), packet, port=4011,
                               offer_bootfile=offer_bootfile, answer=answer)
    _common_reply_checks(decoded, opts, packet)
    assert opts["message-type"] == MessageType.ACK
    assert opts["vendor_class_id"] == b"PXEClient"
    assert decoded.siaddr == SERVER
    assert decoded.ciaddr == "192.0.2.50"
    assert decoded.file.rstrip(b"\x00") == b"efi64/ipxe.efi"
    assert opts["boot-file-name"] == b"efi64/ipxe.efi"
    assert opts["tftp_server_name"] == b"boot.lan"
    assert "vendor_specific" not in opts
    assert reply_destination(packet, ("192.0.2.50", source_port), port=4011) == (
        "192.0.2.50", source_port)


@pytest.mark.parametrize("offer_bootfile", [True, False])
def test_http_boot_offer_carries_url_and_never_option_43(offer_bootfile: bool) -> None:
    options = [(53, b"\x01"), (93, b"\x00\x10"), (60, b"HTTPClient:Arch:00016:UNDI:003001")]
    packet = packet_of(options)
    url = "http://192.0.2.1:8080/boot/efi64/ipxe.efi"
    decoded, opts = answer_for(pxe(packet, 67), packet, port=67, offer_bootfile=offer_bootfile,
                               answer=BootAnswer(server_ip=SERVER, bootfile=url))
    _common_reply_checks(decoded, opts, packet)
    assert opts["vendor_class_id"] == b"HTTPClient"
    assert decoded.file.rstrip(b"\x00") == url.encode()
    assert opts["boot-file-name"] == url.encode()
    assert "vendor_specific" not in opts
    assert "tftp_server_name" not in opts  # a URL names its own server


def test_ipxe_script_url_longer_than_file_field_goes_only_in_option_67() -> None:
    packet = packet_of(CLIENTS["ipxe-efi"])
    url = "http://192.0.2.1:8080/ipxe/" + "n" * 300 + ".ipxe"
    reply = build_reply(packet, pxe(packet, 67), BootAnswer(SERVER, url), port=67,
                        offer_bootfile=True)
    decoded = BOOTP(reply.to_bytes())
    assert decoded.file.rstrip(b"\x00") == b""
    chunks = [o[1] for o in decoded[DHCP].options if o[0] == "boot-file-name"]
    assert len(chunks) == 2 and b"".join(chunks) == url.encode()  # RFC 3396 split
    assert DhcpPacket.parse(reply.to_bytes()).option(67) == url.encode()


def test_bootfile_of_exactly_127_bytes_still_fits_file() -> None:
    packet = packet_of(CLIENTS["ovmf-edk2-pxe"])
    name = "d/" + "x" * 125
    reply = build_reply(packet, pxe(packet, 67), BootAnswer(SERVER, name), port=67,
                        offer_bootfile=True)
    assert reply.file == name.encode() + b"\x00"
    too_long = build_reply(packet, pxe(packet, 67), BootAnswer(SERVER, name + "y"), port=67,
                           offer_bootfile=True)
    assert too_long.file == bytes(128)


def test_build_reply_rejects_caller_bugs() -> None:
    packet = packet_of(CLIENTS["ovmf-edk2-pxe"])
    request = pxe(packet, 67)
    with pytest.raises(ValueError, match="DISCOVER"):
        build_reply(packet, request, TFTP_ANSWER, port=4011, offer_bootfile=True)
    with pytest.raises(ValueError, match="server_ip"):
        build_reply(packet, request, BootAnswer("boot.lan", "x"), port=67, offer_bootfile=True)


def test_relayed_offer_keeps_giaddr_and_goes_to_the_relay() -> None:
    packet = packet_of(CLIENTS["ovmf-edk2-pxe"], giaddr="198.51.100.1")
    decoded, _ = answer_for(pxe(packet, 67), packet, port=67, offer_bootfile=True)
    assert decoded.giaddr == "198.51.100.1"
    assert reply_destination(packet, ("198.51.100.1", 67), port=67) == ("198.51.100.1", 67)
    assert reply_destination(packet, ("198.51.100.1", 67), port=4011) == ("198.51.100.1", 67)
    assert reply_destination(packet, ("198.51.100.1", 67), port=67, relay_port=6767) == (
        "198.51.100.1", 6767)


def test_reply_destination_on_67_without_relay() -> None:
    fresh = packet_of(CLIENTS["ovmf-edk2-pxe"])
    assert reply_destination(fresh, ("0.0.0.0", 68), port=67) == ("255.255.255.255", 68)
    renewing = packet_of(CLIENTS["ovmf-edk2-pxe"], ciaddr="192.0.2.50")
    assert reply_destination(renewing, ("192.0.2.50", 68), port=67) == ("192.0.2.50", 68)


def test_reply_without_option_97_when_client_sent_none() -> None:
    options = [(c, v) for c, v in _edk2() if c != 97]
    packet = packet_of(options)
    decoded, opts = answer_for(pxe(packet, 67), packet, port=67, offer_bootfile=True)
    _common_reply_checks(decoded, opts, packet)


# --- address hints ------------------------------------------------------------------------------


def test_address_hint_from_the_request_to_the_site_server() -> None:
    # classify() leaves this packet to the site server; address_hint still reads option 50.
    packet = packet_of([*_edk2(mtype=3), (50, bytes([192, 0, 2, 77])), (54, bytes([192, 0, 2, 2]))])
    assert classify(packet, port=67) == Ignored("request-for-site-server")
    assert address_hint(packet) == ("52:54:00:12:34:56", "192.0.2.77")


def test_address_hint_from_ciaddr_and_for_http_boot() -> None:
    renewing = packet_of(_edk2(mtype=3), ciaddr="192.0.2.50")
    assert address_hint(renewing) == ("52:54:00:12:34:56", "192.0.2.50")
    http = [(53, b"\x03"), (60, b"HTTPClient:Arch:00016:UNDI:003001"), (50, b"\xc0\x00\x02\x09")]
    assert address_hint(packet_of(http)) == ("52:54:00:12:34:56", "192.0.2.9")


def test_no_address_hint_without_pxe_vendor_class_or_address() -> None:
    udhcpc = [*CLIENTS["udhcpc"], (50, bytes([192, 0, 2, 77]))]
    assert address_hint(packet_of(udhcpc)) is None
    assert address_hint(packet_of(CLIENTS["ovmf-edk2-pxe"])) is None  # DISCOVER: nothing yet
    bad_length = [*_edk2(mtype=3), (50, b"\xc0\x00\x02")]
    assert address_hint(packet_of(bad_length)) is None
