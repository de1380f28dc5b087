"""The boot funnel as a chart: where each stage's bar goes, computed from the funnel's JSON.

Pure geometry (no SVG text, no escaping): the template draws it (ui_templates/funnel.svg.html)
so every label passes through the same autoescaping as the rest of the page. One row per
stage in boot order; a bar starts where the stage started relative to the boot's first event
and is as long as the stage lasted, on one time scale, so a slow kernel download or a long
wait for the phone-home shows as a long bar. A stage the boot never reached is drawn as an
empty outline, so the chart also shows how far the boot got.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LABEL_W = 110  # the stage names' column
BAR_W = 520  # the time axis
ROW_H = 26
TEXT_W = 170  # duration and detail to the right of the bars
MIN_BAR = 3  # an instant stage (one event) still shows


@dataclass(frozen=True, slots=True)
class Bar:
    stage: str
    y: int
    x: float
    width: float
    reached: bool
    css: str  # "done", "failed", "missing"
    duration: str  # "1.23 s", "-" when not reached
    detail: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    label_w: int
    bar_w: int
    row_h: int
    span: str  # the whole boot, first event to last
    bars: tuple[Bar, ...]
    build: str | None
    boots: int


def seconds(d: float | None) -> str:
    if d is None:
        return "-"
    if d < 1:
        return f"{d * 1000:.0f} ms"
    if d < 120:
        return f"{d:.1f} s"
    return f"{d / 60:.1f} min"


def funnel_chart(funnel: Mapping[str, Any]) -> Chart:
    """Geometry for ``funnel`` (``Funnel.as_json()``: build, boots, stages)."""
    stages: Sequence[Mapping[str, Any]] = funnel.get("stages") or []
    starts = [s["start"] for s in stages if s.get("start") is not None]
    ends = [s["end"] for s in stages if s.get("end") is not None]
    t0 = min(starts) if starts else 0.0
    total = (max(ends) - t0) if ends and starts else 0.0
    scale = BAR_W / total if total > 0 else 0.0
    bars = []
    for i, s in enumerate(stages):
        y = i * ROW_H
        start, dur = s.get("start"), s.get("duration")
        if start is None:
            bars.append(Bar(str(s["stage"]), y, LABEL_W, BAR_W, False, "missing", "-",
                            "not reached"))
            continue
        x = LABEL_W + (start - t0) * scale
        width = max(MIN_BAR, (dur or 0.0) * scale)
        x = min(x, LABEL_W + BAR_W - width)
        css = "failed" if s["stage"] == "failed" else "done"
        bars.append(Bar(str(s["stage"]), y, x, width, True, css, seconds(dur),
                        str(s.get("detail") or "")))
    return Chart(width=LABEL_W + BAR_W + TEXT_W, height=max(1, len(bars)) * ROW_H + 24,
                 label_w=LABEL_W, bar_w=BAR_W, row_h=ROW_H,
                 span=seconds(total) if starts else "-", bars=tuple(bars),
                 build=funnel.get("build"), boots=int(funnel.get("boots") or 0))
