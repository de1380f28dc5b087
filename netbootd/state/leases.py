"""Server-mode DHCP leases on disk (sqlite3, WAL), so addresses survive a restart.

One table keyed by address, holding the records ``dhcp.server.LeaseServer`` keeps in memory
(offers, bound, released and declined addresses). The server loads them at start and writes
the lease logic's changes behind, batched like the boot events (state/events.py): one
transaction per flush instead of one per packet. ``netbootd node show`` and the admin API
read a node's lease from here, beside the running server (``readonly``).

The table is as bounded as the lease logic: ``dhcp.max_leases`` records of unconfigured
clients plus one per configured node.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import cast

from netbootd.dhcp.server import Change, Lease, LeaseState, Removed

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
  ip TEXT PRIMARY KEY, client TEXT NOT NULL, mac TEXT, state TEXT NOT NULL,
  expires REAL NOT NULL, pool TEXT NOT NULL, hostname TEXT
);
CREATE INDEX IF NOT EXISTS leases_by_mac ON leases (mac);
"""
_COLUMNS = "ip, client, mac, state, expires, pool, hostname"
_STATES = ("offered", "bound", "released", "declined")


class LeaseDB:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._pending: dict[str, Lease | None] = {}
        self._flush_scheduled = False
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @classmethod
    def open_readonly(cls, path: Path) -> LeaseDB | None:
        """The lease table beside a running server; None when server mode never ran."""
        return cls(path, readonly=True) if path.is_file() else None

    def close(self) -> None:
        self.flush()
        self._db.close()

    def defer_writes(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Queue changes; ``schedule(self.flush)`` is called when the first one is queued."""
        self._schedule = schedule

    def apply(self, changes: Iterable[Change]) -> None:
        """Record lease changes (the last change of an address wins within one flush)."""
        queued = False
        for change in changes:
            self._pending[change.ip] = None if isinstance(change, Removed) else change
            queued = True
        if not queued:
            return
        if self._schedule is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        """Commit every queued change in one transaction."""
        self._flush_scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM leases WHERE ip = ?",
                                 [(ip,) for ip, lease in pending.items() if lease is None])
            self._db.executemany(
                f"INSERT OR REPLACE INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(x.ip, x.client, x.mac, x.state, x.expires, x.pool, x.hostname)
                 for x in pending.values() if x is not None])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # A full disk must not stop the server answering; the leases stay in memory.
            log.exception("leases: %d queued changes lost", len(pending))
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def load(self) -> list[Lease]:
        """Every stored record (a corrupt row is skipped, not fatal)."""
        self.flush()
        out = []
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM leases"):
            ip, client, mac, state, expires, pool, hostname = row
            if state not in _STATES or not isinstance(expires, (int, float)):
                log.warning("leases: skipping a bad record for %s", ip)
                continue
            out.append(Lease(str(ip), str(client), mac, cast(LeaseState, state),
                             float(expires), str(pool), hostname))
        return out

    def for_macs(self, macs: Iterable[str]) -> list[Lease]:
        """Records of these MACs, the most recent (latest expiry) first."""
        macs = list(macs)
        if not macs:
            return []
        self.flush()
        marks = ", ".join("?" * len(macs))
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM leases WHERE mac IN ({marks}) ORDER BY expires DESC",
            macs).fetchall()
        return [Lease(r[0], r[1], r[2], cast(LeaseState, r[3]), r[4], r[5], r[6])
                for r in rows]
