"""``netbootd rollout ...`` through the installed entry point, on the state directory alone
(no server running): confirmation and exit codes as docs/operations.md says, the JSON the
admin API documents, and the rollout's effect on what the planner answers (``node show``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_admin_api import documented_schema
from test_cli_ops import ENTRY, nb

from helpers import loopback_config, make_store
from netbootd.cli_errors import EXIT_REFUSED
from netbootd.lab.demo import toml_dump

NODES = {"n1": "52:54:00:10:00:01", "n2": "52:54:00:10:00:02", "n3": "52:54:00:10:00:03"}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path)
    data["groups"] = {"fleet": {"default": True, "channel": "kvm-stable"}}
    data["nodes"] = {n: {"mac": m} for n, m in NODES.items()}
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    assert nb(cfg, "channel", "set", "kvm-stable", "demo/1.0").returncode == 0
    return cfg


def js(cfg: Path, *args: str) -> Any:
    r = nb(cfg, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check(value: Any) -> None:
    jsonschema.validate(value, {**documented_schema(), "$ref": "#/$defs/Rollout"})


START = ("rollout", "start", "kvm-stable", "demo/2.0", "--canary", "1", "--batch", "50%",
         "--ready-within", "20m", "--max-failed", "2")


def test_start_asks_first_then_status_list_pause_resume_abort(cfg: Path) -> None:
    r = nb(cfg, *START)  # stdin is not a terminal and there is no --yes
    assert r.returncode == EXIT_REFUSED and "--yes" in r.stderr
    assert js(cfg, "rollout", "list") == []
    r = js(cfg, *START, "--yes")
    check(r)
    assert (r["id"], r["phase"], r["ready_within"], r["max_failed"]) == (1, "running", 1200.0, 2)
    assert r["batches"] == [["n1"], ["n2", "n3"]]  # 50% of 3 rounded up
    text = nb(cfg, "rollout", "status", "1").stdout
    assert "rollout 1: kvm-stable demo/1.0 -> demo/2.0: running" in text
    assert js(cfg, "node", "show", "n1")["next"] == {
        "group": "fleet", "mode": "appliance", "build": "demo/2.0",
        "why": "channel kvm-stable (groups.fleet), rollout 1, batch 0"}
    assert js(cfg, "node", "show", "n2")["next"]["build"] == "demo/1.0"
    check(js(cfg, "rollout", "pause", "1"))
    assert js(cfg, "rollout", "status", "1")["phase"] == "paused"
    r = nb(cfg, "rollout", "pause", "1")
    assert r.returncode == EXIT_REFUSED and "not running" in r.stderr
    assert js(cfg, "rollout", "resume", "1")["phase"] == "running"
    r = nb(cfg, *START, "--yes")
    assert r.returncode == EXIT_REFUSED and "rollout 1 of channel kvm-stable" in r.stderr
    assert nb(cfg, "rollout", "abort", "1").returncode == EXIT_REFUSED  # asks first
    r = js(cfg, "rollout", "abort", "1", "--why", "wrong build", "--yes")
    check(r)
    assert r["phase"] == "aborted" and r["reason"].endswith(": wrong build")
    assert js(cfg, "node", "show", "n1")["next"]["build"] == "demo/1.0"
    hist = js(cfg, "channel", "history", "kvm-stable")
    assert [h["action"] for h in hist] == ["set", "rollout-start", "rollout-abort"]
    assert js(cfg, "channel", "list") == {"kvm-stable": "demo/1.0"}
    assert [x["id"] for x in js(cfg, "rollout", "list")] == [1]


@pytest.mark.parametrize("args, says", [
    (("rollout", "status", "9"), "no rollout 9"),
    (("rollout", "status", "x"), "rollout id 'x'"),
    (("rollout", "start", "nope", "demo/2.0", "--yes"), "no channel 'nope'"),
    (("rollout", "start", "kvm-stable", "demo/9", "--yes"), "no build named demo/9"),
    (("rollout", "start", "kvm-stable", "demo/1.0", "--yes"), "already points at demo/1.0"),
    (("rollout", "start", "kvm-stable", "demo/2.0", "--ready-within", "soon", "--yes"),
     "duration 'soon'"),
    (("rollout", "start", "kvm-stable", "demo/2.0", "--batch", "0", "--yes"), "batch '0'"),
    (("rollout", "start", "kvm-stable", "demo/2.0", "--canary", "0", "--yes"), "canary"),
    (("rollout", "start", "kvm-stable", "demo/2.0", "--reboot", "--yes"), "power control"),
])
def test_bad_input_is_refused_with_what_to_do(cfg: Path, args: tuple[str, ...],
                                              says: str) -> None:
    r = nb(cfg, *args)
    assert r.returncode == EXIT_REFUSED, (r.stdout, r.stderr)
    assert says in r.stderr
    assert js(cfg, "rollout", "list") == []


def test_the_commands_have_help_and_examples() -> None:
    r = subprocess.run([*ENTRY, "rollout", "start", "--help"],
                       capture_output=True, text=True, check=True)
    assert "--ready-within DURATION" in r.stdout and "netbootd rollout start" in r.stdout
