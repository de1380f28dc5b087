"""Measure, on this machine, the figures behind netbootd's library choices (docs/design-choices.md).

    python bench/library_choices.py            # full run, about a minute
    python bench/library_choices.py --quick    # smaller sizes and repeats, < 20 s (smoke test)

Prints one Markdown table; each row's first cell is a stable id (``a.*``, ``b.*``, ``c.*``,
``d.*``) so tests and docs can refer to it.

a. Robustness of tftpy 0.8.7's ``TftpServer`` and netbootd's ``TftpServer`` against single
   malformed datagrams. Each case gets a FRESH server in its own ``python -c`` subprocess (so a
   crash is observable and one case cannot hide the next); after the datagram we check that the
   process is alive and that a ``tftpy.TftpClient`` download of the served file still succeeds.
b. DHCP decode cost of a PXE DISCOVER (built once with scapy): ``scapy BOOTP(data)`` plus
   reading its options vs ``DhcpPacket.parse(data)`` plus reading its options (timeit, best of 5).
c. Boot-event store: appends/s and one node's timeline read with diskcache (two idioms) vs
   ``StateDB.record``/``StateDB.timeline`` (sqlite3, WAL, synchronous=NORMAL).
d. TFTP download throughput with curl (blksize 1468) from both servers, median of 3.

Only 127.0.0.1 is used. Every subprocess and every step has a time limit; every server
subprocess started here is killed by its own pid at the end of its case.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LOOPBACK = "127.0.0.1"
FILE_NAME = "f"
START_TIMEOUT = 10.0  # seconds for a server subprocess to report its port

# Each server prints its bound port on the first stdout line, then serves until killed.
TFTPY_SERVER = """
import logging, sys, threading
import tftpy
logging.disable(logging.CRITICAL)
server = tftpy.TftpServer(sys.argv[1])
def report():
    server.is_running.wait()
    print(server.listenport, flush=True)
threading.Thread(target=report, daemon=True).start()
server.listen("127.0.0.1", 0, timeout=1)
"""

NETBOOTD_SERVER = """
import asyncio, logging, sys
from pathlib import Path
from netbootd.errors import NotFound
from netbootd.tftp.endpoint import TftpServer
from netbootd.tftp.sources import FileSource
logging.disable(logging.CRITICAL)
files = {sys.argv[2]: Path(sys.argv[1]) / sys.argv[2]}
def resolver(name, client):
    if name not in files:
        raise NotFound(name)
    return FileSource(files[name])
async def main():
    server = TftpServer(resolver)
    await server.start("127.0.0.1", 0)
    print(server.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

MALFORMED: list[tuple[str, str, bytes]] = [
    ("a.blksize-abc", "RRQ with blksize=abc", b"\x00\x01f\x00octet\x00blksize\x00abc\x00"),
    ("a.empty", "empty datagram", b""),
    ("a.one-byte", "1-byte datagram", b"\x00"),
    ("a.no-mode", "RRQ without a mode", b"\x00\x01f\x00"),
]


# --------------------------------------------------------------------------- helpers


class Server:
    """A TFTP server in a subprocess; ``kind`` is ``"tftpy"`` or ``"netbootd"``."""

    def __init__(self, kind: str, root: Path) -> None:
        code = TFTPY_SERVER if kind == "tftpy" else NETBOOTD_SERVER
        self.kind = kind
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(root), FILE_NAME],
            stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=str(root))
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{kind} server did not start: {self.stderr_tail()!r}")
        self.port = int(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._stderr.close()


def tftpy_download(port: int, dest: Path, expected: bytes, limit: float = 8.0) -> bool:
    """Download ``FILE_NAME`` with tftpy's client; True if it arrived intact within ``limit``."""
    import tftpy

    result: list[bool] = []

    def run() -> None:
        try:
            client = tftpy.TftpClient(LOOPBACK, port)
            client.download(FILE_NAME, str(dest), timeout=1, retries=2)
            result.append(dest.read_bytes() == expected)
        except Exception:
            result.append(False)

    if dest.exists():
        dest.unlink()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    return bool(result and result[0])


def send_datagram(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (LOOPBACK, port))


def verdict(alive: bool, serving: bool, why: str = "") -> str:
    text = f"{'alive' if alive else 'DEAD'}, {'serving' if serving else 'NOT serving'}"
    return f"{text} ({why})" if why and not alive else text


Row = tuple[str, str, str, str, str]


# --------------------------------------------------------------------------- a. robustness


def bench_robustness(work: Path) -> list[Row]:
    logging.getLogger("tftpy").disabled = True
    logging.disable(logging.CRITICAL)
    root = work / "tftproot"
    root.mkdir()
    payload = bytes((i * 31 + 7) % 256 for i in range(20_000))
    (root / FILE_NAME).write_bytes(payload)
    dest = work / "download.bin"
    rows: list[Row] = []
    cases: list[tuple[str, str, bytes | None]] = [("a.baseline", "no malformed datagram", None)]
    cases += MALFORMED
    for case_id, label, datagram in cases:
        cells: dict[str, str] = {}
        for kind in ("tftpy", "netbootd"):
            with Server(kind, root) as server:
                if datagram is not None:
                    send_datagram(server.port, datagram)
                    time.sleep(0.3)  # let it process (or die)
                alive = server.alive()
                serving = alive and tftpy_download(server.port, dest, payload)
                alive = alive and server.alive()
                cells[kind] = verdict(alive, serving, server.stderr_tail()[:60])
        rows.append((case_id, f"TFTP server after {label}", cells["tftpy"], cells["netbootd"],
                     "alive/serving; fresh server subprocess per case"))
    return rows


# --------------------------------------------------------------------------- b. DHCP decode


def pxe_discover() -> bytes:
    from scapy.layers.dhcp import BOOTP, DHCP

    mac = bytes.fromhex("525400123456")
    guid = bytes.fromhex("00") + bytes(range(16))
    pkt = BOOTP(op=1, htype=1, hlen=6, xid=0x1A2B3C4D, flags=0x8000,
                chaddr=mac + b"\x00" * 10) / DHCP(options=[
                    ("message-type", "discover"),
                    ("max_dhcp_size", 1464),
                    ("pxe_client_architecture", b"\x00\x00"),
                    ("pxe_client_network_interface", b"\x01\x02\x01"),
                    ("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"),
                    ("user_class", b"iPXE"),
                    ("param_req_list", [1, 3, 6, 43, 60, 66, 67, 128, 129, 130, 131, 132,
                                        133, 134, 135, 175, 203]),
                    ("pxe_client_machine_identifier", guid),
                    "end",
                ])
    return bytes(pkt)


def best_us(stmt: Callable[[], object], repeats: int, budget: float) -> float:
    """Best-of-``repeats`` µs per call; the loop count is sized to ~budget/repeats seconds."""
    timer = timeit.Timer(stmt)
    number, took = timer.autorange()
    per_call = took / number
    number = max(1, int(budget / repeats / per_call))
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def bench_dhcp(quick: bool) -> list[Row]:
    from scapy.layers.dhcp import BOOTP, DHCP

    from netbootd.dhcp.packet import DhcpPacket

    data = pxe_discover()
    # Sanity: both decoders see the same packet.
    ours = DhcpPacket.parse(data)
    theirs = BOOTP(data)
    assert ours.option(60) == b"PXEClient:Arch:00000:UNDI:002001", ours.option(60)
    their_options = {o[0]: o[1] for o in theirs[DHCP].options if isinstance(o, tuple)}
    assert their_options["vendor_class_id"] == b"PXEClient:Arch:00000:UNDI:002001"

    def with_scapy() -> object:
        return BOOTP(data)[DHCP].options

    def with_netbootd() -> object:
        return DhcpPacket.parse(data).all_options

    budget = 0.5 if quick else 2.5
    s = best_us(with_scapy, 5, budget)
    n = best_us(with_netbootd, 5, budget)
    return [("b.dhcp-parse", f"decode a {len(data)}-byte PXE DISCOVER + read options",
             f"{s:.1f} µs (scapy BOOTP)", f"{n:.1f} µs (DhcpPacket.parse)",
             f"best of 5 (timeit); scapy/netbootd = {s / n:.0f}x")]


# --------------------------------------------------------------------------- c. event store


def macs(count: int) -> list[str]:
    return [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(count)]


def events(total: int, nodes: int) -> list[tuple[str, str, float, dict[str, Any]]]:
    kinds = ["dhcp-offer", "tftp-sent", "http-sent", "phone-home", "dhcp-ack"]
    ms = macs(nodes)
    t0 = 1.7e9
    return [(ms[i % nodes], kinds[i % len(kinds)], t0 + i * 0.01,
             {"file": "ipxe.efi", "bytes": 1024 + i, "ip": "10.0.0.5"}) for i in range(total)]


def time_reads(fn: Callable[[], list[Any]], expect: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        got = fn()
        best = min(best, time.perf_counter() - t)
        assert len(got) == expect, (len(got), expect)
    return best * 1e3


def bench_store(work: Path, quick: bool) -> list[Row]:
    import diskcache

    from netbootd.state.events import StateDB

    total, nodes = (2_000, 40) if quick else (20_000, 400)
    per_node = total // nodes
    evs = events(total, nodes)
    probe = macs(nodes)[nodes // 2]
    repeats = 3 if quick else 7

    # sqlite3 via StateDB (one autocommit transaction per event).
    db = StateDB(work / "state.db")
    t = time.perf_counter()
    for mac, kind, ts, detail in evs:
        db.record(mac, kind, ts, **detail)
    sq_rate = total / (time.perf_counter() - t)
    sq_read = time_reads(lambda: db.timeline(probe), per_node, repeats)
    db.close()

    # diskcache idiom 1: one key per event, (mac, seq), seq from a per-node counter; both in one
    # transaction. A node's timeline is then `n` indexed gets.
    cache = diskcache.Cache(str(work / "dc-keys"))
    t = time.perf_counter()
    for mac, kind, ts, detail in evs:
        with cache.transact():
            seq = cache.incr(("n", mac))
            cache.set((mac, seq), {"ts": ts, "kind": kind, "detail": detail})
    dk_rate = total / (time.perf_counter() - t)

    def dk_timeline() -> list[Any]:
        n = cache.get(("n", probe), 0)
        return [cache[(probe, i)] for i in range(1, n + 1)]

    dk_read = time_reads(dk_timeline, per_node, repeats)
    settings = (cache.sqlite_journal_mode, cache.sqlite_synchronous)
    protocol = cache.disk.pickle_protocol
    cache.close()

    # diskcache idiom 2: Cache.push(value, prefix=mac), its append-only queue API. There is no
    # public way to read one prefix without popping, so the timeline is a scan of all keys.
    qcache = diskcache.Cache(str(work / "dc-push"))
    t = time.perf_counter()
    for mac, kind, ts, detail in evs:
        qcache.push({"ts": ts, "kind": kind, "detail": detail}, prefix=mac)
    dq_rate = total / (time.perf_counter() - t)
    want = probe + "-"

    def dq_timeline() -> list[Any]:
        return [qcache[k] for k in qcache.iterkeys() if isinstance(k, str) and k.startswith(want)]

    dq_read = time_reads(dq_timeline, per_node, repeats)
    qcache.close()

    # diskcache.Disk stores int/float/str/bytes natively and pickles anything else (our dicts).
    version = importlib.metadata.version("diskcache")
    pickled = f"default Disk pickles dict values (pickle protocol {protocol})"
    durability = f"diskcache journal={settings[0]}, synchronous={settings[1]} (1 = NORMAL)"
    return [
        ("c.store-write", f"append {total} boot events ({nodes} nodes), one txn each",
         f"{dk_rate:,.0f} ev/s (Cache key per event + incr); "
         f"{dq_rate:,.0f} ev/s (Cache.push prefix=mac)",
         f"{sq_rate:,.0f} ev/s (StateDB.record)", durability),
        ("c.store-read", f"read one node's timeline ({per_node} of {total} events)",
         f"{dk_read:.2f} ms (n gets); {dq_read:.2f} ms (push: scan all keys)",
         f"{sq_read:.2f} ms (StateDB.timeline)", f"best of {repeats}"),
        ("c.diskcache-meta", "diskcache value format / version",
         f"{pickled}; diskcache {version}", "JSON text column",
         "release date: not in installed package metadata (see docs/design-choices.md)"),
    ]


# --------------------------------------------------------------------------- d. throughput


def bench_throughput(work: Path, quick: bool) -> list[Row]:
    curl = shutil.which("curl")
    size = (1 if quick else 8) * 1024 * 1024
    runs = 1 if quick else 3
    if curl is None:
        return [("d.tftp-throughput", f"curl download {size >> 20} MB", "not measured",
                 "not measured", "curl is not installed")]
    root = work / "throughput"
    root.mkdir()
    (root / FILE_NAME).write_bytes(os.urandom(size))
    cells: dict[str, str] = {}
    for kind in ("tftpy", "netbootd"):
        times: list[float] = []
        failed = ""
        with Server(kind, root) as server:
            for _ in range(runs):
                out = work / "curl.out"
                t = time.perf_counter()
                try:
                    proc = subprocess.run(
                        [curl, "-s", "--tftp-blksize", "1468", "--max-time", "60",
                         f"tftp://{LOOPBACK}:{server.port}/{FILE_NAME}", "-o", str(out)],
                        timeout=70, check=False)
                except subprocess.TimeoutExpired:
                    failed = "timed out"
                    break
                took = time.perf_counter() - t
                if proc.returncode != 0 or out.stat().st_size != size:
                    failed = f"curl exit {proc.returncode}"
                    break
                times.append(took)
        if failed:
            cells[kind] = f"failed ({failed})"
        else:
            med = statistics.median(times)
            cells[kind] = f"{size / med / 1e6:.1f} MB/s ({med:.2f} s)"
    return [("d.tftp-throughput",
             f"curl --tftp-blksize 1468, {size >> 20} MiB file", cells["tftpy"],
             cells["netbootd"], f"median of {runs}; loopback")]


# --------------------------------------------------------------------------- main


def table(rows: list[Row]) -> str:
    head = ("id", "measurement", "third-party (tftpy/scapy/diskcache)", "netbootd", "notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure netbootd's library choices.")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="netbootd-bench-") as tmp:
        work = Path(tmp)
        for name in "abcd":
            (work / name).mkdir()
        rows += bench_robustness(work / "a")
        rows += bench_dhcp(args.quick)
        rows += bench_store(work / "c", args.quick)
        rows += bench_throughput(work / "d", args.quick)
    import platform

    print(f"netbootd library choices, {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, "
          f"tftpy {importlib.metadata.version('tftpy')}, "
          f"scapy {importlib.metadata.version('scapy')}, "
          f"diskcache {importlib.metadata.version('diskcache')}"
          f"{' (--quick)' if args.quick else ''}\n")
    print(table(rows))
    print(f"\n(run took {time.perf_counter() - started:.1f} s)")
    if args.json:
        keys = ("id", "measurement", "third_party", "netbootd", "notes")
        records = [dict(zip(keys, r, strict=True)) for r in rows]
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
