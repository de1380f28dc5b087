"""The fleet lab alone (no QEMU): every server namespace reaches every other through the
router, the relay runs, and teardown leaves no namespace and no process behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from netbootd.lab.fleet import DHCRELAY, FleetLab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab creates namespaces: needs root"),
    pytest.mark.skipif(not os.path.exists(DHCRELAY), reason=f"{DHCRELAY} (isc-dhcp-relay)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq"),
]


# A TCP connection to a closed port is refused (the peer's RST came back): the two hosts
# reach each other both ways. A timeout or "no route" exits non-zero.
REACH = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=10).close()
except ConnectionRefusedError:
    pass
"""


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_fleet_lab_routes_and_teardown() -> None:
    with FleetLab() as lab:
        made = {h.netns for h in lab.hosts.values()} | {lab.netns, lab.site_netns}
        assert made <= namespaces()
        assert set(lab.hosts) == {"a1", "a2", "e1", "db"}
        assert lab.relay is not None and lab.relay.poll() is None
        # the edge (behind the router) and A's servers, the database host and the site
        # DHCP server reach each other
        pairs = [("e1", lab.host("a1").address), ("a2", lab.host("e1").address),
                 ("e1", lab.host("db").address), ("e1", lab.site_ip),
                 ("a1", lab.router_b)]
        for src, dst in pairs:
            done = lab.exec_on(src, [sys.executable, "-c", REACH, dst])
            assert done.returncode == 0, (src, dst, done.stdout, done.stderr)
        procs = lab.processes
    assert not made & namespaces()
    assert all(p.returncode is not None for p in procs)
