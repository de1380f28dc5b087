"""TFTP read-session state machine with a fake clock: no sockets, no event loop."""

from __future__ import annotations

import pytest

from netbootd.tftp.packet import Ack, Data, Error, ErrorCode, OptionAck, ReadRequest, parse_packet
from netbootd.tftp.session import OutcomeKind, ReadSession, SessionLimits, refusal
from netbootd.tftp.sources import BytesSource


class SyntheticSource:
    """A large file without the memory: byte i is ``i % 251``; counts reads and closes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        length = max(0, min(length, self.size - offset))
        start = offset % 251
        pattern = bytes(range(251)) * (length // 251 + 2)
        return pattern[start : start + length]

    def close(self) -> None:
        pass


def pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def rrq(**options: str) -> ReadRequest:
    return ReadRequest("file", "octet", dict(options))


def decode(datagrams: list[bytes]) -> list[object]:
    return [parse_packet(d) for d in datagrams]


def lockstep(session: ReadSession, first: list[bytes], now: float = 0.0) -> bytes:
    """Play a perfect client that ACKs every block (and ACK 0 after an OACK)."""
    received = bytearray()
    pending = first
    for _ in range(10_000_000):
        if not pending:
            break
        packets = decode(pending)
        pending = []
        for pkt in packets:
            if isinstance(pkt, OptionAck):
                pending += session.on_datagram(Ack(0).to_bytes(), now)
            else:
                assert isinstance(pkt, Data)
                received += pkt.payload
                pending += session.on_datagram(Ack(pkt.block).to_bytes(), now)
    return bytes(received)


@pytest.mark.parametrize("size", [0, 511, 512, 513, 1468 * 3])
def test_lockstep_sizes(size: int) -> None:
    data = pattern(size)
    session = ReadSession(rrq(), BytesSource(data), SessionLimits())
    first = session.start(0.0)
    assert isinstance(parse_packet(first[0]), Data)  # no options: DATA 1 straight away
    assert lockstep(session, first) == data
    assert session.finished
    assert session.deadline is None
    assert session.outcome is not None
    assert session.outcome.kind is OutcomeKind.COMPLETED
    assert session.blocks_sent == size // 512 + 1
    assert session.bytes_sent == size
    assert session.bytes_acked == size
    assert session.retransmits == 0


def test_exact_multiple_ends_with_empty_block() -> None:
    session = ReadSession(rrq(), BytesSource(pattern(1024)), SessionLimits())
    session.start(0.0)
    out = session.on_datagram(Ack(1).to_bytes(), 0.0)
    out = session.on_datagram(Ack(2).to_bytes(), 0.0)
    assert decode(out) == [Data(3, b"")]
    assert session.on_datagram(Ack(3).to_bytes(), 0.0) == []
    assert session.finished


def test_oack_negotiation() -> None:
    data = pattern(1468 * 3 + 7)
    session = ReadSession(
        rrq(blksize="1468", tsize="0", timeout="3", windowsize="8", multicast=""),
        BytesSource(data),
        SessionLimits(),
    )
    first = session.start(10.0)
    assert decode(first) == [
        OptionAck({"blksize": "1468", "tsize": str(len(data)), "timeout": "3", "windowsize": "8"})
    ]
    assert session.deadline == 13.0
    window = session.on_datagram(Ack(0).to_bytes(), 10.0)
    assert [p.block for p in decode(window)] == [1, 2, 3, 4]  # type: ignore[attr-defined]
    assert session.on_datagram(Ack(4).to_bytes(), 10.0) == []
    assert session.finished


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("99999", "1468"),  # above RFC 2348's 65464 and our max: clamped
        ("8192", "1468"),  # above our max: clamped
        ("1024", "1024"),
        ("8", "8"),
        ("7", None),  # below RFC 2348's minimum: ignored
        ("0", None),
        ("abc", None),
        ("", None),
        ("-5", None),
        ("\uff11\uff12", None),  # non-ASCII digits are not a number on the wire
        (" 1024", None),  # only plain digits: no whitespace, sign or underscore
        ("1024\t", None),
        ("+1024", None),
        ("1_024", None),
    ],
)
def test_blksize_clamped_or_ignored(asked: str, expected: str | None) -> None:
    session = ReadSession(rrq(blksize=asked), BytesSource(pattern(100)), SessionLimits())
    first = decode(session.start(0.0))
    if expected is None:
        assert first == [Data(1, pattern(100))]
        assert session.blksize == 512
    else:
        assert first == [OptionAck({"blksize": expected})]
        assert session.blksize == int(expected)


def test_blksize_with_whitespace_left_out_of_the_oack() -> None:
    # The other options are still honoured: the OACK is sent, just without blksize.
    session = ReadSession(rrq(blksize=" 1024", tsize="0"), BytesSource(b"x"), SessionLimits())
    assert decode(session.start(0.0)) == [OptionAck({"tsize": "1"})]
    assert session.blksize == 512


def test_blksize_clamp_follows_configured_max() -> None:
    session = ReadSession(rrq(blksize="8192"), BytesSource(b"x"), SessionLimits(max_blksize=1024))
    assert decode(session.start(0.0)) == [OptionAck({"blksize": "1024"})]


def test_windowsize_clamped_to_max_and_bad_values_ignored() -> None:
    limits = SessionLimits(max_windowsize=16)
    s = ReadSession(rrq(windowsize="65535"), BytesSource(b"x"), limits)
    assert decode(s.start(0.0)) == [OptionAck({"windowsize": "16"})]
    for bad in ("0", "65536", "x"):
        s = ReadSession(rrq(windowsize=bad), BytesSource(b"x"), limits)
        assert decode(s.start(0.0)) == [Data(1, b"x")]


def test_timeout_option_range() -> None:
    s = ReadSession(rrq(timeout="255"), BytesSource(b"x"), SessionLimits())
    assert decode(s.start(0.0)) == [OptionAck({"timeout": "255"})]
    assert s.deadline == 255.0
    for bad in ("0", "256", "1.5"):
        s = ReadSession(rrq(timeout=bad), BytesSource(b"x"), SessionLimits())
        assert decode(s.start(0.0)) == [Data(1, b"x")]
        assert s.deadline == 1.0


def test_mail_mode_refused() -> None:
    refused = refusal(ReadRequest("f", "mail", {}))
    assert refused is not None
    assert refused.code == ErrorCode.ILLEGAL_OPERATION
    for mode in ("octet", "netascii"):
        assert refusal(ReadRequest("f", mode, {})) is None


def test_lost_data_retransmitted_after_timeout() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(1000)), SessionLimits(timeout=1.0))
    s.start(0.0)  # DATA 1 lost
    assert s.on_timer(0.5) == []  # before the deadline: nothing
    out = decode(s.on_timer(1.0))
    assert out == [Data(1, pattern(1000)[:512])]
    assert s.retransmits == 1
    assert s.deadline == 2.0
    out = decode(s.on_datagram(Ack(1).to_bytes(), 1.1))
    assert out == [Data(2, pattern(1000)[512:])]
    s.on_datagram(Ack(2).to_bytes(), 1.2)
    assert s.finished


def test_lost_ack_retransmits_then_duplicate_ack_is_silent() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(2000)), SessionLimits(timeout=1.0))
    s.start(0.0)
    s.on_datagram(Ack(1).to_bytes(), 0.1)  # DATA 2 sent; its ACK gets lost
    again = decode(s.on_timer(1.1))
    assert again == [Data(2, pattern(2000)[512:1024])]
    # Both the delayed original ACK 2 and the one for the retransmission arrive.
    assert decode(s.on_datagram(Ack(2).to_bytes(), 1.2)) == [Data(3, pattern(2000)[1024:1536])]
    assert s.on_datagram(Ack(2).to_bytes(), 1.3) == []  # Sorcerer's Apprentice: no resend
    assert s.duplicate_acks == 1


def test_duplicate_ack_never_retransmits() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(5000)), SessionLimits())
    s.start(0.0)
    assert len(s.on_datagram(Ack(1).to_bytes(), 0.0)) == 1
    for _ in range(5):
        assert s.on_datagram(Ack(1).to_bytes(), 0.0) == []
    assert s.retransmits == 0
    assert s.blocks_sent == 2


def test_window_ack_in_the_middle_restarts_after_it() -> None:
    data = pattern(512 * 10 + 1)
    s = ReadSession(rrq(windowsize="4"), BytesSource(data), SessionLimits())
    assert decode(s.start(0.0)) == [OptionAck({"windowsize": "4"})]
    window = decode(s.on_datagram(Ack(0).to_bytes(), 0.0))
    assert [p.block for p in window] == [1, 2, 3, 4]  # type: ignore[attr-defined]
    # Block 3 lost: the client ACKs 2, the window slides to start at 3 (RFC 7440 section 4).
    window = decode(s.on_datagram(Ack(2).to_bytes(), 0.1))
    assert [p.block for p in window] == [3, 4, 5, 6]  # type: ignore[attr-defined]
    assert s.retransmits == 2  # 3 and 4 were sent before
    assert s.on_datagram(Ack(2).to_bytes(), 0.2) == []  # duplicate: silent
    window = decode(s.on_datagram(Ack(6).to_bytes(), 0.3))
    assert [p.block for p in window] == [7, 8, 9, 10]  # type: ignore[attr-defined]
    window = decode(s.on_datagram(Ack(10).to_bytes(), 0.4))
    assert window == [Data(11, data[5120:])]
    s.on_datagram(Ack(11).to_bytes(), 0.5)
    assert s.finished
    assert s.outcome is not None
    assert s.outcome.kind is OutcomeKind.COMPLETED


def test_window_timeout_resends_from_first_unacked() -> None:
    s = ReadSession(rrq(windowsize="4"), BytesSource(pattern(512 * 8)), SessionLimits())
    s.start(0.0)
    s.on_datagram(Ack(0).to_bytes(), 0.0)
    out = decode(s.on_timer(1.0))
    assert [p.block for p in out] == [1, 2, 3, 4]  # type: ignore[attr-defined]


def test_ack_outside_window_ignored() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(5000)), SessionLimits())
    s.start(0.0)
    assert s.on_datagram(Ack(7).to_bytes(), 0.0) == []  # never sent
    assert s.ignored == 1
    assert not s.finished


def test_rollover_past_65535() -> None:
    size = 65536 * 512 + 100
    source = SyntheticSource(size)
    s = ReadSession(rrq(), source, SessionLimits())
    pending = s.start(0.0)
    blocks_seen = 0
    last_wire = -1
    total = 0
    saw_zero = False
    while pending:
        (datagram,) = pending
        wire = (datagram[2] << 8) | datagram[3]
        assert wire == (last_wire + 1) & 0xFFFF or last_wire == -1
        saw_zero = saw_zero or wire == 0
        last_wire = wire
        total += len(datagram) - 4
        blocks_seen += 1
        pending = s.on_datagram(b"\x00\x04" + datagram[2:4], 0.0)
    assert saw_zero
    assert blocks_seen == 65537
    assert last_wire == 1  # 65537 mod 65536
    assert total == size
    assert s.outcome is not None
    assert s.outcome.kind is OutcomeKind.COMPLETED


def test_synthetic_source_content_matches_pattern() -> None:
    src = SyntheticSource(2000)
    assert src.read(0, 2000) == pattern(2000)
    assert src.read(700, 300) == pattern(2000)[700:1000]


def test_edk2_tsize_probe_then_error_8() -> None:
    s = ReadSession(rrq(tsize="0"), BytesSource(pattern(4242)), SessionLimits())
    assert decode(s.start(0.0)) == [OptionAck({"tsize": "4242"})]
    out = s.on_datagram(Error(ErrorCode.OPTION_REFUSED, "tsize only").to_bytes(), 0.01)
    assert out == []
    assert s.finished
    assert s.deadline is None
    assert s.outcome is not None
    assert s.outcome.kind is OutcomeKind.ABORTED
    assert s.outcome.error_code == 8
    assert s.blocks_sent == 0


def test_retries_exhausted_times_out() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(2000)), SessionLimits(timeout=1.0, retries=3))
    s.start(0.0)
    now = 0.0
    resent = 0
    while not s.finished:
        deadline = s.deadline
        assert deadline is not None
        now = deadline
        resent += len(s.on_timer(now))
    assert resent == 3
    assert now == 4.0
    assert s.outcome is not None
    assert s.outcome.kind is OutcomeKind.TIMED_OUT
    assert s.on_timer(100.0) == []


def test_oack_lost_is_retransmitted() -> None:
    s = ReadSession(rrq(blksize="1024"), BytesSource(b"x"), SessionLimits())
    s.start(0.0)
    assert decode(s.on_timer(1.0)) == [OptionAck({"blksize": "1024"})]
    assert s.on_datagram(Ack(1).to_bytes(), 1.1) == []  # not ACK 0: ignored
    assert decode(s.on_datagram(Ack(0).to_bytes(), 1.2)) == [Data(1, b"x")]


def test_garbage_is_ignored_and_counted() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(600)), SessionLimits())
    s.start(0.0)
    for junk in (b"", b"\x00", b"\xff\xff\xff", b"\x00\x03\x00\x01abc", b"\x00\x01f\x00octet\x00"):
        assert s.on_datagram(junk, 0.0) == []
    assert s.ignored == 5
    assert not s.finished


def test_source_shrinking_fails_the_transfer() -> None:
    class Shrinking(BytesSource):
        def read(self, offset: int, length: int) -> bytes:
            return super().read(offset, length)[:-1]

    s = ReadSession(rrq(), Shrinking(pattern(600)), SessionLimits())
    out = decode(s.start(0.0))
    assert isinstance(out[0], Error)
    assert s.outcome is not None
    assert s.outcome.kind is OutcomeKind.FAILED


def test_abort_sends_error_and_finishes() -> None:
    s = ReadSession(rrq(), BytesSource(pattern(600)), SessionLimits())
    s.start(0.0)
    out = decode(s.abort(0.5, "server shutting down"))
    assert out == [Error(0, "server shutting down")]
    assert s.finished
    assert s.abort(0.6, "again") == []


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        SessionLimits(max_blksize=7)
    with pytest.raises(ValueError):
        SessionLimits(max_windowsize=0)
    with pytest.raises(ValueError):
        SessionLimits(timeout=0)



def test_superseded_after_the_last_block_is_completed() -> None:
    """The client's final ACK was lost and it asked for its next file from the same port."""
    session = ReadSession(rrq(), BytesSource(pattern(1000)), SessionLimits())
    session.start(0.0)
    assert session.on_datagram(Ack(1).to_bytes(), 0.1)  # block 2, the last (488 bytes)
    session.supersede(0.2)
    assert session.finished and session.deadline is None
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.COMPLETED
    assert session.bytes_acked == 1000


def test_superseded_mid_transfer_is_aborted_by_the_client() -> None:
    session = ReadSession(rrq(), BytesSource(pattern(5000)), SessionLimits())
    session.start(0.0)
    session.supersede(0.1)
    assert session.outcome is not None and session.outcome.kind is OutcomeKind.ABORTED
    assert session.bytes_acked == 0
    session.supersede(0.2)  # already over: nothing changes
    assert session.outcome.kind is OutcomeKind.ABORTED
