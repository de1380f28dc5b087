"""The asyncio edge of server-mode DHCP: udp/67 bytes in, replies out, lease changes saved.

Runs every datagram through ``DhcpPacket.parse`` -> ``LeaseServer.handle`` (the pure lease
logic, dhcp/server.py) -> for a PXE/HTTP Boot client's OFFER or ACK, the same boot decision
the proxy makes (``handler``, service.py) added by ``with_boot`` -> sendto. Lease changes go
to ``on_changes`` (the lease DB); a bound address goes to ``observer`` so TFTP and HTTP
requests from it land in the right node's timeline. Counters: ``dhcp_server_replies{type}``,
``dhcp_server_silent{reason}``, ``dhcp_malformed{reason}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from netbootd.dhcp.endpoint import RECV_SIZE, Handler, Observer, open_dhcp_socket
from netbootd.dhcp.options import MessageType
from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import pxe_request
from netbootd.dhcp.server import Change, LeaseServer, with_boot
from netbootd.errors import MalformedPacket
from netbootd.metrics import Counters

log = logging.getLogger(__name__)

# The silent outcomes worth an INFO line: an operator wants to know the pool ran dry, the
# cap was hit or someone tried to release another client's lease.
_NOTABLE = {"pool-exhausted", "lease-cap", "spoofed-release", "spoofed-decline", "declined"}


class DhcpServerEndpoint(asyncio.DatagramProtocol):
    """Serves addresses on one UDP socket; never lets an exception escape."""

    def __init__(self, leases: LeaseServer, handler: Handler, counters: Counters, *,
                 offer_bootfile: bool, on_changes: Callable[[Sequence[Change]], None],
                 observer: Observer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.leases = leases
        self.port = 0
        self._handler = handler
        self._counters = counters
        self._offer_bootfile = offer_bootfile
        self._on_changes = on_changes
        self._observer = observer
        self._clock = clock
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        if hasattr(transport, "max_size"):
            cast(Any, transport).max_size = RECV_SIZE

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def error_received(self, exc: Exception) -> None:
        self._counters.inc("dhcp_socket_errors")
        log.warning("dhcp server socket error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._handle(data, str(addr[0]))
        except Exception:
            self._counters.inc("dhcp_errors")
            log.exception("dhcp server: error handling %d bytes from %s", len(data), addr)

    def _handle(self, data: bytes, source: str) -> None:
        self._counters.inc("dhcp_received")
        try:
            packet = DhcpPacket.parse(data)
        except MalformedPacket as exc:
            self._counters.inc("dhcp_malformed", reason=exc.reason)
            return
        out = self.leases.handle(packet, now=self._clock(), source=source)
        if out.changes:
            self._on_changes(out.changes)
        if out.reply is None or out.destination is None:
            self._counters.inc("dhcp_server_silent", reason=out.reason)
            if out.reason in _NOTABLE:
                log.info("dhcp server: %s mac=%s from %s", out.reason, packet.mac, source)
            return
        reply = out.reply
        if out.kind in ("offer", "ack", "inform") and (req := pxe_request(packet)) is not None \
                and req.message_type in (MessageType.DISCOVER, MessageType.REQUEST,
                                         MessageType.INFORM):
            answer = self._handler(req)
            if answer is not None:
                reply = with_boot(reply, packet, req, answer, offer_bootfile=self._offer_bootfile)
        if out.kind == "ack" and out.lease is not None and out.lease.mac is not None \
                and self._observer is not None:
            self._observer(out.lease.mac, out.lease.ip)
        if self._transport is None:
            raise RuntimeError("datagram received on an endpoint without a transport")
        self._transport.sendto(reply.to_bytes(), out.destination)
        self._counters.inc("dhcp_server_replies", type=out.kind)
        if out.kind == "nak":
            log.info("dhcp server: nak mac=%s: %s", packet.mac, out.reason)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("dhcp server: %s %s to mac=%s via %s:%d", out.kind, reply.yiaddr,
                      packet.mac, *out.destination)


async def start_dhcp_server_endpoint(
    loop: asyncio.AbstractEventLoop, *, address: str, port: int, interface: str | None,
    endpoint: DhcpServerEndpoint,
) -> asyncio.DatagramTransport:
    """Bind ``address:port`` and run ``endpoint`` on it; close the transport to stop."""
    sock = open_dhcp_socket(address, port, interface)
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
    except BaseException:
        sock.close()
        raise
    endpoint.port = int(transport.get_extra_info("sockname")[1])
    return transport
