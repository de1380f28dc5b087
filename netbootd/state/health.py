"""Whether the state database answers: which errors mean "unreachable", and the up/down state.

A server keeps booting nodes while its state database is away (docs/operations.md, "When the
database is down"): the World watcher answers from the last World, event batches go to the
spool (state/spool.py), admin changes are refused with 503 / exit code 4. Those parts share
one ``DatabaseHealth``: it says whether the database was last seen up, logs the change once
per outage (never per packet), and spaces out the attempts made while it is down, so that a
database that does not answer (a dropped SYN waits for the connect timeout) is not waited on
by every request.

"Unreachable" is an error of the connection, not of a statement: ``StateUnavailable``,
sqlite's ``OperationalError`` (disk I/O error, locked, full) and the PostgreSQL
driver's ``OperationalError``/``InterfaceError`` (connection refused, closed, server gone).
A statement the database rejects (an integrity or programming error) is a bug, not an outage.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import time
from collections.abc import Callable

from netbootd.state.registry import StateUnavailable

log = logging.getLogger("netbootd.state")


def _driver_errors() -> tuple[type[BaseException], ...]:
    try:
        psycopg = importlib.import_module("psycopg")
    except ImportError:  # sqlite only: no PostgreSQL driver installed
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError)


UNAVAILABLE: tuple[type[BaseException], ...] = (StateUnavailable, sqlite3.OperationalError,
                                                *_driver_errors())


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or written (not a bad statement)."""
    return isinstance(exc, UNAVAILABLE)


class DatabaseDown(StateUnavailable):
    """An admin change (or read) refused because the state database is unreachable."""

    exit_code = 4  # cli_errors: access / read-only / locked / unavailable


def refused(where: str, exc: BaseException, *, changed: bool = True) -> DatabaseDown:
    """The error an admin sees: where the database is, why, and that nothing changed."""
    if isinstance(exc, DatabaseDown):
        return exc
    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    what = "nothing was changed; " if changed else ""
    return DatabaseDown(f"the state database at {where} is unreachable: {why}; {what}"
                        "retry when it is back")


class DatabaseHealth:
    """Up or down, as last seen by anyone using the database; a retry pace while down."""

    def __init__(self, where: str, *, clock: Callable[[], float] = time.monotonic,
                 retry_s: float = 1.0, retry_max_s: float = 30.0) -> None:
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

    def failed(self, exc: BaseException) -> None:
        """Someone could not use the database: down until ``ok`` (logged once per outage)."""
        now = self.clock()
        self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else \
            type(exc).__name__
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

    def ok(self) -> bool:
        """The database answered; True when that ends an outage (logged once)."""
        if self.up:
            return False
        self.up = True
        took = self.clock() - (self.down_since or self.clock())
        self.down_since = None
        log.warning("state database at %s is back after %.1f s", self.where, took)
        return True

    def may_try(self) -> bool:
        """Whether to use the database now: always when up, at the retry pace when down."""
        return self.up or self.clock() >= self._retry_at

    def status(self) -> dict[str, object]:
        return {"database": self.where, "up": self.up, "outages": self.outages,
                "down_for_s": None if self.down_since is None
                else round(self.clock() - self.down_since, 1),
                "last_error": self.last_error}
