"""Admins' run-time intent on disk: channels and their history, adopted nodes, identity
bindings, node overrides and one-shot reimage orders (sqlite3, WAL; ``intent.sqlite3``).

Kept apart from the boot-event database: intent changes rarely and must be read consistently
by every server, CLI and API call, while events are written at every packet. A running server
asks ``changed()`` before it decides: ``PRAGMA data_version`` moves when another connection
(the CLI, another process) commits, and ``_local`` when this connection did, so a channel flip
is seen at the next request without a restart or a poll loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from netbootd.config import BootSettings, NodeSpec
from netbootd.core.intent import Intent, NodeOverride, ReimageOrder
from netbootd.errors import NetbootdError, NotFound
from netbootd.state.rollouts import ROLLOUTS_SCHEMA, Rollouts
from netbootd.store.channels import HistoryEntry, rollback_target

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
  name TEXT PRIMARY KEY, build TEXT NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, ts REAL NOT NULL,
  who TEXT NOT NULL, action TEXT NOT NULL, from_build TEXT, to_build TEXT NOT NULL,
  why TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_channel ON channel_history (channel, id);
CREATE TABLE IF NOT EXISTS adopted_nodes (
  name TEXT PRIMARY KEY, macs TEXT NOT NULL, guids TEXT NOT NULL, serials TEXT NOT NULL,
  grp TEXT, hostname TEXT, created REAL NOT NULL, who TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
  identity TEXT PRIMARY KEY, node TEXT NOT NULL, ts REAL NOT NULL, who TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_overrides (
  node TEXT PRIMARY KEY, build TEXT, channel TEXT, mode TEXT, updated REAL NOT NULL,
  reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS actions (
  id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, kind TEXT NOT NULL,
  image TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  created REAL NOT NULL, updated REAL NOT NULL, who TEXT NOT NULL, attempts INTEGER NOT NULL
  DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    node: str
    kind: str  # "reimage"
    image: str
    state: str  # pending | done | failed (the order stays open, see reason) | superseded
    #             | cancelled (an admin withdrew it before the installer reported)
    reason: str
    created: float
    updated: float
    who: str
    attempts: int

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "node": self.node, "kind": self.kind, "image": self.image,
                "state": self.state, "reason": self.reason, "created": self.created,
                "updated": self.updated, "who": self.who, "attempts": self.attempts}


@dataclass(frozen=True, slots=True)
class Binding:
    identity: str  # "mac:<mac>", "guid:<guid>", "serial:<serial>"
    node: str


class StateUnavailable(NetbootdError):
    """The state directory cannot be written: read-only, another user's, or locked."""

    exit_code = 4  # docs/operations.md, exit codes


def state_unavailable(state_dir: Path, e: Exception) -> StateUnavailable:
    """Say why ``state_dir``'s databases could not be opened, and what to do."""
    try:
        readonly = bool(os.statvfs(state_dir).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly:
        why = "is on a read-only file system; remount it read-write (or run this on the server)"
    elif "locked" in str(e):
        why = "is locked by another process; try again in a moment"
    else:
        why = (f"is not writable by uid {os.geteuid()}; run it as the user netbootd runs as "
               "(or root)")
    return StateUnavailable(f"cannot open the state in {state_dir} ({e}): it {why}")


_ACTION_COLS = "id, node, kind, image, state, reason, created, updated, who, attempts"


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._db.executescript(ROLLOUTS_SCHEMA)  # state/rollouts.py
        self._local = 0
        self._seen: tuple[int, int] | None = None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        cur = self._db.execute(sql, args)
        self._local += 1
        return cur

    def changed(self) -> bool:
        """True once after anyone (this connection or another process) changed the intent."""
        now = (int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._local)
        if now == self._seen:
            return False
        self._seen = now
        return True

    # -- channels ------------------------------------------------------------------------------
    def channels(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._db.execute("SELECT name, build FROM channels")}

    def history(self, channel: str) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT id, channel, ts, who, action, from_build, to_build, why "
            "FROM channel_history WHERE channel=? ORDER BY id", (channel,)).fetchall()
        return [HistoryEntry(*r) for r in rows]

    def all_history(self) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT id, channel, ts, who, action, from_build, to_build, why "
            "FROM channel_history ORDER BY id").fetchall()
        return [HistoryEntry(*r) for r in rows]

    def set_channel(self, channel: str, build: str, *, who: str, why: str, now: float,
                    action: str = "set") -> HistoryEntry:
        """Point ``channel`` at ``build`` and append the history entry (one transaction)."""
        with self._txn():
            row = self._db.execute("SELECT build FROM channels WHERE name=?",
                                   (channel,)).fetchone()
            old = row[0] if row else None
            self._write("INSERT INTO channels (name, build, updated) VALUES (?, ?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET build=excluded.build, "
                        "updated=excluded.updated", (channel, build, now))
            cur = self._write("INSERT INTO channel_history (channel, ts, who, action, "
                              "from_build, to_build, why) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (channel, now, who, action, old, build, why))
            assert cur.lastrowid is not None
            return HistoryEntry(cur.lastrowid, channel, now, who, action, old, build, why)

    def rollback_target(self, channel: str, to: str | None) -> str:
        return rollback_target(channel, self.history(channel), to)

    # -- nodes ---------------------------------------------------------------------------------
    def adopted_nodes(self) -> list[NodeSpec]:
        rows = self._db.execute("SELECT name, macs, guids, serials, grp, hostname "
                                "FROM adopted_nodes ORDER BY name").fetchall()
        return [NodeSpec(name=r[0], settings=BootSettings(), macs=tuple(json.loads(r[1])),
                         guids=tuple(json.loads(r[2])), serials=tuple(json.loads(r[3])),
                         group=r[4], hostname=r[5]) for r in rows]

    def is_adopted(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM adopted_nodes WHERE name=?",
                                (name,)).fetchone() is not None

    def adopt(self, spec: NodeSpec, *, who: str, now: float) -> None:
        self._write("INSERT INTO adopted_nodes (name, macs, guids, serials, grp, hostname, "
                    "created, who) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec.name, json.dumps(list(spec.macs)), json.dumps(list(spec.guids)),
                     json.dumps(list(spec.serials)), spec.group, spec.hostname, now, who))

    def bindings(self) -> list[Binding]:
        return [Binding(r[0], r[1]) for r in
                self._db.execute("SELECT identity, node FROM bindings ORDER BY identity")]

    def bind(self, identity: str, node: str, *, who: str, now: float) -> None:
        self._write("INSERT INTO bindings (identity, node, ts, who) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(identity) DO UPDATE SET node=excluded.node, ts=excluded.ts, "
                    "who=excluded.who", (identity, node, now, who))

    def overrides(self) -> dict[str, NodeOverride]:
        return {r[0]: NodeOverride(r[1], r[2], r[3]) for r in self._db.execute(
            "SELECT node, build, channel, mode FROM node_overrides")}

    def set_override(self, node: str, override: NodeOverride, *, now: float,
                     reason: str = "") -> None:
        if override == NodeOverride():
            self._write("DELETE FROM node_overrides WHERE node=?", (node,))
            return
        self._write("INSERT INTO node_overrides (node, build, channel, mode, updated, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(node) DO UPDATE SET "
                    "build=excluded.build, channel=excluded.channel, mode=excluded.mode, "
                    "updated=excluded.updated, reason=excluded.reason",
                    (node, override.build, override.channel, override.mode, now, reason))

    # -- one-shot actions ----------------------------------------------------------------------
    def order_reimage(self, node: str, image: str, *, who: str, now: float) -> Action:
        """A new reimage order for ``node``; any older pending one is superseded, and a
        ``local`` mode left by an earlier reimage is cleared so the installer runs."""
        with self._txn():
            self._write("UPDATE actions SET state='superseded', updated=? WHERE node=? "
                        "AND state IN ('pending', 'failed')", (now, node))
            cur = self._write("INSERT INTO actions (node, kind, image, state, created, "
                              "updated, who) VALUES (?, 'reimage', ?, 'pending', ?, ?, ?)",
                              (node, image, now, now, who))
            ov = self.overrides().get(node, NodeOverride())
            if ov.mode == "local":
                self.set_override(node, NodeOverride(ov.build, ov.channel, None), now=now)
            assert cur.lastrowid is not None
            return self.action(cur.lastrowid)

    def cancel_reimage(self, node: str, *, who: str, now: float) -> Action:
        """Withdraw ``node``'s open reimage order (pending, or failed and to be retried): the
        node boots its normal plan again, and an installer still running that order is
        refused when it reports (``finish_reimage`` accepts open orders only)."""
        with self._txn():
            row = self._db.execute("SELECT id FROM actions WHERE node=? AND kind='reimage' "
                                   "AND state IN ('pending', 'failed') ORDER BY id DESC",
                                   (node,)).fetchone()
            if row is None:
                raise NotFound(f"node {node!r} has no open reimage order; nothing to cancel "
                               f"(`netbootd node show {node}` lists its orders)")
            self._write("UPDATE actions SET state='cancelled', reason=?, updated=? WHERE id=?",
                        (f"cancelled by {who}", now, row[0]))
            return self.action(int(row[0]))

    def action(self, action_id: int) -> Action:
        row = self._db.execute(f"SELECT {_ACTION_COLS} FROM actions WHERE id=?",
                               (action_id,)).fetchone()
        if row is None:
            raise NotFound(f"no action {action_id}")
        return Action(*row)

    def actions(self, node: str | None = None) -> list[Action]:
        sql = f"SELECT {_ACTION_COLS} FROM actions"
        rows = (self._db.execute(sql + " WHERE node=? ORDER BY id", (node,)) if node
                else self._db.execute(sql + " ORDER BY id"))
        return [Action(*r) for r in rows]

    def open_orders(self) -> dict[str, ReimageOrder]:
        """Reimage orders still to carry out (pending, or failed and to be retried)."""
        return {r[0]: ReimageOrder(r[1], r[2]) for r in self._db.execute(
            "SELECT node, id, image FROM actions WHERE kind='reimage' "
            "AND state IN ('pending', 'failed') ORDER BY id")}

    def finish_reimage(self, action_id: int, *, ok: bool, reason: str, now: float) -> Action:
        """The installer reported. Done: the node boots ``local`` from now on. Failed: the
        order stays open (the node stays in reimage) with the reason recorded."""
        with self._txn():
            a = self.action(action_id)
            if a.state not in ("pending", "failed"):
                raise NotFound(f"reimage action {action_id} is {a.state}, not open")
            self._write("UPDATE actions SET state=?, reason=?, updated=?, "
                        "attempts=attempts+1 WHERE id=?",
                        ("done" if ok else "failed", reason, now, action_id))
            if ok:
                ov = self.overrides().get(a.node, NodeOverride())
                self.set_override(a.node, NodeOverride(ov.build, ov.channel, "local"),
                                  now=now, reason=f"reimaged with {a.image}")
            return self.action(action_id)

    # -- everything the planner needs ----------------------------------------------------------
    def intent(self, installer: str | None, ambiguous_guids: frozenset[str]) -> Intent:
        return Intent(channels=self.channels(), overrides=self.overrides(),
                      reimage=self.open_orders(), installer=installer,
                      ambiguous_guids=ambiguous_guids, rollout=Rollouts(self).pins())

    def _txn(self) -> _Txn:
        return _Txn(self._db)


class _Txn:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, all or nothing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
