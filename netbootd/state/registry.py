"""Admins' run-time intent: channels and their history, adopted nodes, identity bindings,
node overrides and one-shot reimage orders. Stored in ``intent.sqlite3`` (sqlite3, WAL) by
default, or in the shared PostgreSQL database ``[state] database`` names (netbootd/state/sql.py),
with the same semantics.

Kept apart from the boot-event database: intent changes rarely and must be read consistently
by every server, CLI and API call, while events are written at every packet. A running server
asks ``changed()`` before it decides, so the check is cheap:

* sqlite: ``PRAGMA data_version`` moves when another connection (the CLI, another process)
  commits, and ``_local`` when this connection did.
* PostgreSQL: every intent write bumps the ``intent_generation`` row and sends
  ``NOTIFY netbootd_intent`` in its own transaction; this connection LISTENs, and
  ``changed()`` polls the socket without blocking (no round trip when nothing arrived). As a
  fallback for a lost notification (a reconnect), the generation row is read at most once
  per ``RECHECK`` seconds.

So a channel flip made on any server, CLI or API is seen at the next request without a
restart.
"""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netbootd.config import BootSettings, NodeSpec
from netbootd.core.intent import Intent, NodeOverride, ReimageOrder
from netbootd.errors import NotFound
from netbootd.state import migrate
from netbootd.state.migrate import Migration
from netbootd.state.sql import POSTGRESQL, SQLITE, Db, Rows, StateUnavailable, connect
from netbootd.store.channels import HistoryEntry, rollback_target

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "Action", "Binding", "Registry", "StateUnavailable",
           "state_unavailable"]

# The channel every intent write notifies (PostgreSQL).
NOTIFY_CHANNEL = "netbootd_intent"
# Seconds between two reads of intent_generation (PostgreSQL): the fallback when a
# notification was lost, e.g. while reconnecting.
RECHECK = 1.0

_SCHEMA_V1 = """
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

# Version 2: a counter every intent write bumps (PostgreSQL's change check reads it).
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS intent_generation (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO intent_generation (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
"""

# Append only; never edit one that has shipped (netbootd/state/migrate.py).
MIGRATIONS = [Migration(1, _SCHEMA_V1), Migration(2, _SCHEMA_V2)]



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
    """``path``: the sqlite file, or a ``postgresql://`` URL (netbootd/state/sql.py)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._local = 0
        self._seen: tuple[int, int] | None = None
        self._notified = False
        self._dirty = False
        self._generation: int | None = None
        self._checked = 0.0
        self._reconnects = 0
        self._seen_local = 0
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db: Db = connect(path, on_connect=self._listen)
        if self._db.kind == SQLITE:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")
        try:
            migrate.migrate(self._db, "intent", MIGRATIONS, now=time.time())
        except BaseException:
            self._db.close()
            raise

    @property
    def backend(self) -> str:
        return self._db.kind

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        conn.add_notify_handler(self._on_notify)
        self._notified = True  # (re)connected: whatever happened meanwhile is unknown

    def _on_notify(self, _n: psycopg.Notify) -> None:
        self._notified = True

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> Rows:
        """Every intent write: in a transaction that bumps the generation and notifies."""
        if not self._db.in_transaction:
            with self._txn():
                return self._write(sql, args)
        cur = self._db.execute(sql, args)
        self._dirty = True
        return cur

    def changed(self) -> bool:
        """True once after anyone (this connection or another process) changed the intent.

        Never raises: with the database unreachable nothing is known to have changed (the
        caller keeps what it has); the first check after the connection is back says True.
        """
        if self._db.kind == SQLITE:
            now = (int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._local)
            if now == self._seen:
                return False
            self._seen = now
            return True
        return self._pg_changed()

    def _pg_changed(self) -> bool:
        changed = self._poll_notifies()
        if self._notified:  # a notification psycopg read along with a result, or a connect
            self._notified = False
            changed = True
        if self._local != self._seen_local:
            self._seen_local = self._local
            changed = True
        t = time.monotonic()
        if t - self._checked >= RECHECK:
            self._checked = t
            try:
                gen = int(self._db.execute("SELECT n FROM intent_generation WHERE id=1")
                          .fetchone()[0])
            except StateUnavailable:
                return False
            if gen != self._generation:
                self._generation = gen
                changed = True
        if self._db.reconnects != self._reconnects:
            self._reconnects = self._db.reconnects
            changed = True
        return changed

    def _poll_notifies(self) -> bool:
        """Whether a notification is waiting on the socket: one select(), no round trip."""
        conn = getattr(self._db, "_conn", None)
        if conn is None or conn.closed or conn.broken:
            return False
        pg = conn.pgconn
        try:
            readable, _, _ = select.select([pg.socket], [], [], 0)
            if not readable:
                return False
            pg.consume_input()
        except OSError:
            return False  # gone: the next statement reconnects (and says changed)
        except self._db.errors:
            return False
        got = False
        while pg.notifies() is not None:
            got = True
        return got

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
                              "from_build, to_build, why) VALUES (?, ?, ?, ?, ?, ?, ?) "
                              "RETURNING id", (channel, now, who, action, old, build, why))
            return HistoryEntry(int(cur.fetchone()[0]), channel, now, who, action, old, build,
                                why)

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
                              "updated, who) VALUES (?, 'reimage', ?, 'pending', ?, ?, ?) "
                              "RETURNING id", (node, image, now, now, who))
            action_id = int(cur.fetchone()[0])
            ov = self.overrides().get(node, NodeOverride())
            if ov.mode == "local":
                self.set_override(node, NodeOverride(ov.build, ov.channel, None), now=now)
            return self.action(action_id)

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
                      ambiguous_guids=ambiguous_guids)

    @contextmanager
    def _txn(self) -> Iterator[None]:
        """One writer at a time, all or nothing (netbootd/state/sql.py); a transaction that
        wrote bumps the generation and notifies every listening server as it commits."""
        self._dirty = False
        try:
            with self._db.transaction():
                yield
                if self._dirty:
                    self._db.execute("UPDATE intent_generation SET n = n + 1 WHERE id=1")
                    if self._db.kind == POSTGRESQL:
                        self._db.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        finally:
            if self._dirty:
                self._local += 1
            self._dirty = False
