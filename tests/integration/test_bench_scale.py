"""``bench/scale.py --quick`` boots simulated nodes through a real server and counts the database.

A smoke test of the benchmark behind docs/scaling.md: every step of every simulated boot must
succeed against the real server (DHCP, TFTP, HTTP, first-boot with its token, phone-home),
the SQLite counters must see the boot's writes, and the sizing must be computed from them.
No timing is asserted; docs/scaling.md holds a full run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "scale.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the bench needs root (namespaces, cgroups)")


def test_quick_scale_run_boots_every_node_and_counts_the_database(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["errors"] == []

    sizes = {(w["kind"], w["nodes"]) for w in data["world"]}
    assert sizes == {(k, n) for k in ("configured", "adopted") for n in (1000, 10_000)}
    for w in data["world"]:
        assert w["world_build_ms"] >= 0 and w["decide_p99_us"] > 0
        assert w["rss_peak_mb"] >= w["rss_base_mb"] > 0

    (boot,) = data["boot"]
    assert boot["backend"] == "sqlite"
    steps = {s["step"]: s for s in boot["steps"]}
    assert list(steps) == ["dhcp-pxe", "tftp", "dhcp-ipxe", "scripts", "kernel", "initrd",
                           "firstboot", "phone-home"]
    for name, s in steps.items():
        assert s["ok"] == s["nodes"] > 0 and s["errors"] == 0, (name, s["first_error"])
    # Every byte of the build reached the simulated node.
    assert steps["kernel"]["bytes_per_node"] == boot["kernel_bytes"]
    assert steps["initrd"]["bytes_per_node"] == boot["initrd_bytes"]
    assert steps["tftp"]["bytes_per_node"] == (Path("/usr/lib/ipxe/undionly.kpxe")
                                               .stat().st_size)
    assert boot["boots_ok"] == boot["boots"] > 0 and boot["boot_errors"] == 0

    # The database saw each boot: every step records at least one event, and each event
    # is a row written (the node's record is another).
    assert boot["events_per_boot"] >= len(steps)
    assert boot["db_per_boot"]["rows_written"] >= boot["events_per_boot"]
    assert boot["db_per_boot"]["detail"].get("INSERT", 0) >= boot["events_per_boot"]
    assert 0 < boot["db_per_boot"]["transactions"] <= boot["db_per_boot"]["statements"]
    assert boot["db_bytes_per_event"] > 0 and boot["db_bytes_per_node"] > 0

    sizing = data["sizing"]
    assert {b["build"]["name"] for b in sizing["builds"]} == {"kvm-hypervisor", "demo"}
    for b in sizing["builds"]:
        assert b["boots_per_s_server"] == min(b["boots_per_s_cpu"], b["boots_per_s_network"])
        assert all(st["servers"] >= 1 for st in b["storms"])
