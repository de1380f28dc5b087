"""The CLI's human formats (cli_views): binary sizes, UTC with its zone, aligned tables with a
header, node states, and one line per changed override field."""

from __future__ import annotations

import pytest

from netbootd.cli_views import human_size, node_state, override_changes, table, utc, utc_clock


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (4096, "4.00 KiB"),
    (123 * 1024 * 1024, "123 MiB"), (int(1.5 * 1024 ** 3), "1.50 GiB"),
    (999 * 1024, "999 KiB"), (1000 * 1024, "0.98 MiB"), (5 * 1024 ** 5, "5.00 PiB"),
])
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


def test_times_are_utc_with_the_zone() -> None:
    assert utc(0) == "1970-01-01 00:00:00 UTC"
    assert utc(1764594309.25) == "2025-12-01 13:05:09 UTC"
    assert utc(None) == "-"
    assert utc_clock(1764594309.25) == "13:05:09.250Z"


def test_table_aligns_under_its_header() -> None:
    assert table(["A", "SIZE"], [["long-name", "1 B"], ["x", "10.0 KiB"]], right=(1,)) == (
        "A              SIZE\n"
        "long-name       1 B\n"
        "x          10.0 KiB")


@pytest.mark.parametrize(("node", "state"), [
    ({"reimage": {"id": 1}, "seen": {"state": "ready"}}, "reimaging"),
    ({"reimage": None, "seen": {"state": "ready"}}, "ready"),
    ({"reimage": None, "seen": {"state": None}}, "booting"),
    ({"reimage": None, "seen": None}, "-"),
])
def test_node_state(node: dict[str, object], state: str) -> None:
    assert node_state(node) == state


def test_override_changes() -> None:
    assert override_changes("w", None, {"build": None, "channel": "c", "mode": "local"}) == [
        "node w: channel: (unset) -> c", "node w: mode: (unset) -> local"]
    assert override_changes("w", {"build": "a/1", "channel": None, "mode": None}, None) == [
        "node w: build: a/1 -> (unset)"]
    assert override_changes("w", {"mode": "menu"}, {"mode": "menu"}) == [
        "node w: nothing changed (override: mode=menu)"]
