"""``netbootd serve`` with every SQLite statement it runs counted (bench/scale.py).

``python -m bench.scale_server <counters.json> serve --config ...`` wraps ``sqlite3.connect``
before netbootd is imported, so every connection the server opens (boot events, intent,
leases) gets a trace callback (``Connection.set_trace_callback``: SQLite calls it once per
statement it starts, once per row of an ``executemany``). On SIGUSR1 the counts so far are
written to ``counters.json`` (write aside, rename):

- ``statements``: every statement, and ``by_verb`` (INSERT, UPDATE, DELETE, SELECT, BEGIN,
  COMMIT, PRAGMA, ...);
- ``transactions``: commits of explicit transactions plus writes run outside one (SQLite
  commits each of those on its own);
- ``rows_written``: the sum of ``Connection.total_changes`` (rows inserted, updated, deleted).

Nothing in netbootd changes: the same code runs as ``netbootd serve``; the callback is this
launcher's. The counters are the bench's way to see what the database is asked per boot when
the backend is SQLite; PostgreSQL reports its own (``pg_stat_database``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class Counts:
    def __init__(self) -> None:
        self.by_verb: Counter[str] = Counter()
        self.autocommit_writes = 0
        # kept for the process's life: the server's connections are; a closed one is skipped
        self.conns: list[sqlite3.Connection] = []

    def callback(self, conn: sqlite3.Connection) -> Any:
        def trace(sql: str) -> None:
            verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
            self.by_verb[verb] += 1
            if verb in _WRITES and not conn.in_transaction:
                self.autocommit_writes += 1
        return trace

    def snapshot(self) -> dict[str, Any]:
        rows = 0
        for c in self.conns:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed since
                rows += c.total_changes
        return {"statements": sum(self.by_verb.values()), "by_verb": dict(self.by_verb),
                "transactions": self.by_verb.get("COMMIT", 0) + self.autocommit_writes,
                "rows_written": rows}


def install(out: Path) -> Counts:
    counts = Counts()
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(counts.callback(conn))
        counts.conns.append(conn)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]

    def dump(_signum: int, _frame: object) -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(counts.snapshot()))
        os.replace(tmp, out)

    signal.signal(signal.SIGUSR1, dump)
    return counts


def main() -> int:
    out = Path(sys.argv[1])
    install(out)
    from netbootd.cli import main as netbootd_main

    return netbootd_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
