"""The admin commands' bodies: ``netbootd image ...``, ``channel ...`` and ``node ...``.

Each is a thin call into ``netbootd.admin.Admin`` (the same core the ``/api/v1`` routes
call) plus output (``cli_views``): a table for people, the API's JSON with ``--json``.
Commands that delete or overwrite ask first (``cli_errors.confirm``; ``--yes`` skips it).
Long imports show progress on a terminal. The parser is in ``cli_admin``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from netbootd.admin import Admin
from netbootd.cli_errors import confirm
from netbootd.cli_views import (
    human_size,
    node_rows,
    node_text,
    override_changes,
    table,
    utc,
    utc_clock,
)
from netbootd.config import load_config
from netbootd.errors import BuildError


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@cli"


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(load_config(args.config))


def _out(args: argparse.Namespace, data: Any, human: str) -> int:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)
    return 0


class _TerminalProgress:
    """``name  45% 12.3/27.0 MB`` rewritten in place, at most 10 times a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            return
        self._last = now
        pct = f"{100 * done // total:3d}% " if total else ""
        size = f"{human_size(done)}/{human_size(total)}" if total else human_size(done)
        sys.stderr.write(f"\r  {name[:40]:<40} {pct}{size}\x1b[K")
        if total is not None and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# -- image ---------------------------------------------------------------------------------------
def cmd_image_import(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        progress = _TerminalProgress() if sys.stderr.isatty() and not args.json else None
        b = admin.import_build(args.kind, name=args.name, version=args.version,
                               paths=[Path(p) for p in args.files], cmdline=args.cmdline,
                               rootfs=Path(args.rootfs) if args.rootfs else None,
                               description=args.description, progress=progress,
                               arch=args.arch)
    return _out(args, b, f"imported {b['ref']} ({b['kind']}, {b['arch']}, "
                         f"{len(b['files'])} files, {human_size(b['size'])})")


def cmd_image_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        builds = admin.builds()
    rows = [[b["ref"], b["kind"], b["arch"], human_size(b["size"]),
             "; ".join(b["used_by"]) or "-"] for b in builds]
    return _out(args, builds, table(["BUILD", "KIND", "ARCH", "SIZE", "NEEDED BY"], rows,
                                    right=(3,)) if rows else "no builds")


def cmd_image_show(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        b = admin.build(args.build)
    lines = [f"{b['ref']} ({b['kind']}, {b['arch']}, {human_size(b['size'])}): "
             f"{b['description'] or '-'}",
             f"command line: {b['cmdline'] or '(none)'}",
             f"needed by: {'; '.join(b['used_by']) or 'nothing'}"]
    if "esxi" in b:
        lines.append(f"esxi kernelopt: {b['esxi']['kernelopt'] or '(none)'}")
    if "disk" in b:
        d = b["disk"]
        lines.append(f"disk: {d['file']}, {d['compression']}, raw {human_size(d['raw_size'])}"
                     f", raw sha256 {d['raw_sha256']}")
    rows = [[n, human_size(f["size"]), f["sha256"]] for n, f in b["files"].items()]
    return _out(args, b, "\n".join(lines) + "\n" + table(["FILE", "SIZE", "SHA256"], rows,
                                                          right=(1,)))


def cmd_image_verify(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.verify(args.build)
    human = "\n".join([f"verified {len(r['verified'])} build(s)", *r["problems"]])
    _out(args, r, human)
    return 0 if r["ok"] else 1


def cmd_image_remove(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.build(args.build)  # unknown: say so before asking
        confirm(args, f"remove build {args.build}")
        r = admin.remove(args.build)
    return _out(args, r, f"removed {r['removed']}")


def cmd_image_gc(args: argparse.Namespace) -> int:
    confirm(args, "delete unused files and abandoned imports from the store")
    with _admin(args) as admin:
        r = admin.gc()
    return _out(args, r, f"removed {r['blobs_removed']} unused file(s), "
                         f"{human_size(r['bytes_freed'])}; "
                         f"{r['staging_removed']} abandoned import(s)")


# -- channel -------------------------------------------------------------------------------------
def _entry_line(e: dict[str, Any]) -> str:
    return (f"{utc(e['ts'])} {e['channel']}: {e['action']} {e['from'] or '-'} -> {e['to']} "
            f"by {e['who']}" + (f" ({e['why']})" if e["why"] else ""))


def cmd_channel_set(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        e = admin.channel_set(args.channel, args.build, who=_who(), why=args.why)
    return _out(args, e, _entry_line(e))


def cmd_channel_rollback(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        channels = admin.channels()
        if args.channel in channels:
            target = args.to or admin.registry.rollback_target(args.channel, None)
            confirm(args, f"move channel {args.channel} from {channels[args.channel]} back "
                          f"to {target}")
        e = admin.channel_rollback(args.channel, to=args.to, who=_who(), why=args.why,
                                   force=args.force)
    return _out(args, e, _entry_line(e))


def cmd_channel_history(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        h = admin.channel_history(args.channel)
    return _out(args, h, "\n".join(_entry_line(e) for e in h))


def cmd_channel_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        c = admin.channels()
    return _out(args, c, table(["CHANNEL", "BUILD"], [[k, v] for k, v in c.items()])
                if c else "no channels")


# -- node ----------------------------------------------------------------------------------------
def cmd_node_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        nodes = admin.nodes(discovered=args.discovered)
    if args.discovered:
        # Host name and user class are what the machine sent (DHCP options 12 and 77).
        rows = [[n["mac"], n.get("dhcp_hostname") or "-", n.get("user_class") or "-",
                 n["guid"] or "-", n["ip"] or "-", n["serial"] or "-",
                 utc(n["last_seen"])] for n in nodes]
        return _out(args, nodes, table(["MAC", "DHCP HOSTNAME", "USER CLASS", "GUID", "IP",
                                        "SERIAL", "LAST SEEN"], rows)
                    if rows else "no unknown machines have booted")
    return _out(args, nodes, node_rows(nodes) if nodes else "no nodes")


def cmd_node_show(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        n = admin.node(args.name)
    return _out(args, n, node_text(n))


def cmd_node_adopt(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        n = admin.adopt(args.mac, args.name, group=args.group, hostname=args.hostname,
                        who=_who())
    return _out(args, n, f"adopted {args.mac} as node {n['name']}")


def cmd_node_rebind(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        n = admin.rebind(args.name, mac=args.mac, guid=args.uuid, serial=args.serial,
                         who=_who())
    return _out(args, n, f"node {n['name']}: macs={','.join(n['macs'])} "
                         f"guids={','.join(n['guids'])} serials={','.join(n['serials'])}")


def cmd_node_reimage(args: argparse.Namespace) -> int:
    if args.cancel == (args.image is not None):
        raise BuildError("give --image NAME/VERSION to order a reimage, or --cancel to "
                         "withdraw the open order")
    if args.cancel and args.now:
        raise BuildError("--now goes with --image (order and power-cycle), not --cancel")
    with _admin(args) as admin:
        if args.now:
            from netbootd.power.cli_power import reimage_now_cli

            a = reimage_now_cli(admin, args, _who())
            return _out(args, a, f"node {a['node']} is being reimaged with {a['image']}: "
                                 f"{a['power']['message']} (action {a['id']}; undo before "
                                 f"it boots: netbootd node reimage {a['node']} --cancel)")
        if args.cancel:
            a = admin.cancel_reimage(args.name, who=_who())
            return _out(args, a, f"node {a['node']}: reimage order {a['id']} ({a['image']}) "
                                 "cancelled; its next PXE boot is the normal one")
        admin.node(args.name)  # unknown: say so before asking
        confirm(args, f"wipe node {args.name}'s disk with {args.image} at its next PXE boot")
        a = admin.reimage(args.name, args.image, who=_who())
    return _out(args, a, f"node {a['node']} will be reimaged with {a['image']} at its next "
                         f"PXE boot (action {a['id']}; undo: netbootd node reimage "
                         f"{a['node']} --cancel)")


def cmd_node_set(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        before = admin.node(args.name)["override"]
        n = admin.set_node(args.name, build=args.build, channel=args.channel, mode=args.mode,
                           clear=args.clear)
    lines = override_changes(n["name"], before, n["override"])
    if n["reimage"]:
        lines.append(f"note: reimage order {n['reimage']['id']} ({n['reimage']['image']}) is "
                     "still open and wins at the next PXE boot; withdraw it with "
                     f"`netbootd node reimage {n['name']} --cancel`")
    return _out(args, n, "\n".join(lines))


def cmd_node_timeline(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        t = admin.timeline(args.node)
    events = t["events"]
    if not events:
        print(f"no events for {t['mac']}")
        return 1
    t0 = events[0]["ts"]
    lines = [f"events of {t['mac']} from {utc(t0)}:"]
    for e in events:
        detail = " ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()) if v is not None)
        lines.append(f"{utc_clock(e['ts'])} +{e['ts'] - t0:7.2f}s {e['kind']:<14} {detail}")
    return _out(args, t, "\n".join([*lines, "", *funnel_lines(t["funnel"])]))


def funnel_lines(f: dict[str, Any]) -> list[str]:
    """The last boot's stages: start (seconds after the boot's first event) and duration."""
    head = f"boot funnel (last of {f['boots']} boots, build {f['build'] or '-'}):"
    stages = f["stages"]
    t0 = next((s["start"] for s in stages if s["start"] is not None), None)
    out = [head]
    for s in stages:
        if s["start"] is None or t0 is None:
            out.append(f"  {s['stage']:<11} -")
            continue
        at = f"+{s['start'] - t0:.2f}s"
        took = f"{s['duration']:.2f}s"
        out.append(f"  {s['stage']:<11} {at:>9} {took:>9}  {s['detail']}".rstrip())
    return out
