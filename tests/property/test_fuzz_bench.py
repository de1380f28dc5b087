"""A CI-sized run of ``bench/fuzz.py`` (the million-input run is documented in
docs/security.md): every target, both engines, zero crashes, every input counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "fuzz.py"
TARGETS = ("dhcp", "tftp-codec", "tftp-session", "dhcp-server")


@pytest.mark.parametrize("engine", ["random", "atheris"])
def test_fuzz_targets_survive_a_ci_sized_run(engine: str) -> None:
    if engine == "atheris":
        pytest.importorskip("atheris")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--engine", engine, "--inputs", "20000",
                           "--seed", "11"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for target in TARGETS:
        assert re.search(rf"^fuzz: target={target} engine={engine} inputs=20000 crashes=0 ",
                         proc.stdout, re.MULTILINE), proc.stdout


def test_a_crash_is_reported_with_its_input(tmp_path: Path) -> None:
    """The harness really notices: a target that raises makes the run fail and show why."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import fuzz\n"
            "def boom(data):\n"
            "    if len(data) > 3 and data[3] == 7: raise ValueError('planted bug')\n"
            "sys.exit(fuzz.run_random(boom, [b'seed'], 50000, 3))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 1
    assert "fuzz: CRASH on input" in proc.stderr and "planted bug" in proc.stderr
