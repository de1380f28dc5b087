"""The running TFTP transfers: their table, their sockets, their single timer, their end.

This module owns the asyncio side of a transfer once admission let it start: the socket bound
to a fresh port (the server's transfer identifier, RFC 1350 section 4), reading ACKs with
``loop.add_reader`` and a small ``recvfrom`` (a datagram transport would allocate its 256 KiB
``max_size`` on every receive), sending with a direct ``sendto`` (a full kernel buffer drops the
datagram like the wire would; the timeout recovers it), and the one timer per transfer: armed at
``session.deadline``, re-armed when it fires after progress moved the deadline, never created or
cancelled per packet. The table is the :class:`netbootd.tftp.admission.Sessions` view admission
reads. No exception escapes a socket or timer callback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable

from netbootd.metrics import Counters
from netbootd.tftp.packet import Error, ErrorCode
from netbootd.tftp.record import TransferRecord, finished_record
from netbootd.tftp.session import OutcomeKind, ReadSession, TftpSource

__all__ = ["Transfer", "Transfers"]

log = logging.getLogger(__name__)

Client = tuple[str, int]

# Transfer sockets receive ACK (4 bytes) and ERROR (4 bytes + a short message).
TRANSFER_RECV_SIZE = 1024
# Datagrams handled per readiness callback, so one busy socket cannot starve the others.
_BATCH = 64
# Above this many running transfers a readiness callback reads one datagram only.
_FEW = 8


class Transfer:
    """One running transfer: its session, its own socket (TID) and its single timer."""

    __slots__ = ("client", "closed", "session", "sock", "source", "started", "timer", "timer_at")

    def __init__(self, session: ReadSession, sock: socket.socket, client: Client,
                 source: TftpSource, started: float) -> None:
        self.session = session
        self.sock = sock
        self.client = client
        self.source = source
        self.started = started
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.closed = False


class Transfers:
    """Every running transfer, by client (address, port) and by client address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, counters: Counters,
                 report: Callable[[TransferRecord], None]) -> None:
        self._loop = loop
        self.counters = counters
        self._report = report
        self._by_client: dict[Client, Transfer] = {}
        self._by_ip: dict[str, dict[Client, Transfer]] = {}

    # ------------------------------------------------------- admission's Sessions view

    @property
    def total(self) -> int:
        return len(self._by_client)

    def count(self, ip: str) -> int:
        mine = self._by_ip.get(ip)
        return len(mine) if mine else 0

    def get(self, client: Client) -> ReadSession | None:
        tr = self._by_client.get(client)
        return tr.session if tr is not None else None

    def items(self, ip: str | None = None) -> Iterable[tuple[Client, ReadSession]]:
        table = self._by_client if ip is None else self._by_ip.get(ip, {})
        return [(c, tr.session) for c, tr in table.items()]

    def transfer(self, client: Client) -> Transfer | None:
        return self._by_client.get(client)

    def all(self) -> list[Transfer]:
        return list(self._by_client.values())

    # ------------------------------------------------------- lifecycle of one transfer

    def begin(self, session: ReadSession, sock: socket.socket, client: Client,
              source: TftpSource) -> None:
        now = self._loop.time()
        tr = Transfer(session, sock, client, source, now)
        self._by_client[client] = tr
        self._by_ip.setdefault(client[0], {})[client] = tr
        self._loop.add_reader(sock.fileno(), self.on_readable, tr)
        self.send(tr, session.start(now))
        if session.finished:
            self.end(tr)
        else:
            self._arm(tr)

    def on_readable(self, tr: Transfer) -> None:
        """Handle the datagrams waiting on a transfer's socket.

        With few transfers running, the client's next ACK often arrives while this callback
        still runs (a client next door answers in microseconds), and reading on saves a loop
        iteration; with many, one readiness pass serves many sockets and a second ``recvfrom``
        nearly always fails (a system call and a BlockingIOError for nothing): read one and
        let the level-triggered selector call again (docs/performance.md, "TFTP: where the
        time went").
        """
        if len(self._by_client) > _FEW:
            self._one(tr)
            return
        for _ in range(_BATCH):
            if not self._one(tr):
                return

    def drain(self, tr: Transfer) -> None:
        """Handle every datagram already waiting on the transfer's socket."""
        for _ in range(_BATCH):
            if not self._one(tr):
                return

    def _one(self, tr: Transfer) -> bool:
        """Read and handle one datagram; False when there was none (or the transfer ended)."""
        if tr.closed:
            return False
        try:
            try:
                data, addr = tr.sock.recvfrom(TRANSFER_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return False
            if addr != tr.client:
                self._unknown_tid(tr, data, addr)
                return True
            session = tr.session
            out = session.on_datagram(data, self._loop.time())
            if out:
                self.send(tr, out)
            if session.finished:
                self.end(tr)
                return False
            return True
        except Exception:
            self.counters.inc("tftp_errors")
            log.exception("tftp: transfer to %s:%d failed", *tr.client)
            self.send(tr, tr.session.abort(self._loop.time(), "internal error"))
            self.end(tr)
            return False

    def _unknown_tid(self, tr: Transfer, data: bytes, addr: Client) -> None:
        # RFC 1350 section 4: a packet from a foreign TID gets ERROR 5 and the transfer goes on.
        # Never answer an ERROR with an ERROR, so two confused peers cannot ping-pong forever.
        self.counters.inc("tftp_unknown_tid")
        if data[:2] == b"\x00\x05":
            return
        try:
            tr.sock.sendto(Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID").to_bytes(), addr)
        except OSError as exc:
            log.debug("tftp: error 5 to %s failed: %s", addr, exc)

    def send(self, tr: Transfer, datagrams: list[bytes]) -> None:
        if tr.closed:
            return
        sendto, client = tr.sock.sendto, tr.client
        for datagram in datagrams:
            try:
                sendto(datagram, client)
            except BlockingIOError:
                # Socket buffer full: lose it like the network would; the timer resends.
                self.counters.inc("tftp_send_dropped")
            except OSError as exc:
                self.counters.inc("tftp_errors")
                log.debug("tftp: send to %s:%d failed: %s", *client, exc)
                return

    def _arm(self, tr: Transfer) -> None:
        deadline = tr.session.deadline
        if deadline is None or tr.closed:
            return
        tr.timer_at = deadline
        tr.timer = self._loop.call_at(deadline, self._on_timer, tr)

    def _on_timer(self, tr: Transfer) -> None:
        tr.timer = None
        if tr.closed:
            return
        try:
            session = tr.session
            deadline = session.deadline
            if deadline is None:
                self.end(tr)
                return
            if deadline > tr.timer_at:
                # Progress moved the deadline since we armed: sleep again, nothing to do.
                self._arm(tr)
                return
            # call_at may fire a clock tick early; the session must see its deadline reached.
            self.send(tr, session.on_timer(max(self._loop.time(), deadline)))
            if session.finished:
                self.end(tr)
            else:
                self._arm(tr)
        except Exception:
            self.counters.inc("tftp_errors")
            log.exception("tftp: timer of transfer to %s:%d failed", *tr.client)
            self.end(tr)

    def end(self, tr: Transfer) -> None:
        """Close the transfer's socket and source, count it and report its record."""
        if tr.closed:
            return
        tr.closed = True
        if tr.timer is not None:
            tr.timer.cancel()
            tr.timer = None
        self._loop.remove_reader(tr.sock.fileno())
        tr.sock.close()
        try:
            tr.source.close()
        except Exception:
            self.counters.inc("tftp_errors")
            log.exception("tftp: closing the source of %r failed", tr.session.request.filename)
        client = tr.client
        if self._by_client.get(client) is tr:
            del self._by_client[client]
            mine = self._by_ip.get(client[0])
            if mine is not None:
                mine.pop(client, None)
                if not mine:
                    del self._by_ip[client[0]]
        session = tr.session
        record = finished_record(session, client, tr.started, self._loop.time())
        counters = self.counters
        counters.inc("tftp_transfers", outcome=record.outcome.value)
        counters.inc("tftp_bytes_sent", session.bytes_sent)
        if session.retransmits:
            counters.inc("tftp_retransmits", session.retransmits)
        if session.ignored:
            counters.inc("tftp_ignored", session.ignored, reason="in-transfer")
        level = logging.INFO if record.outcome is not OutcomeKind.ABORTED else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "tftp: %s:%d %r %s, %d bytes in %.3fs", record.client_ip,
                    record.client_port, record.filename, session.outcome or record.outcome,
                    record.bytes_transferred, record.duration)
        self._report(record)
