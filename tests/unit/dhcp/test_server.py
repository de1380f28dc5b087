"""Server-mode lease logic (dhcp/server.py) on a fake clock: every message type and state."""

from __future__ import annotations

import ipaddress

import pytest

from netbootd.config import parse_config
from netbootd.core.identity import Arch
from netbootd.dhcp.options import DhcpOption, MessageType
from netbootd.dhcp.packet import BOOTREPLY, BOOTREQUEST, ZERO_IP, DhcpPacket
from netbootd.dhcp.proxy import BootAnswer, pxe_request
from netbootd.dhcp.server import (
    BROADCAST_FLAG,
    Lease,
    LeaseServer,
    Outcome,
    Pool,
    Removed,
    lease_server_for,
    with_boot,
)

SERVER = "10.77.0.1"
SID = ipaddress.IPv4Address(SERVER).packed
T0 = 1_700_000_000.0
LOCAL = Pool.make("lab", "10.77.0.0/24", "10.77.0.100", "10.77.0.109", router="10.77.0.1",
                  dns=("10.77.0.1", "10.77.0.53"), domain="lab.test", lease_time=600)
REMOTE = Pool.make("rack2", "10.88.0.0/24", "10.88.0.50", "10.88.0.59", router="10.88.0.1",
                   lease_time=1200)
NODE_MAC = "52:54:00:00:00:0a"
NODE_IP = "10.77.0.10"


def mac_bytes(n: int) -> bytes:
    return bytes.fromhex("525400ab") + n.to_bytes(2, "big")


def mac_str(n: int) -> str:
    return ":".join(f"{b:02x}" for b in mac_bytes(n))


def pkt(mtype: MessageType, mac: bytes | int = 1, *, xid: int = 0x1234, ciaddr: str = ZERO_IP,
        giaddr: str = ZERO_IP, requested: str | None = None, server_id: str | None = None,
        client_id: bytes | None = None, extra: tuple[tuple[int, bytes], ...] = (),
        flags: int = 0, op: int = BOOTREQUEST, hops: int = 0) -> DhcpPacket:
    chaddr = mac_bytes(mac) if isinstance(mac, int) else mac
    options: list[tuple[int, bytes]] = [(DhcpOption.MESSAGE_TYPE, bytes((mtype,)))]
    if requested is not None:
        options.append((DhcpOption.REQUESTED_IP, ipaddress.IPv4Address(requested).packed))
    if server_id is not None:
        options.append((DhcpOption.SERVER_ID, ipaddress.IPv4Address(server_id).packed))
    if client_id is not None:
        options.append((DhcpOption.CLIENT_ID, client_id))
    options += extra
    return DhcpPacket(op=op, htype=1, hlen=6, hops=hops, xid=xid, secs=0, flags=flags,
                      ciaddr=ciaddr, yiaddr=ZERO_IP, siaddr=ZERO_IP, giaddr=giaddr,
                      chaddr=chaddr, sname=b"", file=b"", options=tuple(options))


def make(**kw: object) -> LeaseServer:
    args: dict[str, object] = {"pools": (LOCAL, REMOTE), "server_ip": SERVER,
                               "reservations": {NODE_MAC: NODE_IP},
                               "hostnames": {NODE_MAC: "node10"}, "offer_hold": 30.0,
                               "decline_hold": 300.0}
    args.update(kw)
    return LeaseServer(**args)  # type: ignore[arg-type]


def dora(s: LeaseServer, mac: int = 1, now: float = T0, **kw: object) -> tuple[Outcome, Outcome]:
    offer = s.handle(pkt(MessageType.DISCOVER, mac, **kw), now=now, source=ZERO_IP)  # type: ignore[arg-type]
    assert offer.kind == "offer", offer.reason
    assert offer.reply is not None
    ack = s.handle(pkt(MessageType.REQUEST, mac, requested=offer.reply.yiaddr,
                       server_id=SERVER, **kw), now=now + 0.1, source=ZERO_IP)  # type: ignore[arg-type]
    return offer, ack


def u32(p: DhcpPacket, code: int) -> int:
    raw = p.option(code)
    assert raw is not None
    return int.from_bytes(raw, "big")


# -- DISCOVER / OFFER ------------------------------------------------------------------------
def test_offer_carries_address_and_every_network_option() -> None:
    out = make().handle(pkt(MessageType.DISCOVER), now=T0, source=ZERO_IP)
    assert out.kind == "offer" and out.reply is not None
    r = out.reply
    assert r.op == BOOTREPLY and r.message_type is MessageType.OFFER
    assert r.yiaddr == "10.77.0.100" and r.ciaddr == ZERO_IP and r.siaddr == SERVER
    assert r.option(DhcpOption.SERVER_ID) == SID
    assert r.option(DhcpOption.SUBNET_MASK) == bytes([255, 255, 255, 0])
    assert r.option(DhcpOption.ROUTER) == bytes([10, 77, 0, 1])
    assert r.option(DhcpOption.DOMAIN_NAME_SERVER) == bytes([10, 77, 0, 1, 10, 77, 0, 53])
    assert r.option(DhcpOption.DOMAIN_NAME) == b"lab.test"
    assert (u32(r, DhcpOption.LEASE_TIME), u32(r, DhcpOption.RENEWAL_TIME),
            u32(r, DhcpOption.REBINDING_TIME)) == (600, 300, 525)
    assert r.option(DhcpOption.HOST_NAME) is None  # not a configured node
    assert out.destination == ("255.255.255.255", 68)
    assert out.changes == (out.lease,) and out.lease is not None
    assert out.lease.state == "offered" and out.lease.expires == T0 + 30


def test_offer_is_held_and_the_next_client_gets_the_next_address() -> None:
    s = make()
    a = s.handle(pkt(MessageType.DISCOVER, 1), now=T0, source=ZERO_IP)
    b = s.handle(pkt(MessageType.DISCOVER, 2), now=T0, source=ZERO_IP)
    again = s.handle(pkt(MessageType.DISCOVER, 1), now=T0 + 1, source=ZERO_IP)
    assert a.reply and b.reply and again.reply
    assert a.reply.yiaddr != b.reply.yiaddr
    assert again.reply.yiaddr == a.reply.yiaddr  # the same client, the same offer


def test_requested_address_is_honoured_when_free() -> None:
    out = make().handle(pkt(MessageType.DISCOVER, requested="10.77.0.105"), now=T0,
                        source=ZERO_IP)
    assert out.reply is not None and out.reply.yiaddr == "10.77.0.105"


def test_requested_address_outside_range_or_reserved_is_not_offered() -> None:
    s = make()
    for ip in ("10.77.0.50", NODE_IP, SERVER, "192.168.1.5"):
        out = s.handle(pkt(MessageType.DISCOVER, requested=ip), now=T0, source=ZERO_IP)
        assert out.reply is not None and out.reply.yiaddr == "10.77.0.100", ip


def test_reservation_and_hostname_for_a_configured_node() -> None:
    s = make()
    node = bytes.fromhex(NODE_MAC.replace(":", ""))
    offer, ack = dora(s, node)  # type: ignore[arg-type]
    assert offer.reply and ack.reply
    assert offer.reply.yiaddr == NODE_IP == ack.reply.yiaddr
    assert ack.reply.option(DhcpOption.HOST_NAME) == b"node10"
    # The node asking for a dynamic address still gets its reservation.
    out = s.handle(pkt(MessageType.DISCOVER, node, requested="10.77.0.101"), now=T0 + 5,
                   source=ZERO_IP)
    assert out.reply is not None and out.reply.yiaddr == NODE_IP


def test_reserved_address_is_never_handed_to_anyone_else() -> None:
    s = make()
    for mac in range(1, 11):
        dora(s, mac)
    assert all(lease.ip != NODE_IP for lease in s.all_leases())
    nak = s.handle(pkt(MessageType.REQUEST, 77, requested=NODE_IP), now=T0, source=ZERO_IP)
    assert nak.kind == "nak"
    renew = s.handle(pkt(MessageType.REQUEST, 77, ciaddr=NODE_IP), now=T0, source=NODE_IP)
    assert renew.kind == "nak"


def test_pool_exhaustion_is_silent_and_counted() -> None:
    s = make()
    for mac in range(1, 11):
        dora(s, mac)
    out = s.handle(pkt(MessageType.DISCOVER, 99), now=T0 + 1, source=ZERO_IP)
    assert (out.kind, out.reason, out.reply) == ("silent", "pool-exhausted", None)


def test_expired_offer_frees_its_address() -> None:
    s = make(pools=(Pool.make("one", "10.77.0.0/24", "10.77.0.100", "10.77.0.100"),))
    first = s.handle(pkt(MessageType.DISCOVER, 1), now=T0, source=ZERO_IP)
    assert first.reply is not None
    assert s.handle(pkt(MessageType.DISCOVER, 2), now=T0 + 10, source=ZERO_IP).kind == "silent"
    later = s.handle(pkt(MessageType.DISCOVER, 2), now=T0 + 31, source=ZERO_IP)
    assert later.reply is not None and later.reply.yiaddr == "10.77.0.100"
    # Client 1's REQUEST for the address it was offered long ago is now refused.
    late = s.handle(pkt(MessageType.REQUEST, 1, requested="10.77.0.100", server_id=SERVER),
                    now=T0 + 32, source=ZERO_IP)
    assert (late.kind, late.reason) == ("nak", "offer-not-held")


def test_never_used_addresses_go_before_expired_ones() -> None:
    s = make(pools=(Pool.make("two", "10.77.0.0/24", "10.77.0.100", "10.77.0.101",
                              lease_time=60),))
    _, ack = dora(s, 1)
    assert ack.reply is not None and ack.reply.yiaddr == "10.77.0.100"
    # Lease of client 1 expired: a new client still gets the never-used .101 first ...
    out = s.handle(pkt(MessageType.DISCOVER, 2), now=T0 + 100, source=ZERO_IP)
    assert out.reply is not None and out.reply.yiaddr == "10.77.0.101"
    # ... and client 1 comes back to its old address.
    back = s.handle(pkt(MessageType.DISCOVER, 1), now=T0 + 100, source=ZERO_IP)
    assert back.reply is not None and back.reply.yiaddr == "10.77.0.100"
    # A third client takes the expired one only when nothing else is left.
    dora(s, 2, now=T0 + 101)
    dora(s, 1, now=T0 + 101)
    assert s.handle(pkt(MessageType.DISCOVER, 3), now=T0 + 102, source=ZERO_IP).kind == \
        "silent"
    taken = s.handle(pkt(MessageType.DISCOVER, 3), now=T0 + 500, source=ZERO_IP)
    assert taken.reply is not None and taken.reply.yiaddr in ("10.77.0.100", "10.77.0.101")


# -- REQUEST: SELECTING ----------------------------------------------------------------------
def test_selecting_request_is_acked_and_binds() -> None:
    s = make()
    offer, ack = dora(s)
    assert ack.kind == "ack" and ack.reply is not None and offer.reply is not None
    assert ack.reply.message_type is MessageType.ACK
    assert ack.reply.yiaddr == offer.reply.yiaddr
    assert ack.lease is not None and ack.lease.state == "bound"
    assert ack.lease.expires == pytest.approx(T0 + 0.1 + 600)
    assert ack.destination == ("255.255.255.255", 68)


def test_selecting_another_server_releases_our_offer() -> None:
    s = make()
    offer = s.handle(pkt(MessageType.DISCOVER), now=T0, source=ZERO_IP)
    assert offer.reply is not None
    other = s.handle(pkt(MessageType.REQUEST, requested="10.77.0.200", server_id="10.77.0.2"),
                     now=T0 + 1, source=ZERO_IP)
    assert (other.kind, other.reason) == ("silent", "chose-other-server")
    assert other.changes == (Removed(offer.reply.yiaddr),)
    assert s.lease_of(offer.reply.yiaddr) is None


def test_selecting_an_address_never_offered_to_it_is_nakked() -> None:
    s = make()
    dora(s, 1)
    taken = s.all_leases()[0].ip
    out = s.handle(pkt(MessageType.REQUEST, 2, requested=taken, server_id=SERVER), now=T0 + 1,
                   source=ZERO_IP)
    assert out.kind == "nak" and out.reply is not None
    assert out.reply.message_type is MessageType.NAK and out.reply.yiaddr == ZERO_IP
    assert out.reply.option(DhcpOption.SERVER_ID) == SID
    assert out.destination == ("255.255.255.255", 68)


def test_selecting_with_ciaddr_or_without_requested_ip_is_dropped() -> None:
    s = make()
    assert s.handle(pkt(MessageType.REQUEST, server_id=SERVER), now=T0,
                    source=ZERO_IP).reason == "bad-selecting-request"
    assert s.handle(pkt(MessageType.REQUEST, server_id=SERVER, requested="10.77.0.100",
                        ciaddr="10.77.0.100"), now=T0,
                    source=ZERO_IP).reason == "bad-selecting-request"


# -- REQUEST: INIT-REBOOT --------------------------------------------------------------------
def test_init_reboot_acks_the_clients_own_address() -> None:
    s = make()
    _, ack = dora(s)
    assert ack.reply is not None
    ip = ack.reply.yiaddr
    out = s.handle(pkt(MessageType.REQUEST, requested=ip), now=T0 + 300, source=ZERO_IP)
    assert out.kind == "ack" and out.reply is not None and out.reply.yiaddr == ip


def test_init_reboot_naks_wrong_network_and_other_clients_address() -> None:
    s = make()
    _, ack = dora(s, 1)
    assert ack.reply is not None
    dora(s, 2)
    wrong_net = s.handle(pkt(MessageType.REQUEST, 1, requested="192.168.0.7"), now=T0 + 1,
                         source=ZERO_IP)
    assert (wrong_net.kind, wrong_net.reason) == ("nak", "wrong-network")
    not_mine = s.handle(pkt(MessageType.REQUEST, 2, requested=ack.reply.yiaddr), now=T0 + 1,
                        source=ZERO_IP)
    assert (not_mine.kind, not_mine.reason) == ("nak", "not-client-address")
    stranger = s.handle(pkt(MessageType.REQUEST, 9, requested=ack.reply.yiaddr), now=T0 + 1,
                        source=ZERO_IP)
    assert (stranger.kind, stranger.reason) == ("nak", "address-taken")


def test_init_reboot_of_an_unknown_client_is_silent() -> None:
    # RFC 2131 4.3.2: no record of the client -> remain silent.
    out = make().handle(pkt(MessageType.REQUEST, 5, requested="10.77.0.103"), now=T0,
                        source=ZERO_IP)
    assert (out.kind, out.reason) == ("silent", "unknown-client")


# -- REQUEST: RENEWING / REBINDING -----------------------------------------------------------
def test_renewing_extends_the_lease_and_unicasts() -> None:
    s = make()
    _, ack = dora(s)
    assert ack.reply is not None
    ip = ack.reply.yiaddr
    out = s.handle(pkt(MessageType.REQUEST, ciaddr=ip), now=T0 + 300, source=ip)
    assert out.kind == "ack" and out.reply is not None
    assert out.reply.yiaddr == ip and out.reply.ciaddr == ip
    assert out.destination == (ip, 68)
    assert out.lease is not None and out.lease.expires == T0 + 900


def test_rebinding_after_expiry_keeps_the_address_when_nobody_took_it() -> None:
    s = make()
    _, ack = dora(s)
    assert ack.reply is not None
    ip = ack.reply.yiaddr
    out = s.handle(pkt(MessageType.REQUEST, ciaddr=ip, flags=BROADCAST_FLAG), now=T0 + 5000,
                   source=ip)
    assert out.kind == "ack" and out.lease is not None and out.lease.expires == T0 + 5600


def test_renewing_someone_elses_address_is_nakked() -> None:
    s = make()
    _, ack = dora(s, 1)
    assert ack.reply is not None
    out = s.handle(pkt(MessageType.REQUEST, 2, ciaddr=ack.reply.yiaddr), now=T0 + 10,
                   source=ack.reply.yiaddr)
    assert (out.kind, out.reason) == ("nak", "address-taken")
    off_net = s.handle(pkt(MessageType.REQUEST, 2, ciaddr="172.16.0.9"), now=T0,
                       source="172.16.0.9")
    assert (off_net.kind, off_net.reason) == ("nak", "wrong-network")


def test_renewing_an_address_nobody_holds_is_silent() -> None:
    out = make().handle(pkt(MessageType.REQUEST, 3, ciaddr="10.77.0.104"), now=T0,
                        source="10.77.0.104")
    assert (out.kind, out.reason) == ("silent", "unknown-client")


# -- DECLINE / RELEASE -----------------------------------------------------------------------
def test_decline_quarantines_the_address() -> None:
    s = make(pools=(Pool.make("one", "10.77.0.0/24", "10.77.0.100", "10.77.0.101"),))
    offer, _ = dora(s)
    assert offer.reply is not None
    bad = offer.reply.yiaddr
    out = s.handle(pkt(MessageType.DECLINE, requested=bad, server_id=SERVER), now=T0 + 1,
                   source=ZERO_IP)
    assert out.reason == "declined" and out.lease is not None and out.lease.state == "declined"
    again, _ = dora(s, 1, now=T0 + 2)  # the client binds the only other address
    assert again.reply is not None and again.reply.yiaddr != bad
    assert s.handle(pkt(MessageType.DISCOVER, 3), now=T0 + 4, source=ZERO_IP).reason == \
        "pool-exhausted"
    after = s.handle(pkt(MessageType.DISCOVER, 3), now=T0 + 302, source=ZERO_IP)
    assert after.reply is not None and after.reply.yiaddr == bad


def test_release_ends_the_lease_and_the_client_gets_it_back() -> None:
    s = make()
    _, ack = dora(s)
    assert ack.reply is not None
    ip = ack.reply.yiaddr
    out = s.handle(pkt(MessageType.RELEASE, ciaddr=ip, server_id=SERVER), now=T0 + 10,
                   source=ip)
    assert out.reason == "released" and out.lease is not None
    assert out.lease.state == "released" and out.lease.expires == T0 + 10
    back = s.handle(pkt(MessageType.DISCOVER), now=T0 + 20, source=ZERO_IP)
    assert back.reply is not None and back.reply.yiaddr == ip


def test_spoofed_release_and_decline_are_ignored() -> None:
    s = make()
    _, ack = dora(s, 1, client_id=b"\x01victim")
    assert ack.reply is not None
    ip = ack.reply.yiaddr
    before = s.lease_of(ip)
    # Wrong chaddr / client id, right source.
    wrong_id = s.handle(pkt(MessageType.RELEASE, 1, ciaddr=ip, client_id=b"\x01attacker"),
                        now=T0 + 1, source=ip)
    wrong_mac = s.handle(pkt(MessageType.RELEASE, 2, ciaddr=ip), now=T0 + 1, source=ip)
    # Right identity, wrong source address.
    wrong_src = s.handle(pkt(MessageType.RELEASE, 1, ciaddr=ip, client_id=b"\x01victim"),
                         now=T0 + 1, source="10.77.0.66")
    decline = s.handle(pkt(MessageType.DECLINE, 2, requested=ip, server_id=SERVER),
                       now=T0 + 1, source=ZERO_IP)
    decline_src = s.handle(pkt(MessageType.DECLINE, 1, requested=ip, server_id=SERVER,
                               client_id=b"\x01victim"), now=T0 + 1, source="10.77.0.66")
    for out in (wrong_id, wrong_mac, wrong_src):
        assert (out.kind, out.reason, out.changes) == ("silent", "spoofed-release", ())
    for out in (decline, decline_src):
        assert (out.kind, out.reason, out.changes) == ("silent", "spoofed-decline", ())
    assert s.lease_of(ip) == before


def test_release_for_another_server_is_ignored() -> None:
    s = make()
    _, ack = dora(s)
    assert ack.reply is not None
    out = s.handle(pkt(MessageType.RELEASE, ciaddr=ack.reply.yiaddr, server_id="10.77.0.2"),
                   now=T0 + 1, source=ack.reply.yiaddr)
    assert out.reason == "other-server"


# -- INFORM ----------------------------------------------------------------------------------
def test_inform_gets_options_without_address_or_lease_time() -> None:
    out = make().handle(pkt(MessageType.INFORM, ciaddr="10.77.0.30"), now=T0,
                        source="10.77.0.30")
    assert out.kind == "inform" and out.reply is not None
    assert out.reply.message_type is MessageType.ACK and out.reply.yiaddr == ZERO_IP
    assert out.reply.option(DhcpOption.LEASE_TIME) is None
    assert out.reply.option(DhcpOption.ROUTER) == bytes([10, 77, 0, 1])
    assert out.destination == ("10.77.0.30", 68) and out.changes == ()


# -- relays ----------------------------------------------------------------------------------
def test_relayed_discover_uses_the_relays_pool_and_goes_back_to_it() -> None:
    s = make(relay_port=6700)
    offer, ack = dora(s, 4, giaddr="10.88.0.1")
    assert offer.reply is not None and ack.reply is not None
    assert offer.reply.yiaddr == "10.88.0.50" and offer.reply.giaddr == "10.88.0.1"
    assert offer.destination == ("10.88.0.1", 6700) and ack.destination == ("10.88.0.1", 6700)
    assert u32(ack.reply, DhcpOption.LEASE_TIME) == 1200
    assert ack.reply.option(DhcpOption.ROUTER) == bytes([10, 88, 0, 1])
    # Renewal comes straight from the client (no giaddr): the pool of its ciaddr.
    renew = s.handle(pkt(MessageType.REQUEST, 4, ciaddr="10.88.0.50"), now=T0 + 600,
                     source="10.88.0.50")
    assert renew.kind == "ack" and renew.destination == ("10.88.0.50", 68)


def test_relayed_nak_goes_to_the_relay_with_the_broadcast_bit() -> None:
    out = make().handle(pkt(MessageType.REQUEST, 4, requested="10.77.0.100",
                            giaddr="10.88.0.1"), now=T0, source="10.88.0.1")
    assert out.kind == "nak" and out.reply is not None
    assert out.reply.flags & BROADCAST_FLAG and out.destination == ("10.88.0.1", 67)


def test_relay_from_an_unknown_network_is_silent() -> None:
    out = make().handle(pkt(MessageType.DISCOVER, giaddr="172.16.9.1"), now=T0,
                        source="172.16.9.1")
    assert (out.kind, out.reason) == ("silent", "no-pool")


def test_too_many_hops_and_replies_are_dropped() -> None:
    s = make()
    assert s.handle(pkt(MessageType.DISCOVER, hops=17), now=T0,
                    source=ZERO_IP).reason == "too-many-hops"
    assert s.handle(pkt(MessageType.DISCOVER, op=BOOTREPLY), now=T0,
                    source=ZERO_IP).reason == "not-bootrequest"
    assert s.handle(pkt(MessageType.OFFER), now=T0,
                    source=ZERO_IP).reason == "unsupported-message-type"


# -- caps, floods and persistence ------------------------------------------------------------
def test_lease_cap_bounds_unconfigured_clients_but_never_configured_nodes() -> None:
    big = Pool.make("big", "10.77.0.0/16", "10.77.1.0", "10.77.255.254")
    s = make(pools=(big,), max_leases=50, reservations={NODE_MAC: NODE_IP})
    replies = [s.handle(pkt(MessageType.DISCOVER, n), now=T0, source=ZERO_IP)
               for n in range(1, 1001)]
    assert sum(r.kind == "offer" for r in replies) == 50
    assert {r.reason for r in replies if r.kind == "silent"} == {"lease-cap"}
    assert s.unconfigured_records == 50 and len(s.all_leases()) == 50
    node = bytes.fromhex(NODE_MAC.replace(":", ""))
    _, ack = dora(s, node)  # type: ignore[arg-type]
    assert ack.kind == "ack" and ack.reply is not None and ack.reply.yiaddr == NODE_IP
    # Once the flood's offers expire, room is made again.
    later = s.handle(pkt(MessageType.DISCOVER, 5000), now=T0 + 31, source=ZERO_IP)
    assert later.kind == "offer" and Removed in {type(c) for c in later.changes}
    assert s.unconfigured_records == 1


def test_leases_survive_a_restart_through_their_records() -> None:
    s = make()
    _, ack = dora(s, 1)
    assert ack.lease is not None
    records = s.all_leases()
    restarted = make(leases=records)
    again = restarted.handle(pkt(MessageType.REQUEST, 1, requested=ack.lease.ip),
                             now=T0 + 100, source=ZERO_IP)
    assert again.kind == "ack" and again.reply is not None
    assert again.reply.yiaddr == ack.lease.ip
    # A new client is not given the restored lease.
    other = restarted.handle(pkt(MessageType.DISCOVER, 2), now=T0 + 100, source=ZERO_IP)
    assert other.reply is not None and other.reply.yiaddr != ack.lease.ip


def test_client_id_identifies_the_client_over_chaddr() -> None:
    s = make()
    _, ack = dora(s, 1, client_id=b"\xffstable-id")
    assert ack.reply is not None
    # The same client id on another NIC (chaddr) is the same client.
    out = s.handle(pkt(MessageType.DISCOVER, 2, client_id=b"\xffstable-id"), now=T0 + 1,
                   source=ZERO_IP)
    assert out.reply is not None and out.reply.yiaddr == ack.reply.yiaddr


def test_a_client_holds_one_record() -> None:
    s = make()
    s.handle(pkt(MessageType.DISCOVER, 1, requested="10.77.0.101"), now=T0, source=ZERO_IP)
    out = s.handle(pkt(MessageType.REQUEST, 1, requested="10.77.0.105", server_id=SERVER),
                   now=T0 + 1, source=ZERO_IP)
    assert out.kind == "ack"
    assert Removed("10.77.0.101") in out.changes
    assert [lease.ip for lease in s.all_leases()] == ["10.77.0.105"]


# -- the PXE boot answer ---------------------------------------------------------------------
def test_pxe_client_offer_gets_the_proxys_boot_fields() -> None:
    extra = ((DhcpOption.VENDOR_CLASS_ID, b"PXEClient:Arch:00000:UNDI:002001"),
             (DhcpOption.CLIENT_SYSTEM_ARCH, b"\x00\x00"),
             (DhcpOption.CLIENT_MACHINE_ID, b"\x00" + bytes(range(16))))
    p = pkt(MessageType.DISCOVER, extra=extra)
    out = make().handle(p, now=T0, source=ZERO_IP)
    req = pxe_request(p)
    assert req is not None and req.identity.arch is Arch.BIOS and out.reply is not None
    reply = with_boot(out.reply, p, req, BootAnswer(SERVER, "bios/lpxelinux.0"),
                      offer_bootfile=True)
    assert reply.yiaddr == out.reply.yiaddr and reply.siaddr == SERVER
    assert reply.bootfile == "bios/lpxelinux.0"
    assert reply.option(DhcpOption.VENDOR_CLASS_ID) == b"PXEClient"
    assert reply.option(DhcpOption.CLIENT_MACHINE_ID) == b"\x00" + bytes(range(16))
    assert reply.option(DhcpOption.VENDOR_SPECIFIC) is not None
    assert reply.option(DhcpOption.LEASE_TIME) is not None
    with pytest.raises(ValueError):
        nak = make().handle(pkt(MessageType.REQUEST, 9, requested="10.77.0.1",
                                server_id=SERVER), now=T0, source=ZERO_IP)
        assert nak.reply is not None
        with_boot(nak.reply, p, req, BootAnswer(SERVER, "x"), offer_bootfile=True)


def test_non_pxe_client_is_not_a_pxe_request() -> None:
    assert pxe_request(pkt(MessageType.DISCOVER,
                           extra=((DhcpOption.VENDOR_CLASS_ID, b"udhcp 1.35.0"),))) is None


def test_lease_server_for_config() -> None:
    config = parse_config({
        "server": {"address": SERVER},
        "dhcp": {"mode": "server", "pools": {"lab": {
            "subnet": "10.77.0.0/24", "range": ["10.77.0.100", "10.77.0.200"],
            "router": "10.77.0.1", "dns": ["10.77.0.1"], "domain": "lab.test",
            "lease_time": 900}}},
        "groups": {"all": {"default": True, "build": "demo/1"}},
        "nodes": {"n1": {"mac": NODE_MAC, "ip": NODE_IP, "hostname": "first"},
                  "n2": {"mac": "52:54:00:00:00:0b"}}})
    s = lease_server_for(config, [Lease("10.77.0.150", "hw:01:aa", None, "bound", T0 + 5,
                                        "lab")])
    assert s.reservations == {NODE_MAC: NODE_IP}
    assert s.hostnames == {NODE_MAC: "first", "52:54:00:00:00:0b": "n2"}
    assert s.pools[0].lease_time == 900 and s.lease_of("10.77.0.150") is not None


def test_a_release_at_the_cap_makes_room_at_once() -> None:
    s = make(max_leases=2)
    _, ack = dora(s, 1)
    dora(s, 2)
    assert s.handle(pkt(MessageType.DISCOVER, 3), now=T0 + 1, source=ZERO_IP).reason == \
        "lease-cap"
    assert ack.reply is not None
    s.handle(pkt(MessageType.RELEASE, 1, ciaddr=ack.reply.yiaddr), now=T0 + 2,
             source=ack.reply.yiaddr)
    out = s.handle(pkt(MessageType.DISCOVER, 3), now=T0 + 3, source=ZERO_IP)
    assert out.kind == "offer" and Removed(ack.reply.yiaddr) in out.changes


def test_a_full_range_reuses_the_longest_expired_address_first() -> None:
    s = make(pools=(Pool.make("three", "10.77.0.0/24", "10.77.0.100", "10.77.0.102",
                              lease_time=60),))
    ips = []
    for mac, at in ((1, T0), (2, T0 + 10), (3, T0 + 20)):  # expire at +60.1, +70.1, +80.1
        _, ack = dora(s, mac, now=at)
        assert ack.reply is not None
        ips.append(ack.reply.yiaddr)
    # Client 2 renews: its lease now ends last.
    s.handle(pkt(MessageType.REQUEST, 2, ciaddr=ips[1]), now=T0 + 50, source=ips[1])
    assert s.handle(pkt(MessageType.DISCOVER, 4), now=T0 + 60, source=ZERO_IP).reason == \
        "pool-exhausted"
    first = s.handle(pkt(MessageType.DISCOVER, 4), now=T0 + 200, source=ZERO_IP)
    second = s.handle(pkt(MessageType.DISCOVER, 5), now=T0 + 200, source=ZERO_IP)
    third = s.handle(pkt(MessageType.DISCOVER, 6), now=T0 + 200, source=ZERO_IP)
    assert first.reply and second.reply and third.reply
    assert [first.reply.yiaddr, second.reply.yiaddr, third.reply.yiaddr] == \
        [ips[0], ips[2], ips[1]]
    assert s.handle(pkt(MessageType.DISCOVER, 7), now=T0 + 200, source=ZERO_IP).reason == \
        "pool-exhausted"
