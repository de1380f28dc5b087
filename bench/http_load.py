"""HTTP measurements: one large build file with curl, many small per-node scripts with wrk.

netbootd serves ``/builds/bench/1.0/<file>`` (aiohttp FileResponse, sendfile) and
``/ipxe/node.ipxe?mac=…`` (rendered per node, one decision per request); nginx serves the same
build file from the same folder and a static file as large as one rendered script. wrk asks
for a different MAC on every request (a Lua ``request`` hook); nginx ignores the query.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench.sandbox import SERVER_IP, BenchError, NetnsPair

WRK_LUA = """
counter = 0
request = function()
  counter = counter + 1
  -- wrk embeds LuaJIT (Lua 5.1): no bit operators, hence the arithmetic.
  local mac = string.format("52-54-%02x-%02x-%02x-%02x", math.floor(counter / 16777216) % 256,
                            math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256,
                            counter % 256)
  return wrk.format("GET", "/ipxe/node.ipxe?mac=" .. mac .. "&arch=0")
end
"""


def curl_http(ns: NetnsPair, cpus: str, path: str, size: int) -> float:
    """MB/s of one download; raises when it fails or comes back short."""
    url = f"http://{SERVER_IP}{path}"
    t0 = time.perf_counter()
    proc = ns.exec("client", cpus, ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
                                    url], timeout=600, check=False)
    seconds = time.perf_counter() - t0
    got = int(proc.stdout.strip() or 0)
    if proc.returncode != 0 or got != size:
        raise BenchError(f"curl {url}: rc={proc.returncode} got {got}/{size}: "
                         f"{proc.stderr.strip()[-300:]}")
    return size / seconds / 1e6


def fetch(ns: NetnsPair, path: str) -> bytes:
    proc = ns.exec("client", "0-1", ["curl", "-sS", "-f", f"http://{SERVER_IP}{path}"],
                   check=True)
    return proc.stdout.encode()


@dataclass
class WrkRun:
    requests_per_s: float
    requests: int
    errors: int
    p99_ms: float


def wrk(ns: NetnsPair, cpus: str, workdir: Path, seconds: float, connections: int = 64,
        threads: int = 2) -> WrkRun:
    script = workdir / "nodes.lua"
    script.write_text(WRK_LUA)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
           "--latency", "-s",
           str(script), f"http://{SERVER_IP}/"]
    proc = ns.exec("client", cpus, cmd, timeout=seconds + 60, check=False)
    out = proc.stdout
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise BenchError(f"wrk printed no rate: {out[-500:]}")
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        errors += sum(int(g) for g in m.groups())
    p99 = float("nan")
    if m := re.search(r"99%\s+([0-9.]+)(us|ms|s)\b", out):
        p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return WrkRun(float(rps.group(1)), int(total.group(1)), errors, p99)
