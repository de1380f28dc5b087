"""TFTP measurements against one running server: lock-step, windowed, sweeps and boot storms.

Clients are C programs: curl (lock-step, RFC 2348 blksize; curl has no windowsize) and atftp
(RFC 7440 windowsize). Storms run several curl processes, each doing many transfers at once
(``curl --parallel``), every transfer checked for its exit code and its byte count.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from bench.peers import Files
from bench.sandbox import SERVER_IP, BenchError, CpuMeter, NetnsPair

CURL_TIMEOUT_S = 600.0


@dataclass
class Transfer:
    seconds: float
    nbytes: int
    server_cpu_us: float
    data_packets: int

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6

    @property
    def cpu_per_packet_us(self) -> float:
        return self.server_cpu_us / self.data_packets


def data_packets(size: int, blksize: int) -> int:
    # Every transfer ends with a short (possibly empty) block: RFC 1350 section 6.
    return size // blksize + 1


def curl_get(ns: NetnsPair, meter: CpuMeter, cpus: str, files: Files, server: str, name: str,
             blksize: int) -> Transfer:
    """One lock-step download with curl; raises when it fails or comes back short."""
    url = f"tftp://{SERVER_IP}/{files.tftp_path(server, name)}"
    cmd = ["curl", "-sS", "--max-time", str(int(CURL_TIMEOUT_S) - 10), "-o", "/dev/null",
           "--tftp-blksize", str(blksize), "-w", "%{size_download}", url]
    cpu0 = meter.usage_us()
    t0 = time.perf_counter()
    proc = ns.exec("client", cpus, cmd, timeout=CURL_TIMEOUT_S, check=False)
    seconds = time.perf_counter() - t0
    cpu = meter.usage_us() - cpu0
    size = files.sizes[name]
    got = int(proc.stdout.strip() or 0)
    if proc.returncode != 0 or got != size:
        raise BenchError(f"curl {url} (blksize {blksize}) failed: rc={proc.returncode} "
                         f"got {got}/{size} bytes: {proc.stderr.strip()[-300:]}")
    return Transfer(seconds, size, cpu, data_packets(size, blksize))


def atftp_get(ns: NetnsPair, meter: CpuMeter, cpus: str, files: Files, server: str, name: str,
              blksize: int, windowsize: int) -> Transfer:
    """One download with atftp asking for ``windowsize`` (RFC 7440)."""
    path = files.tftp_path(server, name)
    cmd = ["atftp", "--option", f"blksize {blksize}", "-g", "-r", path, "-l", "/dev/stdout",
           SERVER_IP, "69"]
    if windowsize > 1:
        cmd[1:1] = ["--option", f"windowsize {windowsize}"]
    # atftp writes the file to stdout; wc counts it, so a short transfer is caught.
    shell = " ".join(_q(c) for c in cmd) + " | wc -c"
    cpu0 = meter.usage_us()
    t0 = time.perf_counter()
    proc = ns.exec("client", cpus, ["bash", "-c", "set -o pipefail; " + shell],
                   timeout=CURL_TIMEOUT_S, check=False)
    seconds = time.perf_counter() - t0
    cpu = meter.usage_us() - cpu0
    size = files.sizes[name]
    got = int((proc.stdout.strip().splitlines() or ["0"])[-1])
    if proc.returncode != 0 or got != size:
        raise BenchError(f"atftp {path} (blksize {blksize}, windowsize {windowsize}) failed: "
                         f"rc={proc.returncode} got {got}/{size}: {proc.stderr.strip()[-300:]}")
    return Transfer(seconds, size, cpu, data_packets(size, blksize))


def _q(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@dataclass
class Storm:
    clients: int
    seconds: float
    failed: int
    nbytes: int
    server_cpu_us: float


def storm(ns: NetnsPair, meter: CpuMeter, client_cpus: str, files: Files, server: str,
          name: str, clients: int, blksize: int = 1468, processes: int = 4) -> Storm:
    """``clients`` simultaneous lock-step downloads of ``name`` by ``processes`` curl processes.

    Wall time runs from starting the first curl to the end of the last; a transfer counts as
    failed when curl reports an error for it or it came back short.
    """
    processes = max(1, min(processes, clients))
    url = f"tftp://{SERVER_IP}/{files.tftp_path(server, name)}"
    share = [clients // processes + (1 if i < clients % processes else 0)
             for i in range(processes)]
    size = files.sizes[name]
    # curl's TFTP can wait forever for a lost packet (seen with tftpd-hpa at 200 clients):
    # a generous cap (1 MB/s per client) turns a hang into a counted failure.
    max_time = max(60, size * clients // processes // 1_000_000)
    cpu0 = meter.usage_us()
    t0 = time.perf_counter()
    procs = []
    for n in share:
        cmd = ["ip", "netns", "exec", ns.client, "taskset", "-c", client_cpus, "curl", "-sS",
               "--max-time", str(max_time),
               "--parallel", "--parallel-immediate", "--parallel-max", str(n),
               "--tftp-blksize", str(blksize), "-w", "%{exitcode} %{size_download}\n"]
        for _ in range(n):
            cmd += ["-o", "/dev/null", url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, stdin=subprocess.DEVNULL))
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max_time + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        outs.append(out)
    seconds = time.perf_counter() - t0
    cpu = meter.usage_us() - cpu0
    ok = 0
    for out in outs:
        for line in out.splitlines():
            code, _, got = line.partition(" ")
            if code == "0" and got.strip() == str(size):
                ok += 1
    return Storm(clients, seconds, clients - ok, ok * size, cpu)
