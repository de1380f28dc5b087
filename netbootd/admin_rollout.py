"""Rollouts as admin operations, for ``netbootd rollout ...`` and ``/api/v1/rollouts``.

``rollout_start`` takes the nodes that follow the channel now (the planner's own answer for
each inventory node: its build comes from that channel), checks that every one of them could
boot the new build (same checks as the planner: the build exists, is bootable, fits the
node's CPU), and writes the rollout with its canaries started. Pause, resume and abort are
transitions of the same state machine (``core/rollout.py``), written like the server's ticks
(``state/rollouts.Rollouts.save``): if a server's tick wrote first, the change is computed
again from what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from netbootd.admin import Admin
from netbootd.admin_next import node_identity
from netbootd.core import rollout as machine
from netbootd.core.intent import Intent
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.core.rollout import RolloutEffect, RolloutPin, RolloutState, parse_batch
from netbootd.errors import BuildError, Conflict, NotFound
from netbootd.rollout_tick import RebootHook, reboots
from netbootd.state.rollouts import Rollout, Rollouts
from netbootd.store.channels import CHANNEL_RE


def _intent(admin: Admin) -> Intent:
    nodes = list(admin.inventory().nodes.values())
    ambiguous = frozenset(g for g, macs in admin.state.shared_guids().items()
                          if not any(macs <= set(n.macs) for n in nodes))
    return admin.registry.intent(admin.config.reimage.installer, ambiguous)


def followers(admin: Admin, channel: str) -> tuple[list[str], dict[str, str]]:
    """(nodes whose next boot follows ``channel`` at its build now, in name order;
    {node: why it is left out} for those whose group or node names the channel but that
    do not boot it: a pin, mode local, a reimage order, no MAC known yet)."""
    inv = admin.inventory()
    catalog, _ = admin.catalog()
    intent = _intent(admin)
    current = intent.channels.get(channel)
    follow: list[str] = []
    left: dict[str, str] = {}
    for name, n in sorted(inv.nodes.items()):
        group = inv.groups.get(n.group) if n.group else None
        names_it = n.settings.channel == channel or (
            group is not None and group.settings.channel == channel)
        ident = node_identity(n, admin.state.node_named(name))
        if ident.mac is None:
            if names_it:
                left[name] = "no MAC known yet"
            continue
        plan = decide(ident, inv, catalog, intent=intent)
        if isinstance(plan, BootPlan) and plan.channel == channel and plan.mode != "reimage" \
                and plan.build is not None and plan.build.ref == current:
            follow.append(name)
        elif names_it:
            left[name] = (f"declined: {plan.reason}" if isinstance(plan, Decline)
                          else f"boots {plan.mode} "
                          f"{plan.build.ref if plan.build else ''}".rstrip())
    return follow, left


def rollout_start(admin: Admin, channel: str, build: str, *, canary: int, batch: str,
                  ready_within: float, max_failed: int, reboot: bool, who: str,
                  reboot_hook: RebootHook | None = None) -> dict[str, Any]:
    if not CHANNEL_RE.match(channel):
        raise BuildError(f"channel name {channel!r}: use 1-64 of letters, digits, '.', '_', "
                         "'-'")
    current = admin.registry.channels().get(channel)
    if current is None:
        raise NotFound(f"no channel {channel!r} (channels: "
                       f"{', '.join(sorted(admin.registry.channels())) or 'none'}): a rollout "
                       "moves a channel that nodes follow; `netbootd channel set` it first")
    catalog, _ = admin.catalog()
    new = catalog.get(build)  # NotFound lists the builds there are
    if new.kind == "disk":
        raise BuildError(f"build {build} is a disk image: nodes cannot boot it from a "
                         "channel (use `netbootd node reimage`)")
    if build == current:
        raise Conflict(f"channel {channel} already points at {build}: nothing to roll out")
    if reboot and reboot_hook is None:
        raise BuildError("--reboot needs power control of the nodes, which this server "
                         "does not have; start the rollout without --reboot (nodes move at "
                         "their next boot)")
    batch = parse_batch(batch)
    nodes, _ = followers(admin, channel)
    if not nodes:
        raise Conflict(f"no node follows channel {channel} now (a node follows it when its "
                       "build comes from the channel: `netbootd node list` says why each "
                       "boots what it boots); use `netbootd channel set` instead")
    _check_bootable(admin, channel, build, nodes)
    # The spec validates canary, max_failed and ready_within (ValueError: bad input, 400/2).
    r, effects = Rollouts(admin.registry).create(
        channel=channel, build=build, nodes=nodes, canary=canary, batch=batch,
        ready_within=ready_within, max_failed=max_failed, reboot=reboot, who=who,
        now=admin.clock(), previous=current)
    _reboot(r, effects, reboot_hook)
    return Rollouts(admin.registry).get(r.id).as_json()


def _check_bootable(admin: Admin, channel: str, build: str, nodes: list[str]) -> None:
    """Every node must be able to boot ``build`` (e.g. its CPU architecture) before any does."""
    inv = admin.inventory()
    catalog, _ = admin.catalog()
    intent = _intent(admin)
    trial = replace(intent, rollout={n: RolloutPin(0, channel, build, 0) for n in nodes})
    refused = []
    for name in nodes:
        plan = decide(node_identity(inv.nodes[name], admin.state.node_named(name)), inv,
                      catalog, intent=trial)
        if isinstance(plan, Decline):
            refused.append(f"{name}: {plan.reason}")
    if refused:
        raise BuildError(f"{build} cannot be booted by every node of channel {channel}: "
                         + "; ".join(refused))


def _reboot(r: Rollout, effects: list[RolloutEffect], hook: RebootHook | None) -> None:
    if hook is None:
        return
    for nodes, why in reboots(r.spec, effects):
        hook(nodes, why)


def rollout_list(admin: Admin) -> list[dict[str, Any]]:
    return [r.as_json() for r in Rollouts(admin.registry).all()]


def rollout_status(admin: Admin, rollout_id: int) -> dict[str, Any]:
    return Rollouts(admin.registry).get(rollout_id).as_json()


def _change(admin: Admin, rollout_id: int,
            change: Callable[[Rollout], tuple[RolloutState, list[RolloutEffect]]],
            reboot_hook: RebootHook | None = None) -> dict[str, Any]:
    store = Rollouts(admin.registry)
    for _ in range(5):  # a server's tick may write between our read and our write
        r = store.get(rollout_id)
        try:
            state, effects = change(r)
        except ValueError as e:
            raise Conflict(str(e)) from None
        if store.save(r, state, effects, admin.clock()):
            _reboot(r, effects, reboot_hook)
            return store.get(rollout_id).as_json()
    raise Conflict(f"rollout {rollout_id} kept changing under this request; try again")


def rollout_pause(admin: Admin, rollout_id: int) -> dict[str, Any]:
    now = admin.clock()
    return _change(admin, rollout_id,
                   lambda r: (machine.pause(r.spec, r.state, now), []))


def rollout_resume(admin: Admin, rollout_id: int) -> dict[str, Any]:
    now = admin.clock()
    return _change(admin, rollout_id,
                   lambda r: (machine.resume(r.spec, r.state, now), []))


def rollout_abort(admin: Admin, rollout_id: int, *, who: str, why: str = "",
                  reboot_hook: RebootHook | None = None) -> dict[str, Any]:
    now = admin.clock()
    return _change(admin, rollout_id,
                   lambda r: machine.abort(r.spec, r.state, now, who, why), reboot_hook)
