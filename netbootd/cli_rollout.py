"""``netbootd rollout start|status|list|pause|resume|abort``: parser and bodies.

Each is a thin call into ``netbootd.admin_rollout`` (the same functions the
``/api/v1/rollouts`` routes call) plus output: text for people, the API's JSON with
``--json``. ``start`` and ``abort`` change what nodes boot, so they ask first
(``cli_errors.confirm``; ``--yes`` skips it). A running server steps the rollout as its
nodes report; these commands only read and write the intent database.
"""

from __future__ import annotations

import argparse
from typing import Any

from netbootd.admin_rollout import (
    followers,
    rollout_abort,
    rollout_list,
    rollout_pause,
    rollout_resume,
    rollout_start,
    rollout_status,
)
from netbootd.cli_admin_cmds import _admin, _out, _who
from netbootd.cli_errors import confirm
from netbootd.cli_views import table, utc
from netbootd.core.rollout import format_duration, parse_duration

YES_HELP = "do not ask for confirmation (needed when stdin is not a terminal)"


def summary(r: dict[str, Any]) -> str:
    """One rollout for people: what, where it is, each node's state."""
    lines = [f"rollout {r['id']}: {r['channel']} {r['previous']} -> {r['build']}: {r['phase']}"
             f", batch {r['batch_index']} of {r['batch_count']} (0 = canary)",
             f"  started {utc(r['created'])} by {r['who']}; canary {r['canary']}, batch "
             f"{r['batch']}, ready within {format_duration(r['ready_within'])}, max failed "
             f"{r['max_failed']}" + (", reboot" if r["reboot"] else "")]
    if r["deadline"] is not None:
        lines.append(f"  batch {r['batch_index']} must be ready by {utc(r['deadline'])}")
    if r["reason"]:
        lines.append(f"  {r['reason']}")
    states = r["node_states"]
    rows = []
    for i, batch in enumerate(r["batches"]):
        for n in batch:
            s = states.get(n)
            rows.append([str(i), n, s["status"] if s else "not started",
                         utc(s["at"]) if s and s["at"] else "-",
                         (s["reason"] if s else "") or ""])
    return "\n".join(lines) + "\n" + table(["BATCH", "NODE", "STATE", "AT", "WHY"], rows)


def _id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"rollout id {text!r}: a number "
                                         "(`netbootd rollout list`)")
    return int(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_rollout_start(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        nodes, left = followers(admin, args.channel)
        current = admin.channels().get(args.channel, "-")
        if nodes:
            confirm(args, f"roll channel {args.channel} from {current} to {args.build} over "
                          f"{len(nodes)} nodes ({', '.join(nodes[:8])}"
                          f"{', ...' if len(nodes) > 8 else ''})")
        r = rollout_start(admin, args.channel, args.build, canary=args.canary,
                          batch=args.batch, ready_within=args.ready_within,
                          max_failed=args.max_failed, reboot=args.reboot, who=_who())
    skipped = "".join(f"\n  not in it: {n} ({why})" for n, why in left.items())
    return _out(args, r, summary(r) + skipped)


def cmd_rollout_status(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = rollout_status(admin, args.id)
    return _out(args, r, summary(r))


def cmd_rollout_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        rs = rollout_list(admin)
    rows = [[str(r["id"]), r["channel"], r["previous"], r["build"], r["phase"],
             f"{r['batch_index']}/{r['batch_count']}", utc(r["created"])] for r in rs]
    return _out(args, rs, table(["ID", "CHANNEL", "FROM", "TO", "PHASE", "BATCH", "STARTED"],
                                rows) if rs else "no rollouts")


def cmd_rollout_pause(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = rollout_pause(admin, args.id)
    return _out(args, r, summary(r))


def cmd_rollout_resume(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = rollout_resume(admin, args.id)
    return _out(args, r, summary(r))


def cmd_rollout_abort(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = rollout_status(admin, args.id)
        if r["phase"] in ("running", "paused"):
            confirm(args, f"abort rollout {args.id} and send its nodes back to "
                          f"{r['previous']}")
        r = rollout_abort(admin, args.id, who=_who(), why=args.why)
    return _out(args, r, summary(r))


def add_rollout_commands(sub: Any, config_arg: dict[str, Any]) -> None:
    """Add ``rollout`` to the top-level subparsers."""
    g = sub.add_parser("rollout", help="move a channel's nodes to a new build batch by batch",
                       description="Move a channel's nodes to a new build batch by batch, "
                                   "gated on their ready reports.")
    rsub = g.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")

    def cmd(name: str, func: Any, help: str, *example: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = rsub.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".",
            epilog="example:\n" + "\n".join(f"  {e}" for e in example),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", **config_arg)
        p.add_argument("--json", action="store_true",
                       help="print the admin API's JSON (docs/admin-api.md) instead of text")
        p.set_defaults(func=func)
        return p

    p = cmd("start", cmd_rollout_start,
            "start rolling a channel's nodes onto a build (canaries first)",
            "netbootd rollout start kvm-stable kvm/2026.12 --canary 2 --batch 25% "
            "--ready-within 15m --max-failed 1 --yes")
    p.add_argument("channel", help="the channel whose nodes move")
    p.add_argument("build", metavar="NAME/VERSION", help="the build they move to")
    p.add_argument("--canary", type=int, default=1,
                   help="nodes in the first batch (default 1)")
    p.add_argument("--batch", default="25%",
                   help="nodes per later batch: a count or a percentage (default 25%%)")
    p.add_argument("--ready-within", type=_duration, default=parse_duration("15m"),
                   metavar="DURATION",
                   help="a node must report ready this long after its batch starts "
                        "(s, m, h, d; default 15m)")
    p.add_argument("--max-failed", type=int, default=1,
                   help="the failure that stops the rollout and reverts its nodes "
                        "(default 1: the first)")
    p.add_argument("--reboot", action="store_true",
                   help="power-cycle each batch when it starts (needs power control)")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)
    p = cmd("status", cmd_rollout_status, "one rollout: phase, batches, each node's state",
            "netbootd rollout status 7")
    p.add_argument("id", type=_id, help="the rollout's number")
    cmd("list", cmd_rollout_list, "every rollout, newest last", "netbootd rollout list")
    p = cmd("pause", cmd_rollout_pause, "hold a rollout: no new batch, no deadline",
            "netbootd rollout pause 7")
    p.add_argument("id", type=_id, help="the rollout's number")
    p = cmd("resume", cmd_rollout_resume,
            "go on with a paused rollout (its batch's deadline starts again)",
            "netbootd rollout resume 7")
    p.add_argument("id", type=_id, help="the rollout's number")
    p = cmd("abort", cmd_rollout_abort,
            "stop a rollout and send the nodes it moved back to the previous build",
            "netbootd rollout abort 7 --why 'wrong build' --yes")
    p.add_argument("id", type=_id, help="the rollout's number")
    p.add_argument("--why", default="", help="the reason, kept in the channel's history")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)
