"""A lab with two client segments, a router with a real DHCP relay, and several netbootd servers.

Used by the fleet end-to-end tests; needs root. Layout (``<t>`` is a random tag)::

    nbdsite-<t>  dnsmasq 10.78.1.2: plain DHCP, pools for A (.1.100-199) and B (.2.100-199)
        │ veth
    nbdlab-<t>   the router: br0 = segment A 10.78.1.254/24, br1 = segment B 10.78.2.254/24,
        │        vedge 10.78.3.1/24 (the edge's link), IPv4 forwarding on, an RA responder on
        │        each bridge, dhcrelay: B's broadcasts -> the site server AND the edge netbootd
        ├── br0 ── nbdsrv-<t>-a1 10.78.1.11   netbootd (ProxyDHCP on A)
        │     ├─── nbdsrv-<t>-a2 10.78.1.12   netbootd (ProxyDHCP on A)
        │     ├─── nbdsrv-<t>-db 10.78.1.5    the database's host
        │     └─── tap ── QEMU client on A
        ├── br1 ── tap ── QEMU client on B (every DHCP packet of it goes through the relay)
        └── vedge ── nbdsrv-<t>-e1 10.78.3.11 netbootd, the edge serving B

The edge sits on a link of its own behind the router, so it hears B's clients only through
the relay: its ProxyDHCP offers go back to the relay's address (giaddr) and the client's
TFTP, HTTP and port-4011 traffic is routed. Every server namespace has a default route via the
router, so any server reaches any other and the database.

The site server picks the pool of a relayed request by its giaddr (dnsmasq does that for any
``dhcp-range`` that is not on one of its own links) and names the relay as the router.

Everything is torn down by :meth:`FleetLab.close`, as with :class:`netbootd.lab.netlab.Lab`:
processes by PID (SIGTERM, then SIGKILL), then the namespaces, which takes their links along.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.lab import ra
from netbootd.lab.base import SITE_VETH_SITE, LabError, _ip
from netbootd.lab.guests import GuestsMixin
from netbootd.lab.site import SiteDhcpMixin

BRIDGE_B = "br1"
EDGE_VETH_ROUTER = "vedge"
DHCRELAY = "/usr/sbin/dhcrelay"


@dataclass(frozen=True)
class ServerHost:
    """A namespace of its own for one server: its link is ``eth0`` with ``address``."""

    name: str
    netns: str
    address: str
    prefixlen: int


class FleetLab(GuestsMixin, SiteDhcpMixin):
    """Two segments, a router with dhcrelay, and server namespaces; use as a context manager.

    ``a_servers`` names the server namespaces on segment A (and ``db``, the database's
    host, when ``db_host``); ``edge`` the one on the edge link. Guests join A with
    ``bridge="br0"`` (the default) and B with ``bridge=BRIDGE_B``.
    """

    def __init__(self, prefix: str = "10.78", *, a_servers: Sequence[str] = ("a1", "a2"),
                 edge: str | None = "e1", db_host: bool = True,
                 lease_time: str = "1h") -> None:
        super().__init__(f"{prefix}.1.0/24", server_host=254, site_host=2,
                         dhcp_range=(100, 199), lease_time=lease_time)
        self.router_a = self.server_ip
        self.net_b = ipaddress.IPv4Network(f"{prefix}.2.0/24")
        self.router_b = f"{prefix}.2.254"
        self.net_edge = ipaddress.IPv4Network(f"{prefix}.3.0/24")
        self.router_edge = f"{prefix}.3.1"
        self.b_first, self.b_last = f"{prefix}.2.100", f"{prefix}.2.199"
        self._a_names = list(a_servers)
        self._edge_name = edge
        self._db_host = db_host
        self.hosts: dict[str, ServerHost] = {}
        self.relay: subprocess.Popen[Any] | None = None
        self.firstboot_key = self.tmpdir / "firstboot.key"
        names = [*self._a_names, *([edge] if edge else []), *(["db"] if db_host else [])]
        if len(set(names)) != len(names) or not all(n.isalnum() and len(n) <= 6 for n in names):
            raise LabError(f"server names must be distinct, alphanumeric, <= 6 chars: {names}")

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Router, both segments, site DHCP, the server namespaces, RA responders, the relay."""
        super().start()  # router namespace with br0 (A), the site veth, dnsmasq, RA on br0
        rt = self.netns
        _ip("-n", rt, "link", "add", BRIDGE_B, "type", "bridge", "stp_state", "0",
            "forward_delay", "0", "mcast_snooping", "0")
        _ip("-n", rt, "addr", "add", f"{self.router_b}/{self.net_b.prefixlen}", "dev", BRIDGE_B)
        _ip("-n", rt, "link", "set", BRIDGE_B, "up")
        self._sysctl(rt, "net.ipv4.ip_forward", "1")
        # The site server answers relayed requests at the relay's B address (giaddr).
        _ip("-n", self.site_netns, "route", "add", "default", "via", self.router_a)
        # One key for every server: a token one of them signs is accepted by any other.
        self.firstboot_key.write_bytes(secrets.token_bytes(32))
        os.chmod(self.firstboot_key, 0o600)
        for i, name in enumerate(self._a_names):
            self._add_host(name, f"{self.network.network_address + 11 + i}", bridge="br0")
        if self._db_host:
            self._add_host("db", f"{self.network.network_address + 5}", bridge="br0")
        if self._edge_name:
            self._add_edge_host(self._edge_name)
        self._start_ra(BRIDGE_B)
        self._start_relay()

    def _add_host(self, name: str, address: str, *, bridge: str) -> ServerHost:
        netns = f"nbdsrv-{self.tag}-{name}"
        veth = f"vh-{name}"
        self._new_netns(netns)
        _ip("-n", self.netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        _ip("-n", self.netns, "link", "set", veth, "master", bridge, "up")
        host = ServerHost(name, netns, address, self.prefixlen)
        _ip("-n", netns, "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.router_a)
        self.hosts[name] = host
        return host

    def _add_edge_host(self, name: str) -> ServerHost:
        netns = f"nbdsrv-{self.tag}-{name}"
        self._new_netns(netns)
        plen = self.net_edge.prefixlen
        _ip("-n", self.netns, "link", "add", EDGE_VETH_ROUTER, "type", "veth", "peer", "name",
            "eth0", "netns", netns)
        _ip("-n", self.netns, "addr", "add", f"{self.router_edge}/{plen}", "dev",
            EDGE_VETH_ROUTER)
        _ip("-n", self.netns, "link", "set", EDGE_VETH_ROUTER, "up")
        address = str(self.net_edge.network_address + 11)
        _ip("-n", netns, "addr", "add", f"{address}/{plen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.router_edge)
        host = ServerHost(name, netns, address, plen)
        self.hosts[name] = host
        return host

    def _new_netns(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self._namespaces.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        self._sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1")
        self._sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1")

    def _start_dnsmasq(self) -> None:
        # As the single-segment lab's, plus B's pool: dnsmasq serves a range that is on none
        # of its links only to requests relayed from it (giaddr in the range's subnet).
        cmd = [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
            f"--dhcp-range={self.dhcp_first},{self.dhcp_last},{self.netmask},{self.lease_time}",
            f"--dhcp-range={self.b_first},{self.b_last},{self.net_b.netmask},{self.lease_time}",
            f"--dhcp-leasefile={self.leases_path}", f"--interface={SITE_VETH_SITE}",
            "--bind-interfaces", "--log-dhcp", "--log-facility=-", "--user=root", "--no-ping",
            f"--pid-file={self.tmpdir / 'dnsmasq.pid'}",
        ]
        log = self._log_file("dnsmasq.log")
        self.dnsmasq = self.run_site(cmd, stdout=log, stderr=subprocess.STDOUT)
        self._wait_log(self.dnsmasq, self.dnsmasq_log, "DHCP, IP range", "dnsmasq")

    def _start_ra(self, ifname: str) -> None:
        logname = f"ra-{ifname}.log"
        proc = self.run([sys.executable, str(Path(ra.__file__).resolve()), ifname],
                        stdout=self._log_file(logname), stderr=subprocess.STDOUT)
        self._wait_log(proc, self.tmpdir / logname, "listening", f"RA responder on {ifname}")

    def _start_relay(self) -> None:
        """dhcrelay in the router: B's DHCP broadcasts go to the site server and the edge.

        ``-id`` is where clients are (B), ``-iu`` where servers are (A and the edge's link);
        relayed requests carry giaddr = the router's B address, and replies come back there.
        """
        if not Path(DHCRELAY).exists():
            raise LabError(f"{DHCRELAY} not found (apt-get install -y isc-dhcp-relay)")
        targets = [self.site_ip]
        iu = ["-iu", "br0"]
        if self._edge_name:
            targets.append(self.hosts[self._edge_name].address)
            iu += ["-iu", EDGE_VETH_ROUTER]
        logname = "dhcrelay.log"
        self.relay = self.run([DHCRELAY, "-d", "-4", "-pf", str(self.tmpdir / "dhcrelay.pid"),
                               "-id", BRIDGE_B, *iu, *targets],
                              stdout=self._log_file(logname), stderr=subprocess.STDOUT)
        # dhcrelay prints its interfaces once its sockets are open
        self._wait_log(self.relay, self.tmpdir / logname, f"/{BRIDGE_B}", "dhcrelay")

    def _wait_log(self, proc: subprocess.Popen[Any], log: Path, marker: str, what: str,
                  timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            if marker in text:
                return
            if proc.poll() is not None:
                raise LabError(f"{what} exited at start: {text[-800:]}")
            if time.monotonic() > deadline:
                raise LabError(f"{what} did not report ready: {text[-800:]}")
            time.sleep(0.05)

    # ---- processes and commands in the server namespaces ---------------------------------

    def host(self, name: str) -> ServerHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no server namespace {name!r} (have {sorted(self.hosts)})") from None

    def run_on(self, name: str, cmd: Sequence[str | os.PathLike[str]],
               **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in server namespace ``name``; tracked and ended at teardown."""
        return self._spawn(self.host(name).netns, cmd, **popen_kw)

    def exec_on(self, name: str, cmd: Sequence[str | os.PathLike[str]],
                timeout: float = 60.0, **run_kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` to its end in server namespace ``name`` (text output captured)."""
        full = ["ip", "netns", "exec", self.host(name).netns, *[os.fspath(c) for c in cmd]]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              check=False, **run_kw)

    def relay_text(self) -> str:
        """dhcrelay's output so far (for failure messages)."""
        log = self.tmpdir / "dhcrelay.log"
        return log.read_text(errors="replace") if log.exists() else ""
