"""A throw-away PostgreSQL server for tests: Debian's binaries, a temp data directory, run as
the unprivileged ``postgres`` user (the postmaster refuses to run as root).

``PgServer`` runs ``initdb`` once, then ``start()`` runs ``pg_ctl start`` (which forks the
postmaster and returns) and reads the postmaster's PID from ``postmaster.pid``; ``stop()``
signals exactly that PID and waits for it to be gone (``pg_ctl stop``'s modes, by signal, so
``kill`` can be a SIGKILL too). ``stop()`` then ``start()`` again reuses the same data
directory (a database outage and its recovery); ``close()`` stops it and deletes the
directory.

It listens on ``listen`` (127.0.0.1 and a free port by default). For a server inside a
network namespace pass ``netns=["ip", "netns", "exec", "<ns>"]`` (a prefix command that execs
the rest, so the PID is still the postmaster's) and the namespace address as ``listen``.
The Unix socket lives in the data directory, which is reachable from every namespace: the
helper creates roles and databases over it with ``psql`` as the superuser.

Authentication over TCP: ``auth="password"`` (scram-sha-256, the default) or ``"trust"``.
The DSN names role ``netbootd`` and database ``netbootd``; ``create_database()`` makes a
further empty database (one per test, for isolation) and returns its DSN.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

PG_ROOT = Path("/usr/lib/postgresql")


class PgUnavailable(RuntimeError):
    """PostgreSQL's server binaries or the ``postgres`` user are absent."""


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (``/usr/lib/postgresql/N/bin``)."""
    found: list[tuple[int, Path]] = []
    if PG_ROOT.is_dir():
        for d in PG_ROOT.iterdir():
            if re.fullmatch(r"\d+", d.name) and (d / "bin" / "initdb").is_file() \
                    and (d / "bin" / "postgres").is_file():
                found.append((int(d.name), d / "bin"))
    if not found:
        raise PgUnavailable(f"no PostgreSQL server under {PG_ROOT} (apt-get install postgresql)")
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise PgUnavailable("no 'postgres' user (apt-get install postgresql)") from e
    return max(found)[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])



def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it has exited, only its parent has not reaped
    it yet; the postmaster's parent is init once pg_ctl returned)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

class PgServer:
    def __init__(self, *, listen: str = "127.0.0.1", port: int | None = None,
                 netns: Sequence[str] = (), auth: str = "password",
                 user: str = "netbootd", dbname: str = "netbootd",
                 base: Path | None = None, start_timeout: float = 120.0) -> None:
        if auth not in ("password", "trust"):
            raise ValueError(f"auth must be 'password' or 'trust', not {auth!r}")
        self.bindir = pg_bindir()
        self.listen = listen
        self.netns = list(netns)
        # Inside a namespace the host cannot probe for a free port; the namespace is the
        # test's own, so the standard port is free there.
        self.port = port if port is not None else (5432 if self.netns else free_port(listen))
        self.auth = auth
        self.user = user
        self.dbname = dbname
        self.password = secrets.token_hex(12) if auth == "password" else None
        self.start_timeout = start_timeout
        pw = pwd.getpwnam("postgres")
        self._uid, self._gid = pw.pw_uid, pw.pw_gid
        self.root = Path(tempfile.mkdtemp(prefix="netbootd-pg-", dir=base))
        os.chown(self.root, self._uid, self._gid)
        os.chmod(self.root, 0o700)
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postmaster.log"
        self._pid: int | None = None  # the postmaster's, from postmaster.pid
        self._log: object | None = None
        self._initialised = False

    # -- running things as postgres -------------------------------------------------------------
    def _as_postgres(self, argv: Sequence[str]) -> list[str]:
        return ["setpriv", f"--reuid={self._uid}", f"--regid={self._gid}", "--init-groups",
                "--", *argv]

    def _run(self, argv: Sequence[str], *, input: bytes | None = None) -> str:
        r = subprocess.run(self._as_postgres(argv), input=input, capture_output=True,
                           cwd=self.root, timeout=self.start_timeout, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: "
                               f"{r.stderr.decode(errors='replace')}")
        return r.stdout.decode(errors="replace")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the Unix socket; returns unaligned output."""
        return self._run([str(self.bindir / "psql"), "-X", "-q", "-A", "-t",
                          "-v", "ON_ERROR_STOP=1", "-h", str(self.sockdir), "-p",
                          str(self.port), "-U", "postgres", "-d", dbname, "-c", sql])

    def _initdb(self) -> None:
        self.sockdir.mkdir()
        os.chown(self.sockdir, self._uid, self._gid)
        host_auth = "scram-sha-256" if self.auth == "password" else "trust"
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                   "--auth-local=trust", f"--auth-host={host_auth}", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"])
        # Any address may connect over TCP (authenticated by host_auth): the multi-server lab
        # reaches it from other namespaces.
        with (self.datadir / "pg_hba.conf").open("a") as f:
            f.write(f"host all all 0.0.0.0/0 {host_auth}\nhost all all ::/0 {host_auth}\n")

    # -- life cycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._pid is not None and alive(self._pid)

    @property
    def pid(self) -> int | None:
        return self._pid if self.running else None

    def start(self) -> str:
        """Start the postmaster (initdb and the role/database the first time); the DSN."""
        if self.running:
            return self.dsn
        first = not self._initialised
        if first:
            self._initdb()
        # A SIGKILLed postmaster leaves its lock files; PostgreSQL honours them while its PID
        # exists, and a zombie's does (an init that reaps slowly). Ours, and not running: gone.
        for stale in [self.datadir / "postmaster.pid", *self.sockdir.glob(".s.PGSQL.*.lock")]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        options = " ".join([
            f"-c listen_addresses={self.listen}", f"-p {self.port}",
            f"-c unix_socket_directories={self.sockdir}",
            # No fsync: slow on a loaded machine, and only an OS crash would lose data.
            # synchronous_commit stays on: a killed postmaster (an outage test) keeps every
            # commit it acknowledged.
            "-c fsync=off", "-c full_page_writes=off", "-c max_connections=200"])
        # -W: pg_ctl returns once the postmaster is forked; readiness is polled below with
        # this helper's own deadline. -l: the postmaster's log.
        argv = [*self.netns, *self._as_postgres([
            str(self.bindir / "pg_ctl"), "start", "-W", "-s", "-D", str(self.datadir),
            "-l", str(self.logfile), "-o", options])]
        r = subprocess.run(argv, capture_output=True, cwd=self.root,
                           timeout=self.start_timeout, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start exited {r.returncode}: "
                               f"{r.stderr.decode(errors='replace')}\n{self.log_tail()}")
        self._wait_ready()
        if first:
            pw = "" if self.password is None else f" PASSWORD '{self.password}'"
            self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB{pw}")
            self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")
            self._initialised = True
        return self.dsn

    def _wait_ready(self) -> None:
        # postmaster.pid's 8th line is the postmaster's status; "ready" once it accepts
        # connections (PostgreSQL >= 10). Polled: the machine may be loaded.
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                lines = pidfile.read_text().splitlines()
                if lines and self._pid is None:
                    self._pid = int(lines[0])
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            if self._pid is not None and not alive(self._pid):
                self._pid = None
                raise RuntimeError(f"postgres exited before it was ready:\n{self.log_tail()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres not ready in {self.start_timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, *, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the postmaster this helper started (by its PID). ``mode``: ``fast``
        (SIGINT: disconnect clients, clean shutdown), ``smart`` (SIGTERM), ``immediate``
        (SIGQUIT: no shutdown checkpoint, like a crash) or ``kill`` (SIGKILL)."""
        if self._pid is None:
            return
        pid, self._pid = self._pid, None
        if alive(pid):
            sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
                   "immediate": signal.SIGQUIT, "kill": signal.SIGKILL}[mode]
            os.kill(pid, sig)
            if not _gone_within(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                _gone_within(pid, timeout)
        if mode == "kill":
            # Its children (backends) leave on their own once the postmaster is gone; wait
            # for the shared memory to be released before a restart reuses the directory.
            self._wait_children_gone(pid, timeout)

    def _wait_children_gone(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                    and _ppid(p) == pid]
            if not kids:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses ------------------------------------------------------------------------------
    def dsn_for(self, dbname: str, host: str | None = None) -> str:
        cred = quote(self.user) + ("" if self.password is None else ":" + quote(self.password))
        h = host or self.listen
        if ":" in h:
            h = f"[{h}]"
        return f"postgresql://{cred}@{h}:{self.port}/{quote(dbname)}"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.dbname)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database owned by the role; its DSN."""
        name = name or f"t_{secrets.token_hex(6)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits, _")
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _ppid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields after the last ")" are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


class Backend:
    """Where one test keeps its state, on the backend it is parametrized with (the
    ``backend`` fixture in tests/conftest.py): ``db(name)`` is a sqlite file under the test's
    directory, or a fresh PostgreSQL database of the session server (the same one again for
    the same name, as a second handle would open it); ``database`` is the ``[state]
    database`` value a config needs (None on sqlite, where state_dir holds the files)."""

    def __init__(self, kind: str, tmp: Path, server: PgServer | None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.server = server
        self._made: dict[str, str] = {}

    def db(self, name: str = "state.sqlite3") -> Path | str:
        if self.server is None:
            return self.tmp / name
        if name not in self._made:
            self._made[name] = self.server.create_database()
        return self._made[name]

    @property
    def database(self) -> str | None:
        """One database for intent and events, as a fleet shares them."""
        return None if self.server is None else str(self.db("shared"))

    def configure(self, data: dict[str, object]) -> dict[str, object]:
        """``data`` (a config dict) with ``[state] database`` set on PostgreSQL."""
        if self.database is not None:
            state = dict(data.get("state") or {})  # type: ignore[call-overload]
            state["database"] = self.database
            data["state"] = state
        return data

    def close(self) -> None:
        """Drop this test's databases (closing whatever connections it left open)."""
        if self.server is not None and self.server.running:
            for dsn in self._made.values():
                self.server.drop_database(dsn.rsplit("/", 1)[1])
        self._made.clear()


@contextlib.contextmanager
def started_or_skip() -> Iterator[PgServer]:
    """A started server of its own, closed after: the pytest fixtures' one body. The test is
    skipped only where root or Debian's PostgreSQL is absent (in CI a skip is a failure)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("the PostgreSQL test server runs as the postgres user: needs root")
    try:
        server = PgServer()
    except PgUnavailable as e:
        pytest.skip(str(e))
    try:
        server.start()
        yield server
    finally:
        server.close()
