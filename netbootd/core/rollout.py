"""Rollouts: moving a channel's nodes to a new build batch by batch, gated on their reports.

Pure: no clock, disk or database. ``start`` makes the first state of a rollout, ``step``
takes that state, the nodes' ready/failed reports, the channel's build as it is now and
``now``, and returns the next state and the effects to carry out (``state/rollouts.py``
writes both in one transaction; the service runs ``step`` on each report and on a timer).

The rules (docs/operations.md, "Rolling out a build"):

- The rollout's nodes are those that followed the channel when it started, in name order.
  Batch 0 is the ``canary`` first nodes; the rest go in batches of ``batch`` nodes (a count,
  or a percentage of all the rollout's nodes, rounded up, at least one).
- A node of a started batch gets the new build at its next boot (``pins``: the planner's
  rollout rule, core/intent.py). It must report ``ready`` with the new build within
  ``ready_within`` seconds of its batch's start; a report older than its batch's start, or
  naming another build, is not about this rollout and is ignored.
- A ``failed`` report, or silence past the deadline, fails the node. The ``max_failed``-th
  failure stops the rollout: every node it touched goes back to the previous build (its pin
  goes; the channel never moved) and the channel history records why. A failed node below
  that count goes back alone and the rollout goes on.
- When every node of the batch has reported (ready, or failed below the limit) the next
  batch starts; after the last, the channel itself moves to the new build and the rollout
  is done.
- Paused: reports are still recorded (a failure still stops it) but no batch starts and no
  deadline runs; resuming restarts the current batch's clock. Aborted: like a stop, by hand.
- The channel moved by someone else while the rollout ran: the rollout is aborted (it would
  otherwise compare reports against a build nobody follows any more).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

ACTIVE = ("running", "paused")
"""Phases in which a rollout pins nodes and ``step`` has work to do."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"15m"`` -> 900.0 seconds (units s, m, h, d; a bare number is seconds)."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"duration {text!r}: use a number with s, m, h or d (e.g. 15m)")
    value = float(m.group(1)) * _UNIT[m.group(2)]
    if value <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    return value


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_batch(text: str) -> str:
    """A batch size as given: ``"3"`` (nodes) or ``"25%"`` (of the rollout's nodes)."""
    t = text.strip()
    number = t[:-1] if t.endswith("%") else t
    if not number.isdigit() or int(number) < 1 or (t.endswith("%") and int(number) > 100):
        raise ValueError(f"batch {text!r}: use a node count (e.g. 5) or a percentage "
                         "from 1% to 100% (e.g. 25%)")
    return f"{int(number)}%" if t.endswith("%") else str(int(number))


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What an admin asked for, fixed for the rollout's life."""

    id: int
    channel: str
    build: str  # the new build
    previous: str  # the channel's build when the rollout started
    nodes: tuple[str, ...]  # the nodes that followed the channel then, in order
    canary: int
    batch: str  # parse_batch's form: "5" or "25%"
    ready_within: float  # seconds
    max_failed: int
    reboot: bool = False

    def __post_init__(self) -> None:
        if self.canary < 1:
            raise ValueError("canary must be at least 1 node")
        if self.max_failed < 1:
            raise ValueError("max-failed must be at least 1 (the failure that stops it)")
        if self.ready_within <= 0:
            raise ValueError("ready-within must be more than zero")
        parse_batch(self.batch)

    def batches(self) -> list[tuple[str, ...]]:
        """Batch 0 (the canaries), then the rest in batches of the batch size."""
        nodes = self.nodes
        size = (math.ceil(len(nodes) * int(self.batch[:-1]) / 100)
                if self.batch.endswith("%") else int(self.batch))
        size = max(1, size)
        out = [nodes[:self.canary]]
        rest = nodes[self.canary:]
        out.extend(rest[i:i + size] for i in range(0, len(rest), size))
        return [b for b in out if b]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "build": self.build,
                "previous": self.previous, "nodes": list(self.nodes), "canary": self.canary,
                "batch": self.batch, "ready_within": self.ready_within,
                "max_failed": self.max_failed, "reboot": self.reboot}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutSpec:
        return cls(id=int(d["id"]), channel=str(d["channel"]), build=str(d["build"]),
                   previous=str(d["previous"]), nodes=tuple(str(n) for n in d["nodes"]),
                   canary=int(d["canary"]), batch=str(d["batch"]),
                   ready_within=float(d["ready_within"]), max_failed=int(d["max_failed"]),
                   reboot=bool(d.get("reboot", False)))


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A node's ready/failed report (the events database), as ``step`` reads it."""

    node: str
    state: str  # "ready" | "failed"
    build: str
    ts: float
    reason: str = ""  # what failed (cloud-init's errors), for the history


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node of a started batch: ``waiting`` for its report, ``ready``, ``failed``, or
    ``reverted`` (back on the previous build because the rollout stopped)."""

    status: str
    batch: int
    since: float  # its batch's start: reports before it are not about this rollout
    reason: str = ""
    at: float | None = None  # when it reported (or was declared silent)


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: str  # running | paused | done | stopped (a failure) | aborted (by hand)
    batch: int  # the batch started last (0: the canaries)
    batch_started: float  # the deadline's base for the current batch
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    reason: str = ""
    updated: float = 0.0

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def as_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "batch": self.batch, "batch_started": self.batch_started,
                "reason": self.reason, "updated": self.updated,
                "nodes": {n: {"status": s.status, "batch": s.batch, "since": s.since,
                              "reason": s.reason, "at": s.at}
                          for n, s in self.nodes.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutState:
        nodes = {str(n): NodeState(str(s["status"]), int(s["batch"]), float(s["since"]),
                                   str(s.get("reason", "")),
                                   None if s.get("at") is None else float(s["at"]))
                 for n, s in d["nodes"].items()}
        return cls(phase=str(d["phase"]), batch=int(d["batch"]),
                   batch_started=float(d["batch_started"]), nodes=nodes,
                   reason=str(d.get("reason", "")), updated=float(d.get("updated", 0.0)))


# -- effects ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartBatch:
    """Batch ``index`` now gets the new build at its next boot (``--reboot``: now)."""

    index: int
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Revert:
    """These nodes go back to the previous build at their next boot (``--reboot``: now)."""

    nodes: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class MoveChannel:
    """Point the channel at the new build (a ``set`` in its history)."""

    channel: str
    build: str
    why: str


@dataclass(frozen=True, slots=True)
class History:
    """A channel history entry that does not move the channel (``rollout-start``,
    ``rollout-revert``, ``rollout-abort``; ``store/channels.py`` leaves them out of the
    rollback stack)."""

    channel: str
    action: str
    from_build: str
    to_build: str
    why: str


RolloutEffect = StartBatch | Revert | MoveChannel | History


def _name(spec: RolloutSpec) -> str:
    return f"rollout {spec.id}"


def start(spec: RolloutSpec, now: float, who: str) -> tuple[RolloutState, list[RolloutEffect]]:
    """The rollout's first state: the canaries' batch started at ``now``."""
    batches = spec.batches()
    if not batches:
        raise ValueError(f"no node follows channel {spec.channel}: nothing to roll out")
    first = batches[0]
    state = RolloutState("running", 0, now, {n: NodeState("waiting", 0, now) for n in first},
                         updated=now)
    why = (f"{_name(spec)} started by {who}: {len(spec.nodes)} nodes in {len(batches)} "
           f"batches (canary {len(first)}, batch {spec.batch}, ready within "
           f"{format_duration(spec.ready_within)}, max failed {spec.max_failed})")
    return state, [History(spec.channel, "rollout-start", spec.previous, spec.build, why),
                   StartBatch(0, first)]


def step(spec: RolloutSpec, state: RolloutState, reports: Iterable[NodeReport],
         channel_build: str | None, now: float) -> tuple[RolloutState, list[RolloutEffect]]:
    """The next state after ``reports`` (any order, any age: those not about this rollout
    are ignored) with the channel at ``channel_build``, at ``now``. Idempotent: the same
    inputs again give the same state and no effects."""
    if not state.active:
        return state, []
    if channel_build != spec.previous:
        why = (f"{_name(spec)} aborted: channel {spec.channel} was moved to "
               f"{channel_build or 'nothing'} outside the rollout")
        return _end(spec, state, "aborted", why, now, "rollout-abort")
    nodes = dict(state.nodes)
    for r in sorted(reports, key=lambda r: r.ts):
        s = nodes.get(r.node)
        if s is None or r.build != spec.build or r.ts < s.since:
            continue
        if s.status == "waiting" and r.state in ("ready", "failed"):
            nodes[r.node] = replace(s, status=r.state, at=r.ts,
                                    reason=_reason(r) if r.state == "failed" else "")
        elif s.status == "ready" and r.state == "failed" and (s.at is None or r.ts > s.at):
            # the new build broke on a later boot of the node
            nodes[r.node] = replace(s, status="failed", at=r.ts, reason=_reason(r))
    if state.phase == "running":
        deadline = state.batch_started + spec.ready_within
        if now >= deadline:
            for n, s in nodes.items():
                if s.status == "waiting" and s.batch == state.batch:
                    nodes[n] = replace(s, status="failed", at=now, reason=(
                        f"silent: no ready report within {format_duration(spec.ready_within)}"
                        f" of batch {s.batch}'s start"))
    new = replace(state, nodes=nodes)
    failed = [n for n in spec.nodes if n in nodes and nodes[n].status == "failed"]
    if len(failed) >= spec.max_failed:
        why = f"{_name(spec)}: " + "; ".join(f"node {n} failed: {nodes[n].reason}"
                                              for n in failed)
        return _end(spec, new, "stopped", why, now, "rollout-revert")
    effects: list[RolloutEffect] = []
    newly_failed = [n for n in failed if state.nodes[n].status != "failed"]
    if newly_failed:
        effects.append(Revert(tuple(newly_failed), "; ".join(
            f"node {n} failed: {nodes[n].reason}" for n in newly_failed)))
    if new.phase == "running" and all(s.status in ("ready", "failed")
                                      for s in nodes.values() if s.batch == state.batch):
        batches = spec.batches()
        if state.batch + 1 < len(batches):
            nxt = batches[state.batch + 1]
            nodes.update({n: NodeState("waiting", state.batch + 1, now) for n in nxt})
            new = replace(new, batch=state.batch + 1, batch_started=now, nodes=nodes)
            effects.append(StartBatch(state.batch + 1, nxt))
        else:
            ready = sum(1 for s in nodes.values() if s.status == "ready")
            why = f"{_name(spec)}: {ready} of {len(spec.nodes)} nodes ready on {spec.build}"
            if failed:
                why += f" ({len(failed)} failed and stayed on {spec.previous}: " \
                       f"{', '.join(failed)})"
            new = replace(new, phase="done", reason=why)
            effects.append(MoveChannel(spec.channel, spec.build, why))
    if new == state:
        return state, []
    return replace(new, updated=now), effects


def _reason(r: NodeReport) -> str:
    return r.reason or f"reported {r.state}"


def _end(spec: RolloutSpec, state: RolloutState, phase: str, why: str, now: float,
         action: str) -> tuple[RolloutState, list[RolloutEffect]]:
    """Stop: every node the rollout touched goes back to the previous build."""
    touched = tuple(n for n in spec.nodes if n in state.nodes
                    and state.nodes[n].status in ("waiting", "ready", "failed"))
    nodes = {n: (replace(s, status="reverted") if n in touched else s)
             for n, s in state.nodes.items()}
    new = replace(state, phase=phase, reason=why, nodes=nodes, updated=now)
    return new, [Revert(touched, why),
                 History(spec.channel, action, spec.build, spec.previous, why)]


def pause(spec: RolloutSpec, state: RolloutState, now: float) -> RolloutState:
    if state.phase != "running":
        raise ValueError(f"{_name(spec)} is {state.phase}, not running: nothing to pause")
    return replace(state, phase="paused", updated=now)


def resume(spec: RolloutSpec, state: RolloutState, now: float) -> RolloutState:
    """Running again; the current batch's deadline counts from ``now``."""
    if state.phase != "paused":
        raise ValueError(f"{_name(spec)} is {state.phase}, not paused: nothing to resume")
    return replace(state, phase="running", batch_started=now, updated=now)


def abort(spec: RolloutSpec, state: RolloutState, now: float, who: str,
          why: str = "") -> tuple[RolloutState, list[RolloutEffect]]:
    if not state.active:
        raise ValueError(f"{_name(spec)} is {state.phase}: nothing to abort")
    reason = f"{_name(spec)} aborted by {who}" + (f": {why}" if why else "")
    return _end(spec, state, "aborted", reason, now, "rollout-abort")


# -- what the planner sees --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RolloutPin:
    """A node of a started batch boots ``build`` while it follows ``channel``."""

    rollout: int
    channel: str
    build: str
    batch: int


def pins(rollouts: Sequence[tuple[RolloutSpec, RolloutState]]) -> dict[str, RolloutPin]:
    """Node -> pin for the nodes active rollouts moved to their new build (waiting or ready;
    failed and reverted nodes have none: they follow the channel's build again)."""
    out: dict[str, RolloutPin] = {}
    for spec, state in rollouts:
        if not state.active:
            continue
        for n, s in state.nodes.items():
            if s.status in ("waiting", "ready"):
                out[n] = RolloutPin(spec.id, spec.channel, spec.build, s.batch)
    return out


def deadline(spec: RolloutSpec, state: RolloutState) -> float | None:
    """When the current batch's silent nodes fail (None: paused or finished)."""
    if state.phase != "running":
        return None
    return state.batch_started + spec.ready_within
