"""What a node boots next and why, for ``node list`` / ``node show`` and ``GET /nodes``.

The answer comes from the planner itself (``core.planner.decide``) over the same inventory,
store and intent a running server uses, so the view is the server's answer, not a guess;
this module only adds the reason: a reimage order, a mode, a pin (run-time, node, group) or
a channel (and at which level it was set, and the rollout batch that moved the node on).
"""

from __future__ import annotations

from typing import Any

from netbootd.config import NodeSpec
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.intent import Intent, NodeOverride
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.state.events import NodeRecord
from netbootd.store.catalog import BuildCatalog


def node_identity(n: NodeSpec, seen: NodeRecord | None) -> ClientIdentity:
    """The identity the node presents: its inventory MAC (else the one it booted with),
    GUID and serial, and the arch it last sent (option 93)."""
    arch: Arch | None = None
    if seen is not None and seen.arch is not None:
        try:
            arch = Arch(seen.arch)
        except ValueError:
            arch = None
    return ClientIdentity(
        mac=n.macs[0] if n.macs else (seen.mac if seen else None),
        guid=n.guids[0] if n.guids else (seen.guid if seen else None),
        serial=n.serials[0] if n.serials else (seen.serial if seen else None), arch=arch)


def next_boot(n: NodeSpec, seen: NodeRecord | None, inventory: Inventory,
              catalog: BuildCatalog, intent: Intent) -> dict[str, Any]:
    """``{"group", "mode", "build", "why"}``: the node's next PXE boot as the server decides
    it now (``build`` is the disk image for a reimage; ``mode`` None when declined)."""
    ident = node_identity(n, seen)
    if ident.mac is None:
        return {"group": n.group, "mode": None, "build": None,
                "why": "no MAC known yet: it is matched once it boots"}
    plan = decide(ident, inventory, catalog, intent=intent)
    if isinstance(plan, Decline):
        return {"group": n.group, "mode": None, "build": None,
                "why": f"declined: {plan.reason}"}
    return {"group": plan.group, "mode": plan.mode, "build": _build(plan),
            "why": _why(plan, n, inventory, intent)}


def _build(plan: BootPlan) -> str | None:
    if plan.reimage is not None:
        return plan.reimage.disk.ref
    return plan.build.ref if plan.build is not None else None


def _why(plan: BootPlan, n: NodeSpec, inventory: Inventory, intent: Intent) -> str:
    ov = intent.overrides.get(n.name, NodeOverride())
    group = inventory.groups[plan.group].settings
    if plan.reimage is not None:
        installer = plan.build.ref if plan.build is not None else "-"
        return f"reimage order {plan.reimage.action_id} (installer {installer})"
    if plan.mode == "local":
        return "mode local (" + ("node set --mode" if ov.mode == "local" else "config") + ")"
    ref = plan.build.ref if plan.build is not None else None
    if plan.channel is not None:
        level = ("node set --channel" if ov.channel == plan.channel
                 else f"nodes.{n.name}" if n.settings.channel == plan.channel
                 else f"groups.{plan.group}")
        pin = intent.rollout.get(n.name)
        if pin is not None and pin.channel == plan.channel and pin.build == ref:
            return (f"channel {plan.channel} ({level}), rollout {pin.rollout}, "
                    f"batch {pin.batch}")
        return f"channel {plan.channel} ({level})"
    level = ("node set --build" if ov.build == ref
             else f"nodes.{n.name}.build" if n.settings.build == ref
             else f"groups.{plan.group}.build" if group.build == ref else "config")
    return f"pin ({level})"
