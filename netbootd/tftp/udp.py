"""UDP socket helpers of the TFTP edge: non-blocking sockets, IP_PKTINFO in and out.

This module owns the socket options and ancillary data of the TFTP sockets, nothing of the
protocol. Replies from a wildcard listener must leave from the address the client talked to
(RFC 1350 section 4 TIDs are (address, port) pairs to the client), hence IP_PKTINFO both ways.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["PKTINFO_SPACE", "enable_pktinfo", "local_ip", "new_socket", "send_from"]

# Linux value; Python's socket module does not export IP_PKTINFO.
_IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
_PKTINFO = struct.Struct("=i4s4s")
PKTINFO_SPACE = socket.CMSG_SPACE(_PKTINFO.size)


def new_socket(interface: str | None) -> socket.socket:
    """A non-blocking IPv4 UDP socket, pinned to ``interface`` when one is given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if interface:
            # Serve only the boot network, even if another interface shares addresses.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    except BaseException:
        sock.close()
        raise
    return sock


def enable_pktinfo(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)


def local_ip(ancdata: list[tuple[int, int, bytes]], default: str) -> str:
    """Our address on the interface a datagram came in on, from its IP_PKTINFO."""
    for level, kind, payload in ancdata:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= 12:
            # ipi_spec_dst: our address on the receiving interface (not the packet's
            # destination, which may be a broadcast address).
            return socket.inet_ntoa(_PKTINFO.unpack_from(payload)[1])
    return default


def send_from(sock: socket.socket, bound: str, data: bytes, client: tuple[str, int],
              source: str) -> None:
    """Send ``data`` from ``sock`` (bound to ``bound``) with ``source`` as source address."""
    if source and source != "0.0.0.0" and bound == "0.0.0.0":
        info = _PKTINFO.pack(0, socket.inet_aton(source), b"\0\0\0\0")
        sock.sendmsg([data], [(socket.IPPROTO_IP, _IP_PKTINFO, info)], 0, client)
    else:
        sock.sendto(data, client)
