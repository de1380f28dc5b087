"""A node's state (booted / ready / failed) in StateDB, and a database from before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from netbootd.state.events import StateDB
from pgserver import Backend

MAC = "52:54:00:00:00:07"


def test_phone_home_then_report_set_the_state(backend: Backend) -> None:
    with StateDB(backend.db("s.db")) as db:
        db.phoned_home(MAC, 1.0, build="kvm/1", hostname="hv1", ip=None, node="hv1")
        node = db.node(MAC)
        assert node is not None and node.state == "booted" and node.boot_count == 1
        db.reported(MAC, 2.0, state="failed", build="kvm/1", ip=None, node="hv1", errors=["x"])
        node = db.node(MAC)
        assert node is not None and node.state == "failed" and node.current_build == "kvm/1"
        assert [e.kind for e in db.timeline(MAC)] == ["phone-home", "failed"]
        db.phoned_home(MAC, 3.0, build="kvm/2", hostname="hv1", ip=None, node="hv1")
        node = db.node(MAC)  # the next boot starts over
        assert node is not None and node.state == "booted" and node.current_build == "kvm/2"


def test_a_database_from_before_node_states_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE nodes (mac TEXT PRIMARY KEY, guid TEXT, ip TEXT, arch INTEGER,
          serial TEXT, vendor_class TEXT, node TEXT, hostname TEXT, current_build TEXT,
          boot_count INTEGER NOT NULL DEFAULT 0, first_seen REAL NOT NULL,
          last_seen REAL NOT NULL);
        INSERT INTO nodes (mac, node, current_build, boot_count, first_seen, last_seen)
          VALUES ('52:54:00:00:00:07', 'hv1', 'kvm/1', 3, 1.0, 2.0);
    """)
    old.commit()
    old.close()
    with StateDB.open_readonly(path) as ro:  # read beside it before any server upgraded it
        node = ro.node(MAC)
        assert node is not None and node.state is None and node.current_build == "kvm/1"
    with StateDB(path) as db:
        node = db.node(MAC)
        assert node is not None and node.state is None and node.boot_count == 3
        db.reported(MAC, 5.0, state="ready", build="kvm/1", ip=None, node="hv1")
        node = db.node(MAC)
        assert node is not None and node.state == "ready"
    with StateDB.open_readonly(path) as ro:
        node = ro.node(MAC)
        assert node is not None and node.state == "ready"
