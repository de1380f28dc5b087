"""Power control as admin operations, for the CLI, the admin API and rollouts.

Each action is checked against the inventory (an unknown node is NotFound, listing the
known ones) and written to the node's timeline as a ``power`` event (action, result state,
ok, who; never a secret), so ``node show``/``node timeline`` and the dashboard show who
powered what, when, next to the boot it caused.

``power_cycle(admin, names, who=...)`` is the batch entry for rollouts: power-cycle these
nodes, one ``PowerResult`` per node, failures included, nothing raised for one node.
``reimage_now`` is ``node reimage --now``: the order, then a power cycle; when the cycle
fails the order stays open (cancel it as any other) and the error says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from netbootd.admin import Admin
from netbootd.errors import NetbootdError
from netbootd.power.control import PowerControl, unknown_nodes
from netbootd.power.driver import PowerError, PowerResult

log = logging.getLogger("netbootd.power")


class NotPowered(PowerError):
    """``reimage --now``: the order was made, the power cycle failed (exit code of the cause)."""

    def __init__(self, message: str, exit_code: int, cause: NetbootdError) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.cause = cause


def power_control(admin: Admin, *, who: str) -> PowerControl:
    """A PowerControl on ``admin``'s config that records each result in the timeline."""

    def record(r: PowerResult) -> None:
        # one line per action, as for every decision; results never hold a secret
        log.info("power: node %s %s by %s: %s (%s, %.2f s)", r.node, r.action, who,
                 r.message if r.ok else f"failed: {r.message}", r.driver, r.seconds)
        spec = admin.config.power.nodes.get(r.node)
        node = next((n for n in admin.config.nodes if n.name == r.node), None)
        mac = node.macs[0] if node is not None and node.macs else (spec.mac if spec else "")
        if not mac:
            return
        admin.state.record(mac, "power", admin.clock(), node=r.node, action=r.action,
                           ok=r.ok, state=r.state, driver=r.driver, who=who,
                           error=None if r.ok else r.message)
        admin.state.flush()

    return PowerControl(admin.config.power, record=record)


def node_power(admin: Admin, name: str, action: str, *, who: str) -> dict[str, Any]:
    """One action on one node; raises (NotFound, BuildError, PowerError) when it fails."""
    unknown_nodes([name], list(admin.inventory().nodes))
    return power_control(admin, who=who).run(name, action).as_json()


def power_cycle(admin: Admin, names: Sequence[str], *, who: str,
                action: str = "cycle") -> list[PowerResult]:
    """Power-cycle (or ``action``) each node; one result per node, in order."""
    known = list(admin.inventory().nodes)
    control = power_control(admin, who=who)
    results = {n: PowerResult(n, action, "none", False, "unknown",
                              f"no node {n!r}", 0.0) for n in names if n not in known}
    done = control.batch([n for n in names if n in known], action)
    results.update({r.node: r for r in done})
    return [results[n] for n in names]


def reimage_now(admin: Admin, name: str, image: str, *, who: str) -> dict[str, Any]:
    """Order a reimage and power-cycle the node so that it PXE-boots the installer now."""
    control = power_control(admin, who=who)
    control.spec(name)  # no power control: refuse before an order exists
    order = admin.reimage(name, image, who=who)
    try:
        power = control.run(name, "cycle")
    except NetbootdError as e:
        raise NotPowered(f"{e}; the reimage order {order['id']} stays open: it runs at the "
                      f"node's next PXE boot (withdraw it: netbootd node reimage {name} "
                      "--cancel)", getattr(e, "exit_code", 2), e) from None
    return {**order, "power": power.as_json()}
