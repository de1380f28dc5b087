"""Server-mode DHCP decisions (pure): pools, leases and the RFC 2131 replies.

One module of this size because the message handlers below are one state machine over one
lease table (``LeaseServer``): DISCOVER, REQUEST, DECLINE and RELEASE all read and change
the same leases and share who-may-have-which-address (``_may_have``, ``_admit``); split
by message, each piece would still need all of it.

Owns what a DHCP server decides when netbootd hands out addresses itself (``[dhcp] mode =
"server"``, docs/boot-flows.md): which address a client is offered, whether a REQUEST is ACKed
or NAKed, what DECLINE, RELEASE and INFORM do, where the reply goes, and which lease records
change. ``LeaseServer.handle(packet, now=..., source=...)`` takes the time as an argument and
returns an ``Outcome`` (reply, destination, lease changes, a counter label); the asyncio edge
(dhcp/server_endpoint.py) sends the reply and persists the changes (state/leases.py). No
sockets, clock or disk here.

Rules, by RFC 2131 section:

- 4.3.1 DISCOVER: offer, in order, the client's reservation, its current or previous address,
  the address it asks for (option 50), then a never-used address of the pool, then the longest
  expired one. The address is held for the client ``offer_hold`` seconds.
- 4.3.2 REQUEST, told apart by its fields: SELECTING (option 54 set; another server's id
  releases our offer), INIT-REBOOT (option 50, no ciaddr: NAK when the address is wrong for the
  network or not the client's, silent when the client is unknown), RENEWING/REBINDING (ciaddr
  set: extend the client's lease, NAK an address someone else holds).
- 4.3.3 DECLINE: the address is in use by someone else; it is not offered for ``decline_hold``.
- 4.3.4 RELEASE: the lease ends now; the client keeps its claim on the address until the pool
  needs it (a later DISCOVER gets the same address back).
- 4.3.5 INFORM: configuration only, no yiaddr and no lease time.
- 4.1 destinations: a relayed message goes back to the relay (giaddr) on the server port; a
  client with an address gets a unicast; everything else is broadcast, because a UDP socket
  cannot unicast to an address the client does not answer ARP for yet.
- Relays (RFC 1542): the pool is picked by giaddr; a direct client gets the pool of the
  server's own address; a renewing client the pool of its ciaddr.

Hostile input (docs/security.md): a client is a client identifier (option 61) or, without one,
its hardware address; a RELEASE or DECLINE naming a lease of another client, or coming from an
address that is not the client's (or its relay's), is ignored and counted. Addresses reserved
for configured nodes are never handed to anyone else, and at most ``max_leases`` records of
unconfigured clients are kept: beyond that, new clients are not answered (``lease-cap``).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from netbootd.config import Config
from netbootd.dhcp.options import DhcpOption, MessageType
from netbootd.dhcp.packet import BOOTREPLY, BOOTREQUEST, ZERO_IP, DhcpPacket
from netbootd.dhcp.proxy import (
    BROADCAST,
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    BootAnswer,
    PxeRequest,
    boot_options,
)

LeaseState = Literal["offered", "bound", "released", "declined"]
BROADCAST_FLAG: Final = 0x8000  # RFC 2131 section 2, figure 2
# RFC 1542 section 4.1.1: a relay discards a message whose hops exceeds its limit (16 at most).
MAX_HOPS: Final = 16


@dataclass(frozen=True, slots=True)
class Pool:
    """A subnet and the dynamic range in it; addresses as integers for cheap scans."""

    name: str
    network: ipaddress.IPv4Network
    first: int
    last: int
    router: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600

    @classmethod
    def make(cls, name: str, subnet: str, first: str, last: str, *, router: str | None = None,
             dns: Iterable[str] = (), domain: str | None = None,
             lease_time: int = 3600) -> Pool:
        return cls(name, ipaddress.IPv4Network(subnet), int(ipaddress.IPv4Address(first)),
                   int(ipaddress.IPv4Address(last)), router, tuple(dns), domain, lease_time)

    def holds(self, ip: str) -> bool:
        """``ip`` is a host address of the subnet (the range is only where dynamic ones go)."""
        n = ip_int(ip)
        net = self.network
        return (n is not None and n & int(net.netmask) == int(net.network_address)
                and n != int(net.network_address) and n != int(net.broadcast_address))

    def in_range(self, ip: str) -> bool:
        n = ip_int(ip)
        return n is not None and self.first <= n <= self.last

    def network_options(self) -> tuple[tuple[int, bytes], ...]:
        """Options 1, 28, 3, 6, 15: the same in every reply from this pool."""
        net = self.network
        options: list[tuple[int, bytes]] = [
            (DhcpOption.SUBNET_MASK, net.netmask.packed),
            (DhcpOption.BROADCAST_ADDRESS, net.broadcast_address.packed)]
        if self.router is not None:
            options.append((DhcpOption.ROUTER, ipaddress.IPv4Address(self.router).packed))
        if self.dns:
            options.append((DhcpOption.DOMAIN_NAME_SERVER,
                            b"".join(ipaddress.IPv4Address(a).packed for a in self.dns)))
        if self.domain is not None:
            options.append((DhcpOption.DOMAIN_NAME, self.domain.encode()))
        return tuple(options)


# Addresses are converted per packet; ipaddress objects cost more than the rest of the reply.
_OCTETS = {str(i): i for i in range(256)}


def ip_int(ip: str) -> int | None:
    """A dotted quad as an integer; None when it is not one."""
    parts = ip.split(".")
    if len(parts) != 4:
        return None
    try:
        a, b, c, d = (_OCTETS[x] for x in parts)
    except KeyError:
        return None
    return a << 24 | b << 16 | c << 8 | d


def int_ip(n: int) -> str:
    return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@dataclass(frozen=True, slots=True)
class Lease:
    """One address record. ``client`` is the client key (see ``client_key``); a declined
    address has none. ``expires`` is Unix time: for an offer, when the hold ends."""

    ip: str
    client: str
    mac: str | None
    state: LeaseState
    expires: float
    pool: str
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Removed:
    """The record of ``ip`` was dropped (an offer not taken, an evicted expired lease)."""

    ip: str


Change = Lease | Removed


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with one message. ``kind`` is the reply sent (``offer``, ``ack``, ``nak``,
    ``inform``) or ``silent``; ``reason`` is the counter label of a silent outcome or a NAK."""

    kind: str
    reason: str = ""
    reply: DhcpPacket | None = None
    destination: tuple[str, int] | None = None
    changes: tuple[Change, ...] = ()
    lease: Lease | None = None  # the lease an offer/ack is about


def client_key(packet: DhcpPacket) -> str | None:
    """The client identity leases are kept under: option 61 when sent (RFC 2131 section 4.2:
    it then identifies the client), else the hardware type and address."""
    cid = packet.option(DhcpOption.CLIENT_ID)
    if cid:
        return "id:" + cid.hex()
    hw = packet.chaddr[:packet.hlen]
    if not hw or not any(hw):
        return None
    return f"hw:{packet.htype:02x}:{hw.hex()}"


def _ip_option(packet: DhcpPacket, code: int) -> str | None:
    raw = packet.option(code)
    if raw is None or len(raw) != 4:
        return None
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


@dataclass
class LeaseServer:
    """The lease table and the decisions; one instance per running server.

    ``reservations`` maps a configured node's MAC to its reserved address; ``hostnames`` a
    configured node's MAC to the host name sent in option 12. Both MAC sets are exempt from the
    ``max_leases`` cap. ``leases`` are records loaded from the state DB at start.
    """

    pools: tuple[Pool, ...]
    server_ip: str
    reservations: Mapping[str, str] = field(default_factory=dict)
    hostnames: Mapping[str, str] = field(default_factory=dict)
    max_leases: int = 10_000
    offer_hold: float = 60.0
    decline_hold: float = 600.0
    leases: Iterable[Lease] = ()
    relay_port: int = DHCP_SERVER_PORT
    client_port: int = DHCP_CLIENT_PORT

    def __post_init__(self) -> None:
        self._server_id = ipaddress.IPv4Address(self.server_ip).packed
        self._by_ip: dict[str, Lease] = {}
        self._by_client: dict[str, str] = {}
        self._reserved_ip: dict[str, str] = {ip: mac for mac, ip in self.reservations.items()}
        self._cursor: dict[str, int] = {p.name: p.first for p in self.pools}
        self._pool_by_name = {p.name: p for p in self.pools}
        self._local = next((p for p in self.pools if p.holds(self.server_ip)), None)
        self._network_options = {p.name: p.network_options() for p in self.pools}
        self._unconfigured = 0  # records of clients that are not configured nodes
        self._full_until = 0.0  # at the cap with nothing expired before this time
        # Per pool: records at non-reserved addresses of the range (so a full range is known
        # without a scan), reserved addresses in the range, and a heap of (expires, ip) with
        # stale entries skipped lazily (so the longest-expired address is found in log time).
        self._used: dict[str, int] = {p.name: 0 for p in self.pools}
        self._reserved_in_range = {p.name: sum(1 for ip in self._reserved_ip if p.in_range(ip))
                                   for p in self.pools}
        self._expiry: dict[str, list[tuple[float, str]]] = {p.name: [] for p in self.pools}
        for lease in self.leases:
            self._put(lease)

    # -- the table --------------------------------------------------------------------------
    def _configured(self, lease: Lease) -> bool:
        return lease.mac is not None and (lease.mac in self.hostnames
                                          or lease.mac in self.reservations)

    def _put(self, lease: Lease, changes: list[Change] | None = None) -> Lease:
        """Store ``lease``; a client holds one record, so its record at another address goes
        (appended to ``changes`` as ``Removed``), and so does the previous holder's index."""
        old = self._by_ip.get(lease.ip)
        if old is not None:
            self._drop(old)
        if lease.client:
            prev = self._by_client.get(lease.client)
            if prev is not None and prev != lease.ip and prev in self._by_ip:
                removed = self._remove(prev)
                if changes is not None:
                    changes.append(removed)
            self._by_client[lease.client] = lease.ip
        self._by_ip[lease.ip] = lease
        pool = self._pool_by_name.get(lease.pool)
        if pool is not None and pool.in_range(lease.ip) and lease.ip not in self._reserved_ip:
            if old is None:
                self._used[pool.name] += 1
            heap = self._expiry[pool.name]
            heapq.heappush(heap, (lease.expires, lease.ip))
            if len(heap) > 2 * len(self._by_ip) + 64:  # too many stale entries: rebuild
                heap[:] = [(x.expires, x.ip) for x in self._by_ip.values()
                           if x.pool == pool.name and pool.in_range(x.ip)]
                heapq.heapify(heap)
        if changes is not None:
            changes.append(lease)
        # A record that now ends sooner (RELEASE) may make room at the cap before the time
        # _admit computed.
        self._full_until = min(self._full_until, lease.expires)
        if not self._configured(lease):
            self._unconfigured += 1
        return lease

    def _drop(self, lease: Lease) -> None:
        """Forget the indexes of a record (the caller removes it from ``_by_ip``)."""
        if lease.client and self._by_client.get(lease.client) == lease.ip:
            del self._by_client[lease.client]
        if not self._configured(lease):
            self._unconfigured -= 1

    def _remove(self, ip: str) -> Removed:
        lease = self._by_ip.pop(ip)
        self._drop(lease)
        pool = self._pool_by_name.get(lease.pool)
        if pool is not None and pool.in_range(ip) and ip not in self._reserved_ip:
            self._used[pool.name] -= 1
        return Removed(ip)

    def lease_of(self, ip: str) -> Lease | None:
        return self._by_ip.get(ip)

    def all_leases(self) -> list[Lease]:
        return list(self._by_ip.values())

    @property
    def unconfigured_records(self) -> int:
        return self._unconfigured

    # -- entry point ------------------------------------------------------------------------
    def handle(self, packet: DhcpPacket, *, now: float, source: str) -> Outcome:
        """Decide the answer to one parsed message that arrived from IP ``source``."""
        if packet.op != BOOTREQUEST:
            return Outcome("silent", "not-bootrequest")
        if packet.hops > MAX_HOPS:
            return Outcome("silent", "too-many-hops")
        mtype = packet.message_type
        if mtype is None:
            return Outcome("silent", "no-message-type")
        client = client_key(packet)
        if client is None:
            return Outcome("silent", "no-client-id")
        pool = self._pool_for(packet)
        if mtype is MessageType.DISCOVER:
            if pool is None:
                return Outcome("silent", "no-pool")
            return self._discover(packet, now, pool, client)
        if mtype is MessageType.REQUEST:
            return self._request(packet, now, pool, client)
        if mtype is MessageType.DECLINE:
            return self._decline(packet, now, client, source)
        if mtype is MessageType.RELEASE:
            return self._release(packet, now, client, source)
        if mtype is MessageType.INFORM:
            if pool is None:
                return Outcome("silent", "no-pool")
            return self._inform(packet, pool)
        return Outcome("silent", "unsupported-message-type")

    def _pool_for(self, packet: DhcpPacket) -> Pool | None:
        if packet.giaddr != ZERO_IP:
            where = packet.giaddr
        elif packet.ciaddr != ZERO_IP:
            where = packet.ciaddr
        else:
            return self._local
        return next((p for p in self.pools if p.holds(where)), None)

    # -- allocation -------------------------------------------------------------------------
    def _may_have(self, ip: str, client: str, mac: str | None, pool: Pool, now: float) -> bool:
        """``ip`` may be leased to this client: in the pool (range, or its reservation), not
        reserved for another node, and not held by another client."""
        reserved_for = self._reserved_ip.get(ip)
        if reserved_for is not None:
            return reserved_for == mac and pool.holds(ip)
        if not pool.in_range(ip) or not pool.holds(ip):
            return False
        if mac is not None and mac in self.reservations and \
                pool.holds(self.reservations[mac]):
            return False  # a node with a reservation in this pool gets only that address
        if ip == self.server_ip:
            return False
        lease = self._by_ip.get(ip)
        return lease is None or lease.client == client or lease.expires <= now

    def _choose(self, packet: DhcpPacket, now: float, pool: Pool, client: str,
                mac: str | None) -> str | None:
        reserved = self.reservations.get(mac) if mac is not None else None
        if reserved is not None and pool.holds(reserved):
            return reserved
        current = self._by_client.get(client)
        if current is not None and self._may_have(current, client, mac, pool, now):
            return current
        requested = _ip_option(packet, DhcpOption.REQUESTED_IP)
        if requested is not None and self._may_have(requested, client, mac, pool, now):
            return requested
        return self._free_address(pool, now)

    def _free_address(self, pool: Pool, now: float) -> str | None:
        """A never-used address (round-robin from a cursor), else the longest-expired one."""
        size = pool.last - pool.first + 1
        if self._used[pool.name] + self._reserved_in_range[pool.name] < size:
            start = self._cursor[pool.name]
            for i in range(size):
                n = pool.first + (start - pool.first + i) % size
                ip = int_ip(n)
                if ip not in self._by_ip and ip not in self._reserved_ip and \
                        ip != self.server_ip:
                    self._cursor[pool.name] = n + 1 if n < pool.last else pool.first
                    return ip
        heap = self._expiry[pool.name]
        while heap:
            expires, ip = heap[0]
            lease = self._by_ip.get(ip)
            if lease is None or lease.expires != expires or lease.pool != pool.name:
                heapq.heappop(heap)  # stale: the record changed or went
                continue
            return ip if expires <= now else None
        return None

    def _admit(self, mac: str | None, client: str, now: float) -> tuple[bool, list[Change]]:
        """Room for one more record of an unconfigured client? Evicts expired ones if full."""
        if (mac is not None and (mac in self.hostnames or mac in self.reservations)) \
                or client in self._by_client or self._unconfigured < self.max_leases:
            return True, []
        if now < self._full_until:
            return False, []
        expired = [lease.ip for lease in self._by_ip.values()
                   if lease.expires <= now and not self._configured(lease)]
        changes: list[Change] = [self._remove(ip) for ip in expired]
        if self._unconfigured >= self.max_leases:
            self._full_until = min((lease.expires for lease in self._by_ip.values()
                                    if not self._configured(lease)), default=now)
            return False, changes
        return True, changes

    # -- messages ---------------------------------------------------------------------------
    def _discover(self, packet: DhcpPacket, now: float, pool: Pool, client: str) -> Outcome:
        mac = packet.mac
        ok, changes = self._admit(mac, client, now)
        if not ok:
            return Outcome("silent", "lease-cap", changes=tuple(changes))
        ip = self._choose(packet, now, pool, client, mac)
        if ip is None:
            return Outcome("silent", "pool-exhausted", changes=tuple(changes))
        current = self._by_ip.get(ip)
        if current is not None and current.client == client and current.state == "bound" \
                and current.expires > now:
            lease = current  # already bound: the offer confirms it and holds nothing new
        else:
            lease = self._put(Lease(ip, client, mac, "offered", now + self.offer_hold, pool.name,
                                    self._hostname(mac)), changes)
        reply = self._reply(packet, MessageType.OFFER, pool, ip, lease_time=pool.lease_time,
                            hostname=lease.hostname)
        return Outcome("offer", reply=reply, destination=self._destination(packet, reply),
                       changes=tuple(changes), lease=lease)

    def _request(self, packet: DhcpPacket, now: float, pool: Pool | None,
                 client: str) -> Outcome:
        mac = packet.mac
        server_id = packet.option(DhcpOption.SERVER_ID)
        requested = _ip_option(packet, DhcpOption.REQUESTED_IP)
        if server_id is not None:
            # SELECTING (4.3.2): the client broadcasts which server's offer it took.
            if server_id != self._server_id:
                current = self._by_client.get(client)
                lease = self._by_ip.get(current) if current is not None else None
                if lease is not None and lease.state == "offered":
                    return Outcome("silent", "chose-other-server",
                                   changes=(self._remove(lease.ip),))
                return Outcome("silent", "chose-other-server")
            if requested is None or packet.ciaddr != ZERO_IP:
                return Outcome("silent", "bad-selecting-request")
            if pool is None:
                return self._nak(packet, "no-pool")
            if self._may_have(requested, client, mac, pool, now):
                ok, evicted = self._admit(mac, client, now)
                if ok:
                    return self._ack(packet, now, pool, requested, client, evicted)
                return Outcome("silent", "lease-cap", changes=tuple(evicted))
            return self._nak(packet, "offer-not-held")
        if packet.ciaddr == ZERO_IP:
            # INIT-REBOOT: a client that remembers an address asks to keep it.
            if requested is None:
                return Outcome("silent", "bad-request")
            if pool is None or not pool.holds(requested):
                return self._nak(packet, "wrong-network")
            known = self._by_client.get(client)
            reserved = self.reservations.get(mac) if mac is not None else None
            if known is None and reserved is None:
                holder = self._by_ip.get(requested)
                if (holder is not None and holder.expires > now) or \
                        requested in self._reserved_ip:
                    return self._nak(packet, "address-taken")
                # RFC 2131 4.3.2: "If the DHCP server has no record of this client, then it
                # MUST remain silent" (another server may own it).
                return Outcome("silent", "unknown-client")
            if requested in (known, reserved) and self._may_have(requested, client, mac, pool,
                                                                 now):
                return self._ack(packet, now, pool, requested, client, [])
            return self._nak(packet, "not-client-address")
        # RENEWING (unicast to us) or REBINDING (broadcast): ciaddr is the client's address.
        ip = packet.ciaddr
        if pool is None or not pool.holds(ip):
            return self._nak(packet, "wrong-network")
        lease = self._by_ip.get(ip)
        if lease is not None and lease.client == client and self._may_have(ip, client, mac,
                                                                           pool, now):
            return self._ack(packet, now, pool, ip, client, [])
        if self._reserved_ip.get(ip) == mac and mac is not None:
            return self._ack(packet, now, pool, ip, client, [])
        if lease is not None or ip in self._reserved_ip:
            # Someone else's (or no longer this client's: its node got a reservation).
            return self._nak(packet, "address-taken")
        return Outcome("silent", "unknown-client")

    def _ack(self, packet: DhcpPacket, now: float, pool: Pool, ip: str, client: str,
             changes: list[Change]) -> Outcome:
        mac = packet.mac
        lease = self._put(Lease(ip, client, mac, "bound", now + pool.lease_time, pool.name,
                                self._hostname(mac)), changes)
        reply = self._reply(packet, MessageType.ACK, pool, ip, lease_time=pool.lease_time,
                            hostname=lease.hostname)
        return Outcome("ack", reply=reply, destination=self._destination(packet, reply),
                       changes=tuple(changes), lease=lease)

    def _nak(self, packet: DhcpPacket, reason: str) -> Outcome:
        reply = DhcpPacket(
            op=BOOTREPLY, htype=packet.htype, hlen=packet.hlen, hops=0, xid=packet.xid, secs=0,
            # RFC 2131 4.1: a relayed NAK asks the relay to broadcast it to the client.
            flags=packet.flags | (BROADCAST_FLAG if packet.giaddr != ZERO_IP else 0),
            ciaddr=ZERO_IP, yiaddr=ZERO_IP, siaddr=ZERO_IP, giaddr=packet.giaddr,
            chaddr=packet.chaddr, sname=b"", file=b"",
            options=((DhcpOption.MESSAGE_TYPE, bytes((MessageType.NAK,))),
                     (DhcpOption.SERVER_ID, self._server_id),
                     (DhcpOption.MESSAGE, reason.encode())))
        if packet.giaddr != ZERO_IP:
            destination = (packet.giaddr, self.relay_port)
        else:
            destination = (BROADCAST, self.client_port)  # RFC 2131 4.1: NAKs are broadcast
        return Outcome("nak", reason, reply=reply, destination=destination)

    def _holds_for(self, ip: str, client: str, source: str, packet: DhcpPacket,
                   allowed_sources: tuple[str, ...]) -> Lease | None:
        lease = self._by_ip.get(ip)
        if lease is None or lease.client != client:
            return None
        if source not in allowed_sources and not (packet.giaddr != ZERO_IP
                                                  and source == packet.giaddr):
            return None
        return lease

    def _decline(self, packet: DhcpPacket, now: float, client: str, source: str) -> Outcome:
        server_id = packet.option(DhcpOption.SERVER_ID)
        if server_id is not None and server_id != self._server_id:
            return Outcome("silent", "other-server")
        ip = _ip_option(packet, DhcpOption.REQUESTED_IP)
        # A DECLINE comes from a client without an address (source 0.0.0.0) or via its relay.
        lease = None if ip is None else self._holds_for(ip, client, source, packet, (ZERO_IP,))
        if ip is None or lease is None:
            return Outcome("silent", "spoofed-decline")
        self._remove(ip)
        changes: list[Change] = []
        declined = self._put(Lease(ip, "", None, "declined", now + self.decline_hold,
                                   lease.pool), changes)
        return Outcome("silent", "declined", changes=tuple(changes), lease=declined)

    def _release(self, packet: DhcpPacket, now: float, client: str, source: str) -> Outcome:
        server_id = packet.option(DhcpOption.SERVER_ID)
        if server_id is not None and server_id != self._server_id:
            return Outcome("silent", "other-server")
        ip = packet.ciaddr
        # A RELEASE is unicast from the address being released (4.4.6) or comes via a relay.
        lease = None if ip == ZERO_IP else self._holds_for(ip, client, source, packet, (ip,))
        if lease is None or lease.state != "bound":
            return Outcome("silent", "spoofed-release")
        changes: list[Change] = []
        released = self._put(replace(lease, state="released", expires=now), changes)
        return Outcome("silent", "released", changes=tuple(changes), lease=released)

    def _inform(self, packet: DhcpPacket, pool: Pool) -> Outcome:
        if packet.ciaddr == ZERO_IP:
            return Outcome("silent", "bad-inform")
        reply = self._reply(packet, MessageType.ACK, pool, ZERO_IP, lease_time=None,
                            hostname=self._hostname(packet.mac))
        return Outcome("inform", reply=reply, destination=self._destination(packet, reply))

    # -- replies ----------------------------------------------------------------------------
    def _hostname(self, mac: str | None) -> str | None:
        return self.hostnames.get(mac) if mac is not None else None

    def _reply(self, packet: DhcpPacket, mtype: MessageType, pool: Pool, yiaddr: str, *,
               lease_time: int | None, hostname: str | None) -> DhcpPacket:
        options: list[tuple[int, bytes]] = [
            (DhcpOption.MESSAGE_TYPE, bytes((mtype,))),
            (DhcpOption.SERVER_ID, self._server_id),
        ]
        if lease_time is not None:
            # RFC 2131 4.4.5 defaults: T1 = 0.5 and T2 = 0.875 of the lease.
            options += [(DhcpOption.LEASE_TIME, lease_time.to_bytes(4, "big")),
                        (DhcpOption.RENEWAL_TIME, (lease_time // 2).to_bytes(4, "big")),
                        (DhcpOption.REBINDING_TIME, (lease_time * 7 // 8).to_bytes(4, "big"))]
        options += self._network_options[pool.name]
        if hostname is not None:
            options.append((DhcpOption.HOST_NAME, hostname.encode()))
        return DhcpPacket(
            op=BOOTREPLY, htype=packet.htype, hlen=packet.hlen, hops=0, xid=packet.xid, secs=0,
            flags=packet.flags,
            # RFC 2131 table 3: ciaddr copied in an ACK, 0 in an OFFER.
            ciaddr=packet.ciaddr if mtype is MessageType.ACK else ZERO_IP,
            yiaddr=yiaddr,
            # next-server: BIOS PXE and GRUB take the TFTP server from siaddr.
            siaddr=self.server_ip, giaddr=packet.giaddr, chaddr=packet.chaddr,
            sname=b"", file=b"", options=tuple(options))

    def _destination(self, packet: DhcpPacket, reply: DhcpPacket) -> tuple[str, int]:
        if packet.giaddr != ZERO_IP:
            return packet.giaddr, self.relay_port
        if packet.ciaddr != ZERO_IP:
            return packet.ciaddr, self.client_port
        return BROADCAST, self.client_port


def with_boot(reply: DhcpPacket, packet: DhcpPacket, request: PxeRequest, answer: BootAnswer,
              *, offer_bootfile: bool) -> DhcpPacket:
    """``reply`` (an OFFER or ACK with an address) plus the PXE boot answer the proxy would
    give this client: option 60/97/66/67/43, the ``file`` field and next-server."""
    mtype = reply.message_type
    if mtype not in (MessageType.OFFER, MessageType.ACK):
        raise ValueError(f"boot information goes in an OFFER or ACK, not {mtype}")
    boot, file_field = boot_options(packet, request, answer, reply_type=mtype,
                                    offer_bootfile=offer_bootfile)
    return replace(reply, siaddr=answer.server_ip, file=file_field,
                   options=reply.options + tuple(boot))


def lease_server_for(config: Config, leases: Iterable[Lease], *,
                     relay_port: int = DHCP_SERVER_PORT) -> LeaseServer:
    """The lease logic for ``config``'s pools and nodes (``ip`` reservations, host names)."""
    d = config.dhcp
    pools = tuple(Pool.make(p.name, p.subnet, p.first, p.last, router=p.router, dns=p.dns,
                            domain=p.domain, lease_time=p.lease_time) for p in d.pools)
    reservations = {mac: n.ip for n in config.nodes if n.ip for mac in n.macs}
    hostnames = {mac: n.hostname or n.name for n in config.nodes for mac in n.macs}
    return LeaseServer(pools, config.server.address, reservations=reservations,
                       hostnames=hostnames, max_leases=d.max_leases,
                       offer_hold=float(d.offer_hold), decline_hold=float(d.decline_hold),
                       leases=leases, relay_port=relay_port)
