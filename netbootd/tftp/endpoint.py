"""The asyncio edge of TFTP: sockets, the event loop, one timer per transfer, and counting.

This module owns the UDP sockets and their lifecycle, and nothing of the protocol: requests are
decoded by :mod:`netbootd.tftp.packet`, transfers are run by :class:`ReadSession`, files are
found by the ``resolver`` the service passes in.

- The listening socket only takes requests. Each accepted RRQ gets a NEW socket bound to the
  local address the request arrived on (learned with IP_PKTINFO, so replies leave from the
  address the client talked to even when listening on 0.0.0.0) and port 0: the server's
  transfer identifier of RFC 1350 section 4.
- Sockets are read with ``loop.add_reader`` and ``recvfrom``/``recvmsg`` of a fixed small size
  instead of asyncio datagram transports: a transport's ``max_size`` of 256 KiB is allocated on
  every receive, and the transfer sockets only ever receive 4-byte ACKs or short ERRORs. The
  listener reads at most 2048 bytes; a longer request is malformed. Sending is a direct
  ``sendto``; if the kernel buffer is ever full the datagram is dropped like on the wire and
  the session's timeout recovers it.
- Exactly one timer per transfer: armed at ``session.deadline``; when it fires and the deadline
  has moved later (progress was made), it is re-armed for the new deadline; otherwise the
  session's ``on_timer`` runs. No timer is cancelled or created per packet.
- No exception escapes a socket callback: malformed packets are counted by reason, unexpected
  errors are counted as ``tftp_errors`` and logged.

Counters: ``tftp_requests``, ``tftp_transfers{outcome}``, ``tftp_bytes_sent``,
``tftp_retransmits``, ``tftp_refused{reason}``, ``tftp_malformed{reason}``,
``tftp_ignored{reason}``, ``tftp_unknown_tid``, ``tftp_errors``. ``tftp_refused`` reasons
include the limits: ``busy`` (max_sessions), ``busy-client`` (max_sessions_per_client) and
``no-socket`` (out of descriptors); the gauge of running
transfers is :attr:`TftpServer.active_sessions`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from netbootd.error_map import refusal_for
from netbootd.errors import MalformedPacket
from netbootd.metrics import Counters
from netbootd.tftp.packet import Error, ErrorCode, ReadRequest, WriteRequest, parse_packet
from netbootd.tftp.session import (
    Outcome,
    OutcomeKind,
    ReadSession,
    SessionLimits,
    TftpSource,
    refusal,
)

__all__ = ["Resolver", "TftpServer", "TransferRecord"]

log = logging.getLogger(__name__)

Resolver = Callable[[str, tuple[str, int]], TftpSource]

# Linux value; Python's socket module does not export IP_PKTINFO.
_IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
_PKTINFO = struct.Struct("=i4s4s")
_PKTINFO_SPACE = socket.CMSG_SPACE(_PKTINFO.size)

# An RRQ is a name, a mode and a few options; anything longer is not a request we serve.
LISTENER_RECV_SIZE = 2048
# Transfer sockets receive ACK (4 bytes) and ERROR (4 bytes + a short message).
TRANSFER_RECV_SIZE = 1024
# Datagrams handled per readiness callback, so one busy socket cannot starve the others.
_BATCH = 64


@dataclass(frozen=True)
class TransferRecord:
    """One request's result, handed to ``on_transfer_done`` (the service records boot events).

    ``outcome`` is a :class:`OutcomeKind`, a ``StrEnum``: it compares equal to its label
    (``rec.outcome == "completed"``) and serialises as one. ``error_code``/``message`` carry the
    ERROR a client sent (aborted) or we sent (refused, failed).
    """

    client_ip: str
    client_port: int
    filename: str
    outcome: OutcomeKind
    bytes_transferred: int  # file bytes the client acknowledged
    duration: float  # seconds from request to end
    error_code: int | None = None
    message: str = ""
    bytes_sent: int = 0  # DATA payload on the wire, retransmissions included
    retransmits: int = 0
    blksize: int = 0
    windowsize: int = 0

    @property
    def client(self) -> tuple[str, int]:
        return (self.client_ip, self.client_port)


class _Transfer:
    """One running transfer: its session, its own socket (TID) and its single timer."""

    __slots__ = ("client", "closed", "session", "sock", "source", "started", "timer", "timer_at")

    def __init__(
        self,
        session: ReadSession,
        sock: socket.socket,
        client: tuple[str, int],
        source: TftpSource,
        started: float,
    ) -> None:
        self.session = session
        self.sock = sock
        self.client = client
        self.source = source
        self.started = started
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.closed = False


class TftpServer:
    """A read-only TFTP server: one listening socket, one socket and one session per transfer."""

    def __init__(
        self,
        resolver: Resolver,
        limits: SessionLimits | None = None,
        counters: Counters | None = None,
        on_transfer_done: Callable[[TransferRecord], None] | None = None,
        max_sessions: int = 1024,
        max_sessions_per_client: int = 8,
    ) -> None:
        self._resolver = resolver
        self.limits = limits if limits is not None else SessionLimits()
        self.counters = counters if counters is not None else Counters()
        self._on_done = on_transfer_done
        self.max_sessions = max_sessions
        self.max_sessions_per_client = max_sessions_per_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._host = ""
        self._interface: str | None = None
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._per_ip: dict[str, int] = {}

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The bound listening port (useful after binding port 0)."""
        if self._listener is None:
            raise RuntimeError("TftpServer is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def active_sessions(self) -> int:
        return len(self._transfers)

    async def start(self, host: str, port: int, interface: str | None = None) -> None:
        """Bind ``host:port`` (IPv4), optionally pinned to ``interface`` (SO_BINDTODEVICE)."""
        if self._listener is not None:
            raise RuntimeError("TftpServer already started")
        loop = asyncio.get_running_loop()
        sock = self._new_socket(interface)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._listener = sock
        self._host = sock.getsockname()[0]
        self._interface = interface
        loop.add_reader(sock.fileno(), self._on_listener_readable)
        log.info(
            "tftp: listening on %s:%d%s",
            self._host,
            self.port,
            f" ({interface})" if interface else "",
        )

    async def stop(self) -> None:
        """Close the listener, tell every running client we stop, close sockets and sources."""
        loop, sock = self._loop, self._listener
        if loop is None or sock is None:
            return
        loop.remove_reader(sock.fileno())
        sock.close()
        self._listener = None
        now = loop.time()
        for tr in list(self._transfers.values()):
            self._send(tr, tr.session.abort(now, "server shutting down"))
            self._end(tr)

    # ----------------------------------------------------------------- listener

    def _new_socket(self, interface: str | None) -> socket.socket:
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

    def _on_listener_readable(self) -> None:
        sock = self._listener
        if sock is None:
            return
        for _ in range(_BATCH):
            try:
                data, ancdata, flags, addr = sock.recvmsg(LISTENER_RECV_SIZE, _PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters.inc("tftp_errors")
                log.warning("tftp: listener receive failed: %s", exc)
                return
            try:
                local_ip = self._local_ip(ancdata)
                if flags & socket.MSG_TRUNC:
                    self.counters.inc("tftp_malformed", reason="too-long")
                    continue
                self._on_request(data, (addr[0], addr[1]), local_ip)
            except Exception:
                self.counters.inc("tftp_errors")
                log.exception("tftp: request from %s failed", addr)

    def _local_ip(self, ancdata: list[tuple[int, int, bytes]]) -> str:
        for level, kind, payload in ancdata:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= 12:
                # ipi_spec_dst: our address on the receiving interface (not the packet's
                # destination, which may be a broadcast address).
                return socket.inet_ntoa(_PKTINFO.unpack_from(payload)[1])
        return self._host

    def _reply(self, data: bytes, client: tuple[str, int], local_ip: str) -> None:
        """Send from the listening port, with the source address the request was sent to."""
        sock = self._listener
        if sock is None:
            return
        try:
            if local_ip and local_ip != "0.0.0.0" and self._host == "0.0.0.0":
                info = _PKTINFO.pack(0, socket.inet_aton(local_ip), b"\0\0\0\0")
                sock.sendmsg([data], [(socket.IPPROTO_IP, _IP_PKTINFO, info)], 0, client)
            else:
                sock.sendto(data, client)
        except OSError as exc:
            self.counters.inc("tftp_errors")
            log.debug("tftp: reply to %s failed: %s", client, exc)

    def _refuse(
        self,
        client: tuple[str, int],
        local_ip: str,
        filename: str,
        reason: str,
        error: Error,
    ) -> None:
        self.counters.inc("tftp_refused", reason=reason)
        self._reply(error.to_bytes(), client, local_ip)
        self._report(
            TransferRecord(
                client_ip=client[0],
                client_port=client[1],
                filename=filename,
                outcome=OutcomeKind.REFUSED,
                bytes_transferred=0,
                duration=0.0,
                error_code=error.code,
                message=error.message,
            )
        )

    def _on_request(self, data: bytes, client: tuple[str, int], local_ip: str) -> None:
        try:
            packet = parse_packet(data)
        except MalformedPacket as exc:
            # No reply: answering garbage would let anyone bounce traffic off us.
            self.counters.inc("tftp_malformed", reason=exc.reason)
            return
        if isinstance(packet, WriteRequest):
            self.counters.inc("tftp_requests")
            self._refuse(
                client,
                local_ip,
                packet.filename,
                "write",
                Error(ErrorCode.ACCESS_VIOLATION, "read-only server"),
            )
            return
        if not isinstance(packet, ReadRequest):
            # DATA/ACK/ERROR/OACK belong on a transfer socket; never answer them here.
            kind = type(packet).__name__.lower()
            self.counters.inc("tftp_ignored", reason=f"{kind}-on-listener")
            return
        self.counters.inc("tftp_requests")
        running = self._transfers.get(client)
        if running is not None:
            if running.session.request == packet:
                # The client resent its RRQ because our first answer was slow or lost; the
                # running session's own timer retransmits, a second one would double the traffic.
                self.counters.inc("tftp_ignored", reason="duplicate-request")
                return
            # Another request from the same port: the client is done with the running one
            # (its final ACK was lost, or it gave up). Serve the new one rather than ignore it
            # until the stale transfer times out. First read what the client already sent to
            # the old transfer: EDK2's ERROR 8 after a tsize probe races its next RRQ.
            self._on_transfer_readable(running)
            if not running.closed:
                running.session.supersede(self._loop.time() if self._loop else running.started)
                self._end(running)
        bad_mode = refusal(packet)
        if bad_mode is not None:
            self._refuse(client, local_ip, packet.filename, "mode", bad_mode)
            return
        if len(self._transfers) >= self.max_sessions:
            self._refuse(
                client,
                local_ip,
                packet.filename,
                "busy",
                Error(ErrorCode.NOT_DEFINED, "server busy"),
            )
            return
        if self._per_ip.get(client[0], 0) >= self.max_sessions_per_client:
            self._refuse(
                client,
                local_ip,
                packet.filename,
                "busy-client",
                Error(ErrorCode.NOT_DEFINED, "server busy"),
            )
            return
        try:
            source = self._resolver(packet.filename, client)
        except Exception as exc:  # error_map.py says what each becomes
            why = refusal_for(exc)
            if why.expected:
                log.log(logging.DEBUG if why.label == "not-found" else logging.INFO,
                        "tftp: %s:%d %r refused (%s): %s", *client, packet.filename,
                        why.label, exc)
            else:
                log.exception("tftp: resolving %r for %s:%d failed", packet.filename, *client)
            self._refuse(
                client,
                local_ip,
                packet.filename,
                why.label,
                Error(why.tftp_code, why.tftp_message),
            )
            return
        try:
            self._begin(packet, source, client, local_ip)
        except OSError as exc:
            # No descriptor or port for a transfer socket (EMFILE, ENFILE...): the server is
            # full in a way max_sessions did not foresee; say busy, like the limits do.
            log.warning("tftp: no socket for a transfer to %s:%d: %s", *client, exc)
            self._refuse(
                client,
                local_ip,
                packet.filename,
                "no-socket",
                Error(ErrorCode.NOT_DEFINED, "server busy"),
            )

    # ----------------------------------------------------------------- transfers

    def _begin(
        self, request: ReadRequest, source: TftpSource, client: tuple[str, int], local_ip: str
    ) -> None:
        loop = self._loop
        if loop is None:
            source.close()
            return
        try:
            session = ReadSession(request, source, self.limits)
            sock = self._new_socket(self._interface)
            try:
                # Port 0: a fresh port is this transfer's TID (RFC 1350 section 4).
                sock.bind((local_ip, 0))
            except BaseException:
                sock.close()
                raise
        except BaseException:
            source.close()
            raise
        now = loop.time()
        tr = _Transfer(session, sock, client, source, now)
        self._transfers[client] = tr
        self._per_ip[client[0]] = self._per_ip.get(client[0], 0) + 1
        loop.add_reader(sock.fileno(), self._on_transfer_readable, tr)
        self._send(tr, session.start(now))
        if session.finished:
            self._end(tr)
        else:
            self._arm(tr)

    def _on_transfer_readable(self, tr: _Transfer) -> None:
        loop = self._loop
        if loop is None or tr.closed:
            return
        try:
            for _ in range(_BATCH):
                try:
                    data, addr = tr.sock.recvfrom(TRANSFER_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                if addr != tr.client:
                    self._unknown_tid(tr, data, addr)
                    continue
                session = tr.session
                self._send(tr, session.on_datagram(data, loop.time()))
                if session.finished:
                    self._end(tr)
                    return
        except Exception:
            self.counters.inc("tftp_errors")
            log.exception("tftp: transfer to %s:%d failed", *tr.client)
            self._send(tr, tr.session.abort(loop.time(), "internal error"))
            self._end(tr)

    def _unknown_tid(self, tr: _Transfer, data: bytes, addr: tuple[str, int]) -> None:
        # RFC 1350 section 4: a packet from a foreign TID gets ERROR 5 and the transfer goes on.
        # Never answer an ERROR with an ERROR, so two confused peers cannot ping-pong forever.
        self.counters.inc("tftp_unknown_tid")
        if data[:2] == b"\x00\x05":
            return
        try:
            tr.sock.sendto(Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID").to_bytes(), addr)
        except OSError as exc:
            log.debug("tftp: error 5 to %s failed: %s", addr, exc)

    def _send(self, tr: _Transfer, datagrams: list[bytes]) -> None:
        if tr.closed:
            return
        sock, client = tr.sock, tr.client
        for datagram in datagrams:
            try:
                sock.sendto(datagram, client)
            except BlockingIOError:
                # Socket buffer full: lose it like the network would; the timer resends.
                self.counters.inc("tftp_send_dropped")
            except OSError as exc:
                self.counters.inc("tftp_errors")
                log.debug("tftp: send to %s:%d failed: %s", *client, exc)
                return

    def _arm(self, tr: _Transfer) -> None:
        deadline = tr.session.deadline
        loop = self._loop
        if deadline is None or loop is None or tr.closed:
            return
        tr.timer_at = deadline
        tr.timer = loop.call_at(deadline, self._on_timer, tr)

    def _on_timer(self, tr: _Transfer) -> None:
        tr.timer = None
        loop = self._loop
        if tr.closed or loop is None:
            return
        try:
            session = tr.session
            deadline = session.deadline
            if deadline is None:
                self._end(tr)
                return
            if deadline > tr.timer_at:
                # Progress moved the deadline since we armed: sleep again, nothing to do.
                self._arm(tr)
                return
            # call_at may fire a clock tick early; the session must see its deadline reached.
            self._send(tr, session.on_timer(max(loop.time(), deadline)))
            if session.finished:
                self._end(tr)
            else:
                self._arm(tr)
        except Exception:
            self.counters.inc("tftp_errors")
            log.exception("tftp: timer of transfer to %s:%d failed", *tr.client)
            self._end(tr)

    def _end(self, tr: _Transfer) -> None:
        if tr.closed:
            return
        tr.closed = True
        loop = self._loop
        if tr.timer is not None:
            tr.timer.cancel()
            tr.timer = None
        if loop is not None:
            loop.remove_reader(tr.sock.fileno())
        tr.sock.close()
        try:
            tr.source.close()
        except Exception:
            self.counters.inc("tftp_errors")
            log.exception("tftp: closing the source of %r failed", tr.session.request.filename)
        if self._transfers.get(tr.client) is tr:
            del self._transfers[tr.client]
            left = self._per_ip.get(tr.client[0], 1) - 1
            if left > 0:
                self._per_ip[tr.client[0]] = left
            else:
                self._per_ip.pop(tr.client[0], None)
        session = tr.session
        now = loop.time() if loop is not None else tr.started
        outcome = session.outcome
        if outcome is None:
            outcome = Outcome(OutcomeKind.FAILED, None, "ended without an outcome")
        self.counters.inc("tftp_transfers", outcome=outcome.kind.value)
        self.counters.inc("tftp_bytes_sent", session.bytes_sent)
        if session.retransmits:
            self.counters.inc("tftp_retransmits", session.retransmits)
        if session.ignored:
            self.counters.inc("tftp_ignored", session.ignored, reason="in-transfer")
        record = TransferRecord(
            client_ip=tr.client[0],
            client_port=tr.client[1],
            filename=session.request.filename,
            outcome=outcome.kind,
            bytes_transferred=session.bytes_acked,
            duration=max(0.0, now - tr.started),
            error_code=outcome.error_code,
            message=outcome.message,
            bytes_sent=session.bytes_sent,
            retransmits=session.retransmits,
            blksize=session.blksize,
            windowsize=session.windowsize,
        )
        level = logging.INFO if outcome.kind is not OutcomeKind.ABORTED else logging.DEBUG
        log.log(
            level,
            "tftp: %s:%d %r %s, %d bytes in %.3fs",
            record.client_ip,
            record.client_port,
            record.filename,
            outcome,
            record.bytes_transferred,
            record.duration,
        )
        self._report(record)

    def _report(self, record: TransferRecord) -> None:
        if self._on_done is None:
            return
        try:
            self._on_done(record)
        except Exception:
            # A failing listener (event store) must not take the TFTP server down with it.
            self.counters.inc("tftp_errors")
            log.exception("tftp: on_transfer_done failed")
