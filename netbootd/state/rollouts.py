"""Rollouts in the intent database: each rollout's spec and state, written with its effects.

A rollout is one row of ``rollouts`` (its spec and its state as JSON, its phase, a version
number) beside the channels it moves, in the intent database (``state/registry.py``), so a
restarted server reads it back and goes on where it stopped, and every server of a fleet
sharing that database sees the same rollout.

Every transition is one transaction: the new state, and the channel history entries and the
channel move the transition asked for (``core/rollout.py``'s effects). The state row is
written with ``WHERE version = <the version the step was computed from>``: when two servers
tick the same rollout at once, both compute the same step from the same state (the state
machine is deterministic), the first to commit wins and the other's update matches no row,
so its transaction is rolled back without writing its (identical) history twice.

The DDL is portable (team convention: TEXT, INTEGER, REAL, ``?`` placeholders); it is one
constant, ``ROLLOUTS_SCHEMA``, created with the rest of the intent schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netbootd.core.rollout import (
    History,
    MoveChannel,
    RolloutEffect,
    RolloutPin,
    RolloutSpec,
    RolloutState,
    pins,
    start,
)
from netbootd.errors import Conflict, NotFound

if TYPE_CHECKING:
    from netbootd.state.registry import Registry

ROLLOUTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, build TEXT NOT NULL,
  phase TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,
  version INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL,
  who TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_by_phase ON rollouts (phase, id);
"""

_COLS = "id, spec, state, version, created, who"
_ACTIVE = "phase IN ('running', 'paused')"


@dataclass(frozen=True, slots=True)
class Rollout:
    spec: RolloutSpec
    state: RolloutState
    version: int
    created: float
    who: str

    @property
    def id(self) -> int:
        return self.spec.id

    def as_json(self) -> dict[str, Any]:
        batches = self.spec.batches()
        return {**self.spec.as_json(), "phase": self.state.phase, "reason": self.state.reason,
                "batch_index": self.state.batch, "batch_count": len(batches),
                "batch_started": self.state.batch_started,
                "deadline": (self.state.batch_started + self.spec.ready_within
                             if self.state.phase == "running" else None),
                "node_states": self.state.as_json()["nodes"],
                "batches": [list(b) for b in batches], "created": self.created,
                "updated": self.state.updated, "who": self.who, "version": self.version}


def _row(r: Sequence[Any]) -> Rollout:
    return Rollout(RolloutSpec.from_json(json.loads(r[1])),
                   RolloutState.from_json(json.loads(r[2])), int(r[3]), float(r[4]), str(r[5]))


class Rollouts:
    """The rollouts of one intent database (a Registry's connection and transactions)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._db = registry._db

    def all(self) -> list[Rollout]:
        return [_row(r) for r in self._db.execute(
            f"SELECT {_COLS} FROM rollouts ORDER BY id").fetchall()]

    def active(self) -> list[Rollout]:
        return [_row(r) for r in self._db.execute(
            f"SELECT {_COLS} FROM rollouts WHERE {_ACTIVE} ORDER BY id").fetchall()]

    def get(self, rollout_id: int) -> Rollout:
        r = self._db.execute(f"SELECT {_COLS} FROM rollouts WHERE id=?",
                             (rollout_id,)).fetchone()
        if r is None:
            have = [str(x.id) for x in self.all()[-10:]]
            raise NotFound(f"no rollout {rollout_id} (rollouts: {', '.join(have) or 'none'}; "
                           "`netbootd rollout list`)")
        return _row(r)

    def pins(self) -> dict[str, RolloutPin]:
        """What the planner sees (core/intent.py's rollout rule)."""
        return pins([(r.spec, r.state) for r in self.active()])

    def create(self, *, channel: str, build: str, nodes: Sequence[str], canary: int,
               batch: str, ready_within: float, max_failed: int, reboot: bool, who: str,
               now: float, previous: str) -> tuple[Rollout, list[RolloutEffect]]:
        """A new rollout of ``channel`` (at ``previous``) to ``build``, its canaries started;
        Conflict when the channel moved since ``previous`` was read or another rollout of it
        is still active."""
        with self.registry._txn():
            row = self._db.execute("SELECT build FROM channels WHERE name=?",
                                   (channel,)).fetchone()
            if row is None or row[0] != previous:
                raise Conflict(f"channel {channel} moved while the rollout was being made "
                               f"(now {row[0] if row else 'unset'}); try again")
            busy = self._db.execute(f"SELECT id FROM rollouts WHERE channel=? AND {_ACTIVE}",
                                    (channel,)).fetchone()
            if busy is not None:
                raise Conflict(f"rollout {busy[0]} of channel {channel} is still going; "
                               f"abort it first (`netbootd rollout abort {busy[0]}`)")
            cur = self.registry._write(
                "INSERT INTO rollouts (channel, build, phase, spec, state, created, updated, "
                "who) VALUES (?, ?, 'running', '', '', ?, ?, ?) RETURNING id",
                (channel, build, now, now, who))
            rid = int(cur.fetchone()[0])
            cur.close()
            spec = RolloutSpec(id=rid, channel=channel, build=build, previous=previous,
                               nodes=tuple(nodes), canary=canary, batch=batch,
                               ready_within=ready_within, max_failed=max_failed,
                               reboot=reboot)
            state, effects = start(spec, now, who)
            self.registry._write("UPDATE rollouts SET spec=?, state=?, phase=? WHERE id=?",
                                 (json.dumps(spec.as_json()), json.dumps(state.as_json()),
                                  state.phase, rid))
            self._apply(spec, effects, now)
            return Rollout(spec, state, 0, now, who), effects

    def save(self, rollout: Rollout, state: RolloutState, effects: Sequence[RolloutEffect],
             now: float) -> bool:
        """Write ``state`` and ``effects`` if the rollout is still at the version ``state``
        was computed from; False (nothing written) if another writer got there first."""
        with self.registry._txn():
            cur = self.registry._write(
                "UPDATE rollouts SET state=?, phase=?, updated=?, version=version+1 "
                "WHERE id=? AND version=?",
                (json.dumps(state.as_json()), state.phase, now, rollout.id, rollout.version))
            if cur.rowcount != 1:
                return False
            self._apply(rollout.spec, effects, now)
            return True

    def _apply(self, spec: RolloutSpec, effects: Sequence[RolloutEffect], now: float) -> None:
        who = f"rollout {spec.id}"
        for e in effects:
            if isinstance(e, History):
                self.registry._write(
                    "INSERT INTO channel_history (channel, ts, who, action, from_build, "
                    "to_build, why) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.channel, now, who, e.action, e.from_build, e.to_build, e.why))
            elif isinstance(e, MoveChannel):
                self.registry._write(
                    "INSERT INTO channels (name, build, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET build=excluded.build, "
                    "updated=excluded.updated", (e.channel, e.build, now))
                self.registry._write(
                    "INSERT INTO channel_history (channel, ts, who, action, from_build, "
                    "to_build, why) VALUES (?, ?, ?, 'set', ?, ?, ?)",
                    (e.channel, now, who, spec.previous, e.build, e.why))
