"""Two netbootd servers on one segment, one of them SIGKILLed as a client starts to boot.

Both answer ProxyDHCP on segment A of the fleet lab (netbootd.lab.fleet); the test powers on
a BIOS client, kills (SIGKILL, by PID) the server that recorded the client's first DHCP
answer as soon as that is in its state database, and requires the client to boot to its
phone-home and ready report from the other one. SeaBIOS may reboot (``reboot-timeout``) when
the firmware took the dead server's offer, so a failed first attempt is retried. The same lab
boots a client on segment B through the relay from the edge server.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netbootd.lab.demo import timeline, wait_for_event
from netbootd.lab.fleet import BRIDGE_B, FleetLab
from netbootd.lab.fleet_servers import FleetServer, server_config, start_server
from netbootd.lab.netlab import lab_prerequisites
from netbootd.state.events import StateDB

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(lab_prerequisites()), reason="; ".join(lab_prerequisites())),
]

MAC_A = "52:54:00:f1:0a:01"
MAC_B = "52:54:00:f1:0b:01"
BOOT_TIMEOUT = 300.0
GROUPS = {"default": {"default": True, "build": "demo/1.0",
                      "vars": {"power_state": "poweroff"}}}
# On A the loader is iPXE (the QEMU ROM's own: the boot script, kernel and initrd over HTTP):
# when the server it was talking to dies, iPXE gives up within seconds and SeaBIOS reboots
# into a new DHCP exchange. pxelinux instead keeps retrying the dead server's TFTP
# (docs/scaling.md, "Two servers on one segment").
GROUPS_A = {"default": {**GROUPS["default"], "loader": "ipxe"}}


@pytest.fixture(scope="module")
def fleet(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) \
        -> Iterator[tuple[FleetLab, dict[str, FleetServer]]]:
    work = tmp_path_factory.mktemp("fleet-failover")
    with FleetLab(db_host=False) as lab:
        servers = {}
        for name in ("a1", "a2", "e1"):
            config = server_config(lab, name, work / name, demo_store,
                                   groups=GROUPS if name == "e1" else GROUPS_A)
            servers[name] = start_server(lab, name, config, work / name)
        yield lab, servers


def first_dhcp_answer(servers: list[FleetServer], mac: str) -> FleetServer | None:
    """The server whose state database holds the earliest DHCP answer to ``mac``, if any."""
    best: tuple[float, FleetServer] | None = None
    for s in servers:
        if not s.state_db.exists():
            continue
        with StateDB.open_readonly(s.state_db) as db:
            answers = [e for e in db.timeline(mac) if e.kind in ("dhcp-offer", "dhcp-ack")]
        if answers and (best is None or answers[0].ts < best[0]):
            best = (answers[0].ts, s)
    return best[1] if best else None


def test_a_server_killed_as_the_client_boots(fleet: tuple[FleetLab, dict[str, FleetServer]]) \
        -> None:
    lab, servers = fleet
    pair = [servers["a1"], servers["a2"]]
    t0 = time.time()
    guest = lab.start_qemu("fa", firmware="bios", mac=MAC_A, reboot_after_s=1)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        victim = first_dhcp_answer(pair, MAC_A)
        assert time.monotonic() < deadline, f"no DHCP answer recorded:\n{guest.serial_text()}"
        time.sleep(0.02)
    victim.kill()
    t_kill = time.time()
    survivor = pair[1] if victim is pair[0] else pair[0]
    home = wait_for_event(survivor.state_db, MAC_A, "phone-home", BOOT_TIMEOUT, guest=guest)
    ready = wait_for_event(survivor.state_db, MAC_A, "ready", 60, after_id=home.id,
                           guest=guest)
    assert victim.proc.returncode == -9  # it was a crash, not a clean stop
    assert survivor.running()
    assert home.detail["build"] == "demo/1.0" and ready.detail.get("build") == "demo/1.0"
    events = timeline(survivor.state_db, MAC_A)
    kinds = [e.kind for e in events]
    assert "dhcp-offer" in kinds and "http-sent" in kinds, kinds
    # the files of the boot that reached the appliance came from the survivor
    assert [e.detail["path"] for e in events if e.kind == "http-sent"
            and e.detail["path"].startswith("/builds/")][-2:] == \
        ["/builds/demo/1.0/vmlinuz", "/builds/demo/1.0/initrd.img"]
    # what the client saw: how many times its firmware started over (the guest's console)
    starts = guest.serial_text().count("iPXE (http://ipxe.org)")
    print(f"killed {victim.host.name} at its first answer; phone-home from "
          f"{survivor.host.name} {home.ts - t0:.1f} s after power-on (kill at "
          f"+{t_kill - t0:.1f} s); firmware starts: {starts}")
    print("\n".join(line for line in guest.serial_text().splitlines()
                    if any(w in line for w in ("Next server", "Could not", "No bootable",
                                               "http://1", "Connection", "Retrying"))))
    guest.wait(60)


def test_a_client_on_b_boots_through_the_relay(
        fleet: tuple[FleetLab, dict[str, FleetServer]]) -> None:
    lab, servers = fleet
    edge = servers["e1"]
    guest = lab.start_qemu("fb", firmware="bios", mac=MAC_B, bridge=BRIDGE_B)
    home = wait_for_event(edge.state_db, MAC_B, "phone-home", BOOT_TIMEOUT, guest=guest)
    wait_for_event(edge.state_db, MAC_B, "ready", 60, after_id=home.id, guest=guest)
    lease = lab.wait_for_lease(MAC_B, 10)
    assert ipaddress.ip_address(lease.ip) in lab.net_b  # B's pool, chosen by giaddr
    offer = next(e for e in timeline(edge.state_db, MAC_B) if e.kind == "dhcp-offer")
    assert offer.detail["build"] == "demo/1.0"
    # only the edge saw this client: A's servers hear B through nobody
    for name in ("a1", "a2"):
        db = servers[name].state_db
        if db.exists():
            assert timeline(db, MAC_B) == []
    guest.wait(60)
