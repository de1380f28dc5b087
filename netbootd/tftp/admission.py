"""TFTP admission: whether a request arriving on the listening port starts a transfer.

This module owns the rules applied to every datagram on the listener, before any file is opened:
write requests, stray packets, a client resending its request, a client superseding its own
transfer with a new one, the session limits (in total and per client address), which silent
transfers of a client may be evicted to make room for it, and the ERROR (code and text) sent
for every refusal.

It is pure: :func:`admit` takes the decoded packet, the client, a read-only view of the running
transfers (:class:`Sessions`) and ``now``, and returns an :class:`Admission` saying what to do.
The endpoint carries it out (ends transfers, sends the ERROR, counts the reason). Refusals that
can only be known later (the resolver's answer, no socket left) take their ERROR from
:func:`refusal_error` so every code lives here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from netbootd.tftp.packet import Error, ErrorCode, Packet, ReadRequest, WriteRequest
from netbootd.tftp.session import refusal

__all__ = [
    "Admission",
    "AdmissionLimits",
    "Running",
    "Sessions",
    "Snapshot",
    "Transfer",
    "Verdict",
    "admit",
    "refusal_error",
]

Client = tuple[str, int]

# The ERROR for each refusal reason (the ``tftp_refused{reason}`` label). RFC 1350 section 5:
# code 1 file not found, 2 access violation, 0 "not defined" for everything else (busy).
_REFUSALS: Mapping[str, Error] = {
    "write": Error(ErrorCode.ACCESS_VIOLATION, "read-only server"),
    "not-found": Error(ErrorCode.FILE_NOT_FOUND, "file not found"),
    "access": Error(ErrorCode.ACCESS_VIOLATION, "access violation"),
    "error": Error(ErrorCode.NOT_DEFINED, "internal error"),
    "busy": Error(ErrorCode.NOT_DEFINED, "server busy"),
    "busy-client": Error(ErrorCode.NOT_DEFINED, "server busy"),
    # Out of descriptors or ports: full in a way the limits did not foresee; say busy too.
    "no-socket": Error(ErrorCode.NOT_DEFINED, "server busy"),
    # An edge could not get the file from its origin (error_map.py, FileUnavailable).
    "unavailable": Error(ErrorCode.NOT_DEFINED, "file not available yet"),
}


def refusal_error(reason: str) -> Error:
    """The ERROR sent to a client refused for ``reason`` (a ``tftp_refused`` label)."""
    return _REFUSALS[reason]


@dataclass(frozen=True)
class AdmissionLimits:
    """How many transfers may run, and when a silent transfer no longer holds its place."""

    max_sessions: int = 1024
    max_sessions_per_client: int = 8
    # A transfer silent this long (seconds) has outlived any transfer at the server's own
    # timeout and retries (the endpoint sets timeout x (retries + 2)): only a longer timeout
    # its client negotiated keeps it (RFC 2349 allows 255 s, up to 25 minutes of retries).
    # Such a transfer is evicted when its client reaches its limit, and superseded when its
    # client asks for the same file from a new port. Below that age nothing is ever ended for
    # a newcomer, so a request flood costs no more than a refusal per request; above it, the
    # churn is bounded by the limits divided by this age.
    abandon_after: float = 6.0

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_sessions_per_client < 1:
            raise ValueError("session limits must be >= 1")
        if not self.abandon_after > 0:
            raise ValueError("abandon_after must be positive")


class Running(Protocol):
    """What admission reads of one running transfer (a :class:`ReadSession` is one)."""

    @property
    def request(self) -> ReadRequest: ...

    @property
    def last_heard(self) -> float:
        """When the client last moved the transfer forward (or when it started)."""
        ...


@dataclass(frozen=True)
class Transfer:
    """A plain :class:`Running` value (tests, snapshots)."""

    request: ReadRequest
    last_heard: float


class Sessions(Protocol):
    """A read-only view of the running transfers, keyed by the client's (address, port)."""

    @property
    def total(self) -> int: ...

    def count(self, ip: str) -> int: ...

    def get(self, client: Client) -> Running | None: ...

    def items(self, ip: str | None = None) -> Iterable[tuple[Client, Running]]:
        """The running transfers, all of them or those of client address ``ip``."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """A plain value implementing :class:`Sessions` (tests, and callers without a live table)."""

    running: Mapping[Client, Running] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.running)

    def count(self, ip: str) -> int:
        return sum(1 for c in self.running if c[0] == ip)

    def get(self, client: Client) -> Running | None:
        return self.running.get(client)

    def items(self, ip: str | None = None) -> Iterable[tuple[Client, Running]]:
        return [(c, r) for c, r in self.running.items() if ip is None or c[0] == ip]


class Verdict(enum.Enum):
    SERVE = "serve"  # resolve the file and start a transfer
    REFUSE = "refuse"  # answer ``error`` from the listening port
    IGNORE = "ignore"  # say nothing


@dataclass(frozen=True)
class Admission:
    """What to do with one datagram on the listener.

    Whatever the verdict, the endpoint first ends the running transfers in ``supersede`` (the
    client moved on from them: it asked something else from the same port, or the same file
    again from a new port after going silent) and in ``evict`` (silent transfers making room
    under a limit). ``reason`` is the counter label (``tftp_refused`` for REFUSE,
    ``tftp_ignored`` for IGNORE; empty for SERVE).
    """

    verdict: Verdict
    reason: str = ""
    error: Error | None = None
    supersede: tuple[Client, ...] = ()
    evict: tuple[Client, ...] = ()
    # True for requests (RRQ and WRQ), which count in ``tftp_requests``.
    is_request: bool = True


def _silence(run: Running, now: float) -> float:
    """How long the transfer has heard nothing from its client, in seconds."""
    return max(0.0, now - run.last_heard)


def _abandoned(run: Running, now: float, limits: AdmissionLimits) -> bool:
    return _silence(run, now) >= limits.abandon_after


def _idlest(candidates: Iterable[tuple[Client, Running]], now: float, limits: AdmissionLimits,
            skip: tuple[Client, ...]) -> Client | None:
    """The abandoned transfer silent the longest, if any."""
    best: Client | None = None
    best_idle = 0.0
    for client, run in candidates:
        if client in skip or not _abandoned(run, now, limits):
            continue
        silent = _silence(run, now)
        if silent > best_idle:
            best, best_idle = client, silent
    return best


def admit(packet: Packet, client: Client, sessions: Sessions, limits: AdmissionLimits,
          now: float) -> Admission:
    """Decide what a datagram that arrived on the listening port from ``client`` leads to."""
    if isinstance(packet, WriteRequest):
        return Admission(Verdict.REFUSE, "write", _REFUSALS["write"])
    if not isinstance(packet, ReadRequest):
        # DATA/ACK/ERROR/OACK belong on a transfer socket; never answer them here (answering
        # would let anyone bounce traffic off us).
        kind = type(packet).__name__.lower()
        return Admission(Verdict.IGNORE, f"{kind}-on-listener", is_request=False)

    ip = client[0]
    supersede: tuple[Client, ...] = ()
    same_port = sessions.get(client)
    if same_port is not None:
        if same_port.request == packet:
            # The client resent its RRQ because our first answer was slow or lost: the running
            # transfer's own timer retransmits, a second transfer would double the traffic.
            return Admission(Verdict.IGNORE, "duplicate-request")
        # A new request from the same port: the client is done with the running transfer (its
        # final ACK was lost, or it gave up, like EDK2 after a tsize probe). Serve the new one
        # rather than make it wait until the stale transfer times out.
        supersede = (client,)
    # The same file asked again from a new port, while the transfer to the old port has been
    # silent for longer than the server itself would keep trying: the client timed out and
    # restarted the fetch (firmware does this with a fresh port). Only abandoned transfers
    # qualify: many live downloads of one file from one address (a NAT) stay separate.
    supersede += tuple(
        c for c, run in sessions.items(ip)
        if c != client and run.request.filename == packet.filename and _abandoned(run, now, limits)
    )

    bad_mode = refusal(packet)
    if bad_mode is not None:
        return Admission(Verdict.REFUSE, "mode", bad_mode, supersede)

    # The total limit evicts nothing: finding the longest-silent of every transfer would cost a
    # scan of the whole table per refused request, exactly when a flood fills it. The
    # per-client limit bounds its scan by max_sessions_per_client.
    if sessions.total - len(supersede) >= limits.max_sessions:
        return Admission(Verdict.REFUSE, "busy", _REFUSALS["busy"], supersede)
    evict: tuple[Client, ...] = ()
    mine = sessions.count(ip) - len(supersede)  # superseded transfers are all this address's
    if mine >= limits.max_sessions_per_client:
        victim = _idlest(sessions.items(ip), now, limits, supersede)
        if victim is None:
            return Admission(Verdict.REFUSE, "busy-client", _REFUSALS["busy-client"], supersede)
        evict = (victim,)
    return Admission(Verdict.SERVE, supersede=supersede, evict=evict)
