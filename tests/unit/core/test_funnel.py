"""The boot funnel, derived purely from event lists like those netbootd records.

``tests/data/funnel/*.json`` are timelines recorded from real QEMU boots of the demo
appliance (``python -m netbootd.lab.demo``), kept as netbootd wrote them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netbootd.core.funnel import STAGES, BuildRoles, funnel, split_boots

DATA = Path(__file__).resolve().parents[2] / "data" / "funnel"
DEMO = {"demo/1.0": BuildRoles(kernel="vmlinuz", initrds=("initrd.img",))}
LIVE = {"kvm/1.0": BuildRoles(kernel="vmlinuz", initrds=("initrd.img",),
                              rootfs="filesystem.squashfs")}


@dataclass(frozen=True)
class Ev:
    ts: float
    kind: str
    detail: dict[str, Any]


def live_boot(t: float, build: str = "kvm/1.0", report: str = "ready") -> list[Ev]:
    """A SeaBIOS iPXE ROM -> lpxelinux -> live image boot, as recorded (events in order)."""
    b = f"/builds/{build}/"
    out = [
        Ev(t + 0.0, "dhcp-offer", {"arch": 0, "build": build}),
        Ev(t + 0.1, "dhcp-ack", {"arch": 0, "build": build}),
        Ev(t + 0.4, "tftp-sent", {"file": "bios/lpxelinux.0", "outcome": "completed"}),
        Ev(t + 0.6, "tftp-sent", {"file": "bios/ldlinux.c32", "outcome": "completed"}),
        Ev(t + 0.8, "tftp-ended", {"file": "bios/pxelinux.cfg/01-52-54-00-00-00-01",
                                   "outcome": "file-not-found"}),
        Ev(t + 0.9, "tftp-sent", {"file": "bios/pxelinux.cfg/01-52-54-00-00-00-01",
                                  "outcome": "completed"}),
        Ev(t + 3.0, "http-sent", {"path": b + "vmlinuz", "status": 200}),
        Ev(t + 9.0, "http-sent", {"path": b + "initrd.img", "status": 200}),
        Ev(t + 30.0, "http-sent", {"path": b + "filesystem.squashfs", "status": 200}),
        Ev(t + 41.0, "firstboot", {"file": "meta-data", "build": build}),
        Ev(t + 41.2, "firstboot", {"file": "user-data", "build": build}),
        Ev(t + 41.3, "firstboot", {"file": "vendor-data", "build": build}),
        Ev(t + 55.0, "phone-home", {"build": build, "hostname": "hv1"}),
    ]
    if report:
        errors = [] if report == "ready" else ["Invalid cloud-config provided"]
        out.append(Ev(t + 58.0, report, {"build": build, "errors": errors}))
    return out


def test_a_live_boot_stage_by_stage() -> None:
    f = funnel(live_boot(1000.0), LIVE)
    assert f.build == "kvm/1.0" and f.boots == 1
    assert [s.name for s in f.stages] == list(STAGES)
    got = {s.name: s for s in f.stages}
    # each stage lasts from its first event to the next stage's first event
    assert (got["dhcp"].start, got["dhcp"].end) == (1000.0, 1000.4)
    assert got["loader"].start == 1000.4 and got["loader"].end == 1003.0
    assert got["loader"].events == 3  # a TFTP miss (file-not-found) is no stage
    assert got["kernel"].start == 1003.0 and got["kernel"].duration == pytest.approx(6.0)
    assert got["initrd"].duration == pytest.approx(21.0)
    assert got["rootfs"].duration == pytest.approx(11.0) and got["rootfs"].detail == \
        "filesystem.squashfs"
    assert got["meta-data"].start == 1041.0 and got["user-data"].start == 1041.2
    assert got["user-data"].events == 1  # vendor-data is no stage of its own
    assert got["phone-home"].duration == pytest.approx(3.0)
    assert got["phone-home"].detail == "hv1"
    # the last stage reached ends with its last event
    assert got["ready"].start == got["ready"].end == 1058.0


def test_a_failed_report_ends_the_funnel_as_failed() -> None:
    f = funnel(live_boot(0.0, report="failed"), LIVE)
    assert f.stages[-1].name == "failed" and f.stages[-1].detail == "1 errors"


def test_a_boot_still_under_way_shows_the_stages_not_reached() -> None:
    f = funnel(live_boot(0.0, report="")[:8], LIVE)  # up to the initrd
    got = {s.name: s for s in f.stages}
    assert got["initrd"].start == got["initrd"].end == 9.0
    for later in ("rootfs", "meta-data", "user-data", "phone-home", "ready"):
        assert got[later].start is None and got[later].duration is None


def test_the_last_of_several_boots_and_chain_loading_dhcp_is_one_boot() -> None:
    first = live_boot(0.0, build="kvm/1.0")
    # The second boot chain-loads iPXE: a second DHCP before the kernel is the same boot.
    second = live_boot(500.0, build="kvm/2.0", report="failed")
    second.insert(3, Ev(500.5, "dhcp-offer", {"arch": 0}))
    second.insert(4, Ev(500.6, "ipxe-script", {"build": "kvm/2.0"}))
    roles = {**LIVE, "kvm/2.0": LIVE["kvm/1.0"]}
    assert len(split_boots(first + second, roles)) == 2
    f = funnel(first + second, roles)
    assert f.boots == 2 and f.build == "kvm/2.0"
    assert f.stages[0].start == 500.0 and f.stages[-1].name == "failed"


def test_without_the_builds_manifest_its_files_are_loader_files() -> None:
    f = funnel(live_boot(0.0), {})
    got = {s.name: s for s in f.stages}
    assert "rootfs" not in got  # no manifest says there is one
    assert got["kernel"].start is None and got["loader"].events == 6


def test_no_events_no_stages_reached() -> None:
    f = funnel([], DEMO)
    assert f.boots == 0 and f.build is None
    assert all(s.start is None for s in f.stages)


@pytest.mark.parametrize("recorded", sorted(DATA.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_demo_boots(recorded: Path) -> None:
    data = json.loads(recorded.read_text())
    events = [Ev(e["ts"], e["kind"], e["detail"]) for e in data["events"]]
    roles = {ref: BuildRoles(r["kernel"], tuple(r["initrds"]), r.get("rootfs"))
             for ref, r in data["roles"].items()}
    f = funnel(events, roles)
    assert f.as_json() == data["funnel"]
    reached = [s.name for s in f.stages if s.start is not None]
    assert reached == data["reached"]
    starts = [s.start for s in f.stages if s.start is not None]
    assert starts == sorted(starts)
