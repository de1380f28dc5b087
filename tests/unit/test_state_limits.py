"""StateDB bounds: spoofed MACs cannot grow the nodes and events tables without limit (on
sqlite and on PostgreSQL)."""

from __future__ import annotations

from netbootd.core.identity import ClientIdentity
from netbootd.metrics import Counters
from netbootd.state.events import StateDB
from pgserver import Backend


def test_unknown_macs_beyond_max_nodes_are_dropped_and_counted(backend: Backend) -> None:
    counters = Counters()
    with StateDB(backend.db("s.db"), max_nodes=10, max_events=1000, counters=counters) as db:
        for i in range(50):
            mac = f"52:54:00:00:01:{i:02x}"
            db.saw(ClientIdentity(mac=mac), float(i))
            db.record(mac, "dhcp-offer", float(i))
        # A configured node is recorded whatever the cap; a known MAC keeps being recorded.
        db.saw(ClientIdentity(mac="52:54:00:00:02:01"), 99.0, node="db1")
        db.record("52:54:00:00:02:01", "dhcp-offer", 99.0)
        db.record("52:54:00:00:01:00", "tftp-sent", 100.0)
        assert db.counts() == (11, 12)
        assert counters.get("state_dropped", reason="node-cap") == 80
    # The cap holds across a restart: the MACs already on record are read back.
    with StateDB(backend.db("s.db"), max_nodes=10, max_events=1000, counters=counters) as db:
        db.record("52:54:00:00:09:09", "dhcp-offer", 200.0)
        db.record("52:54:00:00:01:01", "dhcp-offer", 200.0)
        assert db.counts() == (11, 13)


def test_events_beyond_max_events_are_pruned_oldest_first(backend: Backend) -> None:
    counters = Counters()
    with StateDB(backend.db("s.db"), max_nodes=10, max_events=1000, counters=counters) as db:
        for i in range(5000):
            db.record("52:54:00:00:00:01", "http-sent", float(i), n=i)
        _, events = db.counts()
        assert 1000 <= events < 2000
        kept = db.timeline("52:54:00:00:00:01")
        assert kept[-1].detail["n"] == 4999 and kept[0].detail["n"] >= 3000
        assert counters.get("state_events_pruned") == 5000 - events
