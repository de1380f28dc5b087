"""Versioned schemas: each database component (``intent``, ``events``) has numbered
migrations; ``schema_version`` records how far each one is.

A server applies the missing migrations when it opens the database, inside one write
transaction (sqlite ``BEGIN IMMEDIATE``; PostgreSQL's advisory write lock, docs/operations.md),
so two servers starting at once apply each migration once: the second waits, then finds
nothing left to do. A database newer than this code (a newer netbootd migrated it) is
refused with :class:`SchemaTooNew`, which says both versions and what to do; nothing is
changed. A sqlite file from before versioning (its tables exist, no ``schema_version``) is
adopted as version 1: migration 1 is written with ``IF NOT EXISTS`` throughout, so running it
on such a file creates only what an older release had not yet created.

Migrations are portable DDL (translated for PostgreSQL by ``sql.pg_ddl``) or, where the
dialects differ, one text per backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netbootd import __version__
from netbootd.errors import NetbootdError
from netbootd.state.sql import POSTGRESQL, Db


class SchemaTooNew(NetbootdError):
    """The database was migrated by a newer netbootd than this one."""

    exit_code = 2  # refused (docs/operations.md, exit codes)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    ddl: str  # portable DDL, or the sqlite text when ``postgresql`` is given
    postgresql: str | None = None  # PostgreSQL's own text, used verbatim

    def text_for(self, db: Db) -> tuple[str, bool]:
        """(the DDL to run on ``db``, whether it still needs translating)."""
        if db.kind == POSTGRESQL and self.postgresql is not None:
            return self.postgresql, False
        return self.ddl, db.kind == POSTGRESQL


_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
  component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated REAL NOT NULL
)
"""


def latest(migrations: Sequence[Migration]) -> int:
    return max(m.version for m in migrations)


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migrations must be numbered 1..n in order, not {versions}")


def current(db: Db, component: str) -> int | None:
    """The recorded version of ``component``, or None when nothing is recorded."""
    if not has_table(db, "schema_version"):
        return None
    row = db.execute("SELECT version FROM schema_version WHERE component=?",
                     (component,)).fetchone()
    return None if row is None else int(row[0])


def has_table(db: Db, name: str) -> bool:
    if db.kind == POSTGRESQL:
        row = db.execute("SELECT to_regclass(?)", (name,)).fetchone()
        return row is not None and row[0] is not None
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                      (name,)).fetchone() is not None


def refuse_if_newer(db: Db, component: str, version: int | None, known: int) -> None:
    if version is not None and version > known:
        raise SchemaTooNew(
            f"the {component} schema in {db.where} is version {version}, but this netbootd "
            f"({__version__}) knows versions up to {known}: a newer netbootd has upgraded "
            "this database. Upgrade netbootd here to the version the other servers run "
            "(a database is never downgraded); nothing was changed")


def check(db: Db, component: str, migrations: Sequence[Migration]) -> int | None:
    """For read-only users: the recorded version, refused if newer than the code."""
    version = current(db, component)
    refuse_if_newer(db, component, version, latest(migrations))
    return version


def migrate(db: Db, component: str, migrations: Sequence[Migration], *,
            now: float) -> list[int]:
    """Bring ``component`` to the latest version; the versions applied (often none)."""
    _check_sequence(migrations)
    known = latest(migrations)
    # Cheap path, no lock: the usual start, nothing to do.
    version = current(db, component)
    refuse_if_newer(db, component, version, known)
    if version == known:
        return []
    applied: list[int] = []
    with db.transaction():
        db.script(_VERSION_TABLE)
        version = current(db, component)  # again, under the lock: another server may have
        refuse_if_newer(db, component, version, known)
        if version is None:
            version = 0  # new, or from before versioning: migration 1 is idempotent
        for m in migrations:
            if m.version <= version:
                continue
            text, translate = m.text_for(db)
            if translate:
                db.script(text)
            else:
                for stmt in text.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
            applied.append(m.version)
            version = m.version
        db.execute("INSERT INTO schema_version (component, version, updated) VALUES (?, ?, ?) "
                   "ON CONFLICT (component) DO UPDATE SET version=excluded.version, "
                   "updated=excluded.updated", (component, version, now))
    return applied
