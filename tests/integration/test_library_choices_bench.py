"""``bench/library_choices.py --quick`` runs, reports every measurement, and shows the behaviour
that justifies our own TFTP server: it survives every malformed datagram of case (a).

No timing is asserted: the benchmark reports figures; this test only checks that the figures
are there and that the robustness facts hold.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tftpy")
pytest.importorskip("scapy")
pytest.importorskip("diskcache")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "library_choices.py"

MALFORMED_ROWS = ("a.blksize-abc", "a.empty", "a.one-byte", "a.no-mode")
NUMERIC_ROWS = ("b.dhcp-parse", "c.store-write", "c.store-read", "d.tftp-throughput")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| id "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, line
        rows[cells[0]] = cells
    return rows


def test_every_measurement_has_a_row(table: dict[str, list[str]]) -> None:
    expected = {"a.baseline", *MALFORMED_ROWS, *NUMERIC_ROWS, "c.diskcache-meta"}
    assert expected <= table.keys(), sorted(expected - table.keys())


@pytest.mark.parametrize("row_id", NUMERIC_ROWS)
def test_measurements_report_numbers(table: dict[str, list[str]], row_id: str) -> None:
    _id, _what, third_party, ours, _notes = table[row_id]
    if row_id == "d.tftp-throughput" and "not measured" in ours:
        pytest.skip("curl is not installed")
    assert NUMBER.search(third_party), table[row_id]
    assert NUMBER.search(ours), table[row_id]


def test_diskcache_serialisation_is_reported(table: dict[str, list[str]]) -> None:
    assert "pickle" in table["c.diskcache-meta"][2]


def test_both_servers_serve_without_malformed_input(table: dict[str, list[str]]) -> None:
    # Otherwise a "not serving" below would say nothing about the malformed datagram.
    assert table["a.baseline"][2] == "alive, serving"
    assert table["a.baseline"][3] == "alive, serving"


@pytest.mark.parametrize("row_id", MALFORMED_ROWS)
def test_netbootd_tftp_survives_malformed_datagram(table: dict[str, list[str]],
                                                   row_id: str) -> None:
    assert table[row_id][3] == "alive, serving", table[row_id]
