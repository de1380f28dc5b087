"""Health-gated rollouts on the KVM appliance (images/kvm-hypervisor) booted by real firmware.

Three BIOS QEMU nodes follow channel ``kvm-stable`` (at kvm-hypervisor/1.0). A rollout to
2.0 (started with the CLI: canary 1, then one batch of 2) boots the canary, waits for its
``ready`` report from cloud-init, boots the batch, and moves the channel. A rollout to 3.0,
whose first boot fails (the group's user-data template adds a module that cannot succeed for
that version, as a bad release's first-boot config would), stops at the canary and reverts
it: the canary's next boot fetches 2.0 again. The channel history shows both. Every
assertion reads netbootd's state (``netbootd rollout status --json``, the channel history,
the events database), never its log.

Boots are the minimum the story needs: n1, then n2 and n3 together, n1 again (fails), and
n1 once more only as far as fetching its kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netbootd.lab.demo import (
    DEFAULT_CACHE,
    KVM_RECIPE,
    NetbootdProcess,
    start_netbootd,
    timeline,
    toml_dump,
)
from netbootd.lab.guests import QemuGuest
from netbootd.lab.netlab import Lab, lab_prerequisites

MISSING = lab_prerequisites("bios")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING)),
]

NAME = "kvm-hypervisor"
GOOD1, GOOD2, BAD = f"{NAME}/1.0", f"{NAME}/2.0", f"{NAME}/3.0"
NODES = {"n1": "52:54:00:52:00:01", "n2": "52:54:00:52:00:02", "n3": "52:54:00:52:00:03"}
GUEST_MEMORY_MB = 1024
# About 175-240 s to ready on a loaded 2-core TCG host (images/README.md); two guests at once
# and other jobs' QEMU on the same cores: a generous bound per phase.
PHASE_TIMEOUT = 1200.0
BROKEN_PATH = "/proc/netbootd-cannot-write-here"
# Version 3.0's first-boot config carries a module that fails on every node.
USER_DATA = """{% include "nocloud-user-data.j2" %}
{% if build.version == "3.0" %}
write_files:
  - path: """ + BROKEN_PATH + """
    content: "this module fails"
{% endif %}
"""


@dataclass
class Fleet:
    lab: Lab
    work: Path
    config: Path
    state_db: Path
    netbootd: NetbootdProcess | None = None
    guests: dict[str, QemuGuest] = field(default_factory=dict)
    boots: dict[str, float] = field(default_factory=dict)  # seconds to the report, per boot

    def cli(self, *args: str) -> Any:
        proc = subprocess.run([sys.executable, "-m", "netbootd", *args, "--config",
                               str(self.config), "--json"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"netbootd {' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout)

    def power_on(self, node: str, boot: str) -> None:
        old = self.guests.pop(node, None)
        if old is not None:
            old.kill()
        self.guests[node] = self.lab.start_qemu(f"{node}-{boot}", firmware="bios",
                                                mac=NODES[node], memory_mb=GUEST_MEMORY_MB)

    def until(self, rid: int, ok: Callable[[dict[str, Any]], bool],
              what: str) -> dict[str, Any]:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            r = self.cli("rollout", "status", str(rid))
            if ok(r):
                return r  # type: ignore[no-any-return]
            assert self.netbootd is not None and self.netbootd.proc.poll() is None, \
                "netbootd exited"
            for name, g in self.guests.items():
                assert g.running(), f"{name} exited:\n{g.serial_text()[-3000:]}"
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{g.serial_text()[-2000:]}"
                                  for n, g in self.guests.items())
                raise AssertionError(f"rollout {rid}: not {what} within {PHASE_TIMEOUT:.0f} "
                                     f"s: {r}\n{tails}")
            time.sleep(2.0)

    def report(self, node: str, after: float) -> dict[str, Any]:
        """The node's ready/failed event after ``after`` (netbootd's events database)."""
        found = [e for e in timeline(self.state_db, NODES[node])
                 if e.kind in ("ready", "failed") and e.ts >= after]
        assert found, f"{node}: no report after {after}"
        return {"kind": found[-1].kind, **found[-1].detail}


def publish(store: Path, version: str) -> None:
    proc = subprocess.run([sys.executable, str(KVM_RECIPE), "--store", str(store), "--version",
                           version, "--cache", str(DEFAULT_CACHE)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def fleet(kvm_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # The session's store holds 1.0; 2.0 and 3.0 are the same files under new versions
    # (the store deduplicates them), so no image is built twice.
    for v in ("2.0", "3.0"):
        if not (kvm_store / "builds" / NAME / v).exists():
            publish(kvm_store, v)
    work = tmp_path_factory.mktemp("rollout")
    templates = work / "templates"
    templates.mkdir()
    (templates / "fleet-user-data.j2").write_text(USER_DATA)
    with Lab() as lab:
        config = work / "netbootd.toml"
        config.write_text(toml_dump({
            "server": {"address": lab.server_ip, "interface": lab.bridge,
                       "state_dir": str(work / "state"), "store_dir": str(kvm_store),
                       "templates_dir": str(templates)},
            "admin": {"enabled": False},
            "groups": {"fleet": {"default": True, "channel": "kvm-stable",
                                 "user_data": "fleet-user-data.j2",
                                 "vars": {"power_state": "none"}}},
            "nodes": {n: {"mac": m, "hostname": n} for n, m in NODES.items()},
        }))
        state_db = work / "state" / "state.sqlite3"
        f = Fleet(lab, work, config, state_db)
        f.cli("channel", "set", "kvm-stable", GOOD1)
        f.netbootd = start_netbootd(lab, ["serve", "--config", str(config)], work, state_db)
        try:
            yield f
        finally:
            for g in f.guests.values():
                g.kill()
            print("boots (s to report):", json.dumps(f.boots))


def test_a_good_build_reaches_all_three_and_the_channel_moves(fleet: Fleet) -> None:
    r = fleet.cli("rollout", "start", "kvm-stable", GOOD2, "--canary", "1", "--batch", "2",
                  "--ready-within", "30m", "--max-failed", "1", "--yes")
    rid = r["id"]
    assert r["batches"] == [["n1"], ["n2", "n3"]] and r["phase"] == "running"
    t0 = time.time()
    fleet.power_on("n1", "a")
    r = fleet.until(rid, lambda r: r["batch_index"] == 1 or r["phase"] != "running",
                    "past the canary")
    assert r["phase"] == "running", r
    assert r["node_states"]["n1"]["status"] == "ready"
    fleet.boots["n1 2.0"] = round(r["node_states"]["n1"]["at"] - t0, 1)
    t1 = time.time()
    for n in ("n2", "n3"):
        fleet.power_on(n, "a")
    r = fleet.until(rid, lambda r: r["phase"] != "running", "finished")
    assert r["phase"] == "done", r
    for n in ("n2", "n3"):
        assert r["node_states"][n]["status"] == "ready"
        fleet.boots[f"{n} 2.0"] = round(r["node_states"][n]["at"] - t1, 1)
    assert fleet.cli("channel", "list")["kvm-stable"] == GOOD2
    for n in NODES:
        rep = fleet.report(n, t0)
        assert (rep["kind"], rep["build"], rep["hostname"]) == ("ready", GOOD2, n), rep
        shown = fleet.cli("node", "show", n)
        assert shown["seen"]["current_build"] == GOOD2
        assert shown["next"]["build"] == GOOD2  # the channel itself now


def test_a_build_whose_first_boot_fails_stops_at_the_canary_and_reverts_it(
        fleet: Fleet) -> None:
    assert fleet.cli("channel", "list")["kvm-stable"] == GOOD2  # the good rollout ran first
    r = fleet.cli("rollout", "start", "kvm-stable", BAD, "--canary", "1", "--batch", "2",
                  "--ready-within", "30m", "--yes")
    rid = r["id"]
    assert fleet.cli("node", "show", "n1")["next"]["why"].endswith(
        f"rollout {rid}, batch 0")
    assert fleet.cli("node", "show", "n2")["next"]["build"] == GOOD2
    t0 = time.time()
    fleet.power_on("n1", "b")
    r = fleet.until(rid, lambda r: r["phase"] != "running", "stopped")
    assert r["phase"] == "stopped", r
    fleet.boots["n1 3.0 (fails)"] = round(r["node_states"]["n1"]["at"] - t0, 1)
    assert r["node_states"]["n1"]["status"] == "reverted"
    assert "n2" not in r["node_states"] and "n3" not in r["node_states"]
    rep = fleet.report("n1", t0)
    assert (rep["kind"], rep["build"]) == ("failed", BAD), rep
    assert any("write-files" in e or "write_files" in e for e in rep["errors"]), rep
    assert r["reason"].startswith(f"rollout {rid}: node n1 failed: ")
    assert "write" in r["reason"] and "files" in r["reason"]
    assert fleet.cli("channel", "list")["kvm-stable"] == GOOD2
    assert fleet.cli("node", "show", "n1")["next"]["build"] == GOOD2

    # The canary's next boot is the old build again: it fetches 2.0's kernel.
    t1 = time.time()
    fleet.power_on("n1", "c")
    deadline = time.monotonic() + PHASE_TIMEOUT
    kernels: list[str] = []
    while not kernels:
        kernels = [str(e.detail["path"]) for e in timeline(fleet.state_db, NODES["n1"])
                   if e.kind == "http-sent" and e.ts >= t1
                   and str(e.detail.get("path", "")).endswith("/vmlinuz")]
        assert time.monotonic() < deadline, fleet.guests["n1"].serial_text()[-3000:]
        time.sleep(2.0)
    assert kernels[0] == f"/builds/{GOOD2}/vmlinuz"
    fleet.boots["n1 back on 2.0 (to its kernel)"] = round(time.time() - t1, 1)

    history = fleet.cli("channel", "history", "kvm-stable")
    rows = [(h["action"], h["from"], h["to"], h["who"]) for h in history]
    assert rows == [
        ("set", None, GOOD1, rows[0][3]),
        ("rollout-start", GOOD1, GOOD2, "rollout 1"),
        ("set", GOOD1, GOOD2, "rollout 1"),
        ("rollout-start", GOOD2, BAD, f"rollout {rid}"),
        ("rollout-revert", BAD, GOOD2, f"rollout {rid}"),
    ], rows
    assert history[2]["why"] == f"rollout 1: 3 of 3 nodes ready on {GOOD2}"
    assert history[4]["why"] == r["reason"]
