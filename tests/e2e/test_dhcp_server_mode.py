"""Server mode on an isolated lab network: netbootd is the only DHCP server on the link.

The lab has no site dnsmasq (``Lab(site_dhcp=False)``). Independent clients get leases from
netbootd: busybox udhcpc and ISC dhclient, each in a namespace of its own on the lab bridge
(their scripts configure only that namespace; lease and pid files in the test's temp dir), a
QEMU guest that PXE-boots the demo appliance to phone-home with netbootd's addresses, and
perfdhcp doing full DORA exchanges at 1000/s. Leases survive a netbootd restart. A second
DHCP server on the link makes server mode refuse to start (exit code 3).

Assertions read netbootd's state (its lease and state databases, `netbootd node show`, the
admin API, /metrics) or what the client itself was told, never netbootd's log.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import LabServer
from netbootd.dhcp.server import Lease
from netbootd.lab.demo import NetbootdProcess, lab_config, start_netbootd
from netbootd.lab.netlab import Lab, lab_prerequisites
from netbootd.state.leases import LeaseDB

MISSING = lab_prerequisites() + [f"{tool} not installed" for tool in
                                 ("busybox", "dhclient", "perfdhcp", "curl")
                                 if not __import__("shutil").which(tool)]
pytestmark = [pytest.mark.e2e, pytest.mark.needs_root, pytest.mark.timeout(900),
              pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))]

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.77.0.0/16"  # room for perfdhcp's thousands of clients
POOL_FIRST, POOL_LAST = "10.77.1.1", "10.77.250.254"
PXE_MAC, PXE_IP = "52:54:00:d5:00:01", "10.77.0.20"
UEFI_MAC = "52:54:00:d5:00:07"  # no reservation: a dynamic address from the pool
UDHCPC_MAC = "52:54:00:d5:00:02"
DHCLIENT_MAC = "52:54:00:d5:00:03"
PERF_ADDR = "10.77.0.250"
LEASE_TIME = 600
CLIENT_SCRIPT = """#!/bin/sh
# Records what the DHCP client was told and configures its own namespace's eth0 only.
env | sort > "{out}/$1$reason.env"
case "$1$reason" in
  bound|renew|BOUND|REBOOT|RENEW|REBIND)
    addr="${{ip:-$new_ip_address}}"; mask="${{mask:-$new_subnet_mask}}"
    ip addr flush dev eth0; ip addr add "$addr/${{mask:-16}}" dev eth0 ;;
esac
exit 0
"""


@dataclass
class Served:
    lab: Lab
    nb: NetbootdProcess
    work: Path
    config: Path

    @property
    def leases_db(self) -> Path:
        return self.work / "state" / "leases.sqlite3"

    def restart(self) -> None:
        self.lab.stop(self.nb.proc)
        self.nb = start_netbootd(self.lab, ["serve", "--config", str(self.config)], self.work,
                                 self.nb.state_db, timeout=60)

    def lease_of(self, mac: str, timeout: float = 30.0) -> Lease:
        """netbootd's bound lease of ``mac`` (polled: leases are written behind)."""
        deadline = time.monotonic() + timeout
        while True:
            db = LeaseDB.open_readonly(self.leases_db)
            if db is not None:
                try:
                    bound = [x for x in db.for_macs([mac]) if x.state == "bound"]
                finally:
                    db.close()
                if bound:
                    return bound[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"netbootd has no bound lease for {mac}")
            time.sleep(0.2)

    def node_show(self, name: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "netbootd", "node", "show", name,
                               "--config", str(self.config), "--json"],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def api(self, path: str) -> Any:
        token = (self.work / "state" / "admin.token").read_text().strip()
        proc = self.lab.run(["curl", "-sf", "-H", f"Authorization: Bearer {token}",
                             f"http://127.0.0.1:8081/api/v1{path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out)

    def metric(self, name: str, **labels: str) -> float:
        proc = self.lab.run(["curl", "-sf", f"http://{self.lab.server_ip}:8080/metrics"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.escape(f"netbootd_{name}_total") + (re.escape("{" + want + "}")
                                                          if want else "") + r" ([0-9.e+]+)"
        m = re.search(pattern, out)
        return float(m.group(1)) if m else 0.0


def server_mode_config(lab: Lab, work: Path, store: Path, **dhcp: Any) -> Path:
    return lab_config(lab, work, store, groups={
        "default": {"default": True, "build": "demo/1.0", "vars": {"power_state": "poweroff"}},
    }, nodes={
        "srv1": {"mac": PXE_MAC, "ip": PXE_IP, "hostname": "srv1"},
        "uefi1": {"mac": UEFI_MAC, "hostname": "uefi1"},
        "udh1": {"mac": UDHCPC_MAC, "mode": "local"},
        "dhc1": {"mac": DHCLIENT_MAC, "hostname": "dhc1", "mode": "local"},
    }, dhcp={"mode": "server", "max_leases": 20000, "pools": {"lab": {
        "subnet": SUBNET, "range": [POOL_FIRST, POOL_LAST], "router": lab.server_ip,
        "dns": [lab.server_ip], "domain": "lab.test", "lease_time": LEASE_TIME}}, **dhcp})


@pytest.fixture(scope="module")
def served(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("server-mode")
    with Lab(SUBNET, site_dhcp=False) as lab:
        config = server_mode_config(lab, work, demo_store)
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work,
                            work / "state" / "state.sqlite3", timeout=60)
        yield Served(lab, nb, work, config)


def client_dir(served: Served, name: str) -> Path:
    out = served.work / name
    out.mkdir()
    script = out / "script.sh"
    script.write_text(CLIENT_SCRIPT.format(out=out))
    script.chmod(0o755)
    return out


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def wait_for(path: Path, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} not written within {timeout} s"
        assert proc.poll() is None or path.exists(), f"client exited with {proc.returncode}"
        time.sleep(0.1)


def test_udhcpc_gets_a_lease_with_every_option(served: Served) -> None:
    out = client_dir(served, "udhcpc")
    netns = served.lab.add_client_netns("udh", UDHCPC_MAC)
    proc = served.lab.run_in(netns, ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
                                     "-t", "10", "-T", "2", "-s", str(out / "script.sh")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=120) == 0
    env = read_env(out / "bound.env")
    lease = served.lease_of(UDHCPC_MAC)
    assert env["ip"] == lease.ip and lease.pool == "lab"
    assert env["subnet"] == "255.255.0.0" and env["router"] == served.lab.server_ip
    assert env["dns"].split() == [served.lab.server_ip] and env["domain"] == "lab.test"
    assert env["hostname"] == "udh1" and env["lease"] == str(LEASE_TIME)
    assert env["serverid"] == served.lab.server_ip


def test_dhclient_lease_survives_a_restart_and_is_released(served: Served) -> None:
    out = client_dir(served, "dhclient")
    netns = served.lab.add_client_netns("dhc", DHCLIENT_MAC)
    conf = out / "dhclient.conf"
    conf.write_text("request subnet-mask, routers, domain-name-servers, domain-name, "
                    "host-name, dhcp-lease-time;\n")

    def dhclient(*args: str, pid: str) -> subprocess.Popen[Any]:
        return served.lab.run_in(netns, ["dhclient", "-4", "-v", "-sf", str(out / "script.sh"),
                                         "-lf", str(out / "leases"), "-pf", str(out / pid),
                                         "-cf", str(conf), *args, "eth0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    first = dhclient("-d", "-1", pid="first.pid")
    wait_for(out / "BOUND.env", first)
    served.lab.stop(first)
    env = read_env(out / "BOUND.env")
    lease = served.lease_of(DHCLIENT_MAC)
    assert env["new_ip_address"] == lease.ip
    assert env["new_host_name"] == "dhc1" and env["new_domain_name"] == "lab.test"
    assert env["new_routers"] == served.lab.server_ip
    assert env["new_dhcp_lease_time"] == str(LEASE_TIME)
    shown = served.node_show("dhc1")
    assert shown["lease"]["ip"] == lease.ip and shown["lease"]["active"]

    served.restart()
    # INIT-REBOOT from the lease file: the same address, re-ACKed from the persisted lease.
    second = dhclient("-d", "-1", pid="second.pid")
    wait_for(out / "REBOOT.env", second)
    served.lab.stop(second)
    assert read_env(out / "REBOOT.env")["new_ip_address"] == lease.ip
    assert served.node_show("dhc1")["lease"]["ip"] == lease.ip
    assert served.api("/nodes/dhc1")["lease"]["ip"] == lease.ip
    assert served.metric("dhcp_server_replies", type="ack") >= 1

    release = dhclient("-r", pid="release.pid")
    assert release.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while served.node_show("dhc1")["lease"]["state"] != "released":
        assert time.monotonic() < deadline, "netbootd never recorded the RELEASE"
        time.sleep(0.2)
    assert served.metric("dhcp_server_silent", reason="released") == 1


def test_pxe_guest_boots_to_phone_home_on_netbootds_addresses(served: Served) -> None:
    home, events = LabServer(served.lab, served.nb).boot("srv-bios", "bios", PXE_MAC)
    assert home.detail["hostname"] == "srv1" and home.detail["build"] == "demo/1.0"
    offer = next(e for e in events if e.kind == "dhcp-offer")
    assert offer.detail["bootfile"] == "bios/lpxelinux.0" and offer.detail["node"] == "srv1"
    assert served.lease_of(PXE_MAC).ip == PXE_IP
    assert served.node_show("srv1")["lease"]["ip"] == PXE_IP


@pytest.mark.skipif(lab_prerequisites("uefi") != [], reason="; ".join(lab_prerequisites("uefi")))
def test_uefi_guest_boots_on_a_dynamic_address(served: Served) -> None:
    home, events = LabServer(served.lab, served.nb).boot("srv-uefi", "uefi", UEFI_MAC)
    assert home.detail["hostname"] == "uefi1" and home.detail["build"] == "demo/1.0"
    offer = next(e for e in events if e.kind == "dhcp-offer")
    # OVMF sends arch 7 (EFI BC): the efi64 loader.
    assert offer.detail["bootfile"] == "efi64/syslinux.efi" and offer.detail["arch"] == "efi_bc"
    lease = served.lease_of(UEFI_MAC)
    assert lease.pool == "lab" and ipaddress.IPv4Address(lease.ip) in ipaddress.IPv4Network(
        SUBNET) and ipaddress.IPv4Address(POOL_FIRST) <= ipaddress.IPv4Address(lease.ip)
    assert served.node_show("uefi1")["lease"]["ip"] == lease.ip


def test_perfdhcp_full_exchanges_at_1000_per_second_get_no_nak(served: Served) -> None:
    netns = served.lab.add_client_netns("perf", "52:54:00:d5:00:fe", f"{PERF_ADDR}/16")
    naks_before = served.metric("dhcp_server_replies", type="nak")
    acks_before = served.metric("dhcp_server_replies", type="ack")
    # perfdhcp talks to the server address from udp/67 as a relay (giaddr = its address).
    proc = served.lab.run_in(netns, ["perfdhcp", "-4", "-r", "1000", "-p", "4", "-R", "4000",
                                     "-l", PERF_ADDR, "-L", "67", "-W", "2000000",
                                     served.lab.server_ip],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (0, 3), stderr
    print(stdout)
    # perfdhcp counts a NAK as a rejected lease, per exchange (DISCOVER-OFFER, REQUEST-ACK).
    assert re.findall(r"rejected leases: (\d+)", stdout) == ["0", "0"], stdout
    naks = served.metric("dhcp_server_replies", type="nak") - naks_before
    acks = served.metric("dhcp_server_replies", type="ack") - acks_before
    assert naks == 0
    assert acks >= 0.9 * 4 * 1000, stdout


def test_a_second_dhcp_server_on_the_link_stops_server_mode(demo_store: Path,
                                                            tmp_path: Path) -> None:
    with Lab() as lab:  # with the site dnsmasq on the link
        config = server_mode_config(lab, tmp_path, demo_store)
        proc = lab.run([sys.executable, "-m", "netbootd", "serve", "--config", str(config)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 3, stderr
        assert f"another DHCP server answers on {lab.bridge}: {lab.site_ip}" in stderr
        assert "Traceback" not in stderr
        # Nothing was served: no lease database was made.
        assert not (tmp_path / "state" / "leases.sqlite3").exists()
