"""Where the benchmarks run: a pair of network namespaces, CPU pinning and a CPU cgroup.

Each peer run gets two namespaces the bench creates and removes: ``S`` (the server, 10.78.0.1
on a veth) and ``C`` (the clients, 10.78.0.2 on the other end). Nothing binds a host port.

Processes are started by this module with ``ip netns exec NS taskset -c CPU cmd``; both tools
``exec`` their argument, so the pid we hold IS the server's pid and we stop it by that pid.
A server is started inside a cgroup v2 the bench creates (``cpu.stat`` counts children and
threads: tftpd-hpa forks a child per transfer, atftpd starts a thread per transfer). When no
writable cgroup v2 hierarchy exists we fall back to ``/proc/<pid>/stat`` utime+stime of the
process, its threads and the children it has waited for, and say so in the output.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from netbootd.lab.netlab import _stop_process

SERVER_IP = "10.78.0.1"
CLIENT_IP = "10.78.0.2"
PREFIX = 24
STOP_GRACE_S = 5.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not run; the message says what was missing or what failed."""


def run(cmd: list[str], *, check: bool = True, timeout: float = 60.0,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          **kw)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def cgroup2_root() -> Path | None:
    """A writable cgroup v2 mount (``/sys/fs/cgroup`` or the hybrid ``unified``), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            root = Path(fields[1])
            probe = root / f"nbdbench-probe-{os.getpid()}"
            try:
                probe.mkdir()
                ok = (probe / "cpu.stat").is_file()
                probe.rmdir()
            except OSError:
                continue
            if ok:
                return root
    return None


class CpuMeter:
    """Server CPU time (µs), children and threads included: a cgroup, or /proc as a fallback."""

    def __init__(self, name: str) -> None:
        root = cgroup2_root()
        self.path: Path | None = None
        self.pid: int | None = None
        if root is not None:
            self.path = root / f"nbdbench-{os.getpid()}-{name}-{secrets.token_hex(3)}"
            self.path.mkdir()

    @property
    def method(self) -> str:
        return "cgroup v2 cpu.stat" if self.path is not None else \
            "/proc/<pid>/stat utime+stime (+waited children); no writable cgroup v2"

    @property
    def procs_file(self) -> Path | None:
        return None if self.path is None else self.path / "cgroup.procs"

    def usage_us(self) -> float:
        if self.path is not None:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return float(value)
            raise BenchError(f"no usage_usec in {self.path}/cpu.stat")
        if self.pid is None:
            return 0.0
        return _proc_cpu_us(self.pid)

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def close(self) -> None:
        if self.path is None:
            return
        for pid in self.pids():
            # Only processes our server forked (tftpd-hpa children) can be in this cgroup.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _proc_cpu_us(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # fields[11..14] = utime stime cutime cstime (stat(5) fields 14..17); threads are included
    # in the process's utime/stime, waited-for children in cutime/cstime.
    return sum(int(f) for f in fields[11:15]) * 1e6 / _CLK_TCK


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB: current and peak resident memory."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class NetnsPair:
    """Two namespaces joined by a veth: server side ``SERVER_IP``, client side ``CLIENT_IP``."""

    def __init__(self, tag: str) -> None:
        token = secrets.token_hex(2)
        self.server = f"nbb-{tag}-{token}-s"
        self.client = f"nbb-{tag}-{token}-c"
        self.server_if = f"nbb{token}s"
        self.client_if = f"nbb{token}c"
        self._procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> NetnsPair:
        try:
            run(["ip", "netns", "add", self.server])
            run(["ip", "netns", "add", self.client])
            run(["ip", "link", "add", self.server_if, "netns", self.server, "type", "veth",
                 "peer", "name", self.client_if, "netns", self.client])
            for ns, ifname, ip in ((self.server, self.server_if, SERVER_IP),
                                   (self.client, self.client_if, CLIENT_IP)):
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
                run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX}", "dev", ifname])
                run(["ip", "-n", ns, "link", "set", ifname, "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn(self, side: str, cpus: str, cmd: list[str], *, meter: CpuMeter | None = None,
              log: IO[Any] | int | None = None, env: dict[str, str] | None = None,
              stdout: IO[Any] | int | None = None) -> subprocess.Popen[Any]:
        """Start ``cmd`` in the server or client namespace pinned to ``cpus``."""
        ns = self.server if side == "server" else self.client
        argv = ["ip", "netns", "exec", ns, "taskset", "-c", cpus, *cmd]
        if meter is not None and meter.procs_file is not None:
            # Join the cgroup before exec, so every CPU cycle of the server is counted.
            argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(meter.procs_file), *argv]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=stdout if stdout is not None else
                                (log if log is not None else subprocess.DEVNULL),
                                stderr=log if log is not None else subprocess.DEVNULL,
                                env=env, start_new_session=True)
        if meter is not None:
            meter.pid = proc.pid
        self._procs.append(proc)
        return proc

    def exec(self, side: str, cpus: str, cmd: list[str], timeout: float = 120.0,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        ns = self.server if side == "server" else self.client
        return run(["ip", "netns", "exec", ns, "taskset", "-c", cpus, *cmd], timeout=timeout,
                   check=check)

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        stop_process(proc)
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)
        for ns in (self.server, self.client):
            run(["ip", "netns", "del", ns], check=False)


def stop_process(proc: subprocess.Popen[Any], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM by pid, then SIGKILL after ``grace`` seconds; never by name (the lab's helper)."""
    _stop_process(proc, grace)


def set_affinity(pid: int, cpus: str) -> None:
    """Re-pin a running server and all its threads (``taskset -a``)."""
    run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg shows them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
