"""The shared database stops during a boot: the node still boots, its events reach the database
once it is back, and an admin change made during the outage is refused (503) and changes
nothing.

Fleet lab (netbootd.lab.fleet) with PostgreSQL on the database host and one server, A1, on
segment A. The database is stopped (by the PID the test started) as soon as the client's first
DHCP answer is in it; the rest of the boot happens with no database. What the node did is read
from its console (the agent prints its phone-home and ready report) while the database is
down, and from the database once it is back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fleet_helpers import pg_events, pg_scalar, start_pg, wait_pg_event

from netbootd.lab.fleet import FleetLab
from netbootd.lab.fleet_servers import server_config, start_server
from netbootd.lab.netlab import lab_prerequisites

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites()), reason="; ".join(lab_prerequisites())),
]

MAC = "52:54:00:f1:0d:01"
CHANNEL = "fleet"
GROUPS = {"default": {"default": True, "channel": CHANNEL,
                      "vars": {"power_state": "poweroff"}}}
BOOT_TIMEOUT = 300.0


def test_database_stopped_during_a_boot(demo_store: Path, tmp_path: Path) -> None:
    with FleetLab(a_servers=("a1",), edge=None) as lab:
        pg = start_pg(lab)
        try:
            config = server_config(lab, "a1", tmp_path / "a1", demo_store, groups=GROUPS,
                                   state={"database": pg.dsn})
            server = start_server(lab, "a1", config, tmp_path / "a1")
            done = server.cli("channel", "set", CHANNEL, "demo/1.0", "--why", "first")
            assert done.returncode == 0, done.stderr
            status, _ = server.admin("GET", "/api/v1/channels")
            assert status == 200

            guest = lab.start_qemu("outage", firmware="bios", mac=MAC)
            wait_pg_event(pg, MAC, "dhcp-offer", 120, guest=guest)
            pg.stop()  # fast shutdown: every connection of the server is cut
            t_down_wall = time.time()
            t_down = time.monotonic()

            # The boot goes on from the last World: the node phones home and reports ready
            # (its console says so: the database cannot).
            guest.wait_for_serial(r"phone-home ok", BOOT_TIMEOUT)
            t_home = time.monotonic()
            # An admin change during the outage: refused, 503
            status, body = server.admin("PUT", f"/api/v1/channels/{CHANNEL}",
                                        {"build": "demo/2.0", "why": "during the outage"})
            assert status == 503, (status, body)
            assert "unreachable" in str(body)
            done = server.cli("channel", "set", CHANNEL, "demo/2.0", "--why", "outage")
            assert done.returncode == 4, (done.returncode, done.stderr)
            guest.wait(120)  # the agent powers off after its report
            assert server.running()
            status, during = server.admin("GET", "/api/v1/status")
            assert status == 200 and during["database"]["up"] is False, during
            assert during["spool"]["events"] > 0, during

            pg.start()
            t_up = time.monotonic()
            # Spooled events are replayed: the whole boot is in the database, in order.
            home = wait_pg_event(pg, MAC, "phone-home", 120)
            ready = wait_pg_event(pg, MAC, "ready", 60, home.id)
            t_replayed = time.monotonic()
            events = pg_events(pg, MAC)
            kinds = [e.kind for e in events]
            assert kinds[0] == "dhcp-offer"
            for kind in ("http-sent", "firstboot", "phone-home", "ready"):
                assert kind in kinds, kinds
            assert [e.id for e in events] == sorted(e.id for e in events)
            assert [e.ts for e in events] == sorted(e.ts for e in events), "replayed in order"
            assert home.detail["build"] == "demo/1.0" and ready.detail.get("build") == "demo/1.0"
            assert pg_scalar(pg, f"SELECT current_build FROM nodes WHERE mac = '{MAC}'") == \
                "demo/1.0"
            # The refused change changed nothing: the channel and its history are as before.
            assert pg_scalar(pg, f"SELECT build FROM channels WHERE name = '{CHANNEL}'") == \
                "demo/1.0"
            assert pg_scalar(pg, "SELECT count(*) FROM channel_history "
                                 f"WHERE channel = '{CHANNEL}'") == "1"
            # counted: every event the server spooled was replayed, none dropped
            deadline = time.monotonic() + 60
            while True:
                status, after = server.admin("GET", "/api/v1/status")
                if after["database"]["up"] and after["spool"]["events"] == 0:
                    break
                assert time.monotonic() < deadline, after
                time.sleep(0.5)
            assert after["events_replayed"] == after["events_spooled"] >= 4, after
            assert after["events_dropped"] == 0, after
            outage_events = [e for e in events if e.ts > t_down_wall]
            assert 0 < len(outage_events) <= after["events_replayed"], (outage_events, after)
            print(f"outage: {after['events_replayed']} events spooled and replayed; "
                  f"{len(events)} events of the boot in PostgreSQL after replay; "
                  f"phone-home {t_home - t_down:.1f} s into the outage; replayed "
                  f"{t_replayed - t_up:.1f} s after the database was back")
        finally:
            pg.close()
