"""``bench/run.py --quick`` runs every benchmark against every peer and yields figures.

A smoke test of the benchmark itself (issue 4): it must install or find its peers, run
netbootd, tftpd-hpa, atftpd, dnsmasq and nginx in namespaces it creates, and produce a number
for every row, for netbootd and for the peer of that row. No timing is asserted: whether a
target is met depends on the machine; docs/performance.md holds a full run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run.py"
EXPECTED_ROWS = {
    "tftp.lockstep", "tftp.window8", "tftp.window8-vs-hpa", "tftp.cpu-per-packet",
    "storm.small", "storm.big", "storm.cpu-per-packet", "memory.storm",
    "dhcp.max-rate", "dhcp.p99", "dhcp.server-dora", "http.big-file", "http.ipxe-scripts",
    "decide.p99", "decide.add-node", "memory.nodes", "boot.bios", "qemu.storm",
    "scale.world-build", "scale.world-rss", "scale.decide-p99", "scale.boot-cpu",
    "scale.boot-rate", "scale.db-statements", "scale.db-transactions", "scale.db-rows",
}
# QEMU TCG boots take minutes: --quick says so in the row instead of running them.
SKIPPED_IN_QUICK = {"boot.bios", "qemu.storm"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the bench needs root (namespaces, cgroups)")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, object]], str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    plots = out.parent / "plots"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out),
                           "--plots", str(plots)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["id"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(p.name for p in plots.iterdir()) == [
        "dhcp-latency.png", "tftp-blksize.png", "tftp-storm.png", "tftp-windowsize.png"]
    return rows, proc.stdout


def _numbers(stat: object) -> list[float]:
    assert isinstance(stat, dict)
    samples = stat["samples"]
    assert isinstance(samples, list)
    return [float(s) for s in samples]


def test_every_benchmark_produced_figures(quick: tuple[dict[str, dict[str, object]], str]) -> None:
    rows, _ = quick
    assert set(rows) == EXPECTED_ROWS
    for rid, row in rows.items():
        assert not row["error"], (rid, row["error"])
        if rid in SKIPPED_IN_QUICK:
            assert "skipped in --quick" in str(row["note"])
            continue
        nb = _numbers(row["netbootd"])
        load = row["netbootd"]["load"]  # type: ignore[index]
        assert len(load) == len(nb) and all(
            s is None or {"load1", "other_cores", "steal", "loaded"} <= set(s) for s in load)
        assert nb and all(math.isfinite(v) and v > 0 for v in nb), (rid, nb)
        if row["peer_name"]:
            peer = _numbers(row["peer"])
            assert peer and all(math.isfinite(v) and v >= 0 for v in peer), (rid, peer)


def test_every_storm_transfer_succeeded(
        quick: tuple[dict[str, dict[str, object]], str]) -> None:
    # Each transfer is checked by exit code and byte count; curl's time cap is generous
    # (1 MB/s per client), so a failure here is a lost transfer, not a slow machine.
    rows, _ = quick
    for rid in ("storm.small", "storm.big"):
        assert rows[rid]["failed"] == 0, (rid, rows[rid])


def test_the_table_is_printed_with_every_row(
        quick: tuple[dict[str, dict[str, object]], str]) -> None:
    _, stdout = quick
    tables: list[list[str]] = []
    for line in stdout.splitlines():
        if line.startswith("|"):
            if not tables or not tables[-1]:
                tables.append([])
            tables[-1].append(line)
        elif tables and tables[-1]:
            tables.append([])
    figures, samples = [t for t in tables if t]
    assert figures[0].startswith("| id | what | netbootd | peer |")
    assert {line.split("|")[1].strip() for line in figures[2:]} == EXPECTED_ROWS
    # Every measured row lists its samples with the load they were taken under.
    assert samples[0].startswith("| id | side | samples (load average")
    measured = {line.split("|")[1].strip() for line in samples[2:]}
    assert measured == EXPECTED_ROWS - SKIPPED_IN_QUICK
    assert all("(load " in line for line in samples[2:])
