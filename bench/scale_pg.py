"""PostgreSQL for bench/scale.py: a throw-away cluster, and what it was asked.

The cluster is tests/pgserver.py's (Debian's binaries, run as ``postgres`` in a temp
directory, fsync off: figures here are counts, not commit latencies), started in the
bench's own network namespace when the server runs in one, with ``pg_stat_statements``
loaded (``ALTER SYSTEM SET shared_preload_libraries``, then a restart on the same data).

:class:`PgCounter` reads, over the cluster's Unix socket and from the ``postgres`` database
(so the bench's own queries are not counted), for the database netbootd uses:

- ``statements``: ``sum(calls)`` of ``pg_stat_statements`` (updated when a statement ends),
  and ``by_verb`` by the statement's first word;
- ``rows_written``: ``sum(rows)`` of its INSERT, UPDATE and DELETE statements, and
  ``rows_read`` of its SELECTs;
- ``transactions``: ``xact_commit + xact_rollback`` of ``pg_stat_database``. PostgreSQL 15
  backends publish those at most once a second, and an idle one up to 10 s later, so a
  window is read only once that figure stopped moving for :data:`STATS_QUIET_S`.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATS_QUIET_S = 11.0  # > PGSTAT_IDLE_INTERVAL (10 s): an idle backend has flushed by then


def _pgserver() -> Any:
    spec = importlib.util.spec_from_file_location("netbootd_bench_pgserver",
                                                  ROOT / "tests" / "pgserver.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def start_cluster(netns: list[str] | None = None, listen: str = "127.0.0.1") -> Any:
    """A running PgServer with pg_stat_statements; the caller closes it."""
    pg = _pgserver().PgServer(listen=listen, netns=netns or [])
    try:
        pg.start()
        pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        pg.stop()
        pg.start()
        # the view, in the database the bench reads from; it shows every database's figures
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except BaseException:
        pg.close()
        raise
    return pg


class PgCounter:
    def __init__(self, pg: Any, dbname: str) -> None:
        self.pg, self.dbname = pg, dbname

    def read(self) -> dict[str, Any]:
        db = self.dbname.replace("'", "")
        out = self.pg.psql(
            "SELECT split_part(upper(ltrim(s.query)), ' ', 1), sum(s.calls), sum(s.rows) "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            f"WHERE d.datname = '{db}' GROUP BY 1")
        by_verb: dict[str, int] = {}
        rows = read = 0
        for line in out.splitlines():
            verb, calls, nrows = line.split("|")
            by_verb[verb or "?"] = by_verb.get(verb or "?", 0) + int(calls)
            if verb in ("INSERT", "UPDATE", "DELETE"):
                rows += int(nrows)
            elif verb == "SELECT":
                read += int(nrows)
        x = self.pg.psql("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                         f"WHERE datname = '{db}'").strip()
        return {"statements": sum(by_verb.values()), "by_verb": by_verb,
                "transactions": int(x or 0), "rows_written": rows, "rows_read": read}

    def settled(self) -> dict[str, Any]:
        last = self.read()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < STATS_QUIET_S:
            time.sleep(0.5)
            now = self.read()
            if now != last:
                last, quiet_since = now, time.monotonic()
        return last

    def query(self, sql: str) -> str:
        return str(self.pg.psql(sql, dbname=self.dbname))

    def sizes(self) -> dict[str, dict[str, float]]:
        """Bytes per table (indexes and TOAST included) and its rows."""
        out: dict[str, dict[str, float]] = {}
        tables = self.query("SELECT tablename FROM pg_tables WHERE schemaname = "
                            "current_schema()").split()
        for t in tables:
            size, rows = self.query(f'SELECT pg_total_relation_size(\'"{t}"\'), '
                                    f'(SELECT count(*) FROM "{t}")').split("|")
            out[t] = {"bytes": float(size), "rows": float(rows)}
        return out
