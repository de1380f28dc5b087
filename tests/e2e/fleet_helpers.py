"""Shared by the fleet e2e tests: PostgreSQL in the lab's database namespace, and reading
netbootd's shared state (events, nodes, channels) straight from it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from netbootd.lab.fleet import FleetLab
from netbootd.lab.guests import QemuGuest
from pgserver import PgServer


def start_pg(lab: FleetLab) -> PgServer:
    """PostgreSQL listening on the lab's database host (netbootd's servers reach it through
    the router); the caller closes it before the lab."""
    db = lab.host("db")
    pg = PgServer(listen=db.address, netns=["ip", "netns", "exec", db.netns])
    pg.start()
    return pg


@dataclass(frozen=True)
class PgEvent:
    id: int
    ts: float
    kind: str
    detail: dict[str, Any]


def pg_events(pg: PgServer, mac: str, after_id: int = 0) -> list[PgEvent]:
    """``mac``'s boot events in netbootd's shared database, oldest first."""
    if not mac.replace(":", "").isalnum():
        raise ValueError(mac)
    out = pg.psql(
        "SELECT coalesce(json_agg(json_build_object('id', id, 'ts', ts, 'kind', kind, "
        f"'detail', detail::json) ORDER BY id), '[]') FROM events WHERE mac = '{mac}' "
        f"AND id > {int(after_id)}", dbname=pg.dbname)
    return [PgEvent(int(r["id"]), float(r["ts"]), r["kind"], r["detail"])
            for r in json.loads(out.strip() or "[]")]


def pg_scalar(pg: PgServer, sql: str) -> str:
    return pg.psql(sql, dbname=pg.dbname).strip()


def wait_pg_event(pg: PgServer, mac: str, kind: str, timeout: float, after_id: int = 0,
                  guest: QemuGuest | None = None) -> PgEvent:
    """Poll the shared database until ``mac`` has an event of ``kind`` after ``after_id``."""
    deadline = time.monotonic() + timeout
    exited_seen = False
    while True:
        for e in pg_events(pg, mac, after_id):
            if e.kind == kind:
                return e
        if guest is not None and not guest.running():
            if exited_seen:  # it powered off and its last request is in: not coming
                deadline = 0.0
            exited_seen = True
        if time.monotonic() > deadline:
            tail = guest.serial_text()[-2000:] if guest is not None else ""
            raise TimeoutError(f"no {kind} event for {mac} in PostgreSQL within "
                               f"{timeout:.0f} s; console tail:\n{tail}")
        time.sleep(0.5)


def last_pg_event_id(pg: PgServer, mac: str) -> int:
    events = pg_events(pg, mac)
    return events[-1].id if events else 0
