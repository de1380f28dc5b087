"""Several servers, one fleet: shared PostgreSQL, an edge behind a DHCP relay pulling builds
from an origin by content address, a rollback issued on another server.

The fleet lab (netbootd.lab.fleet): PostgreSQL (Debian's, started by the test as the
``postgres`` user) on the database host; A1 (the origin, builds imported into its store) and
A2 on segment A; the edge E behind the router, with ``[origin] url`` -> A1 and an empty store
of its own. A BIOS client on segment B reaches E only through dhcrelay. Every assertion reads
the shared database (events, nodes, channel history), E's cache on disk or the guest.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet_helpers import last_pg_event_id, pg_events, start_pg, wait_pg_event

from netbootd.lab.fleet import BRIDGE_B, FleetLab
from netbootd.lab.fleet_servers import FleetServer, http_request, server_config, start_server
from netbootd.lab.netlab import lab_prerequisites
from pgserver import PgServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites()), reason="; ".join(lab_prerequisites())),
]

MAC = "52:54:00:f1:0e:01"
CHANNEL = "fleet"
GROUPS = {"default": {"default": True, "channel": CHANNEL,
                      "vars": {"power_state": "poweroff"}}}
BOOT_TIMEOUT = 300.0


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fleet_edge_rollback_and_origin_loss(demo_store: Path, tmp_path: Path) -> None:
    with FleetLab() as lab:
        pg = start_pg(lab)
        try:
            run_fleet(lab, pg, demo_store, tmp_path)
        finally:
            pg.close()


def run_fleet(lab: FleetLab, pg: PgServer, demo_store: Path, tmp_path: Path) -> None:
    state = {"database": pg.dsn}
    store_a, store_e = tmp_path / "store-a", tmp_path / "store-e"
    origin_url = f"http://{lab.host('a1').address}:8080"
    configs = {
        "a1": server_config(lab, "a1", tmp_path / "a1", store_a, groups=GROUPS, state=state),
        "a2": server_config(lab, "a2", tmp_path / "a2", store_a, groups=GROUPS, state=state),
        "e1": server_config(lab, "e1", tmp_path / "e1", store_e, groups=GROUPS, state=state,
                            origin={"url": origin_url, "cache_max": "256MiB", "poll": 0.5}),
    }

    def cli(name: str, *args: str) -> str:
        return ok(lab.exec_on(name, [sys.executable, "-m", "netbootd", *args,
                                     "--config", str(configs[name])], timeout=180))

    for v in ("1.0", "2.0"):  # imported into the origin's store, as an admin would
        cli("a1", "image", "import", "--kind", "tree", str(demo_store / "builds/demo" / v))
    cli("a1", "channel", "set", CHANNEL, "demo/1.0", "--why", "first")
    cli("a1", "channel", "set", CHANNEL, "demo/2.0", "--why", "upgrade")
    servers: dict[str, FleetServer] = {
        name: start_server(lab, name, configs[name], tmp_path / name) for name in configs}
    edge = servers["e1"]

    def boot_on_b(step: str, expected: str) -> str:
        after = last_pg_event_id(pg, MAC)
        t0 = time.time()
        guest = lab.start_qemu(f"b-{step}", firmware="bios", mac=MAC, bridge=BRIDGE_B)
        try:
            home = wait_pg_event(pg, MAC, "phone-home", BOOT_TIMEOUT, after, guest)
            wait_pg_event(pg, MAC, "ready", 60, home.id, guest)
        except TimeoutError as e:
            raise AssertionError(f"{step}: {e}\n--- edge log ---\n{edge.log_text()[-3000:]}"
                                 f"\n--- relay ---\n{lab.relay_text()[-1000:]}") from None
        events = pg_events(pg, MAC, after)
        offer = next(e for e in events if e.kind == "dhcp-offer")
        assert offer.detail["build"] == expected, (step, offer.detail)
        sent = [e.detail["path"] for e in events if e.kind == "http-sent"]
        assert sent[-2:] == [f"/builds/{expected}/vmlinuz", f"/builds/{expected}/initrd.img"]
        assert home.detail["build"] == expected and home.detail["claimed_build"] == expected
        print(f"{step}: {expected} phone-home {home.ts - t0:.1f} s after power-on")
        guest.wait(60)
        return guest.serial_text()

    boot_on_b("v2", "demo/2.0")

    # The rollback is issued on A2; E follows it through the shared database.
    cli("a2", "channel", "rollback", CHANNEL, "--why", "v2 is bad", "--yes")
    history = json.loads(cli("a2", "channel", "history", CHANNEL, "--json"))
    assert [(h["action"], h["to"]) for h in history][-1] == ("rollback", "demo/1.0")
    console = boot_on_b("rollback", "demo/1.0")

    # One first-boot key for the fleet: the edge's signed seed URL is honoured by A2 too,
    # and the same URL with its signature changed by neither.
    seed = re.search(r"seed (http://\S+/)", console)
    assert seed is not None, console[-2000:]
    on_a2 = seed.group(1).replace(f"//{edge.host.address}:", f"//{lab.host('a2').address}:")
    status, text = http_request(lab, "a2", "GET", on_a2 + "meta-data")
    assert status == 200 and "instance-id" in text, (status, text)
    forged = re.sub(r"[A-Za-z0-9_-](/)$", lambda m: ("A" if m.group(0)[0] != "A" else "B")
                    + "/", on_a2)
    status, _ = http_request(lab, "a2", "GET", forged + "meta-data")
    assert status == 403, status

    # E served files it pulled: each blob in its cache is named by its content's sha256, and
    # the rolled-back build's kernel and initrd are among them. E imported nothing itself.
    manifest = json.loads((demo_store / "builds/demo/1.0/manifest.json").read_text())
    blobs = {p.name: p for p in (store_e / ".origin" / "blobs" / "sha256").glob("*/*")}
    for name, meta in manifest["files"].items():
        assert meta["sha256"] in blobs, (name, sorted(blobs))
    for digest, path in blobs.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
    assert not (store_e / "builds").exists() or not any((store_e / "builds").iterdir())

    # The origin goes away: E boots the client from its cache.
    servers["a1"].stop()
    boot_on_b("origin-down", "demo/1.0")
    assert edge.running()
    count = int(pg.psql(f"SELECT boot_count FROM nodes WHERE mac = '{MAC}'",
                        dbname=pg.dbname).strip())
    assert count == 3

