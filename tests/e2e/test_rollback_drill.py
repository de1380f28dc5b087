"""The rollback drill with a real PXE client (issue 3): channel kvm-stable at v1, boot; set v2,
power-cycle; roll back, power-cycle. Each step asserted from netbootd's state database; the
builds are imported with `netbootd image import` and moved with `netbootd channel`, as an admin
would, while the server runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_helpers import LabServer
from netbootd.lab.demo import lab_config, start_netbootd
from netbootd.lab.netlab import Lab, lab_prerequisites

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites()), reason="; ".join(lab_prerequisites())),
]

MAC = "52:54:00:e2:0d:01"
ROOT = Path(__file__).resolve().parents[2]


def netbootd(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "netbootd", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rollback_drill(demo_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Lab() as lab:
        config = lab_config(lab, tmp_path, store, groups={
            "default": {"default": True, "channel": "kvm-stable",
                        "vars": {"power_state": "poweroff"}}})
        for v in ("1.0", "2.0"):  # the demo recipe's builds, imported like any build
            netbootd(config, "image", "import", "--kind", "tree",
                     str(demo_store / "builds" / "demo" / v))
        netbootd(config, "channel", "set", "kvm-stable", "demo/1.0", "--why", "first")
        nb = start_netbootd(lab, ["serve", "--config", str(config)], tmp_path,
                            tmp_path / "state" / "state.sqlite3")
        server = LabServer(lab, nb)

        def boot(step: str, expected: str) -> None:
            home, events = server.boot(f"drill-{step}", "bios", MAC)
            offer = next(e for e in events if e.kind == "dhcp-offer")
            assert offer.detail["build"] == expected, (step, offer.detail)
            assert [e.detail["path"] for e in events if e.kind == "http-sent"] == \
                [f"/builds/{expected}/vmlinuz", f"/builds/{expected}/initrd.img"]
            assert home.detail["build"] == expected, (step, home.detail)  # its token's
            assert home.detail["claimed_build"] == expected  # and what the image says
            node = server.node(MAC)
            assert node is not None and node.current_build == expected

        boot("v1", "demo/1.0")
        netbootd(config, "channel", "set", "kvm-stable", "demo/2.0", "--why", "upgrade")
        boot("v2", "demo/2.0")
        netbootd(config, "channel", "rollback", "kvm-stable", "--why", "v2 is bad", "--yes")
        boot("rollback", "demo/1.0")
        node = server.node(MAC)
        assert node is not None and node.boot_count == 3

        history = json.loads(netbootd(config, "channel", "history", "kvm-stable", "--json"))
        assert [(h["action"], h["from"], h["to"], h["why"]) for h in history] == [
            ("set", None, "demo/1.0", "first"),
            ("set", "demo/1.0", "demo/2.0", "upgrade"),
            ("rollback", "demo/2.0", "demo/1.0", "v2 is bad")]
        # the server's log shows it picked the changes up without a restart
        assert nb.proc.poll() is None
