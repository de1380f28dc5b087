"""How far one netbootd server goes, and what a fleet of 100 000 nodes needs (docs/scaling.md).

    python bench/scale.py                     # full run, SQLite (root: namespaces, cgroups)
    python bench/scale.py --quick             # smoke test: small sizes, < 2 minutes
    python bench/scale.py --pg                # also with intent and events on PostgreSQL
                                              # (a throw-away cluster, bench/scale_pg.py)
    python bench/scale.py --json out.json
    python bench/run.py --only scale          # the same figures as rows of bench/run.py

Measured, on this machine, with loopback and namespace traffic only:

- **World and memory per fleet size** (``world``): for 1 000, 10 000 and 100 000 nodes,
  configured (``[nodes.x]`` in the TOML file) or adopted (``Registry.adopt``, what
  ``netbootd node adopt`` does), each size in a fresh Python process: the time to read the
  config, to build the World (inventory, intent, renderer: what every intent change or reload
  costs, netbootd/world.py), the process's peak RSS once the World is built, and ``decide()``
  p50/p99 over 20 000 identities (a third configured nodes, a third unknown MACs, a third
  unknown MACs with an unknown GUID) on that World.
- **Boots through the real server** (``boot``): netbootd in the server namespace (one process,
  pinned to one core, in a cgroup), the simulated nodes of :mod:`bench.scale_client` in the
  client namespace on the other core. Each step of a boot is first run for every node on its
  own, so the server's CPU per step is read from the cgroup between steps; then whole boots
  run K at a time: boots per second at that concurrency, server CPU per boot, and what the
  database was asked per boot: statements, transactions, rows written (SQLite: counted by
  :mod:`bench.scale_server`; PostgreSQL: ``pg_stat_statements`` and ``pg_stat_database``
  deltas, :mod:`bench.scale_pg`), the size on disk per node and per event.
- **Fan-out** (``fanout``, PostgreSQL only): what one intent change costs K servers
  sharing the database (bench/scale_fanout.py).
- **Sizing** (``sizing``): 100 000 nodes computed from those figures; every input is a
  measured figure or a stated assumption (link speed, build size, storm target), and the
  arithmetic is in the output.

Each figure records the host's load while it was taken (bench/sandbox.py LoadProbe). Figures
only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import peers, scale_fanout, scale_pg  # noqa: E402
from bench.sandbox import (  # noqa: E402
    SERVER_IP,
    BenchError,
    CpuMeter,
    LoadProbe,
    NetnsPair,
    Terminated,
    install_signal_handlers,
    loadavg,
    rss_kib,
    stop_process,
)

MB = 1 << 20
SERVER_CPU = "0"
CLIENT_CPU = "1"
STEPS = ("dhcp-pxe", "tftp", "dhcp-ipxe", "scripts", "kernel", "initrd", "firstboot",
         "phone-home")


@dataclass(frozen=True)
class ScalePlan:
    quick: bool
    world_sizes: tuple[int, ...]
    fanout: tuple[int, int, int]  # PostgreSQL: servers, flips, adopted nodes
    world_kinds: tuple[str, ...]
    decide_samples: int
    boot_configured: int  # nodes in the boot server's config
    phase_nodes: int  # nodes going through each step on its own
    boot_nodes: int  # whole boots
    concurrency: int
    kernel: int  # bytes of the bench build's kernel and initrd
    initrd: int


FULL = ScalePlan(False, (1000, 10_000, 100_000), (8, 10, 10_000), ("configured", "adopted"),
                 20_000, 10_000,
                 300, 600, 64, 4 * MB, 16 * MB)
QUICK = ScalePlan(True, (1000, 10_000), (2, 3, 1000), ("configured", "adopted"), 2000, 1000,
                  20, 20, 8,
                  MB, 2 * MB)


# ------------------------------------------------------------------------------ World sizes

def _node_spec_toml(n: int) -> str:
    return f'[nodes.n{n:06d}]\nmac = "{peers._node_mac(n)}"\n'


def write_config(workdir: Path, files: peers.Files, *, nodes: int, database: str | None,
                 loader: str = "ipxe") -> Path:
    """A netbootd config on the bench's server address with ``nodes`` configured nodes
    (written as text: 100 000 tables are too slow for the lab's TOML writer)."""
    from netbootd.lab.demo import toml_dump

    cfg: dict[str, Any] = {
        "server": {"address": SERVER_IP, "state_dir": str(workdir / "state"),
                   "store_dir": str(files.store)},
        "dhcp": {"listen": "0.0.0.0", "port": 67, "proxy_port": 4011, "relay_port": 67},
        "tftp": {"listen": "0.0.0.0", "port": 69, "max_sessions": 4000,
                 "max_sessions_per_client": 4000},
        "http": {"listen": "0.0.0.0", "port": 80},
        "state": {"max_nodes": 1_000_000},
    }
    if database:
        cfg["state"]["database"] = database
    text = toml_dump(cfg)
    text += f'[groups.default]\ndefault = true\nbuild = "bench/1.0"\nloader = "{loader}"\n'
    text += "".join(_node_spec_toml(n) for n in range(nodes))
    path = workdir / "netbootd.toml"
    path.write_text(text)
    return path


def bench_build(root: Path, kernel: int, initrd: int) -> peers.Files:
    """A build with a kernel and an initrd of random bytes, in netbootd's store layout."""
    files = peers.make_files(root, {"vmlinuz": kernel, "initrd.img": initrd})
    manifest = files.build_dir / "manifest.json"
    m = json.loads(manifest.read_text())
    m["initrds"] = ["initrd.img"]
    manifest.write_text(json.dumps(m))
    return files


@dataclass
class WorldFigures:
    nodes: int
    kind: str  # configured | adopted
    backend: str
    setup_s: float  # adopted: the adopt calls; configured: writing the TOML file
    load_config_ms: float
    world_build_ms: float  # make_world, median of 3
    rss_base_mb: float  # after imports, before the config
    rss_peak_mb: float  # VmHWM with the World built
    decide_p50_us: float
    decide_p99_us: float
    adopt_ms: float = 0.0  # one Registry.adopt, median (adopted only)


def world_child(args: argparse.Namespace) -> None:
    """In a fresh process (the parent reads its peak RSS from what it prints)."""
    import random
    import statistics

    from netbootd.config import BootSettings, NodeSpec, load_config
    from netbootd.core.identity import Arch, ClientIdentity
    from netbootd.core.planner import decide
    from netbootd.service import Service
    from netbootd.world import make_world

    workdir = Path(args.workdir)
    files = peers.Files(Path(args.store), Path(args.store) / "builds" / "bench" / "1.0", {})
    base = rss_kib(os.getpid())[0] / 1024
    n, kind = args.nodes, args.kind
    t0 = time.perf_counter()
    path = write_config(workdir, files, nodes=n if kind == "configured" else 0,
                        database=args.database or None)
    adopt_times: list[float] = []
    if kind == "adopted":
        # The adopt calls an operator (or a script over the admin API) makes, through the
        # service's own registry object, before the World is built from them.
        config = load_config(path)
        service = Service(config)
        try:
            reg = service.registry
            for i in range(n):
                spec = NodeSpec(name=f"a{i:06d}", settings=BootSettings(),
                                macs=(peers._node_mac(i),), guids=(), serials=(),
                                group=None, hostname=None)
                a0 = time.perf_counter()
                reg.adopt(spec, who="bench", now=time.time())
                if i % max(1, n // 200) == 0:
                    adopt_times.append((time.perf_counter() - a0) * 1000)
        finally:
            import asyncio
            asyncio.run(service.stop())
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    config = load_config(path)
    load_ms = (time.perf_counter() - t0) * 1000
    service = Service(config)
    try:
        w = service.responder.world
        builds = []
        for gen in range(3):
            t0 = time.perf_counter()
            w = make_world(w.generation + 1 + gen, config, w.catalog, w.renderer, service.state,
                           service.registry)
            builds.append((time.perf_counter() - t0) * 1000)
        if len(w.inventory.nodes) < n:
            raise BenchError(f"World has {len(w.inventory.nodes)} nodes, expected {n}")
        rng = random.Random(13)
        idents = []
        for i in range(args.samples):
            if i % 3 == 0:
                mac = peers._node_mac(rng.randrange(n))
            else:
                mac = f"0a:00:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}:" \
                      f"{rng.randrange(256):02x}"
            guid = f"{rng.getrandbits(32):08x}-0000-4000-8000-000000000001" if i % 3 == 2 \
                else None
            idents.append(ClientIdentity(mac=mac, guid=guid, arch=Arch(0),
                                         vendor_class="PXEClient"))
        for ident in idents[:200]:
            decide(ident, w.inventory, w.catalog, intent=w.intent)
        times = []
        clock = time.perf_counter_ns
        for ident in idents:
            t0n = clock()
            plan = decide(ident, w.inventory, w.catalog, intent=w.intent)
            times.append((clock() - t0n) / 1000)
            if plan is None:
                raise BenchError("no decision")
        times.sort()
        peak = rss_kib(os.getpid())[1] / 1024
        fig = WorldFigures(n, kind, "postgresql" if args.database else "sqlite", setup,
                           load_ms, statistics.median(builds), base, peak,
                           times[len(times) // 2], times[min(len(times) - 1,
                                                             int(len(times) * 0.99))],
                           statistics.median(adopt_times) if adopt_times else 0.0)
    finally:
        import asyncio
        asyncio.run(service.stop())
    print(json.dumps(asdict(fig)))


def world_figures(workdir: Path, files: peers.Files, nodes: int, kind: str, samples: int,
                  backend: str) -> tuple[WorldFigures, LoadProbe]:
    wd = workdir / f"world-{kind}-{nodes}-{time.monotonic_ns()}"
    wd.mkdir(parents=True)
    cmd = [sys.executable, "-m", "bench.scale", "_world", "--workdir", str(wd), "--store",
           str(files.store), "--nodes", str(nodes), "--kind", kind, "--samples", str(samples)]
    with ExitStack() as stack:
        if backend == "postgresql":
            pg = stack.enter_context(scale_pg.start_cluster())
            cmd += ["--database", pg.dsn]
        with LoadProbe() as probe:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600,
                                  check=False)
    if proc.returncode != 0:
        raise BenchError(f"world {kind} {nodes}: {proc.stderr[-1500:]}")
    return WorldFigures(**json.loads(proc.stdout.strip().splitlines()[-1])), probe


# ------------------------------------------------------------------------------ boots

@dataclass
class DbCounts:
    statements: float = 0.0
    transactions: float = 0.0
    rows_written: float = 0.0
    detail: dict[str, float] = field(default_factory=dict)


class SqliteCounter:
    """Counters of the server started by bench/scale_server.py (SIGUSR1 -> JSON file)."""

    def __init__(self, proc: subprocess.Popen[Any], path: Path) -> None:
        self.proc, self.path = proc, path

    def _server_pid(self) -> int:
        # ns.spawn runs sh -> ip netns exec -> taskset -> python (each execs): one pid.
        return self.proc.pid

    def read(self) -> dict[str, Any]:
        before = self.path.stat().st_mtime_ns if self.path.exists() else 0
        os.kill(self._server_pid(), signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.path.exists() and self.path.stat().st_mtime_ns != before:
                return dict(json.loads(self.path.read_text()))
            time.sleep(0.02)
        raise BenchError("the server did not write its SQLite counters")

    def settled(self) -> dict[str, Any]:
        """Counters once the write-behind queue is flushed (two reads 0.3 s apart agree)."""
        last = self.read()
        while True:
            time.sleep(0.3)
            now = self.read()
            if now == last:
                return now
            last = now


def _delta(a: dict[str, Any], b: dict[str, Any]) -> DbCounts:
    verbs = {k: b["by_verb"].get(k, 0) - a["by_verb"].get(k, 0)
             for k in set(a["by_verb"]) | set(b["by_verb"])}
    return DbCounts(b["statements"] - a["statements"], b["transactions"] - a["transactions"],
                    b["rows_written"] - a["rows_written"],
                    {k: float(v) for k, v in sorted(verbs.items()) if v})


@dataclass
class StepFigures:
    step: str
    nodes: int
    ok: int
    errors: int
    first_error: str
    seconds: float
    server_cpu_us: float  # per node
    bytes_per_node: float
    db: DbCounts


@dataclass
class BootFigures:
    backend: str
    configured_nodes: int
    concurrency: int
    kernel_bytes: int
    initrd_bytes: int
    steps: list[StepFigures]
    boots: int
    boots_ok: int
    boot_errors: int
    first_error: str
    boot_seconds: float
    boots_per_s: float
    server_cpu_per_boot_ms: float
    server_busy: float  # share of one core the server used during the boots
    bytes_per_boot: float
    db_per_boot: DbCounts
    rss_peak_mb: float
    db_bytes_per_node: float
    db_bytes_per_event: float
    events_per_boot: float
    db_tables: dict[str, dict[str, float]]
    load: dict[str, float | bool]


def _wait_listening(ns: NetnsPair, proc: subprocess.Popen[Any], ports: tuple[str, ...],
                    log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise BenchError(f"server exited ({proc.returncode}): {log.read_text()[-1500:]}")
        out = ns.exec("server", "0-1", ["ss", "-Hlnu"], check=False).stdout + \
            ns.exec("server", "0-1", ["ss", "-Hlnt"], check=False).stdout
        listening = {line.split()[3].rsplit(":", 1)[-1] for line in out.splitlines()
                     if len(line.split()) > 3}
        if all(p in listening for p in ports):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"server did not listen on {ports}: {log.read_text()[-1500:]}")
        time.sleep(0.2)


def boot_figures(workdir: Path, plan: ScalePlan, backend: str,
                 log: Callable[[str], None]) -> tuple[BootFigures, LoadProbe]:
    wd = workdir / f"boot-{time.monotonic_ns()}"
    wd.mkdir(parents=True)
    wd.chmod(0o755)
    files = bench_build(wd / "data", plan.kernel, plan.initrd)
    counters_path = wd / "sqlite-counters.json"
    with NetnsPair("scale") as ns, ExitStack() as stack:
        meter = CpuMeter("netbootd-scale")
        logf = (wd / "server.log").open("w")
        client: subprocess.Popen[str] | None = None
        pg: Any = None
        try:
            if backend == "postgresql":
                # in the server's namespace: netbootd reaches it on 127.0.0.1 there
                pg = stack.enter_context(scale_pg.start_cluster(
                    ["ip", "netns", "exec", ns.server]))
            config = write_config(wd, files, nodes=plan.boot_configured,
                                  database=pg.dsn if pg is not None else None)
            cmd = [sys.executable, "-m", "bench.scale_server", str(counters_path), "serve",
                   "--config", str(config)]
            proc = ns.spawn("server", SERVER_CPU, cmd, meter=meter, log=logf,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                 "PYTHONPATH": str(ROOT)})
            _wait_listening(ns, proc, ("67", "69", "80", "4011"), wd / "server.log")
            db: SqliteCounter | scale_pg.PgCounter = \
                scale_pg.PgCounter(pg, pg.dbname) if pg is not None \
                else SqliteCounter(proc, counters_path)
            client = subprocess.Popen(
                ["ip", "netns", "exec", ns.client, "taskset", "-c", CLIENT_CPU,
                 sys.executable, "-m", "bench.scale_client", "--count", str(plan.phase_nodes),
                 "--concurrency", str(plan.concurrency)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True,
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)

            def ask(cmd: str) -> dict[str, Any]:
                assert client is not None and client.stdin and client.stdout
                client.stdin.write(cmd + "\n")
                client.stdin.flush()
                line = client.stdout.readline()
                if not line:
                    raise BenchError(f"the client ended: {(wd / 'server.log').read_text()[-800:]}")
                return dict(json.loads(line))

            # What the idle server uses (timers, the counter reads below) is taken out of
            # every window: a step's figure is the work its requests caused.
            t0, c0, _ = time.monotonic(), meter.usage_us(), db.settled()
            time.sleep(2.0)
            db.settled()
            idle = (meter.usage_us() - c0) / (time.monotonic() - t0)  # µs per second
            log(f"  idle server: {idle / 1e4:.2f} % of a core")

            def window(cmd: str) -> tuple[dict[str, Any], float, DbCounts]:
                t0, c0, d0 = time.monotonic(), meter.usage_us(), db.settled()
                r = ask(cmd)
                d1 = db.settled()
                cpu = meter.usage_us() - c0 - idle * (time.monotonic() - t0)
                return r, max(0.0, cpu), _delta(d0, d1)

            steps: list[StepFigures] = []
            for step in STEPS:
                r, cpu, dd = window(f"phase {step}")
                ok = max(1, r["ok"])
                steps.append(StepFigures(step, r["nodes"], r["ok"], r["errors"],
                                         r["first_error"], r["seconds"], cpu / ok,
                                         r["bytes_in"] / ok,
                                         DbCounts(dd.statements / ok, dd.transactions / ok,
                                                  dd.rows_written / ok,
                                                  {k: v / ok for k, v in dd.detail.items()})))
                log(f"  step {step}: {r['ok']}/{r['nodes']} ok, "
                    f"{cpu / ok:.0f} µs server CPU per node, "
                    f"{dd.statements / ok:.1f} statements, {dd.rows_written / ok:.1f} rows")
            events0 = _event_count(db, wd)
            with LoadProbe() as probe:
                r, cpu, dd = window(f"boot {plan.boot_nodes}")
            events1 = _event_count(db, wd)
            rss = rss_kib(proc.pid)[1] / 1024
            assert client.stdin is not None
            client.stdin.write("quit\n")
            client.stdin.flush()
            ok = max(1, r["ok"])
            per_boot = DbCounts(dd.statements / ok, dd.transactions / ok, dd.rows_written / ok,
                                {k: v / ok for k, v in dd.detail.items()})
            sizes = db.sizes() if isinstance(db, scale_pg.PgCounter) else _db_sizes(wd)
            ns.stop(proc)
        finally:
            if client is not None:
                stop_process(client)
            logf.close()
            meter.close()
    cpu_s = cpu / 1e6
    node_b, event_b = sizes.get("nodes", {}), sizes.get("events", {})
    return BootFigures(
        backend, plan.boot_configured, plan.concurrency, plan.kernel, plan.initrd, steps,
        r["nodes"], r["ok"], r["errors"], r["first_error"], r["seconds"],
        r["ok"] / r["seconds"], cpu_s * 1000 / ok, cpu_s / r["seconds"], r["bytes_in"] / ok,
        per_boot, rss,
        node_b.get("bytes", 0.0) / max(1.0, node_b.get("rows", 0.0)),
        event_b.get("bytes", 0.0) / max(1.0, event_b.get("rows", 0.0)),
        (events1 - events0) / ok, sizes, probe.as_dict()), probe


def _event_count(db: SqliteCounter | scale_pg.PgCounter, wd: Path) -> int:
    import sqlite3

    if isinstance(db, scale_pg.PgCounter):
        return int(db.query("SELECT count(*) FROM events").strip())

    con = sqlite3.connect(f"file:{wd / 'state' / 'state.sqlite3'}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        con.close()


def _db_sizes(wd: Path) -> dict[str, dict[str, float]]:
    """Bytes on disk per table, its indexes included, and its rows (SQLite's dbstat)."""
    import sqlite3

    out: dict[str, dict[str, float]] = {}
    for db in ("state.sqlite3", "intent.sqlite3"):
        con = sqlite3.connect(str(wd / "state" / db))
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            idx = {name: tbl for name, tbl in con.execute(
                "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")}
            for name, size in con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                tbl = idx.get(name, name)
                if tbl.startswith("sqlite_"):
                    continue
                t = out.setdefault(tbl, {"bytes": 0.0, "rows": 0.0})
                t["bytes"] += float(size)
            for tbl in out:
                if tbl in idx and not out[tbl]["rows"]:
                    out[tbl]["rows"] = float(
                        con.execute(f'SELECT count(*) FROM "{tbl}"').fetchone()[0])
        finally:
            con.close()
    return out


# ------------------------------------------------------------------------------ sizing

@dataclass(frozen=True)
class Build:
    """A build a fleet boots: what one boot moves over HTTP, in how many GETs."""

    name: str
    bytes: int
    files: int


# images/README.md: the KVM hypervisor appliance (kernel 8.2 MB, zstd initrd 24 MB, squashfs
# 175 MB, all over HTTP) and the busybox demo appliance (kernel and initrd).
BUILDS = (Build("kvm-hypervisor", 8_200_000 + 24_000_000 + 175_000_000, 3),
          Build("demo", 8_247_232 + 1_237_726, 2))


@dataclass(frozen=True)
class Assumptions:
    fleet: int = 100_000
    storm_minutes: tuple[float, ...] = (15.0, 60.0)  # targets: the whole fleet rebooted within
    link_gbit: float = 10.0  # each server's NIC
    link_use: float = 0.7  # share of the link a boot storm may take
    builds_per_site: int = 3  # builds an edge keeps: current, previous, next
    events_kept_per_node: int = 100  # boot timeline depth kept per node


def sizing(boot: BootFigures, world: list[WorldFigures], a: Assumptions,
           builds: tuple[Build, ...] = BUILDS) -> dict[str, Any]:
    """100 000 nodes from the measured figures; each line says how it was computed."""
    lines: list[str] = []
    step = {s.step: s for s in boot.steps}
    kernel, initrd = step["kernel"], step["initrd"]
    # Two GETs of different sizes: the slope is the cost per byte, the rest per request.
    cpu_per_mb_ms = max(0.0, (initrd.server_cpu_us - kernel.server_cpu_us) / 1000
                        / max(1e-9, (initrd.bytes_per_node - kernel.bytes_per_node) / MB))
    per_get_ms = max(0.0, kernel.server_cpu_us / 1000
                     - cpu_per_mb_ms * kernel.bytes_per_node / MB)
    bench_payload = boot.kernel_bytes + boot.initrd_bytes
    lines.append(f"server CPU per MiB sent = (initrd {initrd.server_cpu_us / 1000:.2f} ms - "
                 f"kernel {kernel.server_cpu_us / 1000:.2f} ms) / "
                 f"{(initrd.bytes_per_node - kernel.bytes_per_node) / MB:.0f} MiB = "
                 f"{cpu_per_mb_ms:.3f} ms; per GET besides its bytes: {per_get_ms:.2f} ms")
    out_builds: list[dict[str, Any]] = []
    link_bps = a.link_gbit * 1e9 / 8 * a.link_use
    for b in builds:
        # The whole boot as measured, with the bench's kernel+initrd swapped for this build's.
        cpu_ms = (boot.server_cpu_per_boot_ms + (b.files - 2) * per_get_ms
                  + cpu_per_mb_ms * (b.bytes - bench_payload) / MB)
        cpu_rate = 1000 / cpu_ms
        per_boot_bytes = boot.bytes_per_boot - bench_payload + b.bytes
        net_rate = link_bps / per_boot_bytes
        per_server = min(cpu_rate, net_rate)
        bound = "network" if net_rate < cpu_rate else "CPU"
        lines.append(f"{b.name} ({b.bytes / 1e6:.1f} MB in {b.files} GETs): server CPU per boot "
                     f"= {boot.server_cpu_per_boot_ms:.2f} ms (measured whole boot) + "
                     f"{b.files - 2} x {per_get_ms:.2f} ms + {cpu_per_mb_ms:.3f} ms/MiB x "
                     f"{(b.bytes - bench_payload) / MB:+.0f} MiB = {cpu_ms:.2f} ms -> one core: "
                     f"{cpu_rate:.0f} boots/s; network: {a.link_gbit:g} Gbit/s x "
                     f"{a.link_use:.0%} / {per_boot_bytes / 1e6:.1f} MB = {net_rate:.1f} boots/s"
                     f" -> {per_server:.1f} boots/s per server ({bound} bound), "
                     f"{per_server * 60:.0f} per minute")
        storms = []
        for minutes in a.storm_minutes:
            need = a.fleet / (minutes * 60)
            servers = math.ceil(need / per_server)
            storms.append({"minutes": minutes, "boots_per_s": need, "servers": servers})
            lines.append(f"  {a.fleet:,} nodes in {minutes:g} min = {need:.0f} boots/s / "
                         f"{per_server:.1f} = {servers} server(s) (+1 to lose one)")
        lines.append(f"  one server alone: {a.fleet:,} / {per_server:.1f} / 60 = "
                     f"{a.fleet / per_server / 60:.0f} min")
        cache = a.builds_per_site * b.bytes
        lines.append(f"  edge cache: {a.builds_per_site} builds x {b.bytes / 1e6:.0f} MB = "
                     f"{cache / 1e9:.2f} GB")
        out_builds.append({"build": asdict(b), "cpu_per_boot_ms": cpu_ms,
                           "boots_per_s_cpu": cpu_rate, "boots_per_s_network": net_rate,
                           "boots_per_s_server": per_server, "bound": bound, "storms": storms,
                           "edge_cache_bytes": cache})
    fastest = a.fleet / (min(a.storm_minutes) * 60)
    events_rate = fastest * boot.events_per_boot
    lines.append(f"database, {a.fleet:,} nodes in {min(a.storm_minutes):g} min: {fastest:.0f} "
                 f"boots/s x {boot.events_per_boot:.1f} events = {events_rate:.0f} events/s; "
                 f"x {boot.db_per_boot.rows_written:.0f} rows = "
                 f"{fastest * boot.db_per_boot.rows_written:.0f} rows written/s; "
                 f"x {boot.db_per_boot.statements:.1f} statements = "
                 f"{fastest * boot.db_per_boot.statements:.0f} statements/s (all servers)")
    db_bytes = a.fleet * (boot.db_bytes_per_node + a.events_kept_per_node
                          * boot.db_bytes_per_event)
    lines.append(f"database size: {a.fleet:,} x ({boot.db_bytes_per_node:.0f} B per node + "
                 f"{a.events_kept_per_node} events x {boot.db_bytes_per_event:.0f} B) = "
                 f"{db_bytes / 1e9:.2f} GB; [state] max_events = "
                 f"{a.fleet * a.events_kept_per_node:,}, max_nodes >= {a.fleet:,}")
    big = [w for w in world if w.nodes == max(x.nodes for x in world)]
    for w in big:
        lines.append(f"World of {w.nodes:,} {w.kind} nodes ({w.backend}): built in "
                     f"{w.world_build_ms:.0f} ms (each intent change, on every server), peak "
                     f"RSS {w.rss_peak_mb:.0f} MB, decide p99 {w.decide_p99_us:.1f} µs")
    return {"assumptions": asdict(a), "cpu_per_mib_ms": cpu_per_mb_ms,
            "cpu_per_get_ms": per_get_ms, "builds": out_builds,
            "events_per_s": events_rate, "db_bytes": db_bytes, "lines": lines}


def sizing_from(path: Path, a: Assumptions) -> dict[str, Any]:
    """The sizing again from a results file (``--json``) with other assumptions."""
    data = json.loads(path.read_text())
    boots = data["boot"]
    if not boots:
        raise BenchError(f"{path}: no boot figures")
    b = dict(boots[0])
    b["steps"] = [StepFigures(**{**s, "db": DbCounts(**s["db"])}) for s in b["steps"]]
    b["db_per_boot"] = DbCounts(**b["db_per_boot"])
    return sizing(BootFigures(**b), [WorldFigures(**w) for w in data["world"]], a)


# ------------------------------------------------------------------------------ the run

@dataclass
class ScaleResults:
    notes: list[str]
    world: list[WorldFigures]
    world_load: list[dict[str, float | bool]]
    boot: list[BootFigures]
    fanout: list[scale_fanout.FanoutFigures]
    sizing: dict[str, Any]
    errors: list[str]
    # each figure's LoadProbe, for bench/run.py's rows ("world-<kind>-<n>-<backend>",
    # "boot-<backend>"); not in the JSON (the figures carry their load as dicts)
    probes: dict[str, LoadProbe] = field(default_factory=dict)


def run(plan: ScalePlan, workdir: Path, log: Callable[[str], None],
        backends: tuple[str, ...] = ("sqlite",),
        only: tuple[str, ...] = ("world", "boot", "fanout"),
        assumptions: Assumptions | None = None) -> ScaleResults:
    notes = [f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"{os.cpu_count()} CPUs, load average at start: {loadavg()}",
             f"mode: {'quick' if plan.quick else 'full'}"]
    res = ScaleResults(notes, [], [], [], [], {}, [])
    files = bench_build(workdir / "world-data", 4096, 4096)
    for backend in backends:
        if "world" in only:
            for kind in plan.world_kinds:
                for n in plan.world_sizes:
                    log(f"world: {n} {kind} nodes ({backend})")
                    try:
                        w, probe = world_figures(workdir, files, n, kind, plan.decide_samples,
                                                 backend)
                    except Exception as e:
                        res.errors.append(f"world {kind} {n} {backend}: {e}")
                        log(f"FAILED world {kind} {n}: {e}")
                        continue
                    res.world.append(w)
                    res.world_load.append(probe.as_dict())
                    res.probes[f"world-{kind}-{n}-{backend}"] = probe
                    log(f"  load {w.load_config_ms:.0f} ms, World {w.world_build_ms:.0f} ms, "
                        f"RSS {w.rss_peak_mb:.0f} MB, decide p99 {w.decide_p99_us:.1f} µs")
        if "boot" in only:
            log(f"boot: {plan.phase_nodes} nodes per step, then {plan.boot_nodes} boots, "
                f"{plan.concurrency} at a time ({backend})")
            try:
                b, probe = boot_figures(workdir, plan, backend, log)
                res.boot.append(b)
                res.probes[f"boot-{backend}"] = probe
                log(f"  {b.boots_ok}/{b.boots} boots in {b.boot_seconds:.1f} s = "
                    f"{b.boots_per_s:.1f}/s, {b.server_cpu_per_boot_ms:.2f} ms server CPU "
                    f"per boot, {b.db_per_boot.statements:.1f} statements, "
                    f"{b.db_per_boot.transactions:.2f} transactions per boot")
            except Exception as e:
                res.errors.append(f"boot {backend}: {e}")
                log(f"FAILED boot {backend}: {e}")
        if "fanout" in only and backend == "postgresql":
            k, flips, adopted = plan.fanout
            log(f"fan-out: {k} servers on one PostgreSQL, {flips} channel flips, "
                f"{adopted} adopted nodes")
            try:
                with LoadProbe() as probe:
                    f = scale_fanout.measure(workdir / f"fanout-{time.monotonic_ns()}", files,
                                             k, flips, adopted)
                res.fanout.append(f)
                res.probes["fanout"] = probe
                log(f"  latency p50 {f.latency_ms_p50:.0f} ms, max {f.latency_ms_max:.0f} ms; "
                    f"per server {f.statements_per_server:.1f} statements, "
                    f"{f.rows_read_per_server:.0f} rows read, {f.cpu_ms_per_server:.1f} ms CPU")
            except Exception as e:
                res.errors.append(f"fan-out: {e}")
                log(f"FAILED fan-out: {e}")
    if res.boot:
        res.sizing = sizing(res.boot[0], res.world, assumptions or Assumptions())
    res.notes.append(f"load average at end: {loadavg()}")
    return res


def report(res: ScaleResults) -> str:
    out = ["- " + n for n in res.notes]
    if res.world:
        out += ["", "| nodes | kind | backend | read config | World build | peak RSS | "
                "decide p50 | decide p99 | adopt (one) |", "|---|---|---|---|---|---|---|---|---|"]
        for w in res.world:
            out.append(f"| {w.nodes:,} | {w.kind} | {w.backend} | {w.load_config_ms:,.0f} ms | "
                       f"{w.world_build_ms:,.0f} ms | {w.rss_peak_mb:,.0f} MB | "
                       f"{w.decide_p50_us:.1f} µs | {w.decide_p99_us:.1f} µs | "
                       + (f"{w.adopt_ms:.2f} ms |" if w.kind == "adopted" else "- |"))
    for b in res.boot:
        out += ["", f"Boots through the server ({b.backend}, {b.configured_nodes:,} configured "
                f"nodes, kernel {b.kernel_bytes // MB} MiB + initrd {b.initrd_bytes // MB} MiB,"
                f" {b.concurrency} at a time):", "",
                "| step | nodes ok | server CPU per node | bytes per node | DB statements | "
                "DB transactions | DB rows written |", "|---|---|---|---|---|---|---|"]
        for s in b.steps:
            out.append(f"| {s.step} | {s.ok}/{s.nodes} | {s.server_cpu_us:,.0f} µs | "
                       f"{s.bytes_per_node:,.0f} | {s.db.statements:.2f} | "
                       f"{s.db.transactions:.2f} | {s.db.rows_written:.2f} |")
        out.append(f"| **whole boot** | {b.boots_ok}/{b.boots} | "
                   f"{b.server_cpu_per_boot_ms * 1000:,.0f} µs | {b.bytes_per_boot:,.0f} | "
                   f"{b.db_per_boot.statements:.2f} | {b.db_per_boot.transactions:.2f} | "
                   f"{b.db_per_boot.rows_written:.2f} |")
        out += ["", f"- {b.boots_ok} whole boots in {b.boot_seconds:.1f} s: "
                f"**{b.boots_per_s:.1f} boots/s** ({b.boots_per_s * 60:,.0f} per minute), "
                f"server busy {b.server_busy:.0%} of one core; errors {b.boot_errors}"
                + (f" ({b.first_error})" if b.first_error else ""),
                f"- statements per boot by kind: {json.dumps(b.db_per_boot.detail)}",
                f"- events per boot: {b.events_per_boot:.1f}; on disk: "
                f"{b.db_bytes_per_node:.0f} B per node, {b.db_bytes_per_event:.0f} B per event"
                " (indexes included)",
                f"- server peak RSS {b.rss_peak_mb:.0f} MB; load during the boots: "
                f"load1 {b.load.get('load1', 0):.2f}, other processes "
                f"{b.load.get('other_cores', 0):.2f} cores"]
    for f in res.fanout:
        out += ["", f"One channel flip, {f.servers} servers on one PostgreSQL, {f.adopted:,} "
                f"adopted nodes ({f.flips} flips): commit to every server answering the new "
                f"build p50 {f.latency_ms_p50:.0f} ms, max {f.latency_ms_max:.0f} ms; the flip "
                f"itself {f.writer_statements:.0f} statements; each server then "
                f"{f.statements_per_server:.1f} statements ({json.dumps(f.by_verb_per_server)}),"
                f" {f.rows_read_per_server:,.0f} rows read, {f.cpu_ms_per_server:.1f} ms CPU"]
    if res.sizing:
        out += ["", "100 000 nodes, computed:", ""] + ["- " + line for line in
                                                        res.sizing["lines"]]
    if res.errors:
        out += ["", "Errors:"] + ["- " + e for e in res.errors]
    return "\n".join(out)


def dump(res: ScaleResults, path: Path) -> None:
    data = {"notes": res.notes, "world": [asdict(w) for w in res.world],
            "world_load": res.world_load, "boot": [asdict(b) for b in res.boot],
            "fanout": [asdict(f) for f in res.fanout],
            "sizing": res.sizing, "errors": res.errors}
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_world"]:
        ap = argparse.ArgumentParser()
        for a in ("--workdir", "--store", "--kind", "--database"):
            ap.add_argument(a)
        ap.add_argument("--nodes", type=int)
        ap.add_argument("--samples", type=int)
        world_child(ap.parse_args(argv[1:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--pg", action="store_true",
                    help="also run with intent and events on PostgreSQL (a throw-away cluster)")
    ap.add_argument("--no-sqlite", action="store_true", help="only the --pg runs")
    ap.add_argument("--only", action="append", choices=("world", "boot", "fanout"))
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--sizing-from", type=Path, metavar="RESULTS",
                    help="print the 100k-node sizing from an earlier --json file and exit")
    ap.add_argument("--link-gbit", type=float, default=Assumptions.link_gbit,
                    help="each server's link, for the sizing (default: %(default)s)")
    args = ap.parse_args(argv)
    assumptions = Assumptions(link_gbit=args.link_gbit)
    if args.sizing_from:
        print("\n".join("- " + line for line in
                        sizing_from(args.sizing_from, assumptions)["lines"]))
        return 0
    if os.geteuid() != 0:
        print("bench/scale.py needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    dbs = (*(() if args.no_sqlite else ("sqlite",)), *(("postgresql",) if args.pg else ()))
    install_signal_handlers()  # SIGTERM/SIGHUP unwind: servers, clusters, namespaces removed
    workdir = Path(tempfile.mkdtemp(prefix="netbootd-scale-", dir="/var/tmp"))
    workdir.chmod(0o755)
    try:
        res = run(QUICK if args.quick else FULL, workdir, log, dbs,
                  tuple(args.only or ("world", "boot", "fanout")), assumptions)
    except (Terminated, KeyboardInterrupt) as e:
        log(f"stopped ({e or 'SIGINT'}): servers, clusters and namespaces removed")
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(res))
    if args.json:
        dump(res, args.json)
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
