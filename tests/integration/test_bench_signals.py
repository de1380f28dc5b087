"""A bench killed half-way (SIGTERM as ``timeout`` sends it, SIGINT) leaves nothing behind.

The test starts ``bench/run.py --quick`` with one part, waits until the servers it started run
(found as the bench's descendants, each in a namespace the bench made), sends the signal, and
checks, by the PIDs (and their start times) and the names it saw, that no process, network
namespace, cgroup or work folder of that bench remains. It ends nothing itself except the
bench it started (by pid, if the bench failed to exit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run.py"
START_TIMEOUT_S = 180.0  # netbootd and the peers start in turn; the machine may be loaded
EXIT_TIMEOUT_S = 90.0

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the bench needs root (namespaces, cgroups)")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, comm, start time) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), comm, int(fields[19])


def _descendants(root: int) -> dict[int, tuple[str, int]]:
    """pid -> (comm, start time) of every live descendant of ``root``."""
    info: dict[int, tuple[int, str, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            info[int(entry.name)] = st
    out: dict[int, tuple[str, int]] = {}
    for pid, (_, comm, start) in info.items():
        p, hops = info[pid][0], 0
        while p > 1 and p != root and hops < 64:
            p, hops = (info[p][0] if p in info else 0), hops + 1
        if p == root:
            out[pid] = (comm, start)
    return out


def _netns_of(pid: int) -> str:
    r = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True,
                       check=False)
    return r.stdout.strip()


def _cgroup_of(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::") and "nbdbench-" in line:
                return line[3:]
    except OSError:
        pass
    return ""


@dataclass
class Seen:
    procs: dict[int, tuple[str, int]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)
    workdirs: set[Path] = field(default_factory=set)

    def look(self, bench: int) -> None:
        for pid, (comm, start) in _descendants(bench).items():
            self.procs[pid] = (comm, start)
            if ns := _netns_of(pid):
                self.namespaces.add(ns)
            if cg := _cgroup_of(pid):
                self.cgroups.add(cg)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in argv:
                a = arg.decode(errors="replace")
                if a.startswith("/var/tmp/netbootd-bench-"):
                    self.workdirs.add(Path(*Path(a).parts[:4]))

    def running(self, comm: str) -> bool:
        return any(c == comm and _stat(pid) is not None for pid, (c, _) in self.procs.items())


def _cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/mounts").read_text().splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == "cgroup2":
            roots.append(Path(f[1]))
    return roots


@pytest.mark.parametrize(("sig", "part", "wait_for"), [
    (signal.SIGTERM, "tftp", "in.tftpd"),   # servers up (netbootd, then tftpd-hpa)
    (signal.SIGINT, "tftp", "in.tftpd"),
    (signal.SIGTERM, "storm", "curl"),      # in the middle of a storm: clients running too
], ids=["sigterm-servers", "sigint-servers", "sigterm-mid-storm"])
def test_killed_bench_removes_what_it_started(tmp_path: Path, sig: signal.Signals, part: str,
                                              wait_for: str) -> None:
    log = (tmp_path / "bench.log").open("w")
    bench = subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--only", part,
                              "--no-install"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    seen = Seen()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not seen.running(wait_for):
            assert bench.poll() is None, (tmp_path / "bench.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"no {wait_for} among the bench's processes: {seen.procs}\n"
                + (tmp_path / "bench.log").read_text()[-3000:])
            seen.look(bench.pid)
            time.sleep(0.05)
        seen.look(bench.pid)
        assert seen.namespaces, seen.procs
        os.kill(bench.pid, sig)
        rc = bench.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        log.close()
    text = (tmp_path / "bench.log").read_text()
    assert rc == (130 if sig == signal.SIGINT else 143), text[-3000:]
    assert "Traceback" not in text, text[-3000:]

    # Poll briefly: an orphan is reaped by init, not by us.
    deadline = time.monotonic() + 10
    left: dict[int, str] = {}
    while time.monotonic() < deadline:
        left = {pid: comm for pid, (comm, start) in seen.procs.items()
                if (st := _stat(pid)) is not None and st[2] == start}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"processes the bench started still run: {left}"
    listed = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not seen.namespaces & listed, seen.namespaces & listed
    assert not [f"/run/netns/{ns}" for ns in seen.namespaces if Path(f"/run/netns/{ns}").exists()]
    for root in _cgroup_roots():
        assert not list(root.glob(f"nbdbench-{bench.pid}-*")), root
        for cg in seen.cgroups:
            assert not (root / cg.lstrip("/")).exists(), cg
    assert seen.workdirs, "the bench's work folder was not seen in its servers' arguments"
    for wd in seen.workdirs:
        assert not wd.exists(), wd
