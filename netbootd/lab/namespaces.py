"""The lab's network: namespaces, the bridge, the site veth, processes started in them.

:class:`LabNetwork` owns everything that must be torn down (processes by PID, taps, veths,
namespaces, temporary files); the site DHCP server (:mod:`netbootd.lab.site`) and the QEMU
guests (:mod:`netbootd.lab.guests`) build on it, and :class:`netbootd.lab.netlab.Lab` joins
them. Layout and teardown rules: :mod:`netbootd.lab.netlab`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from netbootd.lab.base import (
    BRIDGE,
    SITE_VETH_LAB,
    SITE_VETH_SITE,
    LabError,
    _ip,
    _stop_process,
    _valid_mac,
)
from netbootd.lab.firmware import _base_prerequisites

if TYPE_CHECKING:
    from netbootd.lab.guests import QemuGuest


class LabNetwork:
    """Namespaces, bridge and the processes started in them; use :class:`Lab`."""

    def __init__(
        self,
        subnet: str = "10.77.0.0/24",
        *,
        server_host: int = 1,
        site_host: int = 2,
        dhcp_range: tuple[int, int] = (100, 200),
        site_dhcp: bool = True,
        ra_responder: bool = True,
        lease_time: str = "1h",
        dhcp_ping: bool = False,
        site_next_server: str | None = None,
    ) -> None:
        net = ipaddress.IPv4Network(subnet)
        if net.num_addresses < 8:
            raise LabError(f"subnet {subnet} is too small for a lab")
        self.network = net
        self.server_ip = str(net.network_address + server_host)
        self.site_ip = str(net.network_address + site_host)
        self.dhcp_first = str(net.network_address + dhcp_range[0])
        self.dhcp_last = str(net.network_address + dhcp_range[1])
        for addr in (self.server_ip, self.site_ip, self.dhcp_first, self.dhcp_last):
            if ipaddress.IPv4Address(addr) not in net or addr == str(net.broadcast_address):
                raise LabError(f"address {addr} is not a host address of {subnet}")
        self.prefixlen = net.prefixlen
        self.netmask = str(net.netmask)
        self.bridge = BRIDGE
        self.lease_time = lease_time
        self.site_dhcp = site_dhcp
        self.dhcp_ping = dhcp_ping
        # The site server's siaddr (next-server) in its DHCPACK, without a boot file: how a
        # site points GRUB, which ignores ProxyDHCP, at the netboot server.
        self.site_next_server = site_next_server
        self.ra_responder = ra_responder
        tag = secrets.token_hex(3)
        self.tag = tag
        self.netns = f"nbdlab-{tag}"
        self.site_netns = f"nbdsite-{tag}"
        self.tmpdir: Path = Path(tempfile.mkdtemp(prefix=f"nbdlab-{tag}-"))
        self.leases_path = self.tmpdir / "dnsmasq.leases"
        self.dnsmasq_log = self.tmpdir / "dnsmasq.log"
        self.ra_log = self.tmpdir / "ra-responder.log"
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.guests: list[QemuGuest] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []
        self._taps: list[str] = []
        self._open_files: list[Any] = []
        self._closed = False
        self.timings: dict[str, float] = {}

    # ---- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create the namespaces, the bridge and the veth to the site namespace."""
        missing = _base_prerequisites()
        if missing:
            raise LabError("cannot start the lab, missing: " + "; ".join(missing))
        ns, site = self.netns, self.site_netns
        for name in (ns, site):
            _ip("netns", "add", name)
            self._namespaces.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            # No IPv6 on any lab link: no DAD, MLD or RS noise from the host side.
            self._sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
            self._sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")
        _ip(
            "-n",
            ns,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        )
        _ip("-n", ns, "addr", "add", f"{self.server_ip}/{self.prefixlen}", "dev", BRIDGE)
        _ip("-n", ns, "link", "set", BRIDGE, "up")
        _ip(
            "-n",
            ns,
            "link",
            "add",
            SITE_VETH_LAB,
            "type",
            "veth",
            "peer",
            "name",
            SITE_VETH_SITE,
            "netns",
            site,
        )
        _ip("-n", ns, "link", "set", SITE_VETH_LAB, "master", BRIDGE, "up")
        _ip("-n", site, "addr", "add", f"{self.site_ip}/{self.prefixlen}", "dev", SITE_VETH_SITE)
        _ip("-n", site, "link", "set", SITE_VETH_SITE, "up")

    def close(self) -> None:
        """Tear everything down: guests and processes (by PID), taps, veths, namespaces, files.

        Safe to call more than once and after a partial start; errors are collected and the
        rest of the teardown still runs.
        """
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        for proc in reversed(self._procs):
            try:
                _stop_process(proc)
            except Exception as exc:  # keep tearing down
                problems.append(f"process {proc.pid}: {exc}")
        for f in self._open_files:
            with contextlib.suppress(Exception):
                f.close()
        existing = set(_ip("netns", "list", check=False).stdout.split())
        for tap in self._taps:
            if self.netns in existing:
                _ip("-n", self.netns, "link", "del", tap, check=False)
        if self.netns in existing:
            _ip("-n", self.netns, "link", "del", SITE_VETH_LAB, check=False)
            _ip("-n", self.netns, "link", "del", BRIDGE, check=False)
        for name in reversed(self._namespaces):
            if name in existing:
                r = _ip("netns", "del", name, check=False)
                if r.returncode != 0:
                    problems.append(f"ip netns del {name}: {r.stderr.strip()}")
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if problems:
            raise LabError("lab teardown incomplete: " + "; ".join(problems))

    # ---- processes -----------------------------------------------------------------------

    def _sysctl(self, netns: str, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        r = subprocess.run(
            ["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise LabError(f"sysctl {key}={value} in {netns}: {r.stderr.strip()}")

    def _spawn(
        self, netns: str, cmd: Sequence[str | os.PathLike[str]], **popen_kw: Any
    ) -> subprocess.Popen[Any]:
        if self._closed:
            raise LabError("the lab is closed")
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        popen_kw.setdefault("start_new_session", True)
        full = ["ip", "netns", "exec", netns, *[os.fspath(c) for c in cmd]]
        proc: subprocess.Popen[Any] = subprocess.Popen(full, **popen_kw)
        self._procs.append(proc)
        return proc

    def run(self, cmd: Sequence[str | os.PathLike[str]], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside the lab namespace (where br0 and the server address live).

        Keyword arguments go to ``subprocess.Popen``. The process is tracked and ended at
        teardown; ``ip netns exec`` execs into ``cmd``, so ``.pid`` is the command's PID.
        """
        return self._spawn(self.netns, cmd, **popen_kw)

    def run_site(
        self, cmd: Sequence[str | os.PathLike[str]], **popen_kw: Any
    ) -> subprocess.Popen[Any]:
        """Like :meth:`run`, in the site namespace (10.77.0.2, where dnsmasq runs)."""
        return self._spawn(self.site_netns, cmd, **popen_kw)

    @property
    def processes(self) -> list[subprocess.Popen[Any]]:
        """Every process this lab started (dnsmasq, RA responder, guests, :meth:`run`)."""
        return list(self._procs)

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        """End one process started by this lab (SIGTERM, then SIGKILL)."""
        if proc not in self._procs:
            raise LabError(f"process {proc.pid} was not started by this lab")
        _stop_process(proc)

    def _log_file(self, name: str) -> Any:
        f = (self.tmpdir / name).open("wb")
        self._open_files.append(f)
        return f

    # ---- client namespaces ---------------------------------------------------------------

    def add_client_netns(self, name: str, mac: str, address: str | None = None) -> str:
        """A namespace of its own on br0 for a DHCP client program (udhcpc, dhclient,
        perfdhcp), so it configures nothing of the host's; its link is ``eth0`` with ``mac``
        (and ``address``, ``a.b.c.d/len``, if given). Deleted at teardown; the namespace name.
        """
        if not re.fullmatch(r"[a-z0-9]{1,8}", name):
            raise LabError(f"bad client name {name!r}: 1-8 of [a-z0-9]")
        netns = f"nbdcl-{self.tag}-{name}"
        veth = f"vc-{name}"
        _ip("netns", "add", netns)
        self._namespaces.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        self._sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1")
        self._sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1")
        _ip("-n", self.netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        _ip("-n", self.netns, "link", "set", veth, "master", BRIDGE, "up")
        _ip("-n", netns, "link", "set", "eth0", "address", _valid_mac(mac))
        if address is not None:
            _ip("-n", netns, "addr", "add", address, "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        return netns

    def run_in(self, netns: str, cmd: Sequence[str | os.PathLike[str]],
               **popen_kw: Any) -> subprocess.Popen[Any]:
        """Like :meth:`run`, in a namespace from :meth:`add_client_netns`."""
        if netns not in self._namespaces:
            raise LabError(f"namespace {netns} is not one of this lab's")
        return self._spawn(netns, cmd, **popen_kw)

