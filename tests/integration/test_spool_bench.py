"""``bench/spool.py --quick`` measures every variant (docs/design-choices.md, the spool).

A smoke test of the benchmark: each variant yields a positive append time, and the spool's
own variants a replay time; no figure is asserted, they depend on the machine's disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_spool_bench_measures_every_variant() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "spool.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {"spool-fsync", "spool-nofsync", "diskcache-deque"}
    for name, r in rows.items():
        assert r["batches"] == 50 and r["batch_bytes"] > 1000 and r["append_us"] > 0, name
        assert (r["replay_read_us"] is None) == (name == "diskcache-deque"), name
