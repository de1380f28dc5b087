"""Fuzzing the TFTP codec and session: any bytes in, never an unexpected exception out."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netbootd.errors import MalformedPacket
from netbootd.tftp.packet import Ack, Error, ReadRequest, parse_packet
from netbootd.tftp.session import ReadSession, SessionLimits
from netbootd.tftp.sources import BytesSource

# Datagrams that look like TFTP often enough to reach deep branches, plus raw noise.
opcodes = st.integers(min_value=0, max_value=7).map(lambda o: o.to_bytes(2, "big"))
tftpish = st.builds(lambda op, rest: op + rest, opcodes, st.binary(max_size=64))
acks = st.integers(min_value=0, max_value=0xFFFF).map(lambda b: Ack(b).to_bytes())
errors = st.integers(min_value=0, max_value=0xFFFF).map(lambda c: Error(c, "x").to_bytes())
datagrams = st.one_of(st.binary(max_size=80), tftpish, acks, errors)
option_values = st.one_of(st.text(max_size=8), st.integers(-5, 70000).map(str))
requests = st.builds(
    lambda opts, mode: ReadRequest("f", mode, opts),
    st.dictionaries(
        st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "x"]), option_values
    ),
    st.sampled_from(["octet", "netascii", "mail"]),
)


@given(st.binary(max_size=600))
def test_parse_any_bytes(data: bytes) -> None:
    try:
        packet = parse_packet(data)
    except MalformedPacket as exc:
        assert exc.reason
    else:
        assert parse_packet(packet.to_bytes()) == packet


@given(tftpish)
def test_parse_tftpish_bytes(data: bytes) -> None:
    try:
        packet = parse_packet(data)
    except MalformedPacket as exc:
        assert exc.reason in {"truncated", "bad-opcode", "empty-filename", "no-mode"}
    else:
        # What parsed is normalised: encoding it again and parsing gives the same packet.
        assert parse_packet(packet.to_bytes()) == packet


# Generation of long step lists can trip the too_slow check on a loaded machine; the test
# itself is cheap.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests,
    st.integers(min_value=0, max_value=5000),
    st.lists(st.tuples(datagrams, st.floats(0, 3), st.booleans()), max_size=40),
)
def test_session_never_raises(
    request: ReadRequest, size: int, steps: list[tuple[bytes, float, bool]]
) -> None:
    session = ReadSession(request, BytesSource(bytes(size)), SessionLimits(retries=3))
    now = 0.0
    session.start(now)
    for data, dt, fire_timer in steps:
        now += dt
        out = session.on_timer(now) if fire_timer else session.on_datagram(data, now)
        assert all(isinstance(d, bytes) for d in out)
        deadline = session.deadline
        if session.finished:
            assert deadline is None
            assert session.outcome is not None
        else:
            assert deadline is not None
            assert session.bytes_acked <= size
