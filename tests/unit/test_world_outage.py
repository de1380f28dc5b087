"""The World survives its intent store going away; the spooling writer keeps events in order.

The outage is injected at the database boundary (every Registry / StateDB call that would
touch the database raises what an unreachable server raises) so that the decisions around it
are checked exactly; tests/integration/test_database_outage.py stops a real PostgreSQL.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from helpers import TEST_KEY, make_config, make_store, write_build
from netbootd.metrics import Counters
from netbootd.service import make_renderer
from netbootd.state.events import StateDB
from netbootd.state.health import (
    DatabaseHealth,
    database_where,
    reason_of,
    refused,
    tcp_probe,
)
from netbootd.state.registry import Registry
from netbootd.state.replay import SpoolingWriter
from netbootd.state.spool import Batch, Spool
from netbootd.state.sql import StateUnavailable, connect
from netbootd.store.builds import load_store
from netbootd.store.layout import bump_generation
from netbootd.world import WorldWatcher

DOWN = sqlite3.OperationalError("unable to open database file")


class Switch:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.down:
            raise DOWN


class FlakyRegistry(Registry):
    """A real Registry whose every read fails while ``switch.down``."""

    def __init__(self, path: Path, switch: Switch) -> None:
        super().__init__(path)
        self.switch = switch

    def changed(self) -> bool:
        self.switch.check()
        return super().changed()

    def channels(self) -> dict[str, str]:
        self.switch.check()
        return super().channels()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(tmp_path: Path) -> tuple[WorldWatcher, Switch, Clock, DatabaseHealth]:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    switch, clock = Switch(), Clock()
    health = DatabaseHealth("db.example:5432", clock=clock)
    w = WorldWatcher(config, catalog, make_renderer(config, catalog, TEST_KEY),
                     StateDB(Path(":memory:")),
                     registry=FlakyRegistry(tmp_path / "intent.sqlite3", switch),
                     store_dir=config.server.store_dir, health=health)
    return w, switch, clock, health


def test_the_last_world_answers_and_the_store_is_not_asked_per_request(
        tmp_path: Path, caplog: Any) -> None:
    w, switch, clock, health = setup(tmp_path)
    Registry(tmp_path / "intent.sqlite3").set_channel("stable", "demo/2.0", who="t", why="",
                                                      now=1.0)
    before = w.current()
    assert before.intent.channels == {"stable": "demo/2.0"}
    switch.down = True
    calls = switch.calls
    with caplog.at_level("ERROR", logger="netbootd.state"):
        answers = [w.current() for _ in range(500)]
    assert all(a is before for a in answers)
    assert not health.up and health.outages == 1
    assert switch.calls - calls == 1  # asked once; the rest wait for the retry pace
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    clock.t += 1.5  # the retry is due: asked once more, still down, next retry later
    w.current()
    w.current()
    assert switch.calls - calls == 2 and health.outages == 1


def test_recovery_is_noticed_and_reads_what_changed_meanwhile(tmp_path: Path) -> None:
    w, switch, clock, health = setup(tmp_path)
    before = w.current()
    switch.down = True
    w.current()
    # Changed by another server while this one could not read.
    Registry(tmp_path / "intent.sqlite3").set_channel("stable", "demo/2.0", who="t", why="",
                                                      now=1.0)
    assert w.current() is before
    switch.down = False
    assert w.current() is before  # not yet time to retry
    clock.t += 60
    after = w.current()
    assert health.up
    assert after.generation == before.generation + 1
    assert after.intent.channels == {"stable": "demo/2.0"}


def test_an_import_during_the_outage_is_served_with_the_last_intent(tmp_path: Path) -> None:
    w, switch, _, _ = setup(tmp_path)
    Registry(tmp_path / "intent.sqlite3").set_channel("stable", "demo/2.0", who="t", why="",
                                                      now=1.0)
    before = w.current()
    switch.down = True
    w.current()
    write_build(tmp_path / "store", "new", "1", {"vmlinuz": b"k"}, kind="linux",
                kernel="vmlinuz")
    bump_generation(tmp_path / "store")
    after = w.current()
    assert "new/1" in after.catalog
    assert after.intent.channels == before.intent.channels
    assert after.inventory is before.inventory


def test_the_refusal_says_where_why_and_that_nothing_changed() -> None:
    e = refused("db.example:5432", ConnectionRefusedError("connection refused\nmore"))
    assert str(e) == ("the state database at db.example:5432 is unreachable: connection "
                      "refused; nothing was changed; retry when it is back")
    assert e.exit_code == 4
    assert refused("x", e) is e


class FlakyState(StateDB):
    """A real (in-memory) StateDB whose commits fail while ``switch.down``."""

    def __init__(self, switch: Switch) -> None:
        super().__init__(Path(":memory:"))
        self.switch = switch

    def write_batch(self, batch: Batch) -> None:
        self.switch.check()
        super().write_batch(batch)


def test_events_during_an_outage_are_spooled_and_replayed_in_order(tmp_path: Path) -> None:
    switch, clock, c = Switch(), Clock(), Counters()
    state = FlakyState(switch)
    health = DatabaseHealth("db.example:5432", clock=clock)
    writer = SpoolingWriter(state, Spool(tmp_path / "spool", max_bytes=1 << 20, counters=c),
                            health, c)
    state.writer = writer
    state.defer_writes(lambda flush: None)  # the test flushes
    state.record("52:54:00:00:00:01", "dhcp-offer", 1.0, n=1)
    state.flush()
    switch.down = True
    for i in range(2, 12):
        state.record("52:54:00:00:00:01", "dhcp-offer", float(i), n=i)
        state.flush()
    assert c.get("events_spooled") == 10 and not health.up
    switch.down = False
    state.record("52:54:00:00:00:01", "dhcp-offer", 12.0, n=12)
    state.flush()  # spooled too: earlier batches still wait, order is kept
    assert c.get("events_spooled") == 11
    assert writer.replay_some() == 0  # not time to retry yet
    clock.t += 5
    assert writer.replay_some() == 11 and health.up
    assert c.get("events_replayed") == 11
    state.writer = None
    assert [e.detail["n"] for e in state.timeline("52:54:00:00:00:01")] == list(range(1, 13))
    assert writer.status()["events_dropped"] == 0


def test_while_down_only_the_probe_decides_when_to_try_again() -> None:
    # A real TCP probe on loopback: a closed port, then a listener on it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = Clock()
    probe = tcp_probe(f"postgresql://u@127.0.0.1:{port}/db")
    assert probe is not None and tcp_probe("postgresql:///db?host=/run/postgresql") is None
    h = DatabaseHealth(database_where(f"postgresql://u:pw@127.0.0.1:{port}/db", Path(".")),
                       clock=clock, probe=probe)
    assert h.where == f"127.0.0.1:{port}"
    h.failed(DOWN)
    clock.t += 3600
    assert not h.may_try()  # time alone does not let the loop touch the database
    assert h.probe_due()
    h.probed(h.check())  # refused: the next probe later
    assert not h.may_try() and not h.probe_due()
    clock.t += 60
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert h.probe_due()
        h.probed(h.check())
    assert h.may_try() and not h.up  # try for real; only a working call says it is up
    h.failed(DOWN)
    assert not h.may_try() and h.outages == 1


def test_the_refusal_of_a_real_unreachable_postgresql_names_host_port_and_why() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(StateUnavailable) as raised:
        connect(f"postgresql://netbootd:secret@127.0.0.1:{port}/netbootd")
    text = str(refused(None, raised.value))
    assert text.startswith(f"the state database at 127.0.0.1:{port} is unreachable: ")
    assert text.endswith("; nothing was changed; retry when it is back")
    assert "refused" in reason_of(raised.value).lower()
    assert "secret" not in text and "\n" not in text and "check that" not in text
