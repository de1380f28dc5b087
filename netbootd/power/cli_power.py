"""``netbootd node power NODE on|off|cycle|status`` and the body of ``node reimage --now``.

Like the other node commands these call the admin core directly (``power.admin_power``, the
same functions as the ``/api/v1/nodes/<node>/power`` route). ``off`` and ``cycle`` cut a
running machine's power, so they ask first (``--yes`` skips it); ``on`` and ``status`` do not.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from netbootd.admin import Admin
from netbootd.cli_admin_cmds import _admin, _who
from netbootd.cli_errors import confirm
from netbootd.power.admin_power import node_power, reimage_now
from netbootd.power.driver import ACTIONS

YES_HELP = "do not ask for confirmation (needed when stdin is not a terminal)"


def add_power_command(nsub: Any, cmd: Any) -> None:
    """Add ``node power`` under ``node`` (``cmd`` is cli_admin's subcommand helper)."""
    p = cmd(nsub, "power", cmd_node_power,
            "power a node on, off, cycle it, or ask its power state (IPMI or Wake-on-LAN)",
            "netbootd node power web1 status", "netbootd node power web1 cycle --yes")
    p.add_argument("name", help="the node (its power spec: [nodes.NAME] power = {...})")
    p.add_argument("action", choices=ACTIONS, help="on, off, cycle (off then on) or status")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)


def cmd_node_power(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.node(args.name)  # unknown: say so before asking
        if args.action in ("off", "cycle"):
            confirm(args, f"cut node {args.name}'s power ({args.action})")
        r = node_power(admin, args.name, args.action, who=_who())
    human = f"node {r['node']}: {r['message']} ({r['driver']}, {r['seconds']:.2f} s)"
    print(json.dumps(r, indent=2, sort_keys=True) if args.json else human)
    return 0


def reimage_now_cli(admin: Admin, args: argparse.Namespace, who: str) -> dict[str, Any]:
    """``node reimage NODE --image X --now``: order, then power-cycle (asks first)."""
    admin.node(args.name)
    confirm(args, f"wipe node {args.name}'s disk with {args.image} now (its power is cycled)")
    return reimage_now(admin, args.name, args.image, who=who)
