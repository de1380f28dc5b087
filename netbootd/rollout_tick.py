"""The edge that drives rollouts: reads reports and the channel, steps, writes, reboots.

``RolloutTicker.tick`` runs ``core/rollout.step`` for every active rollout with the
ready/failed reports of its nodes (the events database: ``StateDB.reported`` wrote them when
the node's report agent posted), the channel's build as the intent database has it now, and
the clock, and writes what changed with ``state/rollouts.Rollouts.save`` (one transaction;
a tick that lost a race with another server writes nothing). The service ticks after each
node report and on a timer (``TICK_S``), which is what fails silent nodes at their deadline.

``--reboot``: a rollout that asked for it hands each batch it starts, and the nodes it
reverts, to the ``reboot`` hook (``RebootHook``: node names and why). The hook is the only
thing here that reaches outside netbootd; without one such a rollout is refused when it is
started (``Admin.rollout_start``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence

from netbootd.core.rollout import NodeReport, Revert, RolloutEffect, RolloutSpec, StartBatch, step
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from netbootd.state.rollouts import Rollout, Rollouts

log = logging.getLogger("netbootd.rollout")

TICK_S = 5.0
"""Seconds between timer ticks: how late past its deadline a silent node is failed."""

RebootHook = Callable[[Sequence[str], str], None]
"""Power-cycle these nodes (so that they boot their new plan now), saying why."""

MAX_REASON = 500


def node_reports(state: StateDB, rollout: Rollout,
                 macs_of: Callable[[str], Sequence[str]]) -> list[NodeReport]:
    """The ready/failed reports of the rollout's started nodes since their batch started,
    from each MAC the node is known by (inventory MACs, and the one it was last seen with)."""
    out: list[NodeReport] = []
    for node, s in rollout.state.nodes.items():
        macs = list(macs_of(node))
        seen = state.node_named(node)
        if seen is not None and seen.mac not in macs:
            macs.append(seen.mac)
        for mac in macs:
            for e in state.timeline(mac):
                if e.kind not in ("ready", "failed") or e.ts < s.since:
                    continue
                errors = e.detail.get("errors")
                why = "; ".join(str(x) for x in errors) if isinstance(errors, list) else ""
                out.append(NodeReport(node, e.kind, str(e.detail.get("build", "")), e.ts,
                                      why[:MAX_REASON]))
    return out


def reboots(spec: RolloutSpec, effects: Sequence[RolloutEffect]) -> list[tuple[list[str], str]]:
    """What a ``--reboot`` rollout power-cycles after a transition: each batch it started and
    the nodes it sent back (none for a rollout without ``--reboot``)."""
    if not spec.reboot:
        return []
    out: list[tuple[list[str], str]] = []
    for e in effects:
        if isinstance(e, StartBatch):
            out.append((list(e.nodes), f"rollout {spec.id}: batch {e.index} to {spec.build}"))
        elif isinstance(e, Revert) and e.nodes:
            out.append((list(e.nodes), f"rollout {spec.id}: back to {spec.previous}"))
    return out


class RolloutTicker:
    def __init__(self, registry: Registry, state: StateDB,
                 macs_of: Callable[[], Mapping[str, Sequence[str]]],
                 clock: Callable[[], float], reboot: RebootHook | None = None) -> None:
        self.rollouts = Rollouts(registry)
        self.registry = registry
        self.state = state
        self.macs_of = macs_of  # node name -> its inventory MACs, as the World has them
        self.clock = clock
        self.reboot = reboot

    def tick(self) -> int:
        """Step every active rollout once; how many transitions were written."""
        written = 0
        active = self.rollouts.active()
        if not active:
            return 0
        macs = self.macs_of()
        channels = self.registry.channels()
        for r in active:
            now = self.clock()
            reports = node_reports(self.state, r, lambda n: macs.get(n, ()))
            new, effects = step(r.spec, r.state, reports, channels.get(r.spec.channel), now)
            if new == r.state and not effects:
                continue
            if not self.rollouts.save(r, new, effects, now):
                log.info("rollout %s: another server wrote this step first", r.id)
                continue
            written += 1
            log.info("rollout %s: %s batch %s%s", r.id, new.phase, new.batch,
                     f" ({new.reason})" if new.reason else "")
            self.run_reboots(r.spec, effects)
        return written

    def run_reboots(self, spec: RolloutSpec, effects: Sequence[RolloutEffect]) -> None:
        for nodes, why in reboots(spec, effects):
            if self.reboot is None:
                log.warning("rollout %s asks to reboot %s but this server has no power "
                            "control: they move at their next boot", spec.id, ", ".join(nodes))
                continue
            try:
                self.reboot(nodes, why)
            except Exception:  # a power failure must not stop the rollout's bookkeeping
                log.exception("rollout %s: reboot of %s failed", spec.id, ", ".join(nodes))


async def tick_loop(ticker: RolloutTicker, wake: asyncio.Event) -> None:
    """Tick every ``TICK_S`` seconds, and soon after ``wake`` is set (a node reported)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), TICK_S)
        wake.clear()
        try:
            ticker.tick()
        except sqlite3.Error as e:  # the intent database busy or gone: try at the next tick
            log.warning("rollout tick failed: %s", e)
