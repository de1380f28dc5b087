"""The asyncio edge of ProxyDHCP: one UDP socket, bytes in, replies out, no protocol rules.

Owns the socket (``open_dhcp_socket``) and the loop that reads it (``DrainingTransport``), the
``DhcpEndpoint`` protocol that runs every datagram through ``DhcpPacket.parse`` ->
``classify`` -> the planner's handler -> ``build_reply`` -> ``reply_destination``, and the
counters and log lines for each outcome. The rules themselves live in ``netbootd.dhcp.proxy``.

The socket is read by ``DrainingTransport``: one wake-up of the event loop reads every
datagram that is ready (up to ``DRAIN_BUDGET``), where asyncio's datagram transport reads one
and waits for the next ``epoll`` round. Under a burst of DISCOVERs that round trip was the
difference between answering and the kernel dropping (docs/performance.md).

An endpoint plays one of two roles: ``"dhcp"`` (udp/67, answers DISCOVER with an OFFER) or
``"proxy"`` (udp/4011, answers REQUEST/INFORM with an ACK). The role is inferred from the port
when it is 67 or 4011; tests pass it explicitly and bind unprivileged ports.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Any, Literal, cast

from netbootd.core.identity import Arch
from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import (
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    PXE_PROXY_PORT,
    BootAnswer,
    Ignored,
    PxeRequest,
    address_hint,
    build_reply,
    classify,
    reply_destination,
)
from netbootd.errors import MalformedPacket
from netbootd.metrics import Counters

log = logging.getLogger(__name__)

Role = Literal["dhcp", "proxy"]
Handler = Callable[[PxeRequest], BootAnswer | None]
# Told (mac, ip) whenever a PXE client's packet reveals its address (see proxy.address_hint).
Observer = Callable[[str, str], None]

# A DHCP message fits an Ethernet frame (RFC 2131 section 2: at least 576 bytes must be
# accepted); asyncio's datagram transport would allocate 256 KiB per recvfrom.
RECV_SIZE = 4096
RECV_BUFFER = 1 << 20  # SO_RCVBUF asked for: ~1 000 queued datagrams at the kernel's accounting
# Datagrams read per wake-up before the loop runs other work (TFTP, HTTP timers) again.
DRAIN_BUDGET = 64
# Replies queued while the socket's send buffer is full; beyond this a reply is dropped and
# counted as a socket error (the client retransmits, RFC 2131 section 4.1).
SEND_QUEUE_MAX = 1024

_ROLE_PORT: dict[Role, int] = {"dhcp": DHCP_SERVER_PORT, "proxy": PXE_PROXY_PORT}


def _role_for_port(port: int) -> Role:
    for role, role_port in _ROLE_PORT.items():
        if port == role_port:
            return role
    raise ValueError(f"cannot infer the role of port {port}: pass role='dhcp' or role='proxy'")


class DhcpEndpoint(asyncio.DatagramProtocol):
    """Answers PXE clients on one UDP socket; never lets an exception escape."""

    def __init__(
        self,
        port: int,
        handler: Handler,
        counters: Counters,
        offer_bootfile: bool,
        *,
        role: Role | None = None,
        relay_port: int = DHCP_SERVER_PORT,
        client_port: int = DHCP_CLIENT_PORT,
        observer: Observer | None = None,
    ) -> None:
        self.port = port
        self._observer = observer
        self.role: Role = role if role is not None else _role_for_port(port)
        self._proto_port = _ROLE_PORT[self.role]  # the port number the proxy rules reason about
        self._handler = handler
        self._counters = counters
        self._offer_bootfile = offer_bootfile
        self._relay_port = relay_port
        self._client_port = client_port
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        # Not part of the public transport API: asyncio's selector transport (when a caller
        # connects this protocol through create_datagram_endpoint) reads it per recvfrom.
        if hasattr(transport, "max_size"):
            cast(Any, transport).max_size = RECV_SIZE

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP errors or failed sends (e.g. unreachable relay); the socket stays usable.
        self._counters.inc("dhcp_socket_errors")
        log.warning("dhcp %s socket error: %s", self.role, exc)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._handle(data, (str(addr[0]), int(addr[1])))
        except Exception:
            self._counters.inc("dhcp_errors")
            log.exception("dhcp %s: error handling %d bytes from %s", self.role, len(data), addr)

    def _handle(self, data: bytes, source: tuple[str, int]) -> None:
        self._counters.inc("dhcp_received")
        try:
            packet = DhcpPacket.parse(data)
        except MalformedPacket as exc:
            self._counters.inc("dhcp_malformed", reason=exc.reason)
            log.debug("dhcp %s: malformed packet from %s: %s", self.role, source, exc)
            return
        if self._observer is not None and (hint := address_hint(packet)) is not None:
            self._observer(*hint)
        verdict = classify(packet, port=self._proto_port)
        if isinstance(verdict, Ignored):
            self._counters.inc("dhcp_ignored", reason=verdict.reason)
            log.debug("dhcp %s: ignored %s from %s: %s", self.role, packet.mac, source,
                      verdict.reason)
            return
        ident = verdict.identity
        answer = self._handler(verdict)
        if answer is None:
            self._counters.inc("dhcp_declined")
            # The responder logs the decision and its reason at INFO; this is transport detail.
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dhcp %s: declined mac=%s guid=%s arch=%s (planner said no boot)",
                          self.role, ident.mac, ident.guid, _arch_name(ident.arch))
            return
        reply = build_reply(packet, verdict, answer, port=self._proto_port,
                            offer_bootfile=self._offer_bootfile)
        destination = reply_destination(packet, source, port=self._proto_port,
                                         relay_port=self._relay_port,
                                         client_port=self._client_port)
        if self._transport is None:
            raise RuntimeError("datagram received on an endpoint without a transport")
        self._transport.sendto(reply.to_bytes(), destination)
        kind = verdict.answer_kind
        self._counters.inc("dhcp_answered", type=kind)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dhcp %s: %s to mac=%s arch=%s guid=%s bootfile=%s via %s:%d", self.role,
                      kind, ident.mac, _arch_name(ident.arch), ident.guid, answer.bootfile,
                      *destination)


def _arch_name(arch: Arch | None) -> str:
    """The client architecture as logged: lower-case enum name, or "unknown"."""
    return arch.name.lower() if arch is not None else "unknown"


def open_dhcp_socket(address: str, port: int, interface: str | None) -> socket.socket:
    """A non-blocking UDP socket bound to ``address:port`` that may send broadcasts.

    ``interface`` pins the socket to one link with SO_BINDTODEVICE (needs CAP_NET_RAW), so a
    broadcast OFFER leaves on the segment the DISCOVER came from and a server bound to 0.0.0.0
    on a multi-homed host answers only that segment.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # Room for a burst of DISCOVERs (a rack powering on) while the loop is busy elsewhere;
        # the kernel caps it at net.core.rmem_max without an error.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        if interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            interface.encode() + b"\x00")
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


async def start_dhcp_endpoint(
    loop: asyncio.AbstractEventLoop,
    *,
    address: str,
    port: int,
    interface: str | None,
    handler: Handler,
    counters: Counters,
    offer_bootfile: bool,
    role: Role | None = None,
    relay_port: int = DHCP_SERVER_PORT,
    client_port: int = DHCP_CLIENT_PORT,
    observer: Observer | None = None,
) -> tuple[asyncio.DatagramTransport, DhcpEndpoint]:
    """Open the socket and start an endpoint on it; close the transport to stop it.

    ``port=0`` binds an ephemeral port (tests); read it back from the transport's sockname.
    """
    endpoint = DhcpEndpoint(port, handler, counters, offer_bootfile, role=role,
                            relay_port=relay_port, client_port=client_port,
                            observer=observer)
    sock = open_dhcp_socket(address, port, interface)
    try:
        transport = DrainingTransport(loop, sock, endpoint)
    except BaseException:
        sock.close()
        raise
    endpoint.port = int(transport.get_extra_info("sockname")[1])
    return transport, endpoint


class DrainingTransport(asyncio.DatagramTransport):
    """A UDP socket read to empty on each wake-up; replies sent at once, queued when full.

    Only what the endpoint uses: ``sendto``, ``close``, ``is_closing``, ``get_extra_info``
    (``socket``, ``sockname``). The protocol's ``connection_made`` runs before this returns,
    ``connection_lost`` on the next loop iteration after ``close``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.DatagramProtocol) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname()})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._queue: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self._closing = False
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        recvfrom, received = self._sock.recvfrom, self._protocol.datagram_received
        for _ in range(DRAIN_BUDGET):
            if self._closing:  # the protocol may close the transport from a callback
                return
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                self._protocol.error_received(exc)
                return
            received(data, addr)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            return
        if not self._queue:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._fd, self._write_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        if len(self._queue) >= SEND_QUEUE_MAX:
            self._protocol.error_received(BlockingIOError("send queue full: reply dropped"))
            return
        self._queue.append((bytes(data), addr))

    def _write_ready(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            self._queue.popleft()
        self._loop.remove_writer(self._fd)

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data, _ in self._queue)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._queue.clear()
        self._loop.call_soon(self._finish_close)

    def abort(self) -> None:
        self.close()

    def _finish_close(self) -> None:
        try:
            self._protocol.connection_lost(None)
        finally:
            self._sock.close()
