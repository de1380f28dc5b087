"""Where the benchmarks run: a pair of network namespaces, CPU pinning and a CPU cgroup.

Each peer run gets two namespaces the bench creates and removes: ``S`` (the server, 10.78.0.1
on a veth) and ``C`` (the clients, 10.78.0.2 on the other end). Nothing binds a host port.

Processes are started by this module with ``ip netns exec NS taskset -c CPU cmd``; both tools
``exec`` their argument, so the pid we hold IS the server's pid and we stop it by that pid.
A server is started inside a cgroup v2 the bench creates (``cpu.stat`` counts children and
threads: tftpd-hpa forks a child per transfer, atftpd starts a thread per transfer). When no
writable cgroup v2 hierarchy exists we fall back to ``/proc/<pid>/stat`` utime+stime of the
process, its threads and the children it has waited for, and say so in the output.

Killed half-way (SIGTERM, SIGINT, SIGHUP, e.g. by ``timeout``) the bench must still stop its
servers and remove its namespaces and cgroups: :func:`install_signal_handlers` turns those
signals into :class:`Terminated`, which every ``with`` block here unwinds through (it is not
an ``Exception``, so no per-benchmark ``except Exception`` swallows it).

Load marking: :class:`LoadProbe` measures, around one sample, the host's CPU time spent by
processes that are not the bench's (``/proc/stat`` busy time minus the CPU time of the bench
and every process it started), the steal time and the load average. A sample during which
other processes used more than :data:`LOADED_OTHER_CORES` cores on average, or the hypervisor
stole more than :data:`LOADED_STEAL` of the CPU time, is marked as taken under load.
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
# A sample is "under load" when other processes used this many cores on average during it
# (a quarter of this 2-core machine), or when more than this share of CPU time was stolen.
LOADED_OTHER_CORES = max(0.25, 0.25 * (os.cpu_count() or 1))
LOADED_STEAL = 0.05


class BenchError(RuntimeError):
    """A benchmark could not run; the message says what was missing or what failed."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind every ``with`` block (servers, namespaces, cgroups)."""


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP raise :class:`Terminated`, SIGINT ``KeyboardInterrupt``, once each.

    A second signal during the teardown is ignored, so the teardown runs to its end (a
    ``timeout -k`` still ends the bench with SIGKILL when it takes too long).
    """
    def handler(signum: int, _frame: object) -> None:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(f"signal {signal.Signals(signum).name}")

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, handler)


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
        _OPEN_METERS.add(self)

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
        _OPEN_METERS.discard(self)
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


# Meters of running servers: their cgroups' CPU time is the bench's own (LoadProbe).
_OPEN_METERS: set[CpuMeter] = set()


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
            # Whatever still runs in a namespace this pair created was started by the bench
            # (a client a benchmark had not reaped when a signal arrived): end it by pid, or
            # the namespace would live on with it after `ip netns del`.
            kill_namespace_pids(ns)
            run(["ip", "netns", "del", ns], check=False)


def kill_namespace_pids(ns: str) -> None:
    """SIGKILL every process in the bench's own namespace ``ns`` (``ip netns pids``)."""
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    for pid in (int(p) for p in out.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen[Any], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM by pid, then SIGKILL after ``grace`` seconds; never by name (the lab's helper)."""
    _stop_process(proc, grace)


def set_affinity(pid: int, cpus: str) -> None:
    """Re-pin a running server and all its threads (``taskset -a``)."""
    run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False)


def _host_jiffies() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies over all CPUs from the ``cpu`` line of /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0, 0
    # user nice system idle iowait irq softirq steal (guest times are inside user/nice)
    fields += [0] * (8 - len(fields))
    idle = fields[3] + fields[4]
    steal = fields[7]
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def _own_cpu_s() -> float:
    """CPU seconds of the bench and every live process it started (children, grandchildren).

    Servers count through their cgroups (:class:`CpuMeter`): a cgroup keeps the time of
    children that already exited even when the server never waited for them (tftpd-hpa's
    per-transfer children). Other reaped children count through RUSAGE_CHILDREN, other live
    descendants through /proc (their own time plus their reaped children's). Servers run in
    their own sessions but keep the bench as their parent, so the parent links find them.
    """
    me = os.getpid()
    in_cgroups: set[int] = set()
    metered = 0.0
    for meter in list(_OPEN_METERS):
        if meter.path is not None:
            with contextlib.suppress(OSError, BenchError):
                metered += meter.usage_us() / 1e6
                in_cgroups.update(meter.pids())
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(f) for f in fields[11:15]) / _CLK_TCK
    total = metered
    for pid in cpu:
        if pid in in_cgroups:
            continue
        p, hops = parent.get(pid, 0), 0
        while p > 1 and p != me and p not in in_cgroups and hops < 64:
            p, hops = parent.get(p, 0), hops + 1
        if p == me:
            total += cpu[pid]
    own = os.times()
    return total + own.user + own.system + own.children_user + own.children_system


class LoadProbe:
    """Host load around one sample; use as a context manager, then read the fields.

    ``other_cores``: average cores used by processes that are not the bench's; ``steal``:
    share of CPU time stolen by the hypervisor; ``load1``: the 1-minute load average at the
    end (it counts the bench's own work too); ``loaded``: whether the sample is marked.
    """

    def __init__(self) -> None:
        self.other_cores = 0.0
        self.steal = 0.0
        self.load1 = 0.0
        self.seconds = 0.0
        self.loaded = False
        # Set by the bench for every sample of a round in which any sample was loaded: a
        # ratio then compares the same rounds on both sides, never one side's quiet moment
        # with the other side's busy one.
        self.round_loaded: bool | None = None

    @property
    def marked(self) -> bool:
        """Left out of medians: this sample, or another of its round, was under load."""
        return self.loaded if self.round_loaded is None else self.round_loaded

    def __enter__(self) -> LoadProbe:
        self._t0 = time.monotonic()
        self._host0 = _host_jiffies()
        self._own0 = _own_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        busy1, steal1, total1 = _host_jiffies()
        own = _own_cpu_s() - self._own0
        self.seconds = max(1e-6, time.monotonic() - self._t0)
        busy = (busy1 - self._host0[0]) / _CLK_TCK
        total = max(1, total1 - self._host0[2])
        self.other_cores = max(0.0, busy - own) / self.seconds
        self.steal = (steal1 - self._host0[1]) / total
        try:
            self.load1 = float(Path("/proc/loadavg").read_text().split()[0])
        except (OSError, ValueError):
            self.load1 = float("nan")
        self.loaded = self.other_cores > LOADED_OTHER_CORES or self.steal > LOADED_STEAL

    def as_dict(self) -> dict[str, float | bool]:
        """``loaded``: this sample was under load; ``round_loaded``: it is marked (it, or
        another sample of its round, was)."""
        return {"load1": round(self.load1, 2), "other_cores": round(self.other_cores, 3),
                "steal": round(self.steal, 4), "seconds": round(self.seconds, 3),
                "loaded": self.loaded, "round_loaded": self.marked}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg shows them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
