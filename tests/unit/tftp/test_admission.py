"""TFTP admission rules, one test per rule, on plain values (no sockets, no clock)."""

from __future__ import annotations

import pytest

from netbootd.tftp.admission import (
    AdmissionLimits,
    Snapshot,
    Transfer,
    Verdict,
    admit,
    refusal_error,
)
from netbootd.tftp.packet import Ack, Data, Error, ErrorCode, OptionAck, ReadRequest, WriteRequest
from netbootd.tftp.session import ReadSession, SessionLimits
from netbootd.tftp.sources import BytesSource

A = ("10.0.0.1", 2000)
A2 = ("10.0.0.1", 2001)
B = ("10.0.0.2", 3000)
LIMITS = AdmissionLimits(max_sessions=4, max_sessions_per_client=2, abandon_after=2.0)


def rrq(name: str = "pxelinux.0", **options: str) -> ReadRequest:
    return ReadRequest(name, "octet", dict(options))


def table(*entries: tuple[tuple[str, int], ReadRequest, float]) -> Snapshot:
    return Snapshot({c: Transfer(req, heard) for c, req, heard in entries})


def test_first_request_is_served() -> None:
    got = admit(rrq(), A, Snapshot(), LIMITS, now=10.0)
    assert got.verdict is Verdict.SERVE
    assert got.supersede == () and got.evict == () and got.is_request


def test_write_request_refused_with_access_violation() -> None:
    got = admit(WriteRequest("x", "octet", {}), A, Snapshot(), LIMITS, now=0.0)
    assert got.verdict is Verdict.REFUSE and got.reason == "write"
    assert got.error == Error(ErrorCode.ACCESS_VIOLATION, "read-only server")
    assert got.is_request


@pytest.mark.parametrize("packet, reason", [
    (Ack(1), "ack-on-listener"),
    (Data(1, b"x"), "data-on-listener"),
    (Error(0, "x"), "error-on-listener"),
    (OptionAck({"tsize": "1"}), "optionack-on-listener"),
])
def test_transfer_packets_on_the_listener_are_ignored(packet: object, reason: str) -> None:
    got = admit(packet, A, Snapshot(), LIMITS, now=0.0)  # type: ignore[arg-type]
    assert got.verdict is Verdict.IGNORE and got.reason == reason
    assert not got.is_request and got.error is None


def test_unsupported_mode_refused_with_illegal_operation() -> None:
    got = admit(ReadRequest("x", "mail", {}), A, Snapshot(), LIMITS, now=0.0)
    assert got.verdict is Verdict.REFUSE and got.reason == "mode"
    assert got.error is not None and got.error.code == ErrorCode.ILLEGAL_OPERATION


def test_same_port_same_request_is_a_retransmission() -> None:
    # Even long after: the running transfer's timer answers, never a second transfer.
    for now in (0.1, 100.0):
        got = admit(rrq(), A, table((A, rrq(), 0.0)), LIMITS, now=now)
        assert got.verdict is Verdict.IGNORE and got.reason == "duplicate-request"
        assert got.supersede == ()


def test_same_port_new_request_supersedes_the_running_transfer() -> None:
    # EDK2: a tsize probe, then the real request from the same port.
    running = table((A, rrq(tsize="0"), 0.0))
    got = admit(rrq(blksize="1468", windowsize="4"), A, running, LIMITS, now=0.01)
    assert got.verdict is Verdict.SERVE and got.supersede == (A,)


def test_superseding_happens_even_when_the_new_request_is_refused() -> None:
    got = admit(ReadRequest("x", "mail", {}), A, table((A, rrq(), 0.0)), LIMITS, now=0.0)
    assert got.verdict is Verdict.REFUSE and got.supersede == (A,)


def test_same_file_from_a_new_port_supersedes_a_silent_transfer() -> None:
    # Silent for abandon_after (2 s here): the client restarted the fetch.
    got = admit(rrq(), A2, table((A, rrq(), 0.0)), LIMITS, now=2.0)
    assert got.verdict is Verdict.SERVE and got.supersede == (A,)


def test_same_file_from_a_new_port_leaves_a_live_transfer_alone() -> None:
    # Several live downloads of one file from one address are separate transfers.
    got = admit(rrq(), A2, table((A, rrq(), 0.0)), LIMITS, now=1.9)
    assert got.verdict is Verdict.SERVE and got.supersede == ()


def test_other_file_from_a_new_port_never_supersedes() -> None:
    got = admit(rrq("ldlinux.c32"), A2, table((A, rrq(), 0.0)), LIMITS, now=50.0)
    assert got.verdict is Verdict.SERVE and got.supersede == ()


def test_nothing_younger_than_abandon_after_is_ever_ended_for_a_newcomer() -> None:
    # A flood of requests at the limit then costs a refusal each, never a session's end.
    running = table((A, rrq("a"), 0.0), (A2, rrq("b"), 0.0))
    for now in (0.0, 1.0, 1.99):
        got = admit(rrq("a"), ("10.0.0.1", 2002), running, LIMITS, now=now)
        assert got.verdict is Verdict.REFUSE and got.supersede == () and got.evict == ()


def test_per_client_limit_refuses_with_busy() -> None:
    running = table((A, rrq("a"), 0.0), (A2, rrq("b"), 0.0))
    got = admit(rrq("c"), ("10.0.0.1", 2002), running, LIMITS, now=0.5)
    assert got.verdict is Verdict.REFUSE and got.reason == "busy-client"
    assert got.error == Error(ErrorCode.NOT_DEFINED, "server busy")
    assert got.evict == ()
    # Another address is not affected.
    assert admit(rrq("c"), B, running, LIMITS, now=0.5).verdict is Verdict.SERVE


def test_total_limit_refuses_with_busy() -> None:
    running = table((A, rrq("a"), 0.0), (B, rrq("b"), 0.0), (("10.0.0.3", 1), rrq("c"), 0.0),
                    (("10.0.0.4", 1), rrq("d"), 0.0))
    got = admit(rrq("e"), ("10.0.0.5", 1), running, LIMITS, now=1.0)
    assert got.verdict is Verdict.REFUSE and got.reason == "busy"
    assert got.error == Error(ErrorCode.NOT_DEFINED, "server busy")


def test_total_limit_never_evicts() -> None:
    # Even abandoned transfers stay: choosing one would scan the whole table per request.
    running = table((A, rrq("a"), 5.0), (B, rrq("b"), 1.0), (("10.0.0.3", 1), rrq("c"), 3.0),
                    (("10.0.0.4", 1), rrq("d"), 9.5))
    got = admit(rrq("e"), ("10.0.0.5", 1), running, LIMITS, now=10.0)
    assert got.verdict is Verdict.REFUSE and got.reason == "busy" and got.evict == ()


def test_per_client_limit_evicts_the_longest_silent_transfer() -> None:
    running = table((A, rrq("a"), 5.0), (A2, rrq("b"), 1.0))
    got = admit(rrq("e"), ("10.0.0.1", 2002), running, LIMITS, now=10.0)
    assert got.verdict is Verdict.SERVE and got.evict == (A2,)


def test_per_client_limit_evicts_only_that_clients_silent_transfer() -> None:
    running = table((A, rrq("a"), 0.0), (A2, rrq("b"), 9.9), (B, rrq("c"), -100.0))
    got = admit(rrq("d"), ("10.0.0.1", 2002), running, LIMITS, now=10.0)
    assert got.verdict is Verdict.SERVE and got.evict == (A,)


def test_a_superseded_transfer_frees_its_place() -> None:
    # Same port, new request, at the per-client limit: the superseded one makes room.
    running = table((A, rrq("a"), 0.0), (A2, rrq("b"), 0.0))
    got = admit(rrq("c"), A, running, LIMITS, now=0.1)
    assert got.verdict is Verdict.SERVE and got.supersede == (A,) and got.evict == ()


def test_refusal_errors_for_later_refusals() -> None:
    assert refusal_error("not-found") == Error(ErrorCode.FILE_NOT_FOUND, "file not found")
    assert refusal_error("access") == Error(ErrorCode.ACCESS_VIOLATION, "access violation")
    assert refusal_error("error") == Error(ErrorCode.NOT_DEFINED, "internal error")
    assert refusal_error("no-socket") == Error(ErrorCode.NOT_DEFINED, "server busy")


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(max_sessions=0)
    with pytest.raises(ValueError):
        AdmissionLimits(abandon_after=0.0)


def test_a_read_session_is_a_running_transfer() -> None:
    # The endpoint hands its sessions to admit() as they are: last_heard follows the client.
    session = ReadSession(rrq(), BytesSource(b"x" * 3000), SessionLimits())
    session.start(5.0)
    assert session.last_heard == 5.0
    session.on_datagram(Ack(1).to_bytes(), 7.0)
    assert session.last_heard == 7.0
    session.on_datagram(Ack(1).to_bytes(), 9.0)  # a duplicate ACK is no progress
    assert session.last_heard == 7.0
    running = Snapshot({A: session})
    assert admit(rrq(), A2, running, LIMITS, now=8.9).supersede == ()
    assert admit(rrq(), A2, running, LIMITS, now=9.0).supersede == (A,)
    session.evict(9.0)
    assert session.finished and session.outcome is not None
    assert session.outcome.kind == "timed-out"
