"""The on-disk spool of state write batches: order, bounds, restart, torn lines, replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from netbootd.metrics import Counters
from netbootd.state.spool import Batch, Spool


def _batch(i: int, events: int = 2) -> Batch:
    mac = f"52:54:00:00:00:{i % 256:02x}"
    return Batch(nodes=(("UPDATE nodes SET last_seen=? WHERE mac=?", (float(i), mac)),),
                 events=tuple((float(i), mac, "dhcp-offer", f'{{"n": {i}, "k": {k}}}')
                              for k in range(events)))


def _drain(spool: Spool) -> list[Batch]:
    out: list[Batch] = []
    spool.replay(out.append, 1_000_000)
    return out


def test_replays_in_order_and_empties(tmp_path: Path) -> None:
    c = Counters()
    s = Spool(tmp_path, max_bytes=1 << 20, counters=c)
    batches = [_batch(i) for i in range(50)]
    for b in batches:
        assert s.append(b)
    assert (s.batches, s.events) == (50, 100)
    assert _drain(s) == batches
    assert not s and s.batches == 0 and s.size == 0
    assert c.get("events_spooled") == 100 and c.get("events_replayed") == 100
    assert not list(tmp_path.glob("*.seg"))  # replayed segments are deleted


def test_survives_a_restart_and_resumes_after_partial_replay(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    batches = [_batch(i) for i in range(30)]
    for b in batches[:20]:
        s.append(b)
    got: list[Batch] = []
    assert s.replay(got.append, 7) == 7
    del s  # a crash: nothing is closed
    s2 = Spool(tmp_path, max_bytes=1 << 20)
    assert s2.batches == 13
    for b in batches[20:]:
        s2.append(b)
    got += _drain(s2)
    assert got == batches
    assert Spool(tmp_path, max_bytes=1 << 20).batches == 0


def test_write_failure_keeps_the_batch_first(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        s.append(_batch(i))
    seen: list[Batch] = []

    def down(b: Batch) -> None:
        seen.append(b)
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        s.replay(down, 10)
    assert s.batches == 3
    assert _drain(s) == [_batch(i) for i in range(3)]
    assert seen == [_batch(0)]


def test_bounded_oldest_dropped_first_and_counted(tmp_path: Path) -> None:
    c = Counters()
    s = Spool(tmp_path, max_bytes=20_000, counters=c)
    n = 400
    for i in range(n):
        s.append(_batch(i))
    assert s.size <= 20_000
    kept = _drain(s)
    assert 0 < len(kept) < n
    # What is left is the newest, contiguous and in order.
    assert kept == [_batch(i) for i in range(n - len(kept), n)]
    assert c.get("events_dropped", reason="spool-full") == 2 * (n - len(kept))
    assert c.get("events_spooled") == 2 * n


def test_a_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        s.append(_batch(i))
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    with open(seg, "ab") as f:
        f.write(b'{"seq": 6, "nodes": [[')  # a crash in the middle of a write
    c = Counters()
    s2 = Spool(tmp_path, max_bytes=1 << 20, counters=c)
    assert s2.batches == 5
    s2.append(_batch(99))
    assert _drain(s2) == [*(_batch(i) for i in range(5)), _batch(99)]
    assert c.get("state_spool_torn") >= 1


def test_a_batch_over_the_bound_is_dropped(tmp_path: Path) -> None:
    c = Counters()
    s = Spool(tmp_path, max_bytes=4096, counters=c)
    assert not s.append(_batch(0, events=500))
    assert c.get("events_dropped", reason="too-large") == 500
    assert not s


def test_appends_during_replay_come_after(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(4):
        s.append(_batch(i))
    got: list[Batch] = []

    def write(b: Batch) -> None:
        got.append(b)
        if len(got) == 2:
            s.append(_batch(100))  # a flush failing while the replay runs

    s.replay(write, 100)
    got += _drain(s)
    assert got == [*(_batch(i) for i in range(4)), _batch(100)]


def test_a_crash_after_the_commit_replays_that_batch_again(tmp_path: Path) -> None:
    """At least once (docs/operations.md): the batch committed but not yet marked replayed."""
    s = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        s.append(_batch(i))
    committed: list[Batch] = []

    class Crash(BaseException):
        pass

    def commit_then_die(b: Batch) -> None:
        committed.append(b)
        if len(committed) == 2:
            raise Crash  # the process dies between the commit and the cursor

    with pytest.raises(Crash):
        s.replay(commit_then_die, 10)
    again = _drain(Spool(tmp_path, max_bytes=1 << 20))
    assert committed == [_batch(0), _batch(1)]
    assert again == [_batch(1), _batch(2)]  # batch 1 twice, none lost
