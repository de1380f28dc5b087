"""Pure answers to what a booted node sends back: first-boot files, phone-home, reports.

Each takes the World, the parsed request (the node's identity from its URL key, already
enriched with what earlier packets showed, ``state/sightings.py``) and ``now``; it returns
the reply and what to change, as values, and changes nothing. ``reports.py`` (the edge)
reads what the World does not hold before the call (the reimage order's row, by its id from
the URL: it may be closed, superseded or another node's, which the World's open orders alone
cannot tell apart) and applies the changes after it (docs/architecture.md, the call paths).

Each is opened only by the token the node's own first-boot config carried (render/tokens.py),
so a host that was never handed that config cannot fetch another's secrets or fake a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from netbootd.answers import Count, Effect, LearnIp, World, event, plan_of
from netbootd.core.identity import ClientIdentity, normalize_mac
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.report import parse_boot_report
from netbootd.errors import NotFound


def node_mac(node_key: str) -> str:
    """The MAC a URL's node key (the MAC with dashes) names; NotFound if it names none."""
    try:
        return normalize_mac(node_key)
    except ValueError:
        raise NotFound(f"{node_key!r} is not a node key (MAC with dashes)") from None


def check_token(world: World, mac: str, subject: str, token: str, now: float) -> None:
    """Return if ``token`` opens ``mac``'s files or reports for ``subject`` (the build ref, or
    the reimage action) at ``now``; else ``TokenRefused`` saying why."""
    world.urls.tokens.check(token, mac, subject, now)


def plan_by_key(world: World, ident: ClientIdentity,
                build_override: str | None = None) -> BootPlan:
    """The plan of the node a URL names (``ident``: its MAC, enriched), booting
    ``build_override`` when the URL names a build; NotFound when there is none."""
    if build_override is not None:
        world.catalog.get(build_override)  # NotFound lists the known builds
    plan = plan_of(world, ident, build_override)
    if isinstance(plan, Decline):
        raise NotFound(f"no boot plan for {ident.mac}: {plan.reason}")
    return plan


# -- what a report changes, besides events ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class PhonedHome:
    """``StateDB.phoned_home``: the node booted ``build``; its boot is counted."""

    mac: str
    build: str
    hostname: str
    ip: str | None
    node: str | None
    claimed_build: str | None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reported:
    """``StateDB.reported``: the node's state is ``state`` (ready or failed)."""

    mac: str
    state: str
    build: str
    ip: str | None
    node: str | None
    errors: int
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FinishReimage:
    """``Registry.finish_reimage``: the order is done (the node boots local from now on) or
    failed (it stays open, the node stays in reimage)."""

    action_id: int
    ok: bool
    reason: str
    node: str
    image: str


class ActionRow(Protocol):
    """The reimage order row the edge read by the URL's action id (state/registry.Action)."""

    @property
    def kind(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def image(self) -> str: ...


# -- the answers -------------------------------------------------------------------------------
def answer_firstboot(world: World, ident: ClientIdentity, build_ref: str, what: str,
                     token: str, now: float) -> tuple[str, tuple[Effect, ...]]:
    """First-boot file ``what`` of the node booting ``build_ref`` (named by the URL, so a
    node that picked a build at a menu, or booted just before a change, gets its own), for a
    client that shows this node's token for this build (TokenRefused otherwise)."""
    assert ident.mac is not None  # the URL's key named it (node_mac)
    check_token(world, ident.mac, build_ref, token, now)
    if what == "vendor-data":  # netbootd has none; asked by cloud-init, so answered empty
        return "", ()
    learnt: tuple[Effect, ...] = () if not ident.ip else (LearnIp(ident.ip, ident.mac),)
    plan = plan_by_key(world, ident, build_ref)
    renderer = world.renderer.at(now)
    render = {"meta-data": renderer.meta_data, "user-data": renderer.user_data,
              "network-config": renderer.network_config, "ks.cfg": renderer.kickstart}[what]
    text = render(plan)
    build = plan.build.ref if plan.build else None
    # Once per boot: meta-data and ks.cfg are the first file each flow fetches.
    counted: tuple[Effect, ...] = (Count("boots", {"build": str(build)}),) \
        if what in ("meta-data", "ks.cfg") else ()
    return text, learnt + counted + event(plan.identity.mac, "firstboot", file=what,
                                          build=build)


def _node(world: World, ident: ClientIdentity) -> str | None:
    plan = plan_of(world, ident)
    return plan.node if isinstance(plan, BootPlan) else None


# Facts a node may add to its phone-home, kept in the event when present: the demo agent
# reports the UEFI Secure Boot state it read (on, off, or none for BIOS).
_REPORTED = {"secure_boot": {"on", "off", "none", "unknown"}}


def answer_phone_home(world: World, ident: ClientIdentity, build_ref: str, token: str,
                      fields: Mapping[str, str], now: float) -> tuple[Effect | PhonedHome, ...]:
    """A node reports it booted. Only with the token its first-boot config carried, so a
    host that was never handed that config cannot fake the report (TokenRefused)."""
    assert ident.mac is not None
    check_token(world, ident.mac, build_ref, token, now)
    # The build is the one this node was served, signed into its token: cloud-init's own
    # phone_home sends no build field. One the node does send is kept as what it claims.
    detail: dict[str, object] = {"instance_id": fields.get("instance_id", "")[:200],
                                 "fqdn": fields.get("fqdn", "")[:253] or None}
    detail.update({k: v for k, allowed in _REPORTED.items()
                   if (v := fields.get(k, "")) in allowed})
    return (Count("phone_homes", {"build": build_ref}),
            PhonedHome(ident.mac, build_ref, fields.get("hostname", "")[:253], ident.ip,
                       _node(world, ident), fields.get("build", "")[:200] or None, detail))


def answer_report(world: World, ident: ClientIdentity, build_ref: str,
                  fields: Mapping[str, str]) -> tuple[str, tuple[Effect | Reported, ...]]:
    """The node's final word after cloud-init: ``ready`` (status done) or ``failed``
    (anything else, with cloud-init's errors). The caller checked the token."""
    assert ident.mac is not None
    report = parse_boot_report(dict(fields))
    return report.state, (
        Count("boot_reports", {"state": report.state}),
        Reported(ident.mac, report.state, build_ref, ident.ip, _node(world, ident),
                 len(report.errors), report.detail()))


def answer_reimage_report(world: World, mac: str, action_id: int, action: ActionRow,
                          fields: Mapping[str, str]) -> tuple[FinishReimage | Effect, ...]:
    """The installer's report on order ``action_id`` (its row ``action``, read by the edge).
    ``done``: the node boots local from now on; anything else: the order stays open with
    the reason recorded. The order is finished first: its event is recorded only if it was
    still open (``Registry.finish_reimage`` refuses otherwise)."""
    node = world.inventory.find_node(ClientIdentity(mac=mac))
    if action.kind != "reimage" or node is None or node.name != action.node:
        raise NotFound(f"reimage action {action_id} is not for {mac}")
    ok = fields.get("status") == "done"
    reason = fields.get("reason", "")[:500] if not ok else \
        f"wrote {fields.get('bytes', '?')} bytes, sha256 {fields.get('sha256', '?')[:64]}"
    if not ok and not reason:
        reason = f"installer reported status {fields.get('status', '')[:40]!r}"
    return (FinishReimage(action_id, ok, reason, action.node, action.image),
            *event(mac, "reimage-done" if ok else "reimage-failed", node=action.node,
                   image=action.image, action=action_id, reason=reason))

