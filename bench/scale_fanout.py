"""What one intent change costs a fleet of servers sharing PostgreSQL (bench/scale.py --pg).

K ``netbootd serve`` processes (HTTP only, on loopback, each with its own state folder, all
with ``[state] database`` on one throw-away cluster) follow a channel. The bench flips that
channel R times through the admin layer (``Admin.channel_set``, what ``netbootd channel set``
and the API call) and, after each flip, asks every server for a node's iPXE script until it
names the new build. Per flip it reports:

- **latency**: from the commit to each server's first answer naming the new build (the
  servers' ``changed()`` sees the NOTIFY on their LISTEN socket at the next request and
  rebuild their World; nothing is pushed, so the latency is that of the first request after
  the commit, plus the rebuild);
- **database work per server**: ``pg_stat_statements`` calls and rows during the flip
  window, minus what the same number of requests cost without a change (measured first),
  divided by K: the statements and rows each server's re-read of the intent costs;
- **server CPU per server**: the servers' cgroup CPU in the window, minus the same
  request baseline, divided by K.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import scale_pg
from bench.peers import Files
from bench.sandbox import BenchError, CpuMeter, stop_process

ROOT = Path(__file__).resolve().parent.parent
MAC = "52-54-01-00-00-01"


@dataclass
class FanoutFigures:
    servers: int
    flips: int
    adopted: int  # adopted nodes in the shared database (read again at every change)
    latency_ms_p50: float
    latency_ms_max: float
    writer_statements: float  # per flip: what the channel change itself ran
    statements_per_server: float  # per flip and server: the intent re-read
    rows_read_per_server: float
    cpu_ms_per_server: float
    by_verb_per_server: dict[str, float]


def _second_build(files: Files) -> None:
    """bench/2.0: the same files under another version (what a channel flip moves to)."""
    dst = files.store / "builds" / "bench" / "2.0"
    if dst.exists():
        return
    shutil.copytree(files.build_dir, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["version"] = "2.0"
    (dst / "manifest.json").write_text(json.dumps(m))


def _config(wd: Path, files: Files, port: int, dsn: str) -> Path:
    from netbootd.lab.demo import toml_dump

    text = toml_dump({
        "server": {"address": "127.0.0.1", "state_dir": str(wd / "state"),
                   "store_dir": str(files.store)},
        "dhcp": {"enabled": False}, "tftp": {"enabled": False},
        "http": {"listen": "127.0.0.1", "port": port}, "admin": {"enabled": False},
        "state": {"database": dsn, "max_nodes": 1_000_000},
    })
    text += '[groups.default]\ndefault = true\nchannel = "scale"\nloader = "ipxe"\n'
    path = wd / "netbootd.toml"
    path.write_text(text)
    return path


def _get(port: int) -> str:
    url = f"http://127.0.0.1:{port}/ipxe/node.ipxe?mac={MAC}&arch=0"
    with urllib.request.urlopen(url, timeout=30) as r:
        return str(r.read().decode())


def _wait_up(proc: subprocess.Popen[Any], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise BenchError(f"server exited ({proc.returncode}): {log.read_text()[-1200:]}")
        try:
            _get(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"server on {port} did not answer: "
                                 f"{log.read_text()[-1200:]}") from None
            time.sleep(0.2)


def measure(workdir: Path, files: Files, servers: int, flips: int, adopted: int
            ) -> FanoutFigures:
    from netbootd.admin import Admin
    from netbootd.config import BootSettings, NodeSpec, load_config

    _second_build(files)
    pg = scale_pg.start_cluster()
    meter = CpuMeter("netbootd-fanout")
    procs: list[subprocess.Popen[Any]] = []
    logs = []
    try:
        counter = scale_pg.PgCounter(pg, pg.dbname)
        ports = [_free_port() for _ in range(servers)]
        configs = []
        for i, port in enumerate(ports):
            wd = workdir / f"fanout-{i}"
            wd.mkdir(parents=True)
            configs.append(_config(wd, files, port, pg.dsn))
        admin = Admin(load_config(configs[0]))
        try:
            for i in range(adopted):
                admin.registry.adopt(NodeSpec(
                    name=f"a{i:06d}", settings=BootSettings(),
                    macs=(f"52:54:04:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",),
                    guids=(), serials=(), group=None, hostname=None),
                    who="bench", now=time.time())
            # What a flip itself runs (the writer's side), before any server listens.
            w0 = counter.read()
            for flip in range(3):
                admin.channel_set("scale", ("bench/1.0", "bench/2.0")[flip % 2], who="bench")
            w1 = counter.read()
            writer = (w1["statements"] - w0["statements"]) / 3
            writer_verbs = {k: (w1["by_verb"].get(k, 0) - w0["by_verb"].get(k, 0)) / 3
                            for k in set(w0["by_verb"]) | set(w1["by_verb"])}
            admin.channel_set("scale", "bench/1.0", who="bench")
            for cfg in configs:
                log = cfg.parent / "server.log"
                logs.append(log)
                argv = [sys.executable, "-m", "netbootd", "serve", "--config", str(cfg)]
                if meter.procs_file is not None:
                    argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(meter.procs_file),
                            *argv]
                procs.append(subprocess.Popen(argv, stdout=log.open("w"),
                                              stderr=subprocess.STDOUT, cwd=ROOT,
                                              start_new_session=True))
            for proc, port, log in zip(procs, ports, logs, strict=True):
                _wait_up(proc, port, log)
            # Baseline: what a request costs the database and the servers with no change.
            base_n = 20
            d0, c0 = counter.read(), meter.usage_us()
            for _ in range(base_n):
                for port in ports:
                    _get(port)
            d1, c1 = counter.read(), meter.usage_us()
            per_req = {k: (d1["by_verb"].get(k, 0) - d0["by_verb"].get(k, 0)) / (base_n * servers)
                       for k in set(d0["by_verb"]) | set(d1["by_verb"])}
            rows_per_req = (d1["rows_read"] - d0["rows_read"]) / (base_n * servers)
            cpu_per_req = (c1 - c0) / (base_n * servers)
            latencies: list[float] = []
            stmts: list[float] = []
            rows: list[float] = []
            cpus: list[float] = []
            verbs: dict[str, float] = {}
            for flip in range(flips):
                target = "bench/2.0" if flip % 2 == 0 else "bench/1.0"
                w1, c0 = counter.read(), meter.usage_us()
                admin.channel_set("scale", target, who="bench", why=f"flip {flip}")
                committed = time.monotonic()
                requests = 0
                waiting = set(ports)
                deadline = committed + 60
                while waiting:
                    for port in sorted(waiting):
                        requests += 1
                        if f"boots {target}" in _get(port):
                            latencies.append((time.monotonic() - committed) * 1000)
                            waiting.discard(port)
                    if time.monotonic() > deadline:
                        raise BenchError(f"servers {sorted(waiting)} still answer the old "
                                         f"build 60 s after the flip to {target}")
                time.sleep(0.2)  # the servers' write-behind flush of the requests' events
                d1, c1 = counter.read(), meter.usage_us()
                for k in set(w1["by_verb"]) | set(d1["by_verb"]):
                    extra = (d1["by_verb"].get(k, 0) - w1["by_verb"].get(k, 0)
                             - writer_verbs.get(k, 0.0) - per_req.get(k, 0.0) * requests
                             ) / servers
                    verbs[k] = verbs.get(k, 0.0) + extra / flips
                stmts.append((d1["statements"] - w1["statements"] - writer
                              - sum(per_req.values()) * requests) / servers)
                rows.append((d1["rows_read"] - w1["rows_read"] - rows_per_req * requests)
                            / servers)
                cpus.append((c1 - c0 - cpu_per_req * requests) / servers / 1000)
        finally:
            admin.close()
    finally:
        for proc in procs:
            stop_process(proc)
        meter.close()
        pg.close()
    return FanoutFigures(servers, flips, adopted, statistics.median(latencies), max(latencies),
                         writer, statistics.median(stmts),
                         statistics.median(rows), statistics.median(cpus),
                         {k: round(v, 2) for k, v in sorted(verbs.items()) if abs(v) >= 0.05})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
