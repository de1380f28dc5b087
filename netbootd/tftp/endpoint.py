"""The asyncio edge of TFTP: the listening socket, admission of requests, and counting.

This module owns the listening socket and what happens to each datagram on it: decoding
(:mod:`netbootd.tftp.packet`), the admission decision (:mod:`netbootd.tftp.admission`, pure),
the resolver the service passes in, and handing a served request to
:class:`netbootd.tftp.transfers.Transfers`, which runs it on its own socket.

- Each accepted RRQ gets a NEW socket bound to the local address the request arrived on
  (learned with IP_PKTINFO, so replies leave from the address the client talked to even when
  listening on 0.0.0.0) and port 0: the server's transfer identifier of RFC 1350 section 4.
- The listener reads at most 2048 bytes with ``recvmsg``; a longer request is malformed.
- No exception escapes a socket callback: malformed packets are counted by reason, unexpected
  errors are counted as ``tftp_errors`` and logged.

Counters: ``tftp_requests``, ``tftp_transfers{outcome}``, ``tftp_bytes_sent``,
``tftp_retransmits``, ``tftp_refused{reason}``, ``tftp_malformed{reason}``,
``tftp_ignored{reason}``, ``tftp_superseded{why}``, ``tftp_unknown_tid``, ``tftp_errors``.
``tftp_refused`` reasons include the limits: ``busy`` (max_sessions), ``busy-client``
(max_sessions_per_client) and ``no-socket`` (out of descriptors); the gauge of running
transfers is :attr:`TftpServer.active_sessions`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable

from netbootd.error_map import refusal_for
from netbootd.errors import MalformedPacket
from netbootd.metrics import Counters
from netbootd.tftp import udp
from netbootd.tftp.admission import AdmissionLimits, Verdict, admit, refusal_error
from netbootd.tftp.packet import Error, ReadRequest, parse_packet
from netbootd.tftp.record import TransferRecord, refused_record
from netbootd.tftp.session import ReadSession, SessionLimits, TftpSource
from netbootd.tftp.transfers import Transfers

__all__ = ["Resolver", "TftpServer", "TransferRecord"]

log = logging.getLogger(__name__)

# A resolver may hand back an awaitable instead of a source: a file an edge is still fetching
# from its origin (store/origin_edge.py). The transfer starts when it resolves; meanwhile a
# retransmitted RRQ from the same client port is ignored.
Resolver = Callable[[str, tuple[str, int]], TftpSource | Awaitable[TftpSource]]

# An RRQ is a name, a mode and a few options; anything longer is not a request we serve.
LISTENER_RECV_SIZE = 2048
# Datagrams handled per readiness callback, so a request flood cannot starve the transfers.
_BATCH = 64


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
        # One timeout more than a transfer at the server's own timeout lives: such transfers
        # have always ended by themselves before admission would end them for a newcomer.
        abandon = self.limits.timeout * (self.limits.retries + 2)
        self.admission = AdmissionLimits(max_sessions, max_sessions_per_client, abandon)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._host = ""
        self._interface: str | None = None
        self._transfers: Transfers | None = None
        self._pending: dict[tuple[str, int], asyncio.Task[None]] = {}

    @property
    def max_sessions(self) -> int:
        return self.admission.max_sessions

    @property
    def max_sessions_per_client(self) -> int:
        return self.admission.max_sessions_per_client

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
        return self._transfers.total if self._transfers is not None else 0

    async def start(self, host: str, port: int, interface: str | None = None) -> None:
        """Bind ``host:port`` (IPv4), optionally pinned to ``interface`` (SO_BINDTODEVICE)."""
        if self._listener is not None:
            raise RuntimeError("TftpServer already started")
        loop = asyncio.get_running_loop()
        sock = udp.new_socket(interface)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.enable_pktinfo(sock)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._listener = sock
        self._host = sock.getsockname()[0]
        self._interface = interface
        self._transfers = Transfers(loop, self.counters, self._report)
        loop.add_reader(sock.fileno(), self._on_listener_readable)
        log.info("tftp: listening on %s:%d%s", self._host, self.port,
                 f" ({interface})" if interface else "")

    async def stop(self) -> None:
        """Close the listener, tell every running client we stop, close sockets and sources."""
        loop, sock, transfers = self._loop, self._listener, self._transfers
        if loop is None or sock is None or transfers is None:
            return
        loop.remove_reader(sock.fileno())
        sock.close()
        self._listener = None
        for task in list(self._pending.values()):
            task.cancel()
        now = loop.time()
        for tr in transfers.all():
            transfers.send(tr, tr.session.abort(now, "server shutting down"))
            transfers.end(tr)

    # ----------------------------------------------------------------- listener

    def _on_listener_readable(self) -> None:
        sock = self._listener
        if sock is None:
            return
        for _ in range(_BATCH):
            try:
                data, ancdata, flags, addr = sock.recvmsg(LISTENER_RECV_SIZE, udp.PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters.inc("tftp_errors")
                log.warning("tftp: listener receive failed: %s", exc)
                return
            try:
                local_ip = udp.local_ip(ancdata, self._host)
                if flags & socket.MSG_TRUNC:
                    self.counters.inc("tftp_malformed", reason="too-long")
                    continue
                self._on_request(data, (addr[0], addr[1]), local_ip)
            except Exception:
                self.counters.inc("tftp_errors")
                log.exception("tftp: request from %s failed", addr)

    def _reply(self, data: bytes, client: tuple[str, int], local_ip: str) -> None:
        """Send from the listening port, with the source address the request was sent to."""
        sock = self._listener
        if sock is None:
            return
        try:
            udp.send_from(sock, self._host, data, client, local_ip)
        except OSError as exc:
            self.counters.inc("tftp_errors")
            log.debug("tftp: reply to %s failed: %s", client, exc)

    def _refuse(self, client: tuple[str, int], local_ip: str, filename: str, reason: str,
                error: Error | None = None) -> None:
        error = error if error is not None else refusal_error(reason)
        self.counters.inc("tftp_refused", reason=reason)
        self._reply(error.to_bytes(), client, local_ip)
        self._report(refused_record(client, filename, error))

    def _on_request(self, data: bytes, client: tuple[str, int], local_ip: str) -> None:
        loop, transfers = self._loop, self._transfers
        if loop is None or transfers is None:
            return
        try:
            packet = parse_packet(data)
        except MalformedPacket as exc:
            # No reply: answering garbage would let anyone bounce traffic off us.
            self.counters.inc("tftp_malformed", reason=exc.reason)
            return
        running = transfers.transfer(client)
        if running is not None:
            # Read what the client already sent to its running transfer before deciding on the
            # new request: EDK2's ERROR 8 after a tsize probe races its next RRQ.
            transfers.drain(running)
        now = loop.time()
        decision = admit(packet, client, transfers, self.admission, now)
        if decision.is_request:
            self.counters.inc("tftp_requests")
        for gone in decision.supersede:
            tr = transfers.transfer(gone)
            if tr is not None:
                self.counters.inc("tftp_superseded", why="same-port" if gone == client
                                  else "new-port")
                tr.session.supersede(now)
                transfers.end(tr)
        for gone in decision.evict:
            tr = transfers.transfer(gone)
            if tr is not None:
                self.counters.inc("tftp_evicted")
                tr.session.evict(now)
                transfers.end(tr)
        if decision.verdict is Verdict.IGNORE:
            self.counters.inc("tftp_ignored", reason=decision.reason)
            return
        filename = getattr(packet, "filename", "")
        if decision.verdict is Verdict.REFUSE:
            self._refuse(client, local_ip, filename, decision.reason, decision.error)
            return
        assert isinstance(packet, ReadRequest)  # admit() serves read requests only
        self._serve(packet, client, local_ip)

    def _serve(self, request: ReadRequest, client: tuple[str, int], local_ip: str) -> None:
        filename = request.filename
        if client in self._pending:
            return  # the client's first RRQ is waiting for its file (retransmitted)
        try:
            found = self._resolver(filename, client)
        except Exception as exc:  # error_map.py says which refusal each error is
            self._resolve_failed(client, local_ip, filename, exc)
            return
        if inspect.isawaitable(found):
            assert self._loop is not None
            task = self._loop.create_task(self._serve_later(request, client, local_ip, found))
            self._pending[client] = task
            task.add_done_callback(lambda t: self._pending.pop(client, None))
            return
        self._begin(request, client, local_ip, found)

    async def _serve_later(self, request: ReadRequest, client: tuple[str, int], local_ip: str,
                           pending: Awaitable[TftpSource]) -> None:
        try:
            source = await pending
        except Exception as exc:
            self._resolve_failed(client, local_ip, request.filename, exc)
            return
        if self._listener is None:  # stopped while waiting
            source.close()
            return
        self._begin(request, client, local_ip, source)

    def _resolve_failed(self, client: tuple[str, int], local_ip: str, filename: str,
                        exc: Exception) -> None:
        why = refusal_for(exc)
        if not why.expected:
            log.error("tftp: resolving %r for %s:%d failed", filename, *client, exc_info=exc)
        else:
            log.log(logging.DEBUG if why.tftp == "not-found" else logging.INFO,
                    "tftp: %s:%d %r refused (%s): %s", *client, filename, why.tftp, exc)
        self._refuse(client, local_ip, filename, why.tftp)

    def _begin(self, request: ReadRequest, client: tuple[str, int], local_ip: str,
               source: TftpSource) -> None:
        filename = request.filename
        try:
            session = ReadSession(request, source, self.limits)
            sock = udp.new_socket(self._interface)
            try:
                # Port 0: a fresh port is this transfer's TID (RFC 1350 section 4).
                sock.bind((local_ip, 0))
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            source.close()
            # No descriptor or port for a transfer socket (EMFILE, ENFILE...): the server is
            # full in a way max_sessions did not foresee; say busy, like the limits do.
            log.warning("tftp: no socket for a transfer to %s:%d: %s", *client, exc)
            self._refuse(client, local_ip, filename, "no-socket")
            return
        except BaseException:
            source.close()
            raise
        assert self._transfers is not None
        self._transfers.begin(session, sock, client, source)

    def _report(self, record: TransferRecord) -> None:
        if self._on_done is None:
            return
        try:
            self._on_done(record)
        except Exception:
            # A failing listener (event store) must not take the TFTP server down with it.
            self.counters.inc("tftp_errors")
            log.exception("tftp: on_transfer_done failed")
