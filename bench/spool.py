"""Measure what spooling one state write batch to disk costs (docs/design-choices.md, spool).

    python bench/spool.py            # 400 batches per variant, best of 3
    python bench/spool.py --quick    # 50 batches, one run

A batch is what one 50 ms flush window holds while the database is away; here 20 event rows
and 20 node upserts, as a busy segment produces. Variants, each into a fresh temp directory:

- ``spool-fsync``: netbootd's ``Spool.append`` (append-only segment file, fsync per batch);
- ``spool-nofsync``: the same without fsync (what the page cache alone gives);
- ``diskcache-deque``: ``diskcache.Deque.append`` of the same batch (pickled into sqlite,
  WAL, diskcache's default synchronous=NORMAL: a commit per append, no fsync per commit).

Also the replay rate of ``Spool.replay`` (reading and parsing the segments back). Prints one
line of JSON per variant, with the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from netbootd.state.spool import Batch, Spool


def _batch(i: int) -> Batch:
    rows = []
    nodes = []
    for k in range(20):
        mac = f"52:54:00:00:{k:02x}:{i % 256:02x}"
        rows.append((time.time(), mac, "dhcp-offer",
                     json.dumps({"build": "kvm/2026.11", "xid": i * 100 + k, "via": "proxy"})))
        nodes.append(("INSERT INTO nodes (mac, guid, ip, arch, serial, vendor_class, node, "
                      "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(mac)"
                      " DO UPDATE SET last_seen=excluded.last_seen",
                      (mac, None, None, 7, None, "PXEClient:Arch:00007", None, 1.0, 1.0)))
    return Batch(tuple(nodes), tuple(rows))


def _time_spool(n: int, fsync: bool) -> tuple[float, float]:
    batches = [_batch(i) for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        s = Spool(Path(d), max_bytes=1 << 30, fsync=fsync)
        t0 = time.perf_counter()
        for b in batches:
            s.append(b)
        append = (time.perf_counter() - t0) / n
        s2 = Spool(Path(d), max_bytes=1 << 30, fsync=fsync)
        t0 = time.perf_counter()
        s2.replay(lambda b: None, n)
        replay = (time.perf_counter() - t0) / n
    return append, replay


def _time_deque(n: int) -> float:
    import diskcache  # test dependency only

    batches = [_batch(i) for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        q = diskcache.Deque(directory=d)
        t0 = time.perf_counter()
        for b in batches:
            q.append(b)
        out = (time.perf_counter() - t0) / n
        q.directory  # noqa: B018 (keep it open until timed)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    n, runs = (50, 1) if a.quick else (400, 3)
    load = os.getloadavg()[0]
    fs = min(_time_spool(n, True) for _ in range(runs))
    nf = min(_time_spool(n, False) for _ in range(runs))
    dq = min(_time_deque(n) for _ in range(runs))
    size = len(_batch(0).to_json(1)) + 1
    for name, append, replay in (("spool-fsync", fs[0], fs[1]),
                                 ("spool-nofsync", nf[0], nf[1]),
                                 ("diskcache-deque", dq, None)):
        print(json.dumps({"variant": name, "batches": n, "batch_bytes": size,
                          "append_us": round(append * 1e6, 1),
                          "replay_read_us": None if replay is None else round(replay * 1e6, 1),
                          "load1": round(load, 2)}))


if __name__ == "__main__":
    main()
