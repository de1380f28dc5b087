"""Whether the state database answers: which errors mean "unreachable", and the up/down state.

A server keeps booting nodes while its state database is away (docs/operations.md, "When the
database is down"): the World watcher answers from the last World, event batches go to the
spool (state/spool.py), admin changes are refused with 503 / exit code 4. Those parts share
one ``DatabaseHealth``: it says whether the database was last seen up, logs the change once
per outage (never per packet), and keeps the event loop from waiting on a database that does
not answer: while it is down nothing on the loop touches the database until a probe, run in
a thread by the service's background task at a pace of 1 s doubling to 5 s, connected to its
TCP address (a dropped SYN would otherwise hold the loop, and every boot, for libpq's connect
timeout). Without an address to probe (sqlite), the loop tries again at that pace itself.

"Unreachable" is an error of the connection, not of a statement: ``StateUnavailable`` (the
connection layer, state/sql.py, raises it when PostgreSQL cannot be reached, and for a
read-only or locked state directory) and sqlite's ``OperationalError`` (disk I/O error,
locked, full). A statement the database rejects (an integrity or programming error) is a bug,
not an outage.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from netbootd.state.sql import StateUnavailable

log = logging.getLogger("netbootd.state")


UNAVAILABLE: tuple[type[BaseException], ...] = (StateUnavailable, sqlite3.OperationalError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or written (not a bad statement)."""
    return isinstance(exc, UNAVAILABLE)


class DatabaseDown(StateUnavailable):
    """An admin change (or read) refused because the state database is unreachable."""

    exit_code = 4  # cli_errors: access / read-only / locked / unavailable


# What state/sql.py says when PostgreSQL cannot be reached: its URL (password redacted) and why.
_PG_UNREACHABLE = re.compile(r"the state database (\S+) cannot be reached \((.*?)\)[:;] ", re.S)


def database_where(url: str | None, state_dir: Path) -> str:
    """``host:port`` of a PostgreSQL URL (what an admin needs to look at), else the directory
    that holds the sqlite files."""
    if url is None:
        return str(state_dir)
    try:
        u = urlsplit(url)
        host = u.hostname or "localhost"
        port = u.port or 5432
    except ValueError:
        return "the configured PostgreSQL server"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reason_of(exc: BaseException) -> str:
    """Why the database could not be used, in one line (the driver's words)."""
    text = str(exc).strip()
    if (m := _PG_UNREACHABLE.search(text)) is not None:
        text = m[2].strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def refused(where: str | None, exc: BaseException, *, changed: bool = True) -> DatabaseDown:
    """The error an admin sees: where the database is, why, and that nothing changed.
    ``where`` None: taken from the connection layer's message."""
    if isinstance(exc, DatabaseDown):
        return exc
    if where is None:
        m = _PG_UNREACHABLE.search(str(exc))
        where = database_where(m[1], Path(".")) if m else "the configured address"
    what = "nothing was changed; " if changed else ""
    return DatabaseDown(f"the state database at {where} is unreachable: {reason_of(exc)}; "
                        f"{what}retry when it is back")


Probe = Callable[[], None]  # returns when the database's address answers; raises OSError if not
PROBE_TIMEOUT_S = 5.0


def tcp_probe(url: str | None) -> Probe | None:
    """A TCP connect to a PostgreSQL URL's host and port (None: nothing to probe)."""
    if url is None:
        return None
    try:
        u = urlsplit(url)
        host, port = u.hostname, u.port or 5432
    except ValueError:
        return None
    if host is None:  # a unix socket (host in the query string): nothing to wait on
        return None

    def probe() -> None:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    return probe


class DatabaseHealth:
    """Up or down, as last seen by anyone using the database; when to try again while down."""

    def __init__(self, where: str, *, clock: Callable[[], float] = time.monotonic,
                 retry_s: float = 1.0, retry_max_s: float = 5.0,
                 probe: Probe | None = None) -> None:
        self.where = where  # host:port (PostgreSQL) or the file (sqlite), for messages
        self.clock = clock
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.up = True
        self.outages = 0  # outages noticed since start
        self.last_error = ""
        self.down_since: float | None = None
        self._delay = retry_s
        self._retry_at = 0.0
        self.probe = probe
        self._probed = False  # the probe answered since the last failure: try for real
        # Run once when an outage ends: connections the database's restart closed are found
        # out here (state/sql.py reconnects at the next call), not by an admin's request.
        self.on_recovery: list[Callable[[], object]] = []

    def failed(self, exc: BaseException) -> None:
        """Someone could not use the database: down until ``ok`` (logged once per outage)."""
        now = self.clock()
        self.last_error = reason_of(exc)
        if self.up:
            self.up = False
            self.outages += 1
            self.down_since = now
            self._delay = self.retry_s
            log.error("state database at %s unreachable (%s): answering from the last World, "
                      "spooling events, refusing admin changes until it is back",
                      self.where, self.last_error)
        else:
            self._delay = min(self._delay * 2, self.retry_max_s)
        self._retry_at = now + self._delay
        self._probed = False

    def ok(self) -> bool:
        """The database answered; True when that ends an outage (logged once)."""
        if self.up:
            return False
        self.up = True
        took = self.clock() - (self.down_since or self.clock())
        self.down_since = None
        log.warning("state database at %s is back after %.1f s", self.where, took)
        for hook in self.on_recovery:
            # A connection that finds itself closed here reconnects at its next call.
            with contextlib.suppress(*UNAVAILABLE):
                hook()
        return True

    def may_try(self) -> bool:
        """Whether to use the database now: always when up; when down, once the probe
        answered (or, with no probe, at the retry pace)."""
        if self.up:
            return True
        if self.probe is not None:
            return self._probed
        return self.clock() >= self._retry_at

    def probe_due(self) -> bool:
        """Whether the background task should run the probe now."""
        return (not self.up and self.probe is not None and not self._probed
                and self.clock() >= self._retry_at)

    def check(self) -> bool:
        """Run the probe (blocking: call it from a thread); True when it answered."""
        assert self.probe is not None
        try:
            self.probe()
        except OSError:
            return False
        return True

    def probed(self, answered: bool) -> None:
        """The probe's outcome, back on the event loop."""
        if answered:
            self._probed = True
            return
        self._delay = min(self._delay * 2, self.retry_max_s)
        self._retry_at = self.clock() + self._delay

    def status(self) -> dict[str, object]:
        return {"database": self.where, "up": self.up, "outages": self.outages,
                "down_for_s": None if self.down_since is None
                else round(self.clock() - self.down_since, 1),
                "last_error": self.last_error}
