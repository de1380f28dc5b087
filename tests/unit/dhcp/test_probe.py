"""The start-up probe's decision (dhcp/probe.py): which replies mean another server."""

from __future__ import annotations

import ipaddress

from netbootd.dhcp.options import DhcpOption, MessageType
from netbootd.dhcp.packet import BOOTREPLY, DhcpPacket
from netbootd.dhcp.probe import other_servers, probe_packet
from netbootd.dhcp.server import BROADCAST_FLAG

MAC = bytes.fromhex("02aabbccddee")
XID = 0x5EED


def reply(*, xid: int = XID, mac: bytes = MAC, mtype: MessageType = MessageType.OFFER,
          yiaddr: str = "10.77.0.150", server_id: str | None = "10.77.0.2") -> bytes:
    options: list[tuple[int, bytes]] = [(DhcpOption.MESSAGE_TYPE, bytes((mtype,)))]
    if server_id is not None:
        options.append((DhcpOption.SERVER_ID, ipaddress.IPv4Address(server_id).packed))
    return DhcpPacket(op=BOOTREPLY, htype=1, hlen=6, hops=0, xid=xid, secs=0, flags=0,
                      ciaddr="0.0.0.0", yiaddr=yiaddr, siaddr="0.0.0.0", giaddr="0.0.0.0",
                      chaddr=mac, sname=b"", file=b"", options=tuple(options)).to_bytes()


def test_the_probe_is_a_broadcast_discover() -> None:
    p = DhcpPacket.parse(probe_packet(MAC, XID))
    assert p.message_type is MessageType.DISCOVER and p.flags & BROADCAST_FLAG
    assert p.mac == "02:aa:bb:cc:dd:ee" and p.xid == XID


def test_offers_to_the_probe_name_their_servers() -> None:
    found = other_servers([
        (reply(), "10.77.0.2"),
        (reply(server_id=None), "10.77.0.3"),  # no option 54: its source address
        (reply(), "10.77.0.2"),  # the same server twice
    ], XID, MAC)
    assert found == ["10.77.0.2", "10.77.0.3"]


def test_what_is_not_an_offer_to_the_probe_is_not_a_server() -> None:
    assert other_servers([
        (reply(xid=XID + 1), "10.77.0.2"),  # another transaction
        (reply(mac=bytes(6)), "10.77.0.2"),  # another client
        (reply(mtype=MessageType.ACK), "10.77.0.2"),
        (reply(yiaddr="0.0.0.0"), "10.77.0.9"),  # a ProxyDHCP: hands out no address
        (b"garbage", "10.77.0.2"),
    ], XID, MAC) == []
