"""The TFTP read-transfer state machine: pure, driven by datagrams and a caller-supplied clock.

This module owns the protocol rules of one read transfer: option negotiation (RFC 2347 OACK,
RFC 2348 blksize, RFC 2349 tsize and timeout, RFC 7440 windowsize), block numbering with 16-bit
rollover, the sliding window, retransmission on timeout only (never on a duplicate ACK: the
Sorcerer's Apprentice rule of RFC 1123 section 4.2.3.1), and how a transfer ends.

It performs no I/O and never reads the clock: every entry point takes ``now`` and returns the
datagrams to send; :attr:`ReadSession.deadline` says when it next needs :meth:`on_timer`. The
endpoint therefore keeps a single timer per session and never re-arms it per packet. Bytes come
from a :class:`TftpSource`, which the caller opens and closes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from netbootd.errors import MalformedPacket
from netbootd.tftp.packet import (
    MAX_BLKSIZE,
    MIN_BLKSIZE,
    Error,
    ErrorCode,
    Opcode,
    OptionAck,
    ReadRequest,
    encode_data,
    parse_packet,
)

__all__ = [
    "DEFAULT_BLKSIZE",
    "Outcome",
    "OutcomeKind",
    "ReadSession",
    "SessionLimits",
    "TftpSource",
    "refusal",
]

# RFC 1350: without a blksize option every DATA block carries 512 bytes.
DEFAULT_BLKSIZE = 512
# RFC 7440 section 3: windowsize is valid between 1 and 65535.
MAX_WINDOWSIZE = 65535
# RFC 2349 section 2: the timeout option is 1..255 seconds.
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255
# Modes of RFC 1350; "mail" is obsolete and refused. netascii is served byte for byte: boot
# files are binary, and converting would make the tsize answer a lie.
SUPPORTED_MODES = frozenset({"octet", "netascii"})


class TftpSource(Protocol):
    """Where a transfer's bytes come from: a fixed size and positional reads."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SessionLimits:
    """What the server allows, whatever the client asks for."""

    # 1468 = 1500-byte Ethernet MTU - 20 (IP) - 8 (UDP) - 4 (TFTP header): no IP fragmentation.
    max_blksize: int = 1468
    max_windowsize: int = 16
    timeout: float = 1.0
    retries: int = 5  # retransmissions without progress before the transfer times out

    def __post_init__(self) -> None:
        # Reject nonsense at construction (config load) rather than mid-transfer.
        if not MIN_BLKSIZE <= self.max_blksize <= MAX_BLKSIZE:
            raise ValueError(f"max_blksize must be {MIN_BLKSIZE}..{MAX_BLKSIZE}")
        # Above 32768 the 16-bit block number of an ACK could no longer be mapped unambiguously
        # onto one block of the window.
        if not 1 <= self.max_windowsize <= 32768:
            raise ValueError("max_windowsize must be 1..32768")
        if not self.timeout > 0:
            raise ValueError("timeout must be positive")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")


class OutcomeKind(enum.StrEnum):
    """How a transfer ended; the values are the ``outcome`` counter label."""

    COMPLETED = "completed"
    ABORTED = "aborted-by-client"  # the client sent ERROR (EDK2's error 8 after a tsize probe)
    TIMED_OUT = "timed-out"
    FAILED = "failed"  # our side could not go on (source read error, server stopping)
    REFUSED = "refused"  # never started: not found, access, busy (set by the endpoint)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    error_code: int | None = None
    message: str = ""

    def __str__(self) -> str:
        if self.error_code is None:
            return f"{self.kind.value}{': ' + self.message if self.message else ''}"
        return f"{self.kind.value} (error {self.error_code}: {self.message})"


def refusal(request: ReadRequest) -> Error | None:
    """The ERROR to answer ``request`` with before any file is opened, or None to serve it."""
    if request.mode not in SUPPORTED_MODES:
        return Error(ErrorCode.ILLEGAL_OPERATION, f"unsupported transfer mode {request.mode!r}")
    return None


def _as_int(text: str) -> int | None:
    # Only plain decimal digits: int() would also take "+5", " 5" or "1_000", which no RFC allows.
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    return int(text)


class _State(enum.Enum):
    NEW = "new"
    WAIT_OACK_ACK = "wait-oack-ack"  # sent OACK, waiting for ACK 0 (RFC 2347)
    SENDING = "sending"
    DONE = "done"


class ReadSession:
    """One read transfer of ``source`` to one client, as requested by ``request``.

    The caller checks :func:`refusal` first and only builds a session for a request it serves.
    """

    def __init__(self, request: ReadRequest, source: TftpSource, limits: SessionLimits) -> None:
        self.request = request
        self.limits = limits
        self._source = source
        self.size = source.size
        self.blksize = DEFAULT_BLKSIZE
        self.windowsize = 1
        self.timeout = limits.timeout
        self.accepted = self._negotiate(request.options)
        # Every transfer ends with a block shorter than blksize, an empty one if the size is an
        # exact multiple (RFC 1350 section 6), hence +1 rather than a ceiling division.
        self.total_blocks = self.size // self.blksize + 1

        self._state = _State.NEW
        self._acked = 0  # highest block (absolute, unbounded) the client has acknowledged
        self._sent = 0  # highest block (absolute) sent so far
        self._retries = 0
        self._deadline: float | None = None
        self.outcome: Outcome | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        # When the client last moved the transfer forward (admission evicts long-silent ones).
        self.last_heard = 0.0

        # Statistics, read by the endpoint when the transfer ends.
        self.bytes_sent = 0  # DATA payload bytes put on the wire, retransmissions included
        self.blocks_sent = 0  # DATA datagrams sent, retransmissions included
        self.retransmits = 0  # DATA and OACK datagrams sent again after a timeout
        self.duplicate_acks = 0  # ACKs of an already acknowledged block (not answered)
        self.ignored = 0  # datagrams that were garbage or meaningless here

    # ----------------------------------------------------------------- negotiation

    def _negotiate(self, options: dict[str, str]) -> dict[str, str]:
        """Apply the options we honour; returns what to put in the OACK (empty: no OACK).

        RFC 2347: options the server does not support or does not like are simply left out of
        the OACK; refusing the whole request is never needed, so nothing here raises.
        """
        accepted: dict[str, str] = {}
        for name, raw in options.items():
            value = _as_int(raw)
            if value is None:
                continue
            if name == "blksize":
                # RFC 2348: below 8 is invalid (ignore); above what we allow, answer a smaller
                # value, which the client must accept.
                if value < MIN_BLKSIZE:
                    continue
                self.blksize = min(value, MAX_BLKSIZE, self.limits.max_blksize)
                accepted[name] = str(self.blksize)
            elif name == "tsize":
                # RFC 2349: on a read request the client sends 0 and we answer the real size.
                accepted[name] = str(self.size)
            elif name == "timeout":
                # RFC 2349: 1..255 seconds; the server must echo exactly the requested value,
                # so out-of-range values are not clamped but ignored.
                if MIN_TIMEOUT <= value <= MAX_TIMEOUT:
                    self.timeout = float(value)
                    accepted[name] = str(value)
            elif name == "windowsize" and 1 <= value <= MAX_WINDOWSIZE:
                # RFC 7440 section 3: 1..65535; the server may answer a smaller value.
                self.windowsize = min(value, self.limits.max_windowsize)
                accepted[name] = str(self.windowsize)
        return accepted

    # ----------------------------------------------------------------- public API

    @property
    def deadline(self) -> float | None:
        """When :meth:`on_timer` is next needed; None once finished."""
        return None if self._state is _State.DONE else self._deadline

    @property
    def finished(self) -> bool:
        return self._state is _State.DONE

    @property
    def bytes_acked(self) -> int:
        """File bytes the client has confirmed receiving."""
        if self._acked <= 0:
            return 0
        return min(self._acked * self.blksize, self.size)

    def start(self, now: float) -> list[bytes]:
        """First datagram(s) of the transfer: an OACK, or DATA straight away."""
        if self._state is not _State.NEW:
            return []
        self.started_at = now
        self.last_heard = now
        self._deadline = now + self.timeout
        if self.accepted:
            self._state = _State.WAIT_OACK_ACK
            return [OptionAck(self.accepted).to_bytes()]
        self._state = _State.SENDING
        return self._send_window(now)

    def on_datagram(self, data: bytes, now: float) -> list[bytes]:
        """A datagram from the client's TID; never raises, garbage is counted and ignored."""
        if self._state is _State.DONE or self._state is _State.NEW:
            self.ignored += 1
            return []
        # Fast path for the one packet that matters per window: a well-formed ACK.
        if len(data) >= 4 and data[0] == 0 and data[1] == Opcode.ACK:
            return self._on_ack((data[2] << 8) | data[3], now)
        try:
            packet = parse_packet(data)
        except MalformedPacket:
            self.ignored += 1
            return []
        if isinstance(packet, Error):
            # RFC 1350: an ERROR ends the transfer and is never acknowledged. EDK2 does this
            # with code 8 on purpose once a tsize probe told it the size.
            self._finish(now, Outcome(OutcomeKind.ABORTED, packet.code, packet.message))
            return []
        self.ignored += 1
        return []

    def on_timer(self, now: float) -> list[bytes]:
        """Called at (or after) :attr:`deadline`: retransmit, or give up after limits.retries."""
        if self._deadline is None or self._state is _State.DONE or now < self._deadline:
            return []
        if self._retries >= self.limits.retries:
            self._finish(now, Outcome(OutcomeKind.TIMED_OUT, None, f"{self._retries} retries"))
            return []
        self._retries += 1
        self._deadline = now + self.timeout
        if self._state is _State.WAIT_OACK_ACK:
            self.retransmits += 1
            return [OptionAck(self.accepted).to_bytes()]
        # Timeout is the only trigger for retransmission (RFC 1123 4.2.3.1); go back to the
        # first unacknowledged block and resend the window (RFC 7440 section 4).
        return self._send_window(now)

    def supersede(self, now: float) -> None:
        """The client sent a new request from this transfer's port: it has moved on.

        RFC 1350 section 6 lets a client end its side as soon as it sends the final ACK; when
        that ACK is lost, its next request is the only sign (pxelinux sends every request from
        one port, 49153, and was seen stuck behind a stale transfer under packet loss). With
        every block sent the transfer counts as completed, otherwise as aborted by the client.
        """
        if self._state is _State.DONE:
            return
        if self._state is _State.SENDING and self._sent >= self.total_blocks:
            self._acked = self.total_blocks
            self._finish(now, Outcome(OutcomeKind.COMPLETED, None,
                                      "final ACK not seen; the client sent a new request"))
        else:
            self._finish(now, Outcome(OutcomeKind.ABORTED, None,
                                      "the client sent a new request"))

    def evict(self, now: float) -> None:
        """End a transfer whose client stayed silent, to make room under a session limit."""
        if self._state is _State.DONE:
            return
        silent = max(0.0, now - self.last_heard)
        self._finish(now, Outcome(OutcomeKind.TIMED_OUT, None,
                                  f"evicted after {silent:.1f} s of silence (server full)"))

    def abort(self, now: float, message: str) -> list[bytes]:
        """End the transfer from our side (shutdown); returns the ERROR to tell the client."""
        if self._state is _State.DONE:
            return []
        self._finish(now, Outcome(OutcomeKind.FAILED, ErrorCode.NOT_DEFINED, message))
        return [Error(ErrorCode.NOT_DEFINED, message).to_bytes()]

    # ----------------------------------------------------------------- internals

    def _on_ack(self, wire_block: int, now: float) -> list[bytes]:
        if self._state is _State.WAIT_OACK_ACK:
            if wire_block != 0:
                self.ignored += 1
                return []
            self._state = _State.SENDING
            self._retries = 0
            self.last_heard = now
            return self._send_window(now)
        # Map the 16-bit number onto the one absolute block in [acked, acked + 65535]: blocks
        # roll over 65535 -> 0 for files over 32 MB at blksize 512, and a window never spans
        # more than 32768 blocks, so the mapping is unambiguous.
        block = self._acked + ((wire_block - self._acked) & 0xFFFF)
        if block == self._acked:
            # Duplicate ACK: answering it would double every later packet (Sorcerer's
            # Apprentice, RFC 1123 4.2.3.1). Only the timer retransmits.
            self.duplicate_acks += 1
            return []
        if block > self._sent:
            # Not a block we have sent: a stale ACK from long ago, or garbage.
            self.ignored += 1
            return []
        self._acked = block
        self._retries = 0
        self.last_heard = now
        if block >= self.total_blocks:
            self._finish(now, Outcome(OutcomeKind.COMPLETED))
            return []
        # An ACK inside the window (not its last block) means the client lost what followed:
        # RFC 7440 section 4 restarts the window right after the acknowledged block.
        return self._send_window(now)

    def _send_window(self, now: float) -> list[bytes]:
        first = self._acked + 1
        last = min(self._acked + self.windowsize, self.total_blocks)
        blksize = self.blksize
        # One read for the whole window, sliced per block: a read per block would cost a
        # system call per DATA packet (docs/performance.md, "TFTP: where the time went").
        start = (first - 1) * blksize
        want = max(0, min(last * blksize, self.size) - start)
        try:
            chunk = self._source.read(start, want) if want > 0 else b""
        except OSError as exc:
            return self._fail(now, f"read error: {exc.strerror or exc}")
        if len(chunk) != want:
            # The file changed under us; sending a short block would end the transfer
            # early with a silently truncated file.
            return self._fail(now, "source size changed during transfer")
        if first == last:
            # Lock-step (and a window's last block): no slicing needed.
            out = [encode_data(first, chunk)]
        else:
            offsets = range(0, (last - first + 1) * blksize, blksize)
            out = [encode_data(block, chunk[off : off + blksize])
                   for block, off in zip(range(first, last + 1), offsets, strict=True)]
        self.bytes_sent += want
        if first <= self._sent:
            self.retransmits += min(last, self._sent) - first + 1
        self.blocks_sent += len(out)
        self._sent = max(self._sent, last)
        self._deadline = now + self.timeout
        return out

    def _fail(self, now: float, message: str) -> list[bytes]:
        self._finish(now, Outcome(OutcomeKind.FAILED, ErrorCode.NOT_DEFINED, message))
        return [Error(ErrorCode.NOT_DEFINED, message).to_bytes()]

    def _finish(self, now: float, outcome: Outcome) -> None:
        self._state = _State.DONE
        self.outcome = outcome
        self.finished_at = now
        self._deadline = None
