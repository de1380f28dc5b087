"""StateDB write-behind (a performance measure, docs/performance.md) loses and reorders nothing,
and GUID sharing is tracked without reading the table per packet; on sqlite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from netbootd.core.identity import ClientIdentity
from netbootd.state.events import StateDB
from pgserver import Backend

GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"


def _deferred(backend: Backend) -> tuple[StateDB, list[Callable[[], None]]]:
    db = StateDB(backend.db("state.sqlite3"))
    scheduled: list[Callable[[], None]] = []
    db.defer_writes(scheduled.append)
    return db, scheduled


def test_queued_writes_are_committed_in_order_by_the_scheduled_flush(backend: Backend) -> None:
    db, scheduled = _deferred(backend)
    for i in range(5):
        db.record("52:54:00:00:00:01", f"k{i}", float(i))
    assert len(scheduled) == 1  # one flush per batch, not per write
    with StateDB.open_readonly(backend.db("state.sqlite3")) as other:
        assert other.timeline("52:54:00:00:00:01") == []  # not committed yet
    scheduled.pop()()
    with StateDB.open_readonly(backend.db("state.sqlite3")) as other:
        assert [e.kind for e in other.timeline("52:54:00:00:00:01")] == [
            "k0", "k1", "k2", "k3", "k4"]
    db.record("52:54:00:00:00:01", "k5", 5.0)
    assert len(scheduled) == 1  # the next write schedules the next flush
    db.close()


def test_reads_through_the_same_object_and_close_see_queued_writes(backend: Backend) -> None:
    db, _ = _deferred(backend)
    db.saw(ClientIdentity(mac="52:54:00:00:00:01", guid=GUID), 1.0)
    db.record("52:54:00:00:00:01", "dhcp-offer", 1.0)
    assert db.node("52:54:00:00:00:01") is not None
    db.record("52:54:00:00:00:01", "tftp-sent", 2.0)
    db.close()
    with StateDB.open_readonly(backend.db("state.sqlite3")) as other:
        assert [e.kind for e in other.timeline("52:54:00:00:00:01")] == ["dhcp-offer",
                                                                         "tftp-sent"]


def test_a_first_sighting_does_not_change_guid_sharing_a_clash_does(backend: Backend) -> None:
    db, _ = _deferred(backend)
    db.saw(ClientIdentity(mac="52:54:00:00:00:01", guid=GUID), 1.0)
    db.saw(ClientIdentity(mac="52:54:00:00:00:01", guid=GUID), 2.0)
    assert db.guid_epoch == 0 and db.take_guid_changes() == (set(), set())
    # A second MAC with the same GUID, still queued: the clash is seen without a flush.
    db.saw(ClientIdentity(mac="52:54:00:00:00:02", guid=GUID), 3.0)
    assert db.guid_epoch == 1 and db.take_guid_changes() == ({GUID}, set())
    db.flush()
    db.saw(ClientIdentity(mac="52:54:00:00:00:03", guid=GUID), 4.0)  # clash with the table
    assert db.take_guid_changes() == ({GUID}, set())
    other = "6a1f0c3e-5b2d-4e8f-9a71-3c5d7e9f1b2a"
    db.saw(ClientIdentity(mac="52:54:00:00:00:03", guid=other), 5.0)  # the MAC moved away
    assert db.take_guid_changes() == (set(), {GUID})
    assert db.shared_guids() == {GUID: {"52:54:00:00:00:01", "52:54:00:00:00:02"}}
    db.close()


def test_a_batch_of_mixed_writes_ends_as_the_same_writes_made_one_by_one(backend: Backend) -> None:
    def workload(db: StateDB) -> None:
        for i in range(3):
            mac = f"52:54:00:00:00:0{i}"
            db.saw(ClientIdentity(mac=mac, guid=GUID, ip=f"10.0.0.{i}"), 1.0 + i)
            db.record(mac, "dhcp-offer", 1.0 + i, n=i)
            db.phoned_home(mac, 2.0 + i, build="demo/1.0", hostname=f"h{i}", ip=None, node=None)
            db.reported(mac, 3.0 + i, state="ready", build="demo/2.0", ip=None, node=None)
            db.record(mac, "tftp-sent", 4.0 + i, n=i)

    direct = StateDB(backend.db("direct.sqlite3"))
    workload(direct)
    batched, scheduled = _deferred(backend)
    workload(batched)
    assert len(scheduled) == 1
    scheduled.pop()()
    with StateDB.open_readonly(backend.db("state.sqlite3")) as other:
        for i in range(3):
            mac = f"52:54:00:00:00:0{i}"
            assert [(e.kind, e.ts, e.detail) for e in other.timeline(mac)] == \
                [(e.kind, e.ts, e.detail) for e in direct.timeline(mac)]
        assert other.nodes() == direct.nodes()
    direct.close()
    batched.close()
