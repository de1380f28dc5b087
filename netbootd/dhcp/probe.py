"""Look for another DHCP server on the link before serving addresses (server mode).

Two DHCP servers handing out addresses on one link give clients conflicting leases, so
``[dhcp] mode = "server"`` first broadcasts a DISCOVER with a random, locally administered MAC
and the broadcast flag set (RFC 2131 section 4.1: the answer is then broadcast, so no address
is needed to receive it), from udp/68 on the server's interface, and waits ``timeout`` seconds.
Any OFFER to that transaction means another server is there; the service refuses to start and
names it (docs/configuration.md, ``dhcp.probe``). A proxy (yiaddr 0) does not count: it hands
out no addresses.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import secrets
import socket
import struct
import time

from netbootd.dhcp.options import DhcpOption, MessageType
from netbootd.dhcp.packet import BOOTREQUEST, HTYPE_ETHERNET, ZERO_IP, DhcpPacket
from netbootd.dhcp.proxy import BROADCAST, DHCP_CLIENT_PORT, DHCP_SERVER_PORT
from netbootd.dhcp.server import BROADCAST_FLAG
from netbootd.errors import MalformedPacket

_SIOCGIFADDR = 0x8915


def interface_of(address: str) -> str | None:
    """The name of the interface that holds IPv4 ``address`` (None when none does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR,
                                  struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this one
            if socket.inet_ntoa(raw[20:24]) == address:
                return name
    return None


def probe_packet(mac: bytes, xid: int) -> bytes:
    return DhcpPacket(
        op=BOOTREQUEST, htype=HTYPE_ETHERNET, hlen=6, hops=0, xid=xid, secs=0,
        flags=BROADCAST_FLAG, ciaddr=ZERO_IP, yiaddr=ZERO_IP, siaddr=ZERO_IP, giaddr=ZERO_IP,
        chaddr=mac, sname=b"", file=b"",
        options=((DhcpOption.MESSAGE_TYPE, bytes((MessageType.DISCOVER,))),
                 (DhcpOption.PARAM_REQUEST_LIST, bytes((1, 3, 6, 54))))).to_bytes()


def other_servers(replies: list[tuple[bytes, str]], xid: int, mac: bytes) -> list[str]:
    """Addresses of the servers whose replies OFFER an address to our probe (pure)."""
    found: list[str] = []
    for data, source in replies:
        try:
            p = DhcpPacket.parse(data)
        except MalformedPacket:
            continue
        if (p.xid != xid or p.chaddr[:6] != mac or p.message_type is not MessageType.OFFER
                or p.yiaddr == ZERO_IP):
            continue
        sid = p.option(DhcpOption.SERVER_ID)
        server = str(ipaddress.IPv4Address(sid)) if sid is not None and len(sid) == 4 \
            else source
        if server not in found:
            found.append(server)
    return found


async def probe(*, interface: str | None, timeout: float = 2.0,
                client_port: int = DHCP_CLIENT_PORT, server_port: int = DHCP_SERVER_PORT,
                target: str = BROADCAST) -> list[str]:
    """Broadcast one DISCOVER on ``interface`` and return the servers that offered."""
    mac = bytes([0x02]) + secrets.token_bytes(5)  # locally administered, unicast
    xid = secrets.randbits(32)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    replies: list[tuple[bytes, str]] = []
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            interface.encode() + b"\x00")
        sock.setblocking(False)
        sock.bind(("0.0.0.0", client_port))
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(sock, probe_packet(mac, xid), (target, server_port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), left)
            except TimeoutError:
                break
            replies.append((data, str(addr[0])))
    finally:
        sock.close()
    return other_servers(replies, xid, mac)
