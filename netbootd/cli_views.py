"""How the admin commands print for people: aligned tables with a header, human sizes, UTC
times with their zone, one line per changed field. ``--json`` bypasses all of this and
prints the admin API's JSON (docs/admin-api.md), which scripts should use instead.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any


def utc(ts: float | None) -> str:
    """``2026-12-01 13:05:09 UTC``; ``-`` for never."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_clock(ts: float) -> str:
    """``13:05:09.123Z``: a timeline's time of day (the date is on its first line)."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def human_size(n: int) -> str:
    """Binary units, three significant digits: ``512 B``, ``4.00 KiB``, ``1.23 GiB``."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1000 or unit == "PiB":
            return f"{size:.3g} {unit}" if size >= 100 else f"{size:.2f} {unit}"
    raise AssertionError("unreachable")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
          ) -> str:
    """Columns as wide as their widest cell; ``right``: indexes of right-aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join(line(r) for r in [header, *rows])


def node_state(n: dict[str, Any]) -> str:
    """reimaging (an open order), ready / failed (its report), booted (phoned home),
    booting (seen on the network, not yet phoned home), ``-`` (never seen)."""
    if n.get("reimage"):
        return "reimaging"
    seen = n.get("seen")
    if not seen:
        return "-"
    return str(seen.get("state") or "booting")


def node_rows(nodes: list[dict[str, Any]]) -> str:
    rows = []
    for n in nodes:
        nxt = n.get("next") or {}
        seen = n.get("seen") or {}
        rows.append([n["name"], nxt.get("group") or n["group"] or "-", nxt.get("build") or "-",
                     nxt.get("why") or "-", node_state(n), utc(seen.get("last_seen")),
                     (n.get("lease") or {}).get("ip") or seen.get("ip") or "-"])
    return table(["NODE", "GROUP", "NEXT BUILD", "WHY", "STATE", "LAST SEEN", "IP"], rows)


def node_text(n: dict[str, Any]) -> str:
    """``node show`` for people: identities, next boot, override, orders, recent events."""
    nxt = n.get("next") or {}
    seen = n.get("seen") or {}
    ov = n.get("override")
    lines = [f"node {n['name']} ({n['source']}), hostname {n['hostname']}",
             f"  macs:     {', '.join(n['macs']) or '-'}",
             f"  guids:    {', '.join(n['guids']) or '-'}",
             f"  serials:  {', '.join(n['serials']) or '-'}",
             f"  group:    {nxt.get('group') or n['group'] or '-'}",
             f"  next:     {nxt.get('mode') or '-'} {nxt.get('build') or '-'}"
             f" ({nxt.get('why') or '-'})",
             "  override: " + ("none" if not ov else ", ".join(
                 f"{k}={v}" for k, v in ov.items() if v is not None)),
             f"  state:    {node_state(n)}, last seen {utc(seen.get('last_seen'))}, "
             f"boots {seen.get('boot_count', 0)}, ip {seen.get('ip') or '-'}",
             # What the machine said of itself in DHCP (options 12, 77, 60).
             f"  sent:     hostname {seen.get('dhcp_hostname') or '-'}, "
             f"user class {seen.get('user_class') or '-'}, "
             f"vendor class {seen.get('vendor_class') or '-'}"]
    if n.get("lease"):
        lease = n["lease"]
        lines.append(f"  lease:    {lease['ip']} {lease['state']} until {utc(lease['expires'])}")
    actions = n.get("actions") or []
    if actions:
        lines.append("actions:")
        lines += [f"  {a['id']:>4} {a['kind']} {a['image']} {a['state']} by {a['who']} "
                  f"at {utc(a['created'])}" + (f": {a['reason']}" if a["reason"] else "")
                  for a in actions]
    events = (n.get("timeline") or [])[-10:]
    if events:
        lines.append("recent events:")
        lines += [f"  {utc(e['ts'])} {e['kind']}" for e in events]
    return "\n".join(lines)


_FIELDS = ("build", "channel", "mode")


def override_changes(name: str, before: dict[str, Any] | None, after: dict[str, Any] | None
                     ) -> list[str]:
    """``node web1: mode: local -> (unset)``, one line per field that changed."""
    b, a = before or {}, after or {}
    out = [f"node {name}: {f}: {b.get(f) or '(unset)'} -> {a.get(f) or '(unset)'}"
           for f in _FIELDS if b.get(f) != a.get(f)]
    return out or [f"node {name}: nothing changed (override: " + (", ".join(
        f"{f}={a[f]}" for f in _FIELDS if a.get(f)) or "none") + ")"]
