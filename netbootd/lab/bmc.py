"""An external BMC for lab guests: OpenIPMI's ``ipmi_sim`` with IPMI-over-LAN, powering a
QEMU guest that it starts itself (``startcmd``) and that talks back to it through QEMU's
``ipmi-bmc-extern`` device (a KCS interface in the guest, a TCP chardev to the simulator).

Power state is the simulator's: "on" while the process its ``startcmd`` started lives;
``chassis power on`` runs the command, ``off`` asks the guest over the chardev to shut
down and, after ``poweroff_wait`` seconds, ends the process (SIGTERM, then SIGKILL after
``kill_wait``). The start script writes each guest's PID to a file, so that teardown ends
those processes by PID too, before the simulator itself.

``IpmiSim(...).start(spawn)`` takes the function that starts a process (``Lab.run`` to run
inside the lab's namespace, where the BMC address lives; ``subprocess.Popen`` on loopback).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.lab.base import LabError, _stop_process
from netbootd.lab.firmware import QEMU

IPMI_SIM = "ipmi_sim"
Spawn = Callable[..., "subprocess.Popen[Any]"]

# The simulator's BMC: one management controller at IPMB 0x20 with a SEL (the values are
# those of OpenIPMI's example ipmisim1.emu: device id 0, revision 3, firmware 9.08, IPMI 2.0
# with every optional function, manufacturer 0x1291, product 0xf02).
EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


def qemu_bios_guest(tap: str, *, name: str, mac: str, disk: Path | None, console: Path,
                    chardev: tuple[str, int], memory_mb: int = 512) -> list[str]:
    """A SeaBIOS guest on ``tap``, network first then ``disk``, with a KCS BMC interface
    wired to the simulator at ``chardev``. No ``-no-reboot``: a BMC reset reboots in place,
    as on hardware. The console is appended to, one file across power cycles."""
    host, port = chardev
    args = [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-nographic", "-name", name,
            "-chardev", f"file,id=con0,path={console},append=on", "-serial", "chardev:con0",
            "-monitor", "none",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}", "-boot", "order=nc",
            "-chardev", f"socket,id=ipmi0,host={host},port={port},reconnect=10",
            "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
            "-device", "isa-ipmi-kcs,bmc=bmc0"]
    if disk is not None:
        args += ["-drive", f"file={disk},format=raw,if=virtio"]
    return args


@dataclass
class IpmiSim:
    """One simulated BMC: its LAN address/port and user, and the guest command it powers."""

    workdir: Path
    address: str
    port: int
    user: str
    password: str
    chardev_port: int
    guest: Sequence[str]  # the guest's command line (started on power on)
    poweroff_wait: int = 3  # seconds the guest has to shut down when asked
    kill_wait: int = 5
    proc: subprocess.Popen[Any] | None = None

    @property
    def pid_file(self) -> Path:
        return self.workdir / "guest.pids"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "state").mkdir(exist_ok=True)
        script = self.workdir / "power-on.sh"
        script.write_text("#!/bin/sh\n# started by ipmi_sim on chassis power on\n"
                          f"echo $$ >> {shlex.quote(str(self.pid_file))}\n"
                          f"exec {shlex.join(self.guest)}\n")
        script.chmod(0o700)
        for c in (self.user, self.password):
            if '"' in c or " " in c:
                raise LabError("ipmi_sim users and passwords may not hold quotes or spaces")
        conf = self.workdir / "lan.conf"
        conf.write_text(f"""name "netbootd-lab"
set_working_mc 0x20
  startlan 1
    addr {self.address} {self.port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 {self.address} {self.chardev_port} codec VM
  startcmd "{script}"
  startnow false
  poweroff_wait {self.poweroff_wait}
  kill_wait {self.kill_wait}
  user 2 true "{self.user}" "{self.password}" admin 10 none md2 md5 straight
""")
        conf.chmod(0o600)
        (self.workdir / "bmc.emu").write_text(EMU)
        return conf

    def start(self, spawn: Spawn, timeout: float = 30.0) -> None:
        """Start the simulator with ``spawn`` and wait until its LAN port is bound."""
        conf = self.write_config()
        log = (self.workdir / "ipmi_sim.log").open("ab")
        try:
            self.proc = spawn([IPMI_SIM, "-c", str(conf), "-f", str(self.workdir / "bmc.emu"),
                               "-s", str(self.workdir / "state"), "-n"],
                              stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                raise LabError(f"ipmi_sim exited with {self.proc.returncode}: "
                               f"{(self.workdir / 'ipmi_sim.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"ipmi_sim did not bind udp/{self.port} within {timeout:g} s")
            time.sleep(0.1)

    def _listening(self) -> bool:
        """Whether udp/``port`` is bound in the simulator's namespace (/proc/PID/net/udp)."""
        assert self.proc is not None
        try:
            rows = Path(f"/proc/{self.proc.pid}/net/udp").read_text().splitlines()[1:]
        except OSError:
            return False
        return any(r.split()[1].endswith(f":{self.port:04X}") for r in rows)

    def guest_pids(self) -> list[int]:
        """PIDs of the guests the simulator started, in start order (live or not)."""
        if not self.pid_file.exists():
            return []
        return [int(x) for x in self.pid_file.read_text().split()]

    def live_guest(self) -> int | None:
        """The running guest's PID (its command line still the guest's), or None."""
        for pid in reversed(self.guest_pids()):
            if self._is_guest(pid):
                return pid
        return None

    def close(self) -> None:
        """End the guests (by their PIDs), then the simulator."""
        for pid in self.guest_pids():
            if self._is_guest(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while self._is_guest(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self._is_guest(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            _stop_process(self.proc)

    def __enter__(self) -> IpmiSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    def _is_guest(self, pid: int) -> bool:
        """``pid`` runs the guest command (not a reused PID) and has not exited."""
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # a zombie (state Z) has exited already; its parent (the simulator) reaps it
        return cmd[0] == os.fsencode(self.guest[0]) and stat.rsplit(")", 1)[1].split()[0] != "Z"
