"""netbootd side by side with tftpd-hpa, atftpd, dnsmasq and nginx: one command, one table.

    python bench/run.py                 # full run (about 25 minutes on 2 cores), root
    python bench/run.py --quick         # smoke test: every benchmark, small sizes, < 90 s
    python bench/run.py --only tftp     # tftp, storm, dhcp, dhcp-server, http, decision,
                                        # memory, boot, qemu-storm, scale (repeatable)
    python bench/run.py --json out.json --plots docs/img

Installs the peers from Debian when missing (see bench/peers.py), starts netbootd and the
peers of a benchmark at once, each in network namespaces the bench creates and removes, and
measures them in alternating rounds (netbootd, peer, netbootd, peer, ...) on the same files
with the same C clients. Each sample records the host's load while it was taken; a round
taken under load is repeated (bounded) and its samples are marked and left out of the
medians when clean ones exist. Prints one Markdown table (medians (min-max), the ratio
netbootd/peer, the target and whether it is met) and every sample with its load.
SIGTERM, SIGINT or SIGHUP stop it cleanly: servers ended by pid, namespaces and cgroups
removed. Methods: docs/performance.md.
Exit status: 0 when every benchmark produced its figures (targets met or not), 1 otherwise;
130 (SIGINT) or 143 (SIGTERM, SIGHUP) when stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python bench/run.py` puts bench/ first on sys.path, where a module could shadow the standard
# library's (aiohttp imports `http`); the bench modules are imported as the `bench` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import boot, decision, dhcp, http_load, peers, qemu_storm, scale, tftp  # noqa: E402
from bench.report import Results, plot  # noqa: E402
from bench.sandbox import (  # noqa: E402
    BenchError,
    CpuMeter,
    LoadProbe,
    NetnsPair,
    Terminated,
    cgroup2_root,
    install_signal_handlers,
    loadavg,
    rss_kib,
    set_affinity,
)

MB = 1 << 20
# Lock-step TFTP is a ping-pong: server and client share one core, else a cross-core wake-up
# is measured. Storms and rate tests: server on one core, clients on the other.
PINGPONG_CPU = "1"
SERVER_CPU = "0"
CLIENT_CPU = "1"
BOOT_TIMEOUT_S = 300.0
QEMU_STORM_TIMEOUT_S = 1200.0  # N TCG guests share 2 cores with whatever else runs
# One running server: its namespace pair, its CPU meter (cgroup) and its process.
Server = tuple[NetnsPair, CpuMeter, Any]
BENCHES = ("tftp", "storm", "dhcp", "dhcp-server", "http", "decision", "memory", "boot",
           "qemu-storm", "scale")


@dataclass(frozen=True)
class Plan:
    quick: bool
    runs: int
    lock_file: int  # bytes, lock-step and windowed transfers
    storm_small: tuple[int, int]  # clients, bytes each
    storm_big: tuple[int, int]
    sweep_file: int
    blksizes: tuple[int, ...]
    windowsizes: tuple[int, ...]
    storm_clients: tuple[int, ...]
    dhcp_rates: tuple[int, ...]
    dhcp_seconds: float
    dhcp_p99_rate: int
    http_file: int
    wrk_seconds: float
    decision: tuple[int, int, int]  # nodes, groups, samples
    memory_nodes: tuple[int, int]
    # Server-mode DHCP: offered full-exchange (DORA) rates, seconds per rate.
    dhcp_server_rates: tuple[int, ...] = (250, 500, 1000, 1500, 2000, 3000, 4000, 5000, 7000,
                                          10000)
    dhcp_server_seconds: float = 2.0
    # A round (one sample per server) taken under load is repeated at most this often, and
    # the whole bench repeats at most retry_budget rounds: a loaded machine makes it longer,
    # not endless.
    load_retries: int = 2
    retry_budget: int = 12
    # QEMU storm: guests powered on at once, rounds (netbootd then the peer) of it.
    qemu_clients: int = 8
    qemu_runs: int = 2


FULL = Plan(False, 3, 32 * MB, (200, MB), (50, 32 * MB), 8 * MB, (512, 1024, 1468, 4096, 8192),
            (1, 2, 4, 8, 16), (10, 50, 100, 200, 500),
            (250, 500, 1000, 2000, 3000, 5000, 7000, 10000, 14000, 20000, 28000), 2.0, 5000,
            300 * MB, 5.0, (10000, 1000, 20000), (10000, 1000))
QUICK = Plan(True, 1, 4 * MB, (20, 256 * 1024), (5, 4 * MB), MB, (512, 1468), (1, 8), (5, 20),
             (200, 500), 1.0, 500, 16 * MB, 1.0, (1000, 100, 2000), (1000, 100),
             dhcp_server_rates=(200,), dhcp_server_seconds=1.0, load_retries=0, retry_budget=0)


class Bench:
    def __init__(self, plan: Plan, workdir: Path, log: Callable[[str], None]) -> None:
        self.plan = plan
        self.workdir = workdir
        self.log = log
        self.results = Results()
        self.retry_budget = plan.retry_budget
        p = plan
        self.files = peers.make_files(workdir / "data", {
            "lock": p.lock_file, "small": p.storm_small[1], "big": p.storm_big[1],
            "sweep": p.sweep_file, "http": p.http_file})

    # ------------------------------------------------------------------ servers
    @contextmanager
    def server(self, name: str, cpus: str, *, config: Path | None = None,
               ports: tuple[str, ...] = ()) -> Iterator[Server]:
        """``name`` running in its own namespace pair, pinned to ``cpus``, in a cgroup."""
        wd = self.workdir / f"{name}-{time.monotonic_ns()}"
        wd.mkdir()
        with NetnsPair(name[:5]) as ns:
            meter = CpuMeter(name)
            logf = (wd / "server.log").open("w")
            try:
                if name == "netbootd":
                    cmd = peers.netbootd_cmd(config or peers.netbootd_config(wd, self.files))
                elif name == "tftpd-hpa":
                    cmd = peers.tftpd_hpa_cmd(self.files)
                elif name == "atftpd":
                    cmd = peers.atftpd_cmd(self.files, wd / "atftpd.log")
                elif name == "dnsmasq":
                    cmd = peers.dnsmasq_proxy_cmd(wd, ns.server_if)
                elif name == "netbootd-server":
                    cmd = peers.netbootd_cmd(peers.netbootd_server_config(wd, self.files))
                elif name == "dnsmasq-server":
                    cmd = peers.dnsmasq_server_cmd(wd, ns.server_if)
                elif name == "dnsmasq-server-leasefile":
                    cmd = peers.dnsmasq_server_cmd(wd, ns.server_if, lease_file=True)
                elif name == "nginx":
                    cmd = peers.nginx_cmd(wd, self.files.store)
                else:
                    raise BenchError(f"unknown server {name}")
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                proc = ns.spawn("server", cpus, cmd, meter=meter, log=logf, env=env)
                try:
                    self._wait_ports(ns, proc, ports, wd / "server.log")
                    yield ns, meter, proc
                finally:
                    ns.stop(proc)  # by its pid, also when a signal unwinds the bench
            finally:
                logf.close()
                meter.close()

    def _wait_ports(self, ns: NetnsPair, proc: Any, ports: tuple[str, ...], log: Path) -> None:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError(f"server exited ({proc.returncode}): "
                                 f"{log.read_text()[-800:]}")
            out = ns.exec("server", "0-1", ["ss", "-Hlnu"], check=False).stdout + \
                ns.exec("server", "0-1", ["ss", "-Hlnt"], check=False).stdout
            listening = {line.split()[3].rsplit(":", 1)[-1] for line in out.splitlines()
                         if len(line.split()) > 3}
            if all(p in listening for p in ports):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"server did not listen on {ports}: {log.read_text()[-800:]}")
            time.sleep(0.1)

    @contextmanager
    def servers(self, names: Sequence[str], cpus: str, ports: tuple[str, ...],
                rows_of: Callable[[str], list[Any]]) -> Iterator[dict[str, Server]]:
        """Every server in ``names`` running at once (each in its own namespace pair), for
        ABAB rounds. One that cannot start fails its rows (``rows_of``) and is left out."""
        with ExitStack() as stack:
            running: dict[str, Server] = {}
            for name in names:
                self.log(f"  start {name}")
                try:
                    running[name] = stack.enter_context(self.server(name, cpus, ports=ports))
                except Exception as e:  # one broken server must not hide the others' figures
                    self._fail(rows_of(name), name, e)
            yield running

    def rounds(self, running: dict[str, Server], measure: Callable[[str, Server, LoadProbe],
                                                                    None],
               rows_of: Callable[[str], list[Any]], runs: int | None = None,
               what: str = "") -> None:
        """``runs`` rounds of one sample per server, in turn (ABAB...), each under a probe.

        A round in which any sample was taken under load is repeated, at most
        ``plan.load_retries`` times per round and ``plan.retry_budget`` times per bench; every
        sample is kept and marked, and the medians leave the marked ones out when they can.
        A server whose sample raises fails its rows and leaves the rounds.
        """
        for _ in range(self.plan.runs if runs is None else runs):
            for attempt in range(1 + self.plan.load_retries):
                probes: list[tuple[str, LoadProbe]] = []
                for name, srv in list(running.items()):
                    probe = LoadProbe()
                    try:
                        with probe:
                            measure(name, srv, probe)
                    except Exception as e:
                        self._fail(rows_of(name), name, e)
                        del running[name]
                        continue
                    probes.append((name, probe))
                loaded = [(n, pr) for n, pr in probes if pr.loaded]
                for _, pr in probes:  # the round is marked as one: see LoadProbe.marked
                    pr.round_loaded = bool(loaded)
                if not loaded:
                    break
                text = ", ".join(f"{n}: load {pr.load1:.2f}, other {pr.other_cores:.2f} "
                                 f"cores" for n, pr in loaded)
                if attempt >= self.plan.load_retries or self.retry_budget <= 0:
                    self.log(f"  {what} round under load ({text}): kept, marked")
                    break
                self.retry_budget -= 1
                self.log(f"  {what} round under load ({text}): repeating it")

    # ------------------------------------------------------------------ TFTP
    def tftp(self, storms: bool, single: bool) -> None:
        p, r = self.plan, self.results
        lock_mb = p.lock_file // MB
        rows = {
            "lock": r.row("tftp.lockstep", what=f"TFTP lock-step, curl, {lock_mb} MiB, blksize "
                          "1468", unit="MB/s", target="≥ 0.8 x tftpd-hpa", kind="ratio",
                          better="higher", bound=0.8, peer_name="tftpd-hpa"),
            "win": r.row("tftp.window8", what=f"TFTP windowsize 8, atftp, {lock_mb} MiB, "
                         "blksize 1468", unit="MB/s", target="≥ 1.0 x atftpd", kind="ratio",
                         better="higher", bound=1.0, peer_name="atftpd"),
            "winhpa": r.row("tftp.window8-vs-hpa", what="netbootd windowsize 8 vs tftpd-hpa "
                            "lock-step", unit="MB/s", target="≥ 1.5 x tftpd-hpa", kind="ratio",
                            better="higher", bound=1.5, peer_name="tftpd-hpa"),
            "cpu": r.row("tftp.cpu-per-packet", what="server CPU per DATA packet, lock-step, "
                         "blksize 1468", unit="µs", target="≤ 25 µs", kind="absolute",
                         better="lower", bound=25.0, peer_name="tftpd-hpa"),
        }
        if storms:
            n1, s1 = p.storm_small
            n2, s2 = p.storm_big
            rows["s1"] = r.row("storm.small", what=f"boot storm {n1} clients x "
                               f"{_size(s1)}, blksize 1468", unit="s",
                               target="≤ 1.0 x tftpd-hpa", kind="ratio", better="lower",
                               bound=1.0, peer_name="tftpd-hpa")
            rows["s2"] = r.row("storm.big", what=f"boot storm {n2} clients x {_size(s2)}",
                               unit="s", target="≤ 1.0 x tftpd-hpa", kind="ratio",
                               better="lower", bound=1.0, peer_name="tftpd-hpa")
            rows["mem"] = r.row("memory.storm", what=f"netbootd peak RSS during the {n1}-client"
                                " storm", unit="MB", target="≤ 150 MB", kind="absolute",
                                better="lower", bound=150.0)
            rows["spp"] = r.row("storm.cpu-per-packet", what=f"server CPU per DATA packet in "
                                f"the {n1}-client storm (information)", unit="µs",
                                target="-", kind="info", better="lower", bound=0.0,
                                peer_name="tftpd-hpa")

        def rows_of(server: str) -> list[Any]:
            return [k for k in rows.values() if server in ("netbootd", k.peer_name)]

        f, series = self.files, self.results.series
        self.log("tftp: netbootd, tftpd-hpa, atftpd in turn")
        with self.servers(("netbootd", "tftpd-hpa", "atftpd"), PINGPONG_CPU, ("69",),
                          rows_of) as running:
            def side(row: Any, server: str) -> Any:
                return row.netbootd if server == "netbootd" else row.peer

            def lock(server: str, srv: Server, probe: LoadProbe) -> None:
                ns, meter, _ = srv
                t = tftp.curl_get(ns, meter, PINGPONG_CPU, f, server, "lock", 1468)
                if server in ("netbootd", "tftpd-hpa"):
                    side(rows["lock"], server).add(t.mbps, probe)
                    side(rows["cpu"], server).add(t.cpu_per_packet_us, probe)
                if server == "tftpd-hpa":
                    rows["winhpa"].peer.add(t.mbps, probe)

            def window(server: str, srv: Server, probe: LoadProbe) -> None:
                ns, meter, _ = srv
                t = tftp.atftp_get(ns, meter, PINGPONG_CPU, f, server, "lock", 1468, 8)
                side(rows["win"], server).add(t.mbps, probe)
                if server == "netbootd":
                    rows["winhpa"].netbootd.add(t.mbps, probe)

            if single:
                self.rounds(running, lock, rows_of, what="tftp lock-step")
                windowed = {k: v for k, v in running.items() if k != "tftpd-hpa"}
                # tftpd-hpa has no RFC 7440 windowsize
                self.rounds(windowed, window, rows_of, what="tftp windowsize 8")
                for bs in p.blksizes:
                    for _ in range(p.runs):
                        for server, (ns, meter, _) in running.items():
                            t = tftp.curl_get(ns, meter, PINGPONG_CPU, f, server, "sweep", bs)
                            series.setdefault("blksize", {}).setdefault(server, {}) \
                                .setdefault(str(bs), []).append(t.mbps)
                for ws in p.windowsizes:
                    for _ in range(p.runs):
                        for server, (ns, meter, _) in running.items():
                            if server == "tftpd-hpa":
                                continue
                            t = tftp.atftp_get(ns, meter, PINGPONG_CPU, f, server, "sweep",
                                               1468, ws)
                            series.setdefault("windowsize", {}).setdefault(server, {}) \
                                .setdefault(str(ws), []).append(t.mbps)
            if not storms:
                return
            for _, _, proc in running.values():
                set_affinity(proc.pid, SERVER_CPU)
            n1, _ = p.storm_small
            n2, _ = p.storm_big

            def small(server: str, srv: Server, probe: LoadProbe) -> None:
                ns, meter, proc = srv
                st = tftp.storm(ns, meter, CLIENT_CPU, f, server, "small", n1)
                self._storm_row(rows["s1"], server, st, probe)
                per_packet = st.server_cpu_us / max(1, n1 * tftp.data_packets(
                    f.sizes["small"], 1468))
                if server in ("netbootd", "tftpd-hpa"):
                    side(rows["spp"], server).add(per_packet, probe)
                if server == "netbootd":
                    rows["mem"].netbootd.add(rss_kib(proc.pid)[1] / 1024, probe)

            def big(server: str, srv: Server, probe: LoadProbe) -> None:
                ns, meter, _ = srv
                st = tftp.storm(ns, meter, CLIENT_CPU, f, server, "big", n2)
                self._storm_row(rows["s2"], server, st, probe)

            self.rounds(running, small, rows_of, what="tftp small storm")
            # the big storm is long: only the target's pair
            self.rounds({k: v for k, v in running.items() if k != "atftpd"}, big, rows_of,
                        what="tftp big storm")
            for n in p.storm_clients:
                for server, (ns, meter, _) in running.items():
                    st = tftp.storm(ns, meter, CLIENT_CPU, f, server, "small", n)
                    series.setdefault("storm", {}).setdefault(server, {})[str(n)] = st.seconds
                    series.setdefault("storm_failed", {}).setdefault(server, {})[str(n)] = \
                        st.failed

    @staticmethod
    def _storm_row(row: Any, server: str, s: tftp.Storm, probe: LoadProbe) -> None:
        if server == "netbootd":
            row.netbootd.add(s.seconds, probe)
            row.failed += s.failed
        elif server == row.peer_name:
            row.peer.add(s.seconds, probe)
            row.peer_failed += s.failed

    # ------------------------------------------------------------------ DHCP
    def dhcp(self) -> None:
        p, r = self.plan, self.results
        rate = r.row("dhcp.max-rate", what="ProxyDHCP max DISCOVER→OFFER rate with zero loss "
                     "(perfdhcp, PXE options, relayed)", unit="/s", target="≥ 1.0 x dnsmasq",
                     kind="ratio", better="higher", bound=1.0, peer_name="dnsmasq")
        p99 = r.row("dhcp.p99", what=f"ProxyDHCP p99 latency at {p.dhcp_p99_rate}/s",
                    unit="ms", target="≤ 2 ms", kind="absolute", better="lower", bound=2.0,
                    peer_name="dnsmasq")

        def rows_of(server: str) -> list[Any]:
            return [rate, p99] if server == "netbootd" else [rate]

        first: set[str] = set()

        def ladder(server: str, srv: Server, probe: LoadProbe) -> None:
            best, runs = dhcp.ladder(srv[0], CLIENT_CPU, list(p.dhcp_rates), p.dhcp_seconds)
            (rate.netbootd if server == "netbootd" else rate.peer).add(best, probe)
            if server not in first:
                first.add(server)
                self.results.series.setdefault("dhcp", {})[server] = {
                    str(run.offered): {"p50": run.percentile(50), "p99": run.percentile(99),
                                       "drops": run.drops, "achieved": run.achieved}
                    for run in runs}

        def latency(server: str, srv: Server, probe: LoadProbe) -> None:
            run = dhcp.perfdhcp(srv[0], CLIENT_CPU, p.dhcp_p99_rate, p.dhcp_seconds)
            (p99.netbootd if server == "netbootd" else p99.peer).add(run.percentile(99),
                                                                      probe)
            if server == "netbootd" and run.drops:
                p99.note = f"{run.drops} of {run.sent} dropped at this rate"

        self.log("dhcp: netbootd, dnsmasq in turn")
        with self.servers(("netbootd", "dnsmasq"), SERVER_CPU, ("67",), rows_of) as running:
            self.rounds(running, ladder, rows_of, what="dhcp ladder")
            self.rounds(running, latency, rows_of, what="dhcp p99")

    def dhcp_server(self) -> None:
        """Server mode: full exchanges per second at zero loss, netbootd and dnsmasq.

        The peer is dnsmasq at its fastest, leases in memory only; netbootd writes every lease
        to its state DB. The full run also measures dnsmasq writing its lease file (its
        default) once, as a note.
        """
        p, r = self.plan, self.results
        row = r.row("dhcp.server-dora", what="Server-mode DHCP max DISCOVER→OFFER→REQUEST→ACK "
                    "rate with zero loss and no NAK (perfdhcp, plain clients, relayed; "
                    "dnsmasq --leasefile-ro)", unit="/s", target="≥ 1.0 x dnsmasq",
                    kind="ratio", better="higher", bound=1.0, peer_name="dnsmasq")
        servers = ["netbootd-server", "dnsmasq-server"]
        if not p.quick:
            servers.append("dnsmasq-server-leasefile")

        def rows_of(_server: str) -> list[Any]:
            return [row]

        noted: list[bool] = []

        def dora(server: str, srv: Server, probe: LoadProbe) -> None:
            if server.endswith("leasefile") and noted:
                return
            best, _runs = dhcp.dora_ladder(srv[0], CLIENT_CPU, list(p.dhcp_server_rates),
                                           p.dhcp_server_seconds)
            if server.endswith("leasefile"):
                row.note = f"dnsmasq writing its lease file (default): {best}/s"
                noted.append(True)
            else:
                (row.netbootd if server.startswith("netbootd") else row.peer).add(best, probe)

        self.log("dhcp server mode: " + ", ".join(servers) + " in turn")
        with self.servers(servers, SERVER_CPU, ("67",), rows_of) as running:
            self.rounds(running, dora, rows_of, what="dhcp server mode")

    # ------------------------------------------------------------------ HTTP
    def http(self) -> None:
        p, r = self.plan, self.results
        big = r.row("http.big-file", what=f"HTTP one {_size(p.http_file)} build file, one "
                    "client (curl)", unit="MB/s", target="≥ 0.9 x nginx", kind="ratio",
                    better="higher", bound=0.9, peer_name="nginx")
        ipxe = r.row("http.ipxe-scripts", what="HTTP per-node iPXE scripts, wrk 64 "
                     "connections (nginx: static file of the same size)", unit="req/s",
                     target="≥ 0.25 x nginx", kind="ratio", better="higher", bound=0.25,
                     peer_name="nginx")
        path = self.files.http_path("http")

        def rows_of(_server: str) -> list[Any]:
            return [big, ipxe]

        def bigfile(server: str, srv: Server, probe: LoadProbe) -> None:
            mbps = http_load.curl_http(srv[0], CLIENT_CPU, path, p.http_file)
            (big.netbootd if server == "netbootd" else big.peer).add(mbps, probe)

        def scripts(server: str, srv: Server, probe: LoadProbe) -> None:
            w = http_load.wrk(srv[0], CLIENT_CPU, self.workdir, p.wrk_seconds)
            (ipxe.netbootd if server == "netbootd" else ipxe.peer).add(w.requests_per_s,
                                                                        probe)
            if server == "netbootd":
                ipxe.failed += w.errors
            else:
                ipxe.peer_failed += w.errors

        self.log("http: netbootd, nginx in turn")
        with self.servers(("netbootd", "nginx"), SERVER_CPU, ("80",), rows_of) as running:
            self.rounds(running, bigfile, rows_of, what="http big file")
            if "netbootd" in running:
                # nginx serves, as a static file, one script as netbootd renders it
                script = http_load.fetch(running["netbootd"][0],
                                         "/ipxe/node.ipxe?mac=52-54-00-00-00-01&arch=0")
                static = self.files.store / "ipxe" / "node.ipxe"
                static.parent.mkdir(exist_ok=True)
                static.parent.chmod(0o755)
                static.write_bytes(script)
                ipxe.note = f"{len(script)}-byte script"
                self.rounds(running, scripts, rows_of, what="http iPXE scripts")

    # ------------------------------------------------------------------ decision, memory
    def decision(self) -> None:
        nodes, groups, samples = self.plan.decision
        r = self.results
        p99 = r.row("decide.p99", what=f"decide() p99, {nodes} nodes, {groups} groups",
                    unit="µs", target="≤ 1000 µs", kind="absolute", better="lower",
                    bound=1000.0)
        add = r.row("decide.add-node", what=f"add a node to {nodes} at run time (admin adopt "
                    "until the running service decides with it)", unit="ms", target="≤ 50 ms",
                    kind="absolute", better="lower", bound=50.0)
        count = [0]

        def one(_server: str, _srv: Server, probe: LoadProbe) -> None:
            count[0] += 1
            c = decision.measure(self.workdir / f"decision-{count[0]}", self.files, nodes,
                                 groups, samples)
            p99.netbootd.add(c.p99_us, probe)
            add.netbootd.add(c.add_node_ms, probe)
            p99.note = f"p50 {c.p50_us:.0f} µs"
            add.note = (f"by config edit + reload instead: {c.reload_ms:.0f} ms = TOML "
                        f"parse {c.parse_ms:.0f} ms + index {c.index_ms:.0f} ms")

        in_process: dict[str, Any] = {"netbootd": None}
        self.rounds(in_process, one, lambda _s: [p99, add], what="decision")

    def memory(self) -> None:
        nodes, groups = self.plan.memory_nodes
        row = self.results.row("memory.nodes", what=f"netbootd peak RSS with {nodes} nodes, "
                               f"{groups} groups, after a DHCP burst", unit="MB",
                               target="≤ 250 MB", kind="absolute", better="lower", bound=250.0)
        wd = self.workdir / "memory"
        wd.mkdir(exist_ok=True)
        try:
            config = peers.netbootd_config(wd, self.files, extra_nodes=nodes,
                                           extra_groups=groups)
            with self.server("netbootd", SERVER_CPU, config=config,
                             ports=("67", "69", "80")) as (ns, _meter, proc):
                with LoadProbe() as probe:
                    dhcp.perfdhcp(ns, CLIENT_CPU, 500, self.plan.dhcp_seconds)
                row.netbootd.add(rss_kib(proc.pid)[1] / 1024, probe)
        except Exception as e:
            self._fail([row], "netbootd", e)

    def boot(self) -> None:
        row = self.results.row("boot.bios", what="QEMU BIOS (TCG) power-on to phone-home, "
                               "demo appliance", unit="s", target="≤ 1.0 x dnsmasq + static "
                               "web server", kind="ratio", better="lower", bound=1.0,
                               peer_name="dnsmasq+http.server")
        if self.plan.quick:
            # Two TCG boots take minutes on this machine: beyond --quick's budget.
            row.note = "skipped in --quick (two QEMU TCG boots take minutes); full run only"
            self.log("boot: skipped in --quick")
            return
        self.log("boot: netbootd, then dnsmasq + static web server")
        try:
            with LoadProbe() as probe:
                nb, peer = boot.boot_times(self.workdir / "boot", timeout=BOOT_TIMEOUT_S)
            row.netbootd.add(nb, probe)
            row.peer.add(peer, probe)
            row.note = "one boot each (TCG is slow); UEFI not run"
        except Exception as e:
            self._fail([row], "netbootd or peer", e)

    def qemu_storm(self) -> None:
        n = self.plan.qemu_clients
        row = self.results.row("qemu.storm", what=f"QEMU storm: {n} BIOS guests (TCG, iPXE) "
                               "powered on at once, to the last phone-home, demo appliance",
                               unit="s", target="≤ 1.0 x dnsmasq + nginx, zero failed",
                               kind="ratio", better="lower", bound=1.0,
                               peer_name="dnsmasq+nginx")
        if self.plan.quick:
            row.note = f"skipped in --quick ({n} QEMU TCG guests take minutes); full run only"
            self.log("qemu-storm: skipped in --quick")
            return
        self.log(f"qemu-storm: {n} guests, netbootd and dnsmasq + nginx in turn")
        wd = self.workdir / "qemu-storm"
        wd.mkdir()
        slowest: dict[str, float] = {}

        def one(server: str, _srv: Server, probe: LoadProbe) -> None:
            run = storm.netbootd() if server == "netbootd" else storm.peer()
            self.log(f"  {server}: {run.seconds:.1f} s, {len(run.failed)} failed")
            if server == "netbootd":
                row.netbootd.add(run.seconds, probe)
                row.failed += len(run.failed)
            else:
                row.peer.add(run.seconds, probe)
                row.peer_failed += len(run.failed)
            if run.per_guest:
                slowest[server] = min(run.per_guest.values())

        try:
            with qemu_storm.QemuStorm(wd, n, QEMU_STORM_TIMEOUT_S, self.log) as storm:
                self.rounds({"netbootd": None, "dnsmasq+nginx": None}, one, lambda _s: [row],
                            runs=self.plan.qemu_runs, what="qemu storm")
            row.note = "first guest home after " + ", ".join(
                f"{k} {v:.0f} s" for k, v in slowest.items()) + " (last round)"
        except Exception as e:
            self._fail([row], "netbootd or peer", e)

    def scale(self) -> None:
        """bench/scale.py's figures as rows (information: no targets): World and memory at
        the largest fleet size, whole boots through the server and what the database is
        asked per boot (docs/scaling.md)."""
        sp = scale.QUICK if self.plan.quick else scale.FULL
        r, n = self.results, max(sp.world_sizes)

        def info(rid: str, what: str, unit: str) -> Any:
            return r.row(rid, what=what, unit=unit, target="-", kind="info", better="lower",
                         bound=0.0)

        rows = {
            "world": info("scale.world-build", f"World build, {n:,} configured nodes "
                          "(each intent change or reload)", "ms"),
            "rss": info("scale.world-rss", f"peak RSS with a World of {n:,} configured nodes",
                        "MB"),
            "p99": info("scale.decide-p99", f"decide() p99 on a World of {n:,} configured "
                        "nodes", "µs"),
            "cpu": info("scale.boot-cpu", "server CPU per whole boot (DHCP x2, 4011 ACK, TFTP "
                        f"loader, 2 scripts, {sp.kernel // MB}+{sp.initrd // MB} MiB "
                        "kernel+initrd, NoCloud seed, phone-home)", "ms"),
            "rate": info("scale.boot-rate", f"whole boots per second, {sp.concurrency} at a "
                         "time (one server process, one core)", "/s"),
            "stmts": info("scale.db-statements", "SQLite statements per whole boot", ""),
            "txns": info("scale.db-transactions", "SQLite transactions per whole boot", ""),
            "rows": info("scale.db-rows", "rows written per whole boot", ""),
        }
        self.log("scale: World sizes, then whole boots through the server")
        wd = self.workdir / "scale"
        wd.mkdir()
        try:
            res = scale.run(sp, wd, self.log)
        except Exception as e:
            self._fail(list(rows.values()), "netbootd", e)
            return
        for w in res.world:
            if w.kind == "configured" and w.nodes == n and w.backend == "sqlite":
                probe = res.probes[f"world-configured-{n}-sqlite"]
                rows["world"].netbootd.add(w.world_build_ms, probe)
                rows["rss"].netbootd.add(w.rss_peak_mb, probe)
                rows["p99"].netbootd.add(w.decide_p99_us, probe)
                rows["p99"].note = f"p50 {w.decide_p50_us:.1f} µs"
        for b in res.boot:
            probe = res.probes[f"boot-{b.backend}"]
            rows["cpu"].netbootd.add(b.server_cpu_per_boot_ms, probe)
            rows["rate"].netbootd.add(b.boots_per_s, probe)
            rows["rate"].failed += b.boot_errors
            rows["rate"].note = (f"server busy {b.server_busy:.0%} of a core: below 100 % the "
                                 "client side is the limit")
            rows["stmts"].netbootd.add(b.db_per_boot.statements, probe)
            rows["txns"].netbootd.add(b.db_per_boot.transactions, probe)
            rows["rows"].netbootd.add(b.db_per_boot.rows_written, probe)
            rows["stmts"].note = ", ".join(f"{k} {v:.1f}" for k, v in
                                           b.db_per_boot.detail.items())
        for e in res.errors:
            for row in rows.values():
                if not row.netbootd.samples and not row.error:
                    row.error = e

    def _fail(self, rows: list[Any], server: str, e: Exception) -> None:
        text = f"{server}: {e}"
        self.log(f"FAILED {text}\n{traceback.format_exc()}")
        for row in rows:
            if not row.error:
                row.error = text


def _size(n: int) -> str:
    return f"{n // MB} MiB" if n >= MB else f"{n // 1024} KiB"


def machine_notes(plan: Plan) -> list[str]:
    cg = cgroup2_root()
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}",
        f"load average at start: {loadavg()}",
        f"server CPU read from: {'cgroup v2 at ' + str(cg) if cg else '/proc/<pid>/stat'}",
        f"mode: {'quick' if plan.quick else 'full'}, {plan.runs} run(s) per figure",
        "peers: " + "; ".join(peers.version_of(c) for c in (
            ["/usr/sbin/in.tftpd", "-V"], [str(peers.atftpd_binary()), "--version"],
            ["/usr/sbin/dnsmasq", "--version"], ["/usr/sbin/nginx", "-v"],
            ["perfdhcp", "-v"], ["curl", "--version"], ["wrk", "-v"])),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run (smoke test)")
    ap.add_argument("--only", action="append", choices=BENCHES,
                    help="run only this benchmark (repeatable)")
    ap.add_argument("--runs", type=int, help="runs per figure (default: 3, --quick: 1)")
    ap.add_argument("--json", type=Path, help="write figures and plot data here")
    ap.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install peers")
    ap.add_argument("--install-only", action="store_true",
                    help="install the peers and exit (.ci/install-deps.sh calls this)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py needs root (network namespaces, cgroups, port 67/69/80 inside "
              "them)", file=sys.stderr)
        return 2
    only = set(args.only or BENCHES)
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = dataclasses.replace(plan, runs=args.runs, qemu_runs=min(plan.qemu_runs,
                                                                       args.runs))

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if not args.no_install:
        installed = peers.ensure_installed()
        if installed:
            log(f"installed: {' '.join(installed)}")
    if args.install_only:
        return 0
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="netbootd-bench-", dir="/var/tmp"))
    workdir.chmod(0o755)
    started = time.monotonic()
    try:
        return _run(plan, only, args, workdir, started, log)
    except (Terminated, KeyboardInterrupt) as e:
        # Every server, namespace and cgroup was removed on the way out of its `with` block.
        log(f"stopped ({e or 'SIGINT'}): servers, namespaces and cgroups removed")
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(plan: Plan, only: set[str], args: argparse.Namespace, workdir: Path, started: float,
         log: Callable[[str], None]) -> int:
    notes = machine_notes(plan)
    bench = Bench(plan, workdir, log)
    if "tftp" in only or "storm" in only:
        bench.tftp(storms="storm" in only, single="tftp" in only)
    if "dhcp" in only:
        bench.dhcp()
    if "dhcp-server" in only:
        bench.dhcp_server()
    if "http" in only:
        bench.http()
    if "decision" in only:
        bench.decision()
    if "memory" in only:
        bench.memory()
    if "boot" in only:
        bench.boot()
    if "qemu-storm" in only:
        bench.qemu_storm()
    if "scale" in only:
        bench.scale()
    results = bench.results
    results.notes = [*notes, f"load average at end: {loadavg()}",
                     f"bench wall time: {time.monotonic() - started:.0f} s"]
    print("\n".join(f"- {n}" for n in results.notes))
    print()
    print(results.table())
    print()
    print("Samples (ABAB rounds; * = taken under load, + = in a round with a sample under "
          "load; both left out of the medians when a clean round exists):")
    print()
    print(results.samples_table())
    if args.json or args.plots:
        out = args.json or workdir / "results.json"
        results.dump(out)
        if args.plots:
            for pth in plot(out, args.plots):
                log(f"plot: {pth}")
    broken = [r.id for r in results.rows.values() if r.error]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
