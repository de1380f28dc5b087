"""The event write path while the state database may be away: spool what it refuses, replay
it in order when it is back.

``SpoolingWriter`` is the boot-event database's ``writer`` (state/events.py) in a running
server. A flush's batch is committed as before when the database is up and nothing is spooled;
when the commit fails for want of the database (state/health.py says which errors mean that),
the batch goes to the spool, and so does every later batch until the spool is empty again, so
events reach the database in the order they happened. ``run`` is the service's background
task: while the database is down it runs the health's probe in a thread (state/health.py), and
while anything is spooled and the database may be tried, it replays up to ``CHUNK`` batches
per turn of the event loop until the spool is empty.

A batch the database rejects for another reason (a statement error: a bug, not an outage)
would block the spool forever; it is dropped, logged and counted as
``events_dropped{reason=rejected}``.
"""

from __future__ import annotations

import asyncio
import logging

from netbootd.metrics import Counters
from netbootd.state.events import StateDB
from netbootd.state.health import UNAVAILABLE, DatabaseHealth
from netbootd.state.spool import Batch, Spool

log = logging.getLogger("netbootd.state")

CHUNK = 50  # batches replayed before the event loop gets a turn (~1000 events)
IDLE_S = 0.25  # how often an empty or waiting replayer looks again


class SpoolingWriter:
    def __init__(self, state: StateDB, spool: Spool, health: DatabaseHealth,
                 counters: Counters) -> None:
        self.state = state
        self.spool = spool
        self.health = health
        self.counters = counters

    def __call__(self, batch: Batch) -> None:
        """Commit ``batch`` now, or spool it (database down, or earlier batches still wait)."""
        if self.spool or not self.health.may_try():
            self.spool.append(batch)
            return
        try:
            self.state.write_batch(batch)
        except UNAVAILABLE as e:
            self.health.failed(e)
            self.spool.append(batch)
            return
        except Exception:
            self._rejected(batch)
            return
        self.health.ok()

    def _rejected(self, batch: Batch) -> None:
        log.exception("state: the database rejected a batch of %d events; dropped",
                      len(batch.events))
        self.counters.inc("events_dropped", len(batch.events), reason="rejected")

    def _replay_one(self, batch: Batch) -> None:
        try:
            self.state.write_batch(batch)
        except UNAVAILABLE:
            raise
        except Exception:
            self._rejected(batch)

    def replay_some(self) -> int:
        """One turn: replay up to CHUNK batches if the database may be tried; batches done."""
        if not self.spool or not self.health.may_try():
            return 0
        try:
            done = self.spool.replay(self._replay_one, CHUNK)
        except UNAVAILABLE as e:
            self.health.failed(e)
            return 0
        self.health.ok()
        if done and not self.spool:
            log.info("state: every spooled batch replayed (%d events since start)",
                     self.counters.get("events_replayed"))
        return done

    async def run(self) -> None:
        """Replay whatever is spooled, now (a restart) and after each outage; until cancelled."""
        while True:
            if self.health.probe_due():
                self.health.probed(await asyncio.to_thread(self.health.check))
            if self.replay_some() == 0:
                await asyncio.sleep(IDLE_S)
            else:
                await asyncio.sleep(0)  # let the server answer between chunks

    def status(self) -> dict[str, object]:
        """What ``GET /api/v1/status`` shows: the database's health and the spool."""
        c = self.counters
        return {"database": self.health.status(),
                "spool": {"directory": str(self.spool.directory), "batches": self.spool.batches,
                          "events": self.spool.events, "bytes": self.spool.size,
                          "max_bytes": self.spool.max_bytes},
                "events_spooled": c.get("events_spooled"),
                "events_replayed": c.get("events_replayed"),
                "events_dropped": c.get("events_dropped")}

    def gauges(self) -> dict[str, tuple[str, float]]:
        """Levels for /metrics (read at scrape time)."""
        return {
            "state_database_up": ("1 when the state database answered at the last attempt, "
                                  "0 during an outage", 1.0 if self.health.up else 0.0),
            "state_spool_events": ("boot events spooled on disk, waiting for the database",
                                   float(self.spool.events)),
            "state_spool_bytes": ("bytes of the on-disk event spool", float(self.spool.size)),
        }
