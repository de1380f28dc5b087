"""The admin commands: ``netbootd image ...``, ``channel ...`` and ``node ...``.

Each command is a thin call into ``netbootd.admin.Admin`` (the same core the ``/api/v1``
routes call) plus output: a short human table by default, the API's JSON with ``--json``.
Long imports show progress on a terminal.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from netbootd.admin import Admin
from netbootd.config import load_config


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


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


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
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
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
                               description=args.description, progress=progress)
    return _out(args, b, f"imported {b['ref']} ({b['kind']}, {len(b['files'])} files, "
                         f"{b['size']} bytes)")


def cmd_image_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        builds = admin.builds()
    lines = [f"{b['ref']:<32} {b['kind']:<6} {b['size']:>12}  "
             f"{', '.join(b['used_by']) or '-'}" for b in builds]
    return _out(args, builds, "\n".join(lines) or "no builds")


def cmd_image_show(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        b = admin.build(args.build)
    lines = [f"{b['ref']} ({b['kind']}): {b['description']}",
             f"used by: {', '.join(b['used_by']) or 'nothing'}"]
    lines += [f"  {n:<40} {f['size']:>12}  {f['sha256']}" for n, f in b["files"].items()]
    return _out(args, b, "\n".join(lines))


def cmd_image_verify(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.verify(args.build)
    human = "\n".join([f"verified {len(r['verified'])} build(s)", *r["problems"]])
    _out(args, r, human)
    return 0 if r["ok"] else 1


def cmd_image_remove(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.remove(args.build)
    return _out(args, r, f"removed {r['removed']}")


def cmd_image_gc(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.gc()
    return _out(args, r, f"removed {r['blobs_removed']} unused file(s), "
                         f"{r['bytes_freed']} bytes; {r['staging_removed']} abandoned import(s)")


# -- channel -------------------------------------------------------------------------------------
def _entry_line(e: dict[str, Any]) -> str:
    return (f"{_when(e['ts'])} {e['channel']}: {e['action']} {e['from'] or '-'} -> {e['to']} "
            f"by {e['who']}" + (f" ({e['why']})" if e["why"] else ""))


def cmd_channel_set(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        e = admin.channel_set(args.channel, args.build, who=_who(), why=args.why)
    return _out(args, e, _entry_line(e))


def cmd_channel_rollback(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        e = admin.channel_rollback(args.channel, to=args.to, who=_who(), why=args.why)
    return _out(args, e, _entry_line(e))


def cmd_channel_history(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        h = admin.channel_history(args.channel)
    return _out(args, h, "\n".join(_entry_line(e) for e in h))


def cmd_channel_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        c = admin.channels()
    return _out(args, c, "\n".join(f"{k:<24} {v}" for k, v in c.items()) or "no channels")


# -- node ----------------------------------------------------------------------------------------
def cmd_node_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        nodes = admin.nodes(discovered=args.discovered)
    if args.discovered:
        lines = [f"{n['mac']} guid={n['guid'] or '-'} ip={n['ip'] or '-'} "
                 f"serial={n['serial'] or '-'} last seen {_when(n['last_seen'])}" for n in nodes]
        return _out(args, nodes, "\n".join(lines) or "no unknown machines have booted")
    lines = []
    for n in nodes:
        seen = n["seen"] or {}
        mode = (n["override"] or {}).get("mode") or "-"
        lines.append(f"{n['name']:<20} {','.join(n['macs']) or '-':<18} group={n['group'] or '-'}"
                     f" mode={'reimage' if n['reimage'] else mode} "
                     f"build={seen.get('current_build') or '-'} boots={seen.get('boot_count', 0)}"
                     f" state={seen.get('state') or '-'}")
    return _out(args, nodes, "\n".join(lines) or "no nodes")


def cmd_node_show(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        n = admin.node(args.name)
    return _out(args, n, json.dumps(n, indent=2, sort_keys=True))


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
    with _admin(args) as admin:
        a = admin.reimage(args.name, args.image, who=_who())
    return _out(args, a, f"node {a['node']} will be reimaged with {a['image']} at its next "
                         f"PXE boot (action {a['id']})")


def cmd_node_set(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        n = admin.set_node(args.name, build=args.build, channel=args.channel, mode=args.mode,
                           clear=args.clear)
    return _out(args, n, f"node {n['name']}: override {n['override'] or 'none'}")


def cmd_node_timeline(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        t = admin.timeline(args.node)
    events = t["events"]
    if not events:
        print(f"no events for {t['mac']}")
        return 1
    t0 = events[0]["ts"]
    lines = []
    for e in events:
        when = datetime.datetime.fromtimestamp(e["ts"]).strftime("%H:%M:%S.%f")[:-3]
        detail = " ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()) if v is not None)
        lines.append(f"{when} +{e['ts'] - t0:7.2f}s {e['kind']:<14} {detail}")
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


def add_admin_commands(sub: Any, config_arg: dict[str, Any]) -> None:
    """Add ``image``, ``channel`` and ``node`` to the top-level subparsers."""

    def cmd(parent: Any, name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help)
        p.add_argument("--config", **config_arg)
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        p.set_defaults(func=func)
        return p

    img = sub.add_parser("image", help="builds in the store: import, list, verify, remove")
    isub = img.add_subparsers(dest="image_command", required=True)
    p = cmd(isub, "import", cmd_image_import, "import a build (atomic, verified, deduplicated)")
    p.add_argument("--kind", choices=("linux", "tree", "disk", "esxi"), default="linux",
                   help="linux: KERNEL [INITRD...]; tree: DIR|TARBALL with manifest.json; "
                        "disk: IMAGE (raw, .gz, .xz); esxi: INSTALLER.iso")
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--cmdline", default="", help="the build's default kernel command line")
    p.add_argument("--rootfs", help="squashfs root (its URL: ${rootfs_url} in --cmdline)")
    p.add_argument("--description", default="")
    p.add_argument("files", nargs="+")
    cmd(isub, "list", cmd_image_list, "every build, its kind, size and users")
    p = cmd(isub, "show", cmd_image_show, "one build's files and manifest")
    p.add_argument("build")
    p = cmd(isub, "verify", cmd_image_verify, "re-hash builds against their manifests")
    p.add_argument("build", nargs="?")
    p = cmd(isub, "remove", cmd_image_remove, "remove a build nothing needs any more")
    p.add_argument("build")
    cmd(isub, "gc", cmd_image_gc, "free unused files and abandoned imports")

    ch = sub.add_parser("channel", help="named pointers to builds, with history and rollback")
    csub = ch.add_subparsers(dest="channel_command", required=True)
    p = cmd(csub, "set", cmd_channel_set, "point a channel at a build")
    p.add_argument("channel")
    p.add_argument("build")
    p.add_argument("--why", default="")
    p = cmd(csub, "rollback", cmd_channel_rollback, "point a channel back at its previous build")
    p.add_argument("channel")
    p.add_argument("--to", help="roll back to this build instead of the previous one")
    p.add_argument("--why", default="")
    p = cmd(csub, "history", cmd_channel_history, "who moved a channel, when, from, to, why")
    p.add_argument("channel")
    cmd(csub, "list", cmd_channel_list, "every channel and its build")

    nd = sub.add_parser("node", help="inventory, discovery, reimage and boot timelines")
    nsub = nd.add_subparsers(dest="node_command", required=True)
    p = cmd(nsub, "list", cmd_node_list, "inventory nodes (or --discovered unknown machines)")
    p.add_argument("--discovered", action="store_true")
    p = cmd(nsub, "show", cmd_node_show, "one node: identities, overrides, actions, events")
    p.add_argument("name")
    p = cmd(nsub, "adopt", cmd_node_adopt, "make a discovered machine an inventory node")
    p.add_argument("mac")
    p.add_argument("--name", required=True)
    p.add_argument("--group")
    p.add_argument("--hostname")
    p = cmd(nsub, "rebind", cmd_node_rebind, "move a MAC, GUID or serial to an existing node")
    p.add_argument("name")
    p.add_argument("--mac")
    p.add_argument("--uuid")
    p.add_argument("--serial")
    p = cmd(nsub, "reimage", cmd_node_reimage,
            "write a disk image at the node's next PXE boot, then boot it locally")
    p.add_argument("name")
    p.add_argument("--image", required=True, help="a disk build, NAME/VERSION")
    p = cmd(nsub, "set", cmd_node_set, "run-time override of a node's build, channel, mode")
    p.add_argument("name")
    p.add_argument("--build")
    p.add_argument("--channel")
    p.add_argument("--mode")
    p.add_argument("--clear", action="store_true", help="drop the override")
    p = cmd(nsub, "timeline", cmd_node_timeline, "one node's boot events (by name or MAC)")
    p.add_argument("node")
