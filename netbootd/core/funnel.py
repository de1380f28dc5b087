"""The boot funnel: one boot of a node, stage by stage, derived from its recorded events.

Stages, in boot order: ``dhcp`` (ProxyDHCP offer/ack), ``loader`` (the boot loader and its
config: TFTP files, the iPXE script, anything before the kernel), ``kernel``, ``initrd``,
``rootfs`` (only for a build whose manifest names one), ``meta-data``, ``user-data`` (or an
ESXi kickstart), ``phone-home`` and finally ``ready`` or ``failed`` (the report after
cloud-init). Which download is the kernel, an initrd or the root file system is the build's
manifest's say (``BuildRoles``), never a guess from the file name.

A node's events hold many boots; a DHCP event after the node got as far as its kernel starts a
new one (the second DHCP of a chain-loading iPXE comes before the kernel, so it does not).

Each stage reports ``start`` (its first event), ``end`` (when the next stage reached began;
for the last stage reached, its last event) and ``duration``: how long the node was in that
stage. An HTTP download is recorded when it is asked for, a TFTP one when it completes, so
``kernel`` over HTTP lasts from the kernel's request to the initrd's: the kernel download. A
stage not reached has ``start`` None. Pure: events and roles in, a value out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

STAGES = ("dhcp", "loader", "kernel", "initrd", "rootfs", "meta-data", "user-data",
          "phone-home", "ready")
_KERNEL_INDEX = STAGES.index("kernel")
_BUILD_PATH = re.compile(r"(?:^|/)builds/([^/]+)/([^/]+)/(.+)$")


class Event(Protocol):
    @property
    def ts(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def detail(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class BuildRoles:
    """Which of a build's files plays which part (from its manifest)."""

    kernel: str | None
    initrds: tuple[str, ...] = ()
    rootfs: str | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    name: str  # one of STAGES, with "failed" in place of "ready" when the report said so
    start: float | None
    end: float | None
    events: int
    detail: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.name, "start": self.start, "end": self.end,
                "duration": self.duration, "events": self.events, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Funnel:
    build: str | None
    boots: int  # boots found in the events; the stages are the last one's
    stages: tuple[Stage, ...]

    def as_json(self) -> dict[str, Any]:
        return {"build": self.build, "boots": self.boots,
                "stages": [s.as_json() for s in self.stages]}


def event_build(e: Event) -> str | None:
    """The build ref an event names, if any (first-boot, phone-home, iPXE, a build file)."""
    b = e.detail.get("build")
    if isinstance(b, str) and "/" in b:
        return b
    m = _BUILD_PATH.search(_path(e))
    return f"{m[1]}/{m[2]}" if m else None


def _path(e: Event) -> str:
    p = e.detail.get("path") if e.kind == "http-sent" else e.detail.get("file")
    return p.split("?", 1)[0] if isinstance(p, str) else ""


def stage_of(e: Event, roles: Mapping[str, BuildRoles]) -> str | None:
    """The stage an event belongs to, or None (declines, failed transfers, other events)."""
    k = e.kind
    if k in ("dhcp-offer", "dhcp-ack"):
        return "dhcp"
    if k == "ipxe-script":
        return "loader"
    if k == "firstboot":
        f = e.detail.get("file")
        return {"meta-data": "meta-data", "user-data": "user-data",
                "ks.cfg": "user-data"}.get(f if isinstance(f, str) else "")
    if k in ("phone-home", "ready", "failed"):
        return k
    ok = (k == "tftp-sent") or (k == "http-sent" and e.detail.get("status") in (200, 206))
    if not ok:
        return None
    m = _BUILD_PATH.search(_path(e))
    r = roles.get(f"{m[1]}/{m[2]}") if m else None
    if m is None or r is None:
        return "loader"
    name = m[3]
    if name == r.kernel:
        return "kernel"
    if name in r.initrds:
        return "initrd"
    if name == r.rootfs:
        return "rootfs"
    return "loader"  # e.g. a loader file or mboot.c32 served from the build


def split_boots(events: Sequence[Event], roles: Mapping[str, BuildRoles]
                ) -> list[list[tuple[Event, str]]]:
    """The events in boots, each event with its stage (events of no stage are left out)."""
    boots: list[list[tuple[Event, str]]] = []
    reached = -1
    for e in events:
        s = stage_of(e, roles)
        if s is None:
            continue
        idx = STAGES.index("ready" if s == "failed" else s)
        if not boots or (s == "dhcp" and reached >= _KERNEL_INDEX):
            boots.append([])
            reached = -1
        boots[-1].append((e, s))
        reached = max(reached, idx)
    return boots


def funnel(events: Sequence[Event], roles: Mapping[str, BuildRoles]) -> Funnel:
    """The last boot in ``events`` (ordered as recorded), stage by stage."""
    boots = split_boots(events, roles)
    last = boots[-1] if boots else []
    build = next((b for e, _ in last if (b := event_build(e))), None)
    r = roles.get(build) if build else None
    wanted = [s for s in STAGES if s != "rootfs" or (r is not None and r.rootfs)]
    by_stage: dict[str, list[Event]] = {}
    outcome = "ready"
    for e, s in last:
        if s in ("ready", "failed"):
            outcome = s  # the last report wins
            s = "ready"
        by_stage.setdefault(s, []).append(e)
    reached = [(name, by_stage[name]) for name in wanted if name in by_stage]
    ends: dict[str, float] = {}
    for (name, got), nxt in zip(reached, [*reached[1:], None][:len(reached)], strict=True):
        ends[name] = max(got[0].ts, nxt[1][0].ts if nxt else got[-1].ts)
    stages: list[Stage] = []
    for name in wanted:
        got = by_stage.get(name, [])
        label = outcome if name == "ready" else name
        if not got:
            stages.append(Stage(label, None, None, 0))
        else:
            stages.append(Stage(label, got[0].ts, ends[name], len(got), _summary(name, got)))
    return Funnel(build=build, boots=len(boots), stages=tuple(stages))


def _summary(stage: str, got: Sequence[Event]) -> str:
    last = got[-1]
    if stage in ("kernel", "initrd", "rootfs"):
        return ", ".join(sorted({_path(e).rsplit("/", 1)[-1] for e in got}))
    if stage == "loader":
        return f"{len(got)} files/scripts, last {_path(last) or last.kind}"
    if stage == "ready":
        errs = last.detail.get("errors")
        return f"{len(errs)} errors" if isinstance(errs, list) and errs else ""
    if stage == "phone-home":
        return str(last.detail.get("hostname") or "")
    return ""
