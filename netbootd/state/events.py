"""Runtime state: nodes seen and each node's boot timeline. In ``state.sqlite3`` (sqlite3,
WAL mode) by default, or in the shared PostgreSQL database ``[state] database`` names
(netbootd/state/sql.py): there every server's batches go to the same tables, and reads
(timeline, nodes, shared GUIDs) see the whole fleet. The per-packet path makes no round trip
to the database for a MAC already seen by this process: writes are queued (below), and only a
MAC's first sighting with a GUID, or a new GUID for it, reads the table.

Why sqlite3 rather than diskcache: a boot timeline is an append-and-query-by-node workload,
which is one indexed table; diskcache is a key-value cache that pickles values (see
docs/design-choices.md for the measurement). WAL lets ``netbootd`` CLI commands and tests read
while the server writes. The server holds one connection; every method is short and
synchronous, called from the event loop.

Write-behind: one autocommit transaction per event cost ~250 µs here, more than the rest of a
DHCP answer (bench/run.py, docs/performance.md). The server therefore calls
:meth:`StateDB.defer_writes`: writes are queued in memory and committed together (in order
within each table, consecutive writes of one statement as one ``executemany``) in one
transaction when the scheduled flush runs (the service flushes 50 ms after the first queued
write), before any read through this object, and on close. Other readers (CLI, tests) see an
event at most one flush later. Without ``defer_writes`` every write commits at once. A flush
takes the queued writes as one ``Batch`` and hands it to ``writer`` when the service set one
(it spools what the database refuses, state/replay.py), else commits it with ``write_batch``.

Event kinds: ``dhcp-offer``, ``dhcp-ack``, ``dhcp-decline``, ``tftp-sent`` (completed),
``tftp-ended`` (aborted, timed out, refused), ``http-sent``, ``ipxe-script``, ``ipxe-decline``,
``firstboot``, ``phone-home``, ``ready`` and ``failed`` (the node's report after cloud-init).

Bounded, because every MAC in a DHCP packet is client-chosen: a flood of spoofed MACs must not
grow the database without limit. At most ``max_nodes`` distinct MACs are recorded (a node the
config names is always recorded); events of any other MAC are dropped and counted as
``state_dropped{reason=node-cap}``. At most ``max_events`` events are kept: every
``_PRUNE_EVERY`` inserts the oldest beyond that are deleted (``state_events_pruned``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.core.identity import ClientIdentity
from netbootd.errors import NotFound
from netbootd.metrics import Counters
from netbootd.state import migrate
from netbootd.state.migrate import Migration
from netbootd.state.spool import Batch
from netbootd.state.sql import Db, StateUnavailable, connect, connect_sqlite, is_url

# Inserts between two prunes of the oldest events: pruning is one indexed DELETE, cheap when
# batched, and the table overshoots max_events by at most this many rows.
_PRUNE_EVERY = 1000

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
  mac TEXT PRIMARY KEY, guid TEXT, ip TEXT, arch INTEGER, serial TEXT, vendor_class TEXT,
  node TEXT, hostname TEXT, current_build TEXT, boot_count INTEGER NOT NULL DEFAULT 0,
  first_seen REAL NOT NULL, last_seen REAL NOT NULL, state TEXT
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, mac TEXT NOT NULL,
  kind TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_mac ON events (mac, id);
CREATE INDEX IF NOT EXISTS nodes_by_guid ON nodes (guid);
CREATE INDEX IF NOT EXISTS nodes_by_node ON nodes (node);
"""

# Append only; never edit one that has shipped (netbootd/state/migrate.py).
# 2: what a discovered machine calls itself: its DHCP host name (option 12) and user class
# (option 77), shown beside the vendor class. Apart from ``hostname``, the name an operator
# gave it when adopting.
_SCHEMA_V2 = """
ALTER TABLE nodes ADD COLUMN dhcp_hostname TEXT;
ALTER TABLE nodes ADD COLUMN user_class TEXT
"""
MIGRATIONS = [Migration(1, _SCHEMA), Migration(2, _SCHEMA_V2)]



@dataclass(frozen=True, slots=True)
class BootEvent:
    id: int
    ts: float
    mac: str
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeRecord:
    mac: str
    guid: str | None
    ip: str | None
    arch: int | None
    serial: str | None
    vendor_class: str | None
    node: str | None
    hostname: str | None
    current_build: str | None
    boot_count: int
    first_seen: float
    last_seen: float
    state: str | None = None  # booted (phoned home), ready or failed (its report); None: never
    dhcp_hostname: str | None = None  # option 12, client-sent: untrusted text
    user_class: str | None = None  # option 77 (first class), client-sent: untrusted text


_GUID_CACHE_MAX = 100_000


def _read_only(conn: Any) -> None:
    conn.execute("SET default_transaction_read_only = on")


class StateDB:
    """``path``: the sqlite file (``:memory:`` too), or a ``postgresql://`` URL."""

    def __init__(self, path: Path | str, *, readonly: bool = False, max_nodes: int | None = None,
                 max_events: int | None = None, counters: Counters | None = None) -> None:
        self.path = path
        self.guid_epoch = 0
        self._pending: list[tuple[str, tuple[Any, ...]]] = []  # node writes, in order
        self._pending_events: list[tuple[Any, ...]] = []  # event rows, in order
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        # Where a flush's batch goes when set (the service's spooling writer); else committed.
        self.writer: Callable[[Batch], None] | None = None
        # The GUID last written per MAC by this process, so saw() need not read the table
        # (and flush queued writes) on every packet; bounded against floods of spoofed MACs.
        self._guid_of: dict[str, str | None] = {}
        # GUID -> MACs whose upsert is still queued (the table does not show them yet).
        self._queued_guids: dict[str, set[str]] = {}
        # GUIDs that a MAC joined while another MAC had it, and GUIDs a MAC left, since the
        # last take_guid_changes(): what can change which GUIDs identify nobody.
        self._guids_joined: set[str] = set()
        self._guids_left: set[str] = set()
        self.max_nodes = max_nodes
        self.max_events = max_events
        self.counters = counters if counters is not None else Counters()
        self._since_prune = 0
        self._macs: set[str] = set()
        self._node_cols = _NODE_COLS
        self._db: Db
        if is_url(path):
            # Read-only here too: a write through this object is refused by the server.
            self._db = connect(path, on_connect=_read_only if readonly else None)
            try:
                if readonly:
                    self._read_older(migrate.check(self._db, "events", MIGRATIONS))
                else:
                    migrate.migrate(self._db, "events", MIGRATIONS, now=time.time())
            except BaseException:
                self._db.close()
                raise
        else:
            self._open_sqlite(Path(path), readonly)
        if max_nodes is not None and not readonly:
            self._macs = {r[0] for r in self._db.execute(
                "SELECT mac FROM nodes UNION SELECT mac FROM events")}

    def _open_sqlite(self, path: Path, readonly: bool) -> None:
        if readonly:
            # For CLI commands and tests reading beside a running server: never creates or
            # changes anything. NotFound says what to do when there is no database yet.
            if not path.is_file():
                raise NotFound(f"no state database at {path}: has netbootd served yet?")
            self._db = connect_sqlite(path, readonly=True)
            self._db.execute("PRAGMA busy_timeout=5000")
            if "state" not in self._node_columns():  # a database no server has upgraded yet
                self._node_cols = _NODE_COLS.replace(", state", ", NULL")
            self._read_older(migrate.check(self._db, "events", MIGRATIONS))
            return
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect_sqlite(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        tables = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='nodes'").fetchone()
        if tables is not None and "state" not in self._node_columns():
            # A database from before the ready/failed report (and before versioning).
            self._db.execute("ALTER TABLE nodes ADD COLUMN state TEXT")
        migrate.migrate(self._db, "events", MIGRATIONS, now=time.time())

    def _read_older(self, version: int | None) -> None:
        """A reader beside an older server reads the columns added since as NULL."""
        if version is None or version < 2:
            self._node_cols = self._node_cols.replace(", dhcp_hostname, user_class",
                                                      ", NULL, NULL")

    def _node_columns(self) -> set[str]:
        return {str(r[1]) for r in self._db.execute("PRAGMA table_info(nodes)")}

    @classmethod
    def open_readonly(cls, path: Path) -> StateDB:
        return cls(path, readonly=True)

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.flush()
        self._db.close()

    def defer_writes(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Queue writes; ``schedule(self.flush)`` is called when the first one is queued."""
        self._schedule = schedule

    @property
    def has_queued_writes(self) -> bool:
        """Whether writes are queued that ``flush`` would commit."""
        return bool(self._pending or self._pending_events)

    def take_batch(self) -> Batch | None:
        """The queued writes, in order, as one batch (None when nothing is queued)."""
        if not self._pending and not self._pending_events:
            return None
        pending, self._pending = self._pending, []
        events, self._pending_events = self._pending_events, []
        self._queued_guids.clear()
        return Batch(tuple(pending), tuple(events))

    def flush(self) -> None:
        """Commit every queued write in one transaction (or hand them to ``writer``)."""
        batch = self.take_batch()
        if batch is None:
            return
        if self.writer is not None:
            self.writer(batch)
            return
        lost = len(batch.nodes) + len(batch.events)
        try:
            self.write_batch(batch)
        except StateUnavailable as e:
            # Without the service's spooling writer (CLI, tests): the batch is lost.
            log.warning("state: %d queued writes lost: %s", lost, e)
        except self._db.errors:
            # A full disk must not stop the server from answering; the events are lost.
            log.exception("state: %d queued writes lost", lost)

    def write_batch(self, batch: Batch) -> None:
        """Commit ``batch`` in one transaction, in order within each table; on error it is
        rolled back whole and the error raised (StateUnavailable: the database is away).

        Consecutive writes of one statement go as one ``executemany`` (event rows all do:
        they are queued apart from node writes), one call into the driver per run instead of
        per row. The order between the two tables is not observable: the transaction commits
        both at once. Event batches of several servers may commit side by side: no
        fleet-wide write lock.
        """
        pending, events = batch.nodes, batch.events
        with self._db.transaction(lock=False):
            start = 0
            while start < len(pending):
                sql = pending[start][0]
                end = start + 1
                while end < len(pending) and pending[end][0] == sql:
                    end += 1
                self._db.executemany(sql, [params for _, params in pending[start:end]])
                start = end
            if events:
                self._db.executemany(_INSERT_EVENT, events)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._schedule is None:
            self._db.execute(sql, params)
            return
        if not self._pending and not self._pending_events:
            self._schedule(self.flush)
        self._pending.append((sql, params))

    def _write_event(self, params: tuple[Any, ...]) -> None:
        if self._schedule is None:
            self._db.execute(_INSERT_EVENT, params)
            return
        if not self._pending and not self._pending_events:
            self._schedule(self.flush)
        self._pending_events.append(params)

    def saw(self, ident: ClientIdentity, now: float, node: str | None = None) -> None:
        """Record that a client with this identity was seen (upsert; known fields kept)."""
        if ident.mac is None or not self._admit(ident.mac, configured=node is not None):
            return
        if ident.guid is not None:
            if ident.mac in self._guid_of:
                known = self._guid_of[ident.mac]
            else:
                # No flush needed: every queued upsert that sets a GUID is in _guid_of (the
                # cache is only cleared right after a flush), and one without a GUID keeps
                # the column as it is (COALESCE).
                known = self._read_one("SELECT guid FROM nodes WHERE mac=?", (ident.mac,))
            if known != ident.guid:
                # A new (MAC, GUID) pair changes shared GUIDs only when another MAC has that
                # GUID, or when the MAC leaves a GUID it had; a first sighting changes nothing
                # (and must not make the service reload its intent per new machine).
                if known is not None:
                    self._guids_left.add(known)
                if self._guid_is_shared(ident.guid, ident.mac):
                    self._guids_joined.add(ident.guid)
                if known is not None or ident.guid in self._guids_joined:
                    self.guid_epoch += 1
                self._queued_guids.setdefault(ident.guid, set()).add(ident.mac)
            if len(self._guid_of) >= _GUID_CACHE_MAX:
                self.flush()
                self._guid_of.clear()
            self._guid_of[ident.mac] = ident.guid
        self._write(
            """INSERT INTO nodes (mac, guid, ip, arch, serial, vendor_class, node,
                                  first_seen, last_seen, dhcp_hostname, user_class)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(mac) DO UPDATE SET
                 guid=COALESCE(excluded.guid, nodes.guid), ip=COALESCE(excluded.ip, nodes.ip),
                 arch=COALESCE(excluded.arch, nodes.arch),
                 serial=COALESCE(excluded.serial, nodes.serial),
                 vendor_class=COALESCE(excluded.vendor_class, nodes.vendor_class),
                 dhcp_hostname=COALESCE(excluded.dhcp_hostname, nodes.dhcp_hostname),
                 user_class=COALESCE(excluded.user_class, nodes.user_class),
                 node=COALESCE(excluded.node, nodes.node), last_seen=excluded.last_seen""",
            (ident.mac, ident.guid, ident.ip, None if ident.arch is None else int(ident.arch),
             ident.serial, ident.vendor_class, node, now, now, ident.dhcp_hostname,
             ident.user_class))

    def _guid_is_shared(self, guid: str, mac: str) -> bool:
        if self._queued_guids.get(guid, set()) - {mac}:
            return True
        return self._read_one("SELECT 1 FROM nodes WHERE guid=? AND mac<>? LIMIT 1",
                              (guid, mac)) is not None

    def _read_one(self, sql: str, args: tuple[Any, ...]) -> Any:
        """The first column of the first row, or None; also None while the database is
        unreachable: a packet is answered from what this process knows (docs/operations.md,
        "When the database is down")."""
        try:
            row = self._db.execute(sql, args).fetchone()
        except StateUnavailable:
            return None
        return None if row is None else row[0]

    def take_guid_changes(self) -> tuple[set[str], set[str]]:
        """(GUIDs joined by a further MAC, GUIDs left by a MAC) since the last call."""
        joined, left = self._guids_joined, self._guids_left
        self._guids_joined, self._guids_left = set(), set()
        return joined, left

    def record(self, mac: str, kind: str, now: float, **detail: Any) -> None:
        if not self._admit(mac, configured=False):
            return
        self._write_event((now, mac, kind, json.dumps(detail, sort_keys=True)))
        if self.max_events is not None:
            self._since_prune += 1
            if self._since_prune >= _PRUNE_EVERY:
                self._prune()

    def _admit(self, mac: str, *, configured: bool) -> bool:
        """Whether ``mac`` may be recorded: known already, configured, or room under the cap."""
        if self.max_nodes is None or mac in self._macs:
            return True
        if configured or len(self._macs) < self.max_nodes:
            self._macs.add(mac)
            return True
        self.counters.inc("state_dropped", reason="node-cap")
        return False

    def _prune(self) -> None:
        self._since_prune = 0
        self.flush()
        try:
            cur = self._db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events)"
                                   " - ?", (self.max_events,))
        except StateUnavailable:
            return  # the database is away: the next prune catches up
        if cur.rowcount > 0:
            self.counters.inc("state_events_pruned", cur.rowcount)

    def counts(self) -> tuple[int, int]:
        """(nodes, events) rows on disk."""
        self.flush()
        nodes = self._db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
        events = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return int(nodes), int(events)

    def phoned_home(self, mac: str, now: float, *, build: str, hostname: str,
                    ip: str | None, node: str | None, **detail: Any) -> None:
        """A booted node reported in: count the boot and remember what it runs."""
        self.saw(ClientIdentity(mac=mac, ip=ip), now, node=node)
        self._write("UPDATE nodes SET current_build=?, hostname=?, state='booted', "
                    "boot_count=boot_count+1 WHERE mac=?", (build, hostname, mac))
        self.record(mac, "phone-home", now, build=build, hostname=hostname, ip=ip, **detail)

    def reported(self, mac: str, now: float, *, state: str, build: str, ip: str | None,
                 node: str | None, **detail: Any) -> None:
        """A booted node's ready/failed report: the node's state, and event ``ready`` or
        ``failed``. The build is the one its token names, recorded as current as phone-home
        does (the report may arrive without a phone-home before it)."""
        self.saw(ClientIdentity(mac=mac, ip=ip), now, node=node)
        self._write("UPDATE nodes SET state=?, current_build=? WHERE mac=?", (state, build, mac))
        self.record(mac, state, now, build=build, ip=ip, **detail)

    def timeline(self, mac: str, after_id: int = 0) -> list[BootEvent]:
        self.flush()
        rows = self._db.execute(
            "SELECT id, ts, mac, kind, detail FROM events WHERE mac=? AND id>? ORDER BY id",
            (mac, after_id)).fetchall()
        return [BootEvent(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def shared_guids(self) -> dict[str, set[str]]:
        """GUIDs recorded with more than one MAC, and those MACs (cloned SMBIOS UUIDs, or one
        machine with several NICs: the caller tells them apart with the inventory)."""
        self.flush()
        rows = self._db.execute(
            "SELECT guid, mac FROM nodes WHERE guid IN (SELECT guid FROM nodes WHERE guid IS "
            "NOT NULL GROUP BY guid HAVING COUNT(DISTINCT mac) > 1)").fetchall()
        out: dict[str, set[str]] = {}
        for guid, mac in rows:
            out.setdefault(guid, set()).add(mac)
        return out

    def discovered(self) -> list[NodeRecord]:
        """Clients seen that no inventory node matched (``node list --discovered``)."""
        self.flush()
        rows = self._db.execute(f"SELECT {self._node_cols} FROM nodes WHERE node IS NULL "
                                "ORDER BY last_seen DESC").fetchall()
        return [NodeRecord(*r) for r in rows]

    def mac_for_guid(self, guid: str) -> str | None:
        """The MAC most recently seen with this GUID (survives a restart, unlike Sightings)."""
        self.flush()
        mac = self._read_one("SELECT mac FROM nodes WHERE guid=? ORDER BY last_seen DESC "
                             "LIMIT 1", (guid,))
        return None if mac is None else str(mac)

    def node(self, mac: str) -> NodeRecord | None:
        self.flush()
        row = self._db.execute(f"SELECT {self._node_cols} FROM nodes WHERE mac=?",
                               (mac,)).fetchone()
        return NodeRecord(*row) if row else None

    def node_named(self, name: str) -> NodeRecord | None:
        """The machine last seen as inventory node ``name``."""
        row = self._db.execute(f"SELECT {self._node_cols} FROM nodes WHERE node=? "
                               "ORDER BY last_seen DESC LIMIT 1", (name,)).fetchone()
        return NodeRecord(*row) if row else None

    def nodes(self) -> list[NodeRecord]:
        self.flush()
        rows = self._db.execute(f"SELECT {self._node_cols} FROM nodes ORDER BY mac").fetchall()
        return [NodeRecord(*r) for r in rows]


_INSERT_EVENT = "INSERT INTO events (ts, mac, kind, detail) VALUES (?, ?, ?, ?)"
_NODE_COLS = ("mac, guid, ip, arch, serial, vendor_class, node, hostname, current_build, "
              "boot_count, first_seen, last_seen, state, dhcp_hostname, user_class")
