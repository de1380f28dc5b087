"""A throw-away virtual boot lab: network namespaces, a bridge, a site DHCP server, QEMU guests.

Used by the demo and the end-to-end tests; needs root. Layout::

    namespace nbdlab-<rand>                          namespace nbdsite-<rand>
    ┌─────────────────────────────────────────┐     ┌──────────────────────────────────┐
    │ br0 10.77.0.1/24  (netbootd binds here) │     │ vsite1 10.77.0.2/24              │
    │  ├── vsite0 ──────────── veth ──────────┼─────┼─► dnsmasq: plain DHCP, addresses │
    │  ├── tap-<guest> ◄── QEMU guest         │     │   .100-.200, no boot options     │
    │  └── RA responder (iPXE IPv6 wait)      │     └──────────────────────────────────┘
    └─────────────────────────────────────────┘

The site DHCP server lives in its own namespace because netbootd binds udp/67 on the bridge.
IPv6 is disabled in both namespaces; because iPXE still waits ~16 s for IPv6 autoconfiguration
when no router advertisement arrives, a small responder (a child process in the lab namespace,
on an AF_PACKET socket) answers every router solicitation with a prefix-less, lifetime-0 RA.

Everything the lab creates (processes, namespaces, links, temporary files) is torn down by
:meth:`Lab.close` (and on leaving the ``with`` block), also after exceptions. Processes are
ended by PID: SIGTERM, then SIGKILL.

Run ``python3 -m netbootd.lab.netlab smoke`` to check the lab alone: a BIOS guest gets an address
from dnsmasq and its iPXE ROM finds nothing to boot.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

# bios: SeaBIOS; uefi: OVMF (x86-64); aavmf: AAVMF, an ARM64 UEFI guest (qemu-system-aarch64).
Firmware = Literal["bios", "uefi", "aavmf"]

QEMU = "qemu-system-x86_64"
QEMU_AARCH64 = "qemu-system-aarch64"  # package qemu-system-arm
AAVMF_DIR = Path("/usr/share/AAVMF")  # package qemu-efi-aarch64
AAVMF_CODE, AAVMF_VARS = AAVMF_DIR / "AAVMF_CODE.fd", AAVMF_DIR / "AAVMF_VARS.fd"
OVMF_DIR = Path("/usr/share/OVMF")
# (code, vars template) pairs in order of preference; code and vars must come from the same pair.
OVMF_PAIRS: tuple[tuple[str, str], ...] = (
    ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("OVMF_CODE.fd", "OVMF_VARS.fd"),
)
IPXE_ROM_DIR = Path("/usr/lib/ipxe/qemu")
# QEMU 7.2's default option ROM per NIC model (BIOS and EFI images in one file).
NIC_ROMS: dict[str, str] = {
    "virtio-net-pci": "efi-virtio.rom",
    "e1000": "efi-e1000.rom",
    "e1000e": "efi-e1000e.rom",
    "rtl8139": "efi-rtl8139.rom",
}
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
# OVMF reads these fw_cfg files at start (OvmfPkg's NetworkPcds): with both PXE stacks off, its
# boot manager goes to UEFI HTTP Boot at once instead of after ~130 s of PXE timeouts.
OVMF_HTTP_BOOT_ONLY: tuple[tuple[str, str], ...] = (
    ("opt/org.tianocore/IPv4PXESupport", "n"),
    ("opt/org.tianocore/IPv6PXESupport", "n"),
)
BRIDGE = "br0"
SITE_VETH_LAB = "vsite0"
SITE_VETH_SITE = "vsite1"
TERM_GRACE_S = 3.0


class LabError(RuntimeError):
    """The lab could not be set up or a command in it failed; the message says which."""


# --------------------------------------------------------------------------------------------
# Prerequisites
# --------------------------------------------------------------------------------------------


def ovmf_files() -> tuple[Path, Path] | None:
    """(OVMF code, OVMF vars template) from the ovmf package, or None when not installed."""
    for code, vars_ in OVMF_PAIRS:
        if (OVMF_DIR / code).is_file() and (OVMF_DIR / vars_).is_file():
            return OVMF_DIR / code, OVMF_DIR / vars_
    return None


SB_OVMF = ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")


def secure_boot_ovmf_files() -> tuple[Path, Path] | None:
    """(OVMF Secure Boot code, vars with Microsoft's keys and Secure Boot on), or None."""
    code, vars_ = OVMF_DIR / SB_OVMF[0], OVMF_DIR / SB_OVMF[1]
    return (code, vars_) if code.is_file() and vars_.is_file() else None


def _base_prerequisites() -> list[str]:
    """What the lab itself needs, whatever the guests' firmware."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, taps)")
    for tool in (QEMU, "dnsmasq", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (not on PATH)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing


def lab_prerequisites(firmware: Firmware | None = None) -> list[str]:
    """What is missing to run the lab (empty list: everything is there).

    ``firmware`` limits the firmware checks to what one kind of guest needs ("bios": SeaBIOS
    and iPXE NIC ROMs; "uefi": OVMF; "aavmf": qemu-system-aarch64 and AAVMF); None checks
    bios and uefi.
    """
    missing = _base_prerequisites()
    if firmware in (None, "bios"):
        if not SEABIOS.is_file():
            missing.append(f"{SEABIOS} (package seabios)")
        for rom in ("efi-virtio.rom", "efi-e1000.rom"):
            if not (IPXE_ROM_DIR / rom).is_file():
                missing.append(f"{IPXE_ROM_DIR / rom} (package ipxe-qemu)")
    if firmware in (None, "uefi") and ovmf_files() is None:
        missing.append(f"{OVMF_DIR}/OVMF_CODE_4M.fd and OVMF_VARS_4M.fd (package ovmf)")
    if firmware == "aavmf":
        if shutil.which(QEMU_AARCH64) is None:
            missing.append(f"{QEMU_AARCH64} (package qemu-system-arm)")
        if not (AAVMF_CODE.is_file() and AAVMF_VARS.is_file()):
            missing.append(f"{AAVMF_CODE} and {AAVMF_VARS.name} (package qemu-efi-aarch64)")
    return missing


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _stop_process(proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S) -> None:
    """End one process we started, by its PID: SIGTERM, wait, then SIGKILL; always reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _valid_mac(mac: str) -> str:
    mac = mac.lower().replace("-", ":")
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
        raise LabError(f"bad MAC {mac!r}: use six hex pairs, e.g. 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise LabError(f"MAC {mac} is multicast; use a unicast one (first octet even)")
    return mac


def random_mac() -> str:
    """A random locally administered unicast MAC in QEMU's 52:54:00 style."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file."""

    expires: int
    mac: str
    ip: str
    hostname: str
    client_id: str


# --------------------------------------------------------------------------------------------
# QEMU guests
# --------------------------------------------------------------------------------------------


class QemuGuest:
    """A QEMU process started by :meth:`Lab.start_qemu`; its serial console goes to a file."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        serial_log: Path,
        qemu_log: Path,
        tap: str,
        mac: str,
        uuid: str | None,
        started: float,
    ) -> None:
        self.name = name
        self.proc = proc
        self.serial_log = serial_log
        self.qemu_log = qemu_log
        self.tap = tap
        self.mac = mac
        self.uuid = uuid
        self.started = started

    @property
    def pid(self) -> int:
        """PID of the QEMU process (``ip netns exec`` execs into it)."""
        return self.proc.pid

    def running(self) -> bool:
        """True while QEMU has not exited."""
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit; its exit status. Raises ``subprocess.TimeoutExpired``."""
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """End QEMU (SIGTERM, then SIGKILL) and reap it."""
        _stop_process(self.proc)

    def serial_text(self) -> str:
        """Everything the guest has written to its serial console so far."""
        try:
            return self.serial_log.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def qemu_output(self) -> str:
        """QEMU's own stdout/stderr (errors about devices, firmware, taps)."""
        try:
            return self.qemu_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_serial(
        self, pattern: str | re.Pattern[str], timeout: float, poll: float = 0.2
    ) -> re.Match[str]:
        """Wait until the serial console matches ``pattern``; the match.

        Raises ``TimeoutError`` (with the console's tail) on timeout, or ``LabError`` if QEMU
        exits before the pattern appears.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            text = self.serial_text()
            m = rx.search(text)
            if m:
                return m
            if not self.running():
                text = self.serial_text()
                m = rx.search(text)
                if m:
                    return m
                raise LabError(
                    f"guest {self.name} exited (status {self.proc.returncode}) before "
                    f"{rx.pattern!r} appeared; qemu said: {self.qemu_output()[-500:]!r}; "
                    f"console tail: {text[-1500:]!r}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"guest {self.name}: {rx.pattern!r} not seen within {timeout:.0f} s; "
                    f"console tail: {text[-1500:]!r}"
                )
            time.sleep(poll)


# --------------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------------


class Lab:
    """Namespaces, bridge, site DHCP server and QEMU guests; use as a context manager.

    >>> with Lab() as lab:                                        # doctest: +SKIP
    ...     guest = lab.start_qemu("g1", firmware="bios", mac="52:54:00:00:00:01")
    ...     guest.wait_for_serial("Nothing to boot", timeout=60)
    """

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

    def __enter__(self) -> Lab:
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
        """Create namespaces, bridge, veth, dnsmasq and the RA responder."""
        missing = _base_prerequisites()
        if missing:
            raise LabError("cannot start the lab, missing: " + "; ".join(missing))
        t0 = time.monotonic()
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
        if self.site_dhcp:
            self._start_dnsmasq()
        if self.ra_responder:
            self._start_ra_responder()
        self.timings["lab_setup"] = time.monotonic() - t0

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
            [sys.executable, str(Path(__file__).resolve()), "ra-responder", BRIDGE],
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

    # ---- site DHCP -----------------------------------------------------------------------

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

    # ---- taps and guests -----------------------------------------------------------------

    def add_tap(self, name: str) -> str:
        """Create tap ``name`` in the lab namespace, attached to br0 and up; its name."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
            raise LabError(f"bad tap name {name!r}: 1-15 of [A-Za-z0-9_.-]")
        if name in self._taps:
            raise LabError(f"tap {name} exists already in this lab")
        _ip("-n", self.netns, "tuntap", "add", "dev", name, "mode", "tap")
        self._taps.append(name)
        _ip("-n", self.netns, "link", "set", name, "master", BRIDGE, "up")
        return name

    def start_qemu(
        self,
        name: str,
        *,
        firmware: Firmware,
        mac: str,
        uuid: str | None = None,
        nic_model: str = "virtio-net-pci",
        stock_efi_pxe: bool = True,
        disk: Path | None = None,
        kernel: Path | None = None,
        initrd: Path | None = None,
        append: str | None = None,
        memory_mb: int = 512,
        boot_order: str = "n",
        extra_args: Sequence[str] = (),
        fw_cfg: Sequence[tuple[str, str]] = (),
        secure_boot: bool = False,
        net_then_disk: bool = False,
    ) -> QemuGuest:
        """Boot a QEMU guest (TCG) on br0 through a new tap; serial console to a log file.

        BIOS: SeaBIOS with QEMU's iPXE NIC ROM. UEFI: OVMF (pflash code + a private copy of
        the vars); with ``stock_efi_pxe`` the NIC gets an empty ``romfile=`` so OVMF's own
        EDK2 PXE client runs instead of iPXE (OVMF has no e1000 driver: use virtio-net-pci).
        AAVMF: ``qemu-system-aarch64 -M virt -cpu cortex-a72`` with AAVMF (code + a private
        copy of the vars) and its own EDK2 PXE client (QEMU has no arm64 NIC ROM: ``romfile=``).
        ``kernel``/``initrd``/``append`` boot a kernel directly instead of from the network.
        ``disk`` is attached as a virtio disk (qcow2 by suffix, raw otherwise).
        ``fw_cfg`` adds ``-fw_cfg name=NAME,string=VALUE`` items (e.g. ``OVMF_HTTP_BOOT_ONLY``).
        ``secure_boot`` (UEFI): OVMF's Secure Boot build with Microsoft's keys enrolled and
        Secure Boot on (q35 with SMM, secure pflash). ``net_then_disk``: boot order by
        ``bootindex``, which OVMF follows: the NIC first, then ``disk``.
        """
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
            raise LabError(f"bad guest name {name!r}: 1-32 of [A-Za-z0-9_-]")
        if any(g.name == name for g in self.guests):
            raise LabError(f"guest {name} exists already in this lab")
        if firmware not in ("bios", "uefi", "aavmf"):
            raise LabError(f"firmware must be 'bios', 'uefi' or 'aavmf', not {firmware!r}")
        mac = _valid_mac(mac)
        if uuid is not None:
            uuid = str(uuid_mod.UUID(uuid))
        tap = self.add_tap(f"t{len(self.guests)}-{name}"[:15])
        serial_log = self.tmpdir / f"{name}.serial.log"
        qemu_log = self.tmpdir / f"{name}.qemu.log"
        args: list[str] = [
            QEMU_AARCH64 if firmware == "aavmf" else QEMU,
            "-accel",
            "tcg",
            "-m",
            str(memory_mb),
            "-nographic",
            "-no-reboot",
            "-name",
            name,
            "-serial",
            f"file:{serial_log}",
            "-monitor",
            "none",
            "-netdev",
            f"tap,id=n0,ifname={tap},script=no,downscript=no",
        ]
        nic = f"{nic_model},netdev=n0,mac={mac}"
        if firmware == "uefi":
            files = ovmf_files()
            if files is None:
                raise LabError("OVMF not installed (apt-get install -y ovmf)")
            code, vars_template = files
            if secure_boot:
                sb = secure_boot_ovmf_files()
                if sb is None:
                    raise LabError(f"{OVMF_DIR}/{SB_OVMF[0]} and {SB_OVMF[1]} not found "
                                   "(package ovmf)")
                code, vars_template = sb
                args += ["-machine", "q35,smm=on", "-global",
                         "driver=cfi.pflash01,property=secure,value=on"]
            vars_copy = self.tmpdir / f"{name}.OVMF_VARS.fd"
            shutil.copyfile(vars_template, vars_copy)
            args += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
            if stock_efi_pxe:
                nic += ",romfile="
        elif firmware == "aavmf":
            if shutil.which(QEMU_AARCH64) is None or not AAVMF_CODE.is_file():
                raise LabError("ARM64 guests need qemu-system-arm and qemu-efi-aarch64")
            vars_copy = self.tmpdir / f"{name}.AAVMF_VARS.fd"
            shutil.copyfile(AAVMF_VARS, vars_copy)
            args += [
                "-M", "virt", "-cpu", "cortex-a72",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
            nic += ",romfile="
        if net_then_disk:
            nic += ",bootindex=1"
        args += ["-device", nic]
        if kernel is not None:
            args += ["-kernel", str(kernel)]
            if initrd is not None:
                args += ["-initrd", str(initrd)]
            if append is not None:
                if "\n" in append:
                    raise LabError("kernel command line may not contain a newline")
                args += ["-append", append]
        else:
            args += ["-boot", f"order={boot_order}"]
        if uuid is not None:
            args += ["-smbios", f"type=1,uuid={uuid}"]
        if disk is not None:
            fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
            if net_then_disk:
                args += ["-drive", f"file={disk},format={fmt},if=none,id=disk0",
                         "-device", "virtio-blk-pci,drive=disk0,bootindex=2"]
            else:
                args += ["-drive", f"file={disk},format={fmt},if=virtio"]
        for key, value in fw_cfg:
            if not re.fullmatch(r"opt/[A-Za-z0-9_./-]{1,50}", key) or "," in value:
                raise LabError(f"bad fw_cfg item {key!r}={value!r}: name opt/..., no comma")
            args += ["-fw_cfg", f"name={key},string={value}"]
        args += list(extra_args)
        log = self._log_file(f"{name}.qemu.log")
        started = time.monotonic()
        proc = self.run(args, stdout=log, stderr=subprocess.STDOUT)
        guest = QemuGuest(name, proc, serial_log, qemu_log, tap, mac, uuid, started)
        self.guests.append(guest)
        return guest


# --------------------------------------------------------------------------------------------
# Router-advertisement responder (run as a child process inside the lab namespace)
# --------------------------------------------------------------------------------------------

ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134


def _link_local(mac: bytes) -> bytes:
    """fe80::/64 address with the modified EUI-64 interface id of ``mac``."""
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return b"\xfe\x80" + b"\0" * 6 + eui


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_router_advert(src_mac: bytes) -> bytes:
    """An Ethernet frame carrying a prefix-less, lifetime-0 RA (M=0, O=0) to ff02::1.

    Such an RA tells iPXE "there is no IPv6 router and no DHCPv6 here": its IPv6
    autoconfiguration completes at once instead of timing out.
    """
    src_ip = _link_local(src_mac)
    dst_ip = bytes.fromhex("ff020000000000000000000000000001")
    # type, code, checksum, cur hop limit, flags, router lifetime, reachable, retrans timer
    icmp = struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, 64, 0, 0, 0, 0)
    icmp += struct.pack("!BB6s", 1, 1, src_mac)  # option 1: source link-layer address
    pseudo = src_ip + dst_ip + struct.pack("!I3xB", len(icmp), ICMPV6)
    csum = _checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, 255) + src_ip + dst_ip
    eth = bytes.fromhex("333300000001") + src_mac + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + icmp


def _is_router_solicit(frame: bytes) -> bool:
    if len(frame) < 14 + 40 + 8 or frame[12:14] != b"\x86\xdd":
        return False
    ip6 = frame[14:54]
    return ip6[6] == ICMPV6 and frame[54] == ND_ROUTER_SOLICIT


def ra_responder(ifname: str) -> None:
    """Answer router solicitations on ``ifname`` with a prefix-less, lifetime-0 RA, forever."""
    mac_text = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    src_mac = bytes.fromhex(mac_text.replace(":", ""))
    frame = build_router_advert(src_mac)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    sock.bind((ifname, ETH_P_IPV6))
    print(f"ra-responder: listening on {ifname} ({mac_text})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        data, addr = sock.recvfrom(2048)
        if addr[2] == socket.PACKET_OUTGOING or not _is_router_solicit(data):
            continue
        sock.send(frame)
        print(f"ra-responder: RS from {data[6:12].hex(':')}, sent RA", flush=True)


# --------------------------------------------------------------------------------------------
# Self-check: the lab without netbootd
# --------------------------------------------------------------------------------------------


def smoke(ra: bool = True, timeout: float = 90.0) -> dict[str, float]:
    """Boot a BIOS guest in a fresh lab: dnsmasq leases it an address, iPXE finds no boot file.

    Returns step timings in seconds; raises on failure. The lab is gone afterwards.
    """
    timings: dict[str, float] = {}
    mac = random_mac()
    t0 = time.monotonic()
    with Lab(ra_responder=ra) as lab:
        timings["lab_setup"] = time.monotonic() - t0
        guest = lab.start_qemu(
            "smoke", firmware="bios", mac=mac, uuid="8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
        )
        lease = lab.wait_for_lease(mac, timeout)
        timings["qemu_start_to_lease"] = time.monotonic() - guest.started
        guest.wait_for_serial(
            r"No (configuration methods succeeded|filename or root path)"
            r"|Nothing to boot",
            timeout,
        )
        timings["qemu_start_to_ipxe_gives_up"] = time.monotonic() - guest.started
        print(f"lease {lease.ip} for {lease.mac}; serial tail:\n{guest.serial_text()[-600:]}")
        netns = lab.netns
        t1 = time.monotonic()
    timings["teardown"] = time.monotonic() - t1
    left = _ip("netns", "list", check=False).stdout
    if netns in left:
        raise LabError(f"namespace {netns} still exists after teardown")
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    """``netlab.py ra-responder IFNAME`` (internal) or ``netlab.py smoke [--no-ra]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "ra-responder":
        ra_responder(args[1])
        return 0
    if args and args[0] == "smoke":
        missing = lab_prerequisites("bios")
        if missing:
            print("missing: " + "; ".join(missing), file=sys.stderr)
            return 2
        timings = smoke(ra="--no-ra" not in args)
        for step, secs in timings.items():
            print(f"{step}: {secs:.2f} s")
        return 0
    print("usage: netlab.py smoke [--no-ra] | netlab.py ra-responder IFNAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
