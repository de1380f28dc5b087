"""The lab's site DHCP server (dnsmasq, addresses only) and its IPv6 RA responder.

dnsmasq runs in the site namespace, behind the veth, because netbootd binds udp/67 on the
bridge; the RA responder (:mod:`netbootd.lab.ra`) runs in the lab namespace on br0.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netbootd.lab import ra
from netbootd.lab.base import BRIDGE, SITE_VETH_SITE, LabError, _valid_mac
from netbootd.lab.namespaces import LabNetwork


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file."""

    expires: int
    mac: str
    ip: str
    hostname: str
    client_id: str



class SiteDhcpMixin(LabNetwork):
    """Starts dnsmasq and the RA responder with the lab; reads dnsmasq's leases."""

    def start(self) -> None:
        """Create namespaces, bridge, veth, dnsmasq and the RA responder."""
        t0 = time.monotonic()
        super().start()
        if self.site_dhcp:
            self._start_dnsmasq()
        if self.ra_responder:
            self._start_ra_responder()
        self.timings["lab_setup"] = time.monotonic() - t0

    def _start_dnsmasq(self) -> None:
        cmd = [
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            f"--dhcp-range={self.dhcp_first},{self.dhcp_last},{self.netmask},{self.lease_time}",
            f"--dhcp-leasefile={self.leases_path}",
            f"--interface={SITE_VETH_SITE}",
            "--bind-interfaces",
            "--log-dhcp",
            "--log-facility=-",
            "--user=root",
            f"--pid-file={self.tmpdir / 'dnsmasq.pid'}",
        ]
        if not self.dhcp_ping:
            # dnsmasq pings an address before offering it, which delays every first OFFER
            # by ~3 s; the lab's addresses are known to be free.
            cmd.append("--no-ping")
        if self.site_next_server is not None:
            cmd.append(f"--dhcp-boot=,,{self.site_next_server}")
        log = self._log_file("dnsmasq.log")
        self.dnsmasq = self.run_site(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                raise LabError(f"dnsmasq exited at start: {self.dnsmasq_text()[-800:]}")
            if "DHCP, IP range" in self.dnsmasq_text():
                return
            time.sleep(0.05)
        raise LabError(f"dnsmasq did not report ready: {self.dnsmasq_text()[-800:]}")

    def _start_ra_responder(self) -> None:
        log = self._log_file("ra-responder.log")
        proc = self.run(
            [sys.executable, str(Path(ra.__file__).resolve()), BRIDGE],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"RA responder exited: {self.ra_log.read_text()[-800:]}")
            if "listening" in self.ra_log.read_text():
                return
            time.sleep(0.05)
        raise LabError("RA responder did not start")

    def start_site_dhcp(self) -> None:
        """Start the site DHCP server now, in a lab made with ``site_dhcp=False`` (a second
        DHCP server appearing on the link)."""
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            raise LabError("the site DHCP server is already running")
        self._start_dnsmasq()

    def dnsmasq_text(self) -> str:
        """The site DHCP server's log so far."""
        try:
            return self.dnsmasq_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def leases(self) -> list[Lease]:
        """Current leases from dnsmasq's lease file."""
        try:
            lines = self.leases_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out: list[Lease] = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 5:
                out.append(Lease(int(parts[0]), parts[1].lower(), parts[2], parts[3], parts[4]))
        return out

    def wait_for_lease(self, mac: str, timeout: float) -> Lease:
        """Wait until dnsmasq has leased an address to ``mac``."""
        mac = _valid_mac(mac)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for lease in self.leases():
                if lease.mac == mac:
                    return lease
            time.sleep(0.2)
        raise TimeoutError(
            f"no lease for {mac} within {timeout:.0f} s; dnsmasq log tail: "
            f"{self.dnsmasq_text()[-1000:]!r}"
        )

