"""The funnel chart's geometry (web/ui_charts.py): one time scale, bars where stages ran."""

from __future__ import annotations

from typing import Any

from netbootd.web.ui_charts import BAR_W, LABEL_W, MIN_BAR, ROW_H, funnel_chart, seconds


def stage(name: str, start: float | None, end: float | None, detail: str = "") -> dict[str, Any]:
    return {"stage": name, "start": start, "end": end,
            "duration": None if start is None or end is None else end - start,
            "events": 0 if start is None else 1, "detail": detail}


def test_bars_share_one_time_scale() -> None:
    chart = funnel_chart({"build": "kvm/1", "boots": 2, "stages": [
        stage("dhcp", 100.0, 101.0), stage("loader", 101.0, 103.0),
        stage("kernel", 103.0, 110.0, "vmlinuz"), stage("ready", 110.0, 110.0)]})
    assert (chart.build, chart.boots, chart.span) == ("kvm/1", 2, "10.0 s")
    dhcp, loader, kernel, ready = chart.bars
    scale = BAR_W / 10.0
    assert (dhcp.x, dhcp.width) == (LABEL_W, scale)
    assert (loader.x, loader.width) == (LABEL_W + scale, 2 * scale)
    assert (kernel.x, kernel.width, kernel.detail) == (LABEL_W + 3 * scale, 7 * scale, "vmlinuz")
    # an instant stage still shows, and stays inside the axis
    assert ready.width == MIN_BAR and ready.x + ready.width <= LABEL_W + BAR_W
    assert [b.y for b in chart.bars] == [0, ROW_H, 2 * ROW_H, 3 * ROW_H]
    assert all(b.css == "done" and b.reached for b in chart.bars)


def test_stages_not_reached_and_failure() -> None:
    chart = funnel_chart({"build": None, "boots": 1, "stages": [
        stage("dhcp", 5.0, 6.0), stage("kernel", None, None), stage("failed", 6.0, 6.0)]})
    dhcp, kernel, failed = chart.bars
    assert (kernel.reached, kernel.css, kernel.duration, kernel.detail) == \
        (False, "missing", "-", "not reached")
    assert (kernel.x, kernel.width) == (LABEL_W, BAR_W)  # the outline spans the axis
    assert failed.css == "failed" and dhcp.duration == "1.0 s"


def test_no_events_at_all() -> None:
    chart = funnel_chart({"build": None, "boots": 0, "stages": [stage("dhcp", None, None)]})
    assert chart.span == "-" and not chart.bars[0].reached


def test_seconds() -> None:
    assert [seconds(x) for x in (None, 0.0123, 1.25, 300.0)] == ["-", "12 ms", "1.2 s",
                                                                "5.0 min"]
