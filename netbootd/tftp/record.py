"""What the TFTP edge reports when a request ends: :class:`TransferRecord` and its builders.

This module owns the record handed to the service's ``on_transfer_done`` callback (which
writes boot events) and how one is made from a refusal or a finished :class:`ReadSession`.
"""

from __future__ import annotations

from dataclasses import dataclass

from netbootd.tftp.packet import Error
from netbootd.tftp.session import Outcome, OutcomeKind, ReadSession

__all__ = ["TransferRecord", "finished_record", "refused_record"]


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


def refused_record(client: tuple[str, int], filename: str, error: Error) -> TransferRecord:
    return TransferRecord(
        client_ip=client[0],
        client_port=client[1],
        filename=filename,
        outcome=OutcomeKind.REFUSED,
        bytes_transferred=0,
        duration=0.0,
        error_code=error.code,
        message=error.message,
    )


def finished_record(
    session: ReadSession, client: tuple[str, int], started: float, now: float
) -> TransferRecord:
    outcome = session.outcome
    if outcome is None:
        outcome = Outcome(OutcomeKind.FAILED, None, "ended without an outcome")
    return TransferRecord(
        client_ip=client[0],
        client_port=client[1],
        filename=session.request.filename,
        outcome=outcome.kind,
        bytes_transferred=session.bytes_acked,
        duration=max(0.0, now - started),
        error_code=outcome.error_code,
        message=outcome.message,
        bytes_sent=session.bytes_sent,
        retransmits=session.retransmits,
        blksize=session.blksize,
        windowsize=session.windowsize,
    )
