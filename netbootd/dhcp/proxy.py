"""ProxyDHCP decisions (pure): which packets to answer, what the answer says, where it goes.

Owns the PXE-specific rules of a ProxyDHCP server (PXE spec 2.1 section 2.2.3, RFC 4578) as
observed with real firmware (docs/firmware-notes.md, "The proxy exchange"):

- ``classify`` turns a parsed packet into a ``PxeRequest`` (with the client's ``ClientIdentity``)
  or an ``Ignored(reason)``. Only clients whose option 60 starts with ``PXEClient`` or
  ``HTTPClient`` are answered; everything else belongs to the site's DHCP server.
- ``build_reply`` builds the OFFER (udp/67) or ACK (udp/4011). A proxy never hands out an
  address: yiaddr is 0.0.0.0 and no lease options are sent.
- ``reply_destination`` picks where the reply goes (RFC 2131 section 4.1, PXE spec 2.1).

No asyncio, sockets or clock here: the endpoint feeds bytes in and sends what comes out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from netbootd.core.bootfile import BootTarget
from netbootd.core.identity import Arch, ClientIdentity, guid_from_option97
from netbootd.dhcp.options import (
    DhcpOption,
    DiscoveryControl,
    MessageType,
    PxeVendorOption,
    encode_pxe_vendor_options,
)
from netbootd.dhcp.packet import BOOTREPLY, BOOTREQUEST, FILE_SIZE, ZERO_IP, DhcpPacket

DHCP_SERVER_PORT: Final = 67
DHCP_CLIENT_PORT: Final = 68
PXE_PROXY_PORT: Final = 4011  # PXE spec 2.1: boot server / ProxyDHCP "port 4011"
BROADCAST: Final = "255.255.255.255"

PXE_CLIENT: Final = b"PXEClient"
HTTP_CLIENT: Final = b"HTTPClient"  # UEFI 2.5+ HTTP Boot (UEFI spec section 24.7)
IPXE_USER_CLASS: Final = "iPXE"

# What each port answers. On 67 the proxy only offers (PXE spec 2.1 section 2.2.3: the client
# takes its address from the site server and its boot information from the proxy OFFER); on
# 4011 it ACKs the client's REQUEST (or INFORM) sent to the proxy directly.
_ANSWERED: Final[dict[int, dict[MessageType, MessageType]]] = {
    DHCP_SERVER_PORT: {MessageType.DISCOVER: MessageType.OFFER},
    PXE_PROXY_PORT: {MessageType.REQUEST: MessageType.ACK, MessageType.INFORM: MessageType.ACK},
}


@dataclass(frozen=True)
class PxeRequest:
    """A packet the proxy should answer, reduced to what the planner and reply need."""

    identity: ClientIdentity
    message_type: MessageType
    is_ipxe: bool  # option 77 names iPXE (also true for QEMU's iPXE NIC ROM: check arch too)
    http_boot: bool  # option 60 starts with HTTPClient: the bootfile must be a URL
    relayed: bool  # giaddr set: arrived through a DHCP relay

    @property
    def answer_kind(self) -> str:
        """``offer`` or ``ack``: what a boot answer to this request is (the one place that says
        so; events, counters and logs use it). A DISCOVER is offered to; a REQUEST or INFORM
        (to the proxy on 4011, or to the server in server mode) is acknowledged."""
        return "offer" if self.message_type is MessageType.DISCOVER else "ack"


@dataclass(frozen=True)
class Ignored:
    """A packet the proxy stays silent for; ``reason`` is a stable counter label."""

    reason: str


# What to boot is one type, decided in the core (core/bootfile.py); the old name stays.
BootAnswer = BootTarget


def classify(packet: DhcpPacket, *, port: int) -> PxeRequest | Ignored:
    """Decide whether a packet that arrived on local ``port`` (67 or 4011) is ours to answer."""
    if port not in _ANSWERED:
        raise ValueError(f"port must be {DHCP_SERVER_PORT} or {PXE_PROXY_PORT}, got {port}")
    if packet.op != BOOTREQUEST:
        return Ignored("not-bootrequest")
    vendor_class = packet.option(DhcpOption.VENDOR_CLASS_ID)
    # docs/firmware-notes.md: a proxy answers only PXEClient/HTTPClient and is silent for
    # everything else (udhcpc, syslinux.efi's own DHCP, OS installers): the site server
    # serves those.
    if vendor_class is None or not vendor_class.startswith((PXE_CLIENT, HTTP_CLIENT)):
        return Ignored("not-pxe")
    if packet.option(DhcpOption.MESSAGE_TYPE) is None:
        return Ignored("no-message-type")
    message_type = packet.message_type
    if message_type is None:
        return Ignored("unsupported-message-type")
    if port == DHCP_SERVER_PORT and message_type is MessageType.REQUEST:
        # The client is accepting the site server's lease; a proxy never ACKs on 67.
        return Ignored("request-for-site-server")
    if message_type not in _ANSWERED[port]:
        return Ignored("unsupported-message-type")
    mac = packet.mac
    if mac is None or mac == "00:00:00:00:00:00":
        return Ignored("no-client-mac")

    return _pxe_request(packet, mac, vendor_class, message_type)


def pxe_request(packet: DhcpPacket) -> PxeRequest | None:
    """The PXE/HTTP Boot request in any DHCP message, whatever port it came to; None when the
    client is not PXEClient/HTTPClient. Server mode uses it to add the boot answer to its own
    OFFER/ACK (the same decision the proxy makes)."""
    vendor_class = packet.option(DhcpOption.VENDOR_CLASS_ID)
    message_type = packet.message_type
    mac = packet.mac
    if (vendor_class is None or not vendor_class.startswith((PXE_CLIENT, HTTP_CLIENT))
            or message_type is None or mac is None or mac == "00:00:00:00:00:00"):
        return None
    return _pxe_request(packet, mac, vendor_class, message_type)


def _pxe_request(packet: DhcpPacket, mac: str, vendor_class: bytes,
                 message_type: MessageType) -> PxeRequest:
    user_classes = _user_classes(packet.option(DhcpOption.USER_CLASS))
    identity = ClientIdentity(
        mac=mac,
        guid=_guid(packet.option(DhcpOption.CLIENT_MACHINE_ID)),
        arch=_arch(packet.option(DhcpOption.CLIENT_SYSTEM_ARCH)),
        vendor_class=vendor_class.decode("ascii", "replace"),
        user_class=clean_text(user_classes[0]) if user_classes else None,
        dhcp_hostname=_host_name(packet.option(DhcpOption.HOST_NAME)),
        ip=packet.ciaddr if packet.ciaddr != ZERO_IP else None,
    )
    return PxeRequest(
        identity=identity,
        message_type=message_type,
        is_ipxe=IPXE_USER_CLASS in user_classes,
        http_boot=vendor_class.startswith(HTTP_CLIENT),
        relayed=packet.giaddr != ZERO_IP,
    )


def _guid(raw: bytes | None) -> str | None:
    return guid_from_option97(raw) if raw is not None else None


def _arch(raw: bytes | None) -> Arch | None:
    """First arch of option 93, a list of 16-bit codes (RFC 4578 section 2.1)."""
    if raw is None or len(raw) < 2:
        return None
    try:
        return Arch(int.from_bytes(raw[:2], "big"))
    except ValueError:
        return None


# RFC 2132 section 3.14 caps option 12 at 255 bytes by its length octet; a value longer than
# any DNS name is cut to it (RFC 1035 section 2.3.4), so a stored name is bounded.
_HOST_NAME_MAX: Final = 253


def _host_name(raw: bytes | None) -> str | None:
    """Option 12, the client's host name: any bytes, decoded as UTF-8 with undecodable bytes
    and control characters replaced (RFC 2132 section 3.14 asks for NVT ASCII, but the value
    comes from the client). Some firmware pads it with NULs; those are dropped. Empty: None."""
    if not raw:
        return None
    text = clean_text(raw.rstrip(b"\0")[:_HOST_NAME_MAX].decode("utf-8", "replace"))
    return text or None


def clean_text(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) replaced by U+FFFD: client-sent
    strings are shown in terminals and pages, where they must stay data."""
    return "".join("\ufffd" if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 else c for c in text)


def _user_classes(raw: bytes | None) -> list[str]:
    """User classes from option 77.

    RFC 3004 section 4 makes the option a list of length-prefixed class names, but iPXE (and
    QEMU's iPXE NIC ROM, docs/firmware-notes.md) sends the bare string ``iPXE``, as did the
    pre-RFC 3004 convention. A value whose first byte is printable ASCII cannot start a valid
    RFC 3004 list of sensible length, so it is read as one bare string; otherwise it is parsed
    as RFC 3004, falling back to the bare reading when the lengths do not add up.
    """
    if not raw:
        return []
    if raw[0] >= 0x20:
        return [raw.decode("ascii", "replace")]
    classes: list[str] = []
    i = 0
    while i < len(raw):
        length = raw[i]
        if length == 0 or i + 1 + length > len(raw):
            return [raw.decode("ascii", "replace")]
        classes.append(raw[i + 1:i + 1 + length].decode("ascii", "replace"))
        i += 1 + length
    return classes


def _is_url(bootfile: str) -> bool:
    return "://" in bootfile


def build_reply(
    packet: DhcpPacket,
    request: PxeRequest,
    answer: BootAnswer,
    *,
    port: int,
    offer_bootfile: bool,
) -> DhcpPacket:
    """Build the proxy OFFER (DISCOVER on 67) or ACK (REQUEST/INFORM on 4011).

    Raises ``ValueError`` when ``request`` is not one ``classify`` accepts on ``port`` or when
    ``answer`` holds an invalid server address; both are caller bugs.
    """
    reply_type = _ANSWERED.get(port, {}).get(request.message_type)
    if reply_type is None:
        raise ValueError(f"no proxy reply to {request.message_type.name} on port {port}")
    try:
        server_id = ipaddress.IPv4Address(answer.server_ip).packed
    except ValueError:
        raise ValueError(f"server_ip must be an IPv4 address, got {answer.server_ip!r}") from None

    boot, file_field = boot_options(packet, request, answer, reply_type=reply_type,
                                    offer_bootfile=offer_bootfile)
    options = [(int(DhcpOption.MESSAGE_TYPE), bytes((reply_type,))),
               (int(DhcpOption.SERVER_ID), server_id), *boot]
    return DhcpPacket(
        op=BOOTREPLY,
        htype=packet.htype,
        hlen=packet.hlen,
        hops=0,
        xid=packet.xid,
        secs=0,
        flags=packet.flags,
        # RFC 2131 table 3: ciaddr is 0 in an OFFER and copied from the request in an ACK.
        ciaddr=packet.ciaddr if reply_type is MessageType.ACK else ZERO_IP,
        yiaddr=ZERO_IP,  # the site DHCP server owns addressing
        siaddr=answer.server_ip,  # next-server, used by BIOS PXE for the TFTP download
        giaddr=packet.giaddr,
        chaddr=packet.chaddr,
        sname=b"",
        file=file_field,
        options=tuple(options),
    )


def boot_options(
    packet: DhcpPacket,
    request: PxeRequest,
    answer: BootAnswer,
    *,
    reply_type: MessageType,
    offer_bootfile: bool,
) -> tuple[list[tuple[int, bytes]], bytes]:
    """The PXE part of an OFFER/ACK: options 60, 97, 66, 67, 43 and the ``file`` field.

    Shared by the proxy's replies and server mode's address-carrying ones, so both tell a
    client the same boot file.
    """
    options: list[tuple[int, bytes]] = [
        # PXE spec 2.1 section 2.2.3: the proxy reply must carry "PXEClient" in option 60 or
        # PXE firmware ignores it; UEFI HTTP Boot expects "HTTPClient" back (UEFI spec 24.7).
        (DhcpOption.VENDOR_CLASS_ID, HTTP_CLIENT if request.http_boot else PXE_CLIENT),
    ]
    machine_id = packet.option(DhcpOption.CLIENT_MACHINE_ID)
    if machine_id is not None:
        # RFC 4578 section 2.3 / PXE spec: firmware drops replies whose GUID does not match.
        options.append((DhcpOption.CLIENT_MACHINE_ID, machine_id))

    if reply_type is MessageType.ACK or request.http_boot:
        carry_bootfile, vendor_options = True, False
    else:
        # docs/firmware-notes.md: two field-proven strategies for the OFFER on 67. With
        # offer_bootfile the OFFER says "download the boot file offered, skip boot server
        # discovery" (option 43 sub-option 6 = 8, as Smee does) and the client never needs
        # 4011. Without it the OFFER has no option 43 and no file (as Pixiecore does), and
        # EDK2/iPXE come back on 4011.
        carry_bootfile = vendor_options = offer_bootfile

    bootfile = answer.bootfile.encode("utf-8")
    file_field = b""
    if carry_bootfile:
        if not _is_url(answer.bootfile):
            # Option 66 names a TFTP server; a URL bootfile already names its own host.
            tftp_name = answer.tftp_server_name or answer.server_ip
            options.append((DhcpOption.TFTP_SERVER_NAME, tftp_name.encode("utf-8")))
        # Option 67 always (RFC 2132 section 9.5); the 128-byte `file` field only when the name
        # fits with its terminating NUL, never truncated (a cut path would fetch a wrong file).
        options.append((DhcpOption.BOOTFILE_NAME, bootfile))
        if len(bootfile) < FILE_SIZE:
            file_field = bootfile
    if vendor_options:
        options.append((
            DhcpOption.VENDOR_SPECIFIC,
            encode_pxe_vendor_options((
                (PxeVendorOption.PXE_DISCOVERY_CONTROL,
                 bytes((DiscoveryControl.USE_OFFERED_BOOTFILE,))),
            )),
        ))

    return options, file_field


def reply_destination(
    packet: DhcpPacket,
    source: tuple[str, int],
    *,
    port: int,
    relay_port: int = DHCP_SERVER_PORT,
    client_port: int = DHCP_CLIENT_PORT,
) -> tuple[str, int]:
    """Where to send the reply to ``packet``, which came from ``source`` to local ``port``.

    ``relay_port``/``client_port`` exist so tests can use unprivileged ports.
    """
    if packet.giaddr != ZERO_IP:
        # RFC 2131 section 4.1: a relayed request is answered to the relay on the server port.
        return packet.giaddr, relay_port
    if port == PXE_PROXY_PORT:
        # docs/firmware-notes.md: EDK2 sends its 4011 REQUEST from udp/4011, iPXE from udp/68;
        # both only listen where they sent from.
        return source
    if packet.ciaddr != ZERO_IP:
        return packet.ciaddr, client_port
    # No address yet (yiaddr is 0 in a proxy reply, so there is nothing to unicast to).
    return BROADCAST, client_port


def address_hint(packet: DhcpPacket) -> tuple[str, str] | None:
    """``(mac, ip)`` when a PXE client's packet tells which address it uses or asks for.

    The proxy never assigns addresses, but the DHCPREQUEST a PXE client sends to the site
    server carries option 50 (requested IP address, RFC 2131 section 4.3.2) and a renewing
    client fills ``ciaddr``. Knowing it lets TFTP and HTTP requests, which arrive from that
    address, be put in the right node's boot timeline.
    """
    mac = packet.mac
    vendor = packet.option(DhcpOption.VENDOR_CLASS_ID) or b""
    if mac is None or not vendor.startswith((PXE_CLIENT, HTTP_CLIENT)):
        return None
    requested = packet.option(DhcpOption.REQUESTED_IP)
    if requested is not None and len(requested) == 4:
        ip = str(ipaddress.IPv4Address(requested))
    elif packet.ciaddr != ZERO_IP:
        ip = packet.ciaddr
    else:
        return None
    return mac, ip
