"""Figures, targets and the one table the bench prints; plots for docs/performance.md.

A row compares netbootd with one peer. ``kind="ratio"``: the target is a bound on
netbootd/peer (``higher``: at least, ``lower``: at most). ``kind="absolute"``: the target is a
bound on netbootd's own figure. Figures are medians with (min-max) of the runs.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.sandbox import LoadProbe


@dataclass
class Stat:
    """One side's samples; each sample measured through a probe carries its host load.

    The median (and the ratio built on it) uses the samples not taken under load when there
    is at least one; otherwise every sample, and the table says so.
    """

    samples: list[float]
    probes: list[LoadProbe | None] = field(default_factory=list)

    def add(self, value: float, probe: LoadProbe | None = None) -> None:
        self.samples.append(value)
        self.probes.append(probe)

    def _probe(self, i: int) -> LoadProbe | None:
        return self.probes[i] if i < len(self.probes) else None

    def is_loaded(self, i: int) -> bool:
        probe = self._probe(i)
        return probe is not None and probe.marked

    @property
    def loaded_count(self) -> int:
        return sum(self.is_loaded(i) for i in range(len(self.samples)))

    @property
    def used(self) -> list[float]:
        clean = [v for i, v in enumerate(self.samples) if not self.is_loaded(i)]
        return clean or self.samples

    @property
    def median(self) -> float:
        return statistics.median(self.used)

    def text(self, digits: int = 1) -> str:
        if not self.samples:
            return "-"
        used = self.used
        med = _fmt(self.median, digits)
        if len(used) > 1:
            med = f"{med} ({_fmt(min(used), digits)}-{_fmt(max(used), digits)})"
        if n := self.loaded_count:
            med += f" [{n}/{len(self.samples)} under load" + \
                (", all used]" if n == len(self.samples) else ", left out]")
        return med

    def sample_text(self, digits: int = 1) -> str:
        """Every sample with its load: ``value (load1 L, other C cores)``; ``*``: taken under
        load, ``+``: another sample of its round was (both left out of medians)."""
        parts = []
        for i, v in enumerate(self.samples):
            probe = self._probe(i)
            if probe is None:
                parts.append(_fmt(v, digits))
                continue
            star = "*" if probe.loaded else "+" if probe.marked else ""
            parts.append(f"{_fmt(v, digits)}{star} (load {probe.load1:.2f}, other "
                         f"{probe.other_cores:.2f} cores, steal {probe.steal:.1%})")
        return "; ".join(parts) or "-"

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples,
                "load": [None if (pr := self._probe(i)) is None else pr.as_dict()
                         for i in range(len(self.samples))],
                "median": self.median if self.samples else None,
                "loaded": self.loaded_count}


def _fmt(v: float, digits: int) -> str:
    if math.isnan(v):
        return "nan"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


@dataclass
class Row:
    id: str
    what: str
    unit: str
    target: str
    kind: str  # "ratio", "absolute" or "info" (no target)
    better: str  # "higher" or "lower"
    bound: float
    peer_name: str = ""
    netbootd: Stat = field(default_factory=lambda: Stat([]))
    peer: Stat = field(default_factory=lambda: Stat([]))
    failed: int = 0  # netbootd's failed transfers/requests over every run
    peer_failed: int = 0  # the peer's
    note: str = ""
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.netbootd.samples or not self.peer.samples or self.peer.median == 0:
            return None
        return self.netbootd.median / self.peer.median

    @property
    def met(self) -> bool | None:
        if self.error or not self.netbootd.samples or self.kind == "info":
            return None
        value = self.ratio if self.kind == "ratio" else self.netbootd.median
        if value is None:
            return None
        ok = value >= self.bound if self.better == "higher" else value <= self.bound
        return ok and self.failed == 0


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.series: dict[str, Any] = {}  # data behind the plots
        self.notes: list[str] = []

    def row(self, rid: str, **kw: Any) -> Row:
        if rid not in self.rows:
            self.rows[rid] = Row(rid, **kw)
        return self.rows[rid]

    def table(self) -> str:
        lines = ["| id | what | netbootd | peer | peer's figure | ratio | target | met |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows.values():
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
            met = {True: "yes", False: "NO", None: "-"}[r.met]
            if r.error:
                met = f"error: {r.error[:120]}"
            elif r.failed:
                met += f" ({r.failed} failed)"
            if r.peer_failed:
                met += f" ({r.peer_name}: {r.peer_failed} failed)"
            nb = r.netbootd.text() + (f" {r.unit}" if r.netbootd.samples else "")
            peer = r.peer.text() + (f" {r.unit}" if r.peer.samples else "")
            what = r.what + (f" — {r.note}" if r.note else "")
            lines.append(f"| {r.id} | {what} | {nb} | {r.peer_name or '-'} | {peer} | {ratio} "
                         f"| {r.target} | {met} |")
        return "\n".join(lines)

    def samples_table(self) -> str:
        """Per-sample figures with the host load while each was taken (``*``: under load,
        ``+``: in a round with a sample under load)."""
        lines = ["| id | side | samples (load average, other processes' cores, steal) |",
                 "|---|---|---|"]
        for r in self.rows.values():
            for side, stat in (("netbootd", r.netbootd), (r.peer_name, r.peer)):
                if stat.samples:
                    lines.append(f"| {r.id} | {side} | {stat.sample_text()} |")
        return "\n".join(lines)

    def dump(self, path: Path) -> None:
        rows = []
        for r in self.rows.values():
            d: dict[str, Any] = {f.name: getattr(r, f.name) for f in fields(r)}
            d["netbootd"], d["peer"] = r.netbootd.to_dict(), r.peer.to_dict()
            rows.append(d | {"ratio": r.ratio, "met": r.met})
        data = {"rows": rows, "series": self.series, "notes": self.notes}
        path.write_text(json.dumps(data, indent=1))


def plot(results_json: Path, out_dir: Path) -> list[Path]:
    """PNG plots from a results file (``run.py --json``): needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results_json.read_text())
    series: dict[str, Any] = data["series"]
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    def save(fig: Any, name: str) -> None:
        p = out_dir / name
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)

    for key, xlabel, fname in (("blksize", "blksize (bytes), curl lock-step (atftp for "
                                 "netbootd/atftpd rows marked ws)", "tftp-blksize.png"),
                               ("windowsize", "windowsize (atftp, blksize 1468)",
                                "tftp-windowsize.png")):
        if key not in series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for server, points in sorted(series[key].items()):
            xs = sorted(int(x) for x in points)
            ax.plot(xs, [statistics.median(points[str(x)]) for x in xs], marker="o",
                    label=server)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("MB/s (median)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        save(fig, fname)
    if "storm" in series:
        fig, ax = plt.subplots(figsize=(6, 4))
        failed = series.get("storm_failed", {})
        for server, points in sorted(series["storm"].items()):
            xs = sorted(int(x) for x in points)
            ax.plot(xs, [points[str(x)] for x in xs], marker="o", label=server)
            for x in xs:  # a storm with failed transfers is not a result: say so on the plot
                if n := failed.get(server, {}).get(str(x)):
                    ax.annotate(f"{server}: {n} failed", (x, points[str(x)]), fontsize=7,
                                textcoords="offset points", xytext=(-90, -12))
        ax.set_xlabel("clients (1 MiB each, blksize 1468, lock-step curl)")
        ax.set_ylabel("storm wall time (s)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        save(fig, "tftp-storm.png")
    if "dhcp" in series:
        fig, ax = plt.subplots(figsize=(6, 4))
        for server, points in sorted(series["dhcp"].items()):
            xs = sorted(int(x) for x in points)
            ax.plot(xs, [points[str(x)]["p50"] for x in xs], marker="o",
                    label=f"{server} p50")
            ax.plot(xs, [points[str(x)]["p99"] for x in xs], marker="x", linestyle="--",
                    label=f"{server} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered DISCOVER/s (perfdhcp, relayed PXE)")
        ax.set_ylabel("DISCOVER→OFFER latency (ms)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "dhcp-latency.png")
    return made
