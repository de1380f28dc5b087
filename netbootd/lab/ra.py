"""Router-advertisement responder: run as a child process inside the lab namespace.

iPXE waits ~16 s for IPv6 autoconfiguration when no router advertisement arrives; this answers
every router solicitation on one interface (an AF_PACKET socket) with a prefix-less,
lifetime-0 RA, so it gives up on IPv6 at once. Stdlib only: it is started as a script,
``python ra.py IFNAME``.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
from pathlib import Path

ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134


def _link_local(mac: bytes) -> bytes:
    """fe80::/64 address with the modified EUI-64 interface id of ``mac``."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return b"\xfe\x80" + b"\0" * 6 + eui


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_router_advert(src_mac: bytes) -> bytes:
    """An Ethernet frame carrying a prefix-less, lifetime-0 RA (M=0, O=0) to ff02::1.

    Such an RA tells iPXE "there is no IPv6 router and no DHCPv6 here": its IPv6
    autoconfiguration completes at once instead of timing out.
    """
    src_ip = _link_local(src_mac)
    dst_ip = bytes.fromhex("ff020000000000000000000000000001")
    # type, code, checksum, cur hop limit, flags, router lifetime, reachable, retrans timer
    icmp = struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, 64, 0, 0, 0, 0)
    icmp += struct.pack("!BB6s", 1, 1, src_mac)  # option 1: source link-layer address
    pseudo = src_ip + dst_ip + struct.pack("!I3xB", len(icmp), ICMPV6)
    csum = _checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, 255) + src_ip + dst_ip
    eth = bytes.fromhex("333300000001") + src_mac + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + icmp


def _is_router_solicit(frame: bytes) -> bool:
    if len(frame) < 14 + 40 + 8 or frame[12:14] != b"\x86\xdd":
        return False
    ip6 = frame[14:54]
    return ip6[6] == ICMPV6 and frame[54] == ND_ROUTER_SOLICIT


def ra_responder(ifname: str) -> None:
    """Answer router solicitations on ``ifname`` with a prefix-less, lifetime-0 RA, forever."""
    mac_text = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    src_mac = bytes.fromhex(mac_text.replace(":", ""))
    frame = build_router_advert(src_mac)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    sock.bind((ifname, ETH_P_IPV6))
    print(f"ra-responder: listening on {ifname} ({mac_text})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        data, addr = sock.recvfrom(2048)
        if addr[2] == socket.PACKET_OUTGOING or not _is_router_solicit(data):
            continue
        sock.send(frame)
        print(f"ra-responder: RS from {data[6:12].hex(':')}, sent RA", flush=True)



if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: ra.py IFNAME", file=sys.stderr)
        sys.exit(2)
    ra_responder(sys.argv[1])
