"""Shared state (netbootd/state/sql.py, migrate.py): a change made through one server's
Registry reaches another's within 1 s, the change check costs no round trip, schemas are
versioned (applied once when servers start together, a newer database refused with a clear
message and exit code), and an unreachable PostgreSQL is one error, recovered from."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import fetch, loopback_config, make_store
from netbootd.cli_errors import EXIT_REFUSED
from netbootd.config import parse_config
from netbootd.core.identity import ClientIdentity
from netbootd.lab.demo import toml_dump
from netbootd.service import Service
from netbootd.state import events, registry, rollouts
from netbootd.state.events import StateDB
from netbootd.state.migrate import Migration, SchemaTooNew
from netbootd.state.registry import Registry, StateUnavailable
from netbootd.state.sql import connect
from pgserver import Backend, PgServer

MAC = "52:54:00:00:00:01"


def wait_changed(r: Registry, timeout: float = 5.0) -> float:
    """Seconds until ``r.changed()`` said True (polled as a server's requests would)."""
    t0 = time.monotonic()
    while not r.changed():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no change seen in {timeout} s")
        time.sleep(0.001)
    return time.monotonic() - t0


# Another server: its own process and connection, writing intent on command (one line per
# write on stdin, "ok" on stdout once committed).
_WRITER = """
import sys
from netbootd.core.intent import NodeOverride
from netbootd.state.registry import Registry
r = Registry(sys.argv[1] if "://" in sys.argv[1] else __import__("pathlib").Path(sys.argv[1]))
for line in sys.stdin:
    op, arg = line.split()
    if op == "channel":
        r.set_channel("stable", arg, who="two", why="", now=1.0)
    elif op == "override":
        r.set_override(arg, NodeOverride(None, None, "local"), now=2.0)
    else:
        r.order_reimage(arg, "demo/1", who="two", now=3.0)
    print("ok", flush=True)
"""


def test_a_change_on_another_server_is_seen_within_a_second(backend: Backend) -> None:
    url = backend.db("intent")
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(url)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdin is not None and writer.stdout is not None

    def write(op: str, arg: str) -> None:
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(f"{op} {arg}\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "ok"

    try:
        with Registry(url) as server:
            assert server.changed()  # the first check: everything is new
            assert not server.changed()
            for i in range(5):
                write("channel", f"demo/{i}")
                took = wait_changed(server)
                assert took < 1.0, took
                assert server.channels() == {"stable": f"demo/{i}"}
                assert not server.changed()  # once per change
            # Every kind of intent write notifies, not only channel flips.
            write("override", "web1")
            assert wait_changed(server) < 1.0
            assert server.overrides()["web1"].mode == "local"
            write("reimage", "web1")
            assert wait_changed(server) < 1.0
            assert "web1" in server.open_orders()
    finally:
        writer.stdin.close()
        writer.wait(60)


def test_a_change_in_the_same_process_is_seen_at_the_next_request(backend: Backend) -> None:
    url = backend.db("intent")
    with Registry(url) as planner, Registry(url) as api:  # the service's two handles
        planner.changed()
        api.set_channel("stable", "demo/1", who="api", why="", now=1.0)
        assert planner.changed()  # no wait: not even the notification's trip
        assert not planner.changed()


def test_a_changes_own_notification_is_not_a_second_change(pg_server: PgServer) -> None:
    # The service's World handle sees its API handle's write at once (same process); the
    # NOTIFY of that same write, arriving a moment later, must not rebuild the World again.
    url = pg_server.create_database()
    with Registry(url) as planner, Registry(url) as api:
        planner.changed()
        api.set_channel("stable", "demo/1", who="api", why="", now=1.0)
        assert planner.changed()
        # The notification arrives within milliseconds, read either by the socket check or
        # along with the periodic generation read (after RECHECK): neither may say "changed".
        end = time.monotonic() + 2 * registry.RECHECK + 1
        while time.monotonic() < end:
            assert not planner.changed()
            time.sleep(0.01)
        with Registry(url) as other_server:  # a write by nobody in this process's counters
            other_server.set_channel("stable", "demo/2", who="cli", why="", now=2.0)
        deadline = time.monotonic() + 30
        while not planner.changed():
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_a_lost_notification_is_caught_by_the_periodic_check(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    with Registry(url) as server:
        assert server.changed()
        other = connect(url)
        # A write that bumps the generation but whose NOTIFY never arrives (as while this
        # server was reconnecting): only the once-a-second fallback can see it.
        other.execute("INSERT INTO channels (name, build, updated) VALUES (?, ?, ?)",
                      ("stable", "demo/9", 1.0))
        other.execute("UPDATE intent_generation SET n = n + 1 WHERE id=1")
        took = wait_changed(server, timeout=5.0)
        assert took <= registry.RECHECK + 1.0, took  # slack for a loaded machine
        assert server.channels() == {"stable": "demo/9"}
        other.close()


def test_the_change_check_makes_no_round_trip_per_request(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    with Registry(url) as server:
        server.changed()
        statements: list[str] = []
        db: Any = server._db
        real = db.execute

        def counting(sql: str, args: Any = ()) -> Any:
            statements.append(sql)
            return real(sql, args)

        db.execute = counting
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 0.5:
            assert not server.changed()
            n += 1
        # At most one generation read per RECHECK second, however many requests asked.
        assert n > 1000 and len(statements) <= 2, (n, statements)


@pytest.mark.parametrize("component", ["intent", "events"])
def test_a_database_newer_than_the_code_is_refused(backend: Backend, component: str) -> None:
    url = backend.db(component)
    opener = Registry if component == "intent" else StateDB
    opener(url).close()  # type: ignore[operator]
    db = connect(url)
    db.execute("UPDATE schema_version SET version=? WHERE component=?", (99, component))
    db.close()
    known = len(registry.MIGRATIONS if component == "intent" else events.MIGRATIONS)
    with pytest.raises(SchemaTooNew) as e:
        opener(url)
    msg = str(e.value)
    assert f"{component} schema" in msg and "version 99" in msg
    assert f"up to {known}" in msg and "Upgrade netbootd" in msg
    db = connect(url)
    assert db.execute("SELECT version FROM schema_version WHERE component=?",
                      (component,)).fetchone()[0] == 99  # untouched
    db.close()


def test_the_cli_refuses_a_newer_database_with_one_message(tmp_path: Path,
                                                           backend: Backend) -> None:
    make_store(tmp_path / "store")
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text(toml_dump(backend.configure(loopback_config(tmp_path))))
    cli = [sys.executable, "-m", "netbootd", "channel", "list", "--config", str(cfg)]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    db = connect(backend.database or tmp_path / "state" / "intent.sqlite3")
    db.execute("UPDATE schema_version SET version=? WHERE component='intent'", (7,))
    db.close()
    r = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_REFUSED, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "version 7" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_servers_starting_together_migrate_once(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait()
            Registry(url).close()
            StateDB(url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    db = connect(url)
    rows = db.execute("SELECT component, version FROM schema_version ORDER BY component")
    assert [tuple(r) for r in rows] == [("events", len(events.MIGRATIONS)),
                                       ("intent", len(registry.MIGRATIONS)),
                                       ("rollouts", len(rollouts.ROLLOUTS_MIGRATIONS))]
    assert db.execute("SELECT COUNT(*) FROM intent_generation").fetchone()[0] == 1
    db.close()


def test_a_sqlite_file_from_before_versioning_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "intent.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(registry.MIGRATIONS[0].ddl)  # what the previous release created
    old.execute("INSERT INTO channels (name, build, updated) VALUES ('stable', 'demo/1', 1)")
    old.commit()
    old.close()
    with Registry(path) as r:
        assert r.channels() == {"stable": "demo/1"}
        r.set_channel("stable", "demo/2", who="t", why="", now=2.0)  # v2's generation row
    check = sqlite3.connect(path)
    assert check.execute("SELECT version FROM schema_version WHERE component='intent'"
                         ).fetchone()[0] == len(registry.MIGRATIONS)
    assert check.execute("SELECT n FROM intent_generation").fetchone()[0] == 1
    check.close()


def test_an_unreachable_database_is_one_error_and_recovers() -> None:
    server = PgServer()  # its own: stopping the session's would disturb other tests
    try:
        url = server.start()
        with Registry(url) as r, StateDB(url) as state:
            state.defer_writes(lambda flush: None)
            r.set_channel("stable", "demo/1", who="t", why="", now=1.0)
            assert r.changed()
            server.stop()
            with pytest.raises(StateUnavailable) as e:
                r.channels()
            assert "cannot be reached" in str(e.value) and server.password not in str(e.value)
            with pytest.raises(StateUnavailable):
                r.set_channel("stable", "demo/2", who="t", why="", now=2.0)
            assert not r.changed()  # nothing known to have changed; never raises
            state.record(MAC, "dhcp-offer", 3.0)
            state.flush()  # the batch is lost, answering goes on
            assert not state.has_queued_writes
            server.start()
            deadline = time.monotonic() + 30
            while True:  # reconnect attempts are spaced (sql.RETRY_AFTER)
                try:
                    assert r.channels() == {"stable": "demo/1"}
                    break
                except StateUnavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert r.changed()  # back: what happened meanwhile is unknown, so reload
            state.saw(ClientIdentity(mac=MAC), 4.0)
            state.record(MAC, "dhcp-offer", 4.0)
            assert [ev.ts for ev in state.timeline(MAC)] == [4.0]
    finally:
        server.close()


def test_a_bad_password_is_refused_at_open(pg_server: PgServer) -> None:
    assert pg_server.password is not None
    bad = pg_server.dsn.replace(pg_server.password, "not-it")
    with pytest.raises(StateUnavailable) as e:
        Registry(bad)
    assert "password authentication failed" in str(e.value) and "not-it" not in str(e.value)


def test_another_modules_intent_table_is_migrated_and_its_writes_notify(
        backend: Backend) -> None:
    url = backend.db("intent")
    extra = [Migration(1, "CREATE TABLE IF NOT EXISTS extra_plans (k TEXT PRIMARY KEY, "
                          "v INTEGER NOT NULL)")]
    with Registry(url) as r:
        assert r.migrate("extra", extra) == [1]
        assert r.migrate("extra", extra) == []  # once
        with r.transaction():
            r.write("INSERT INTO extra_plans (k, v) VALUES (?, ?)", ("a", 1))
            r.write("INSERT INTO extra_plans (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE "
                    "SET v = extra_plans.v + excluded.v", ("a", 2))
        assert r.db.execute("SELECT v FROM extra_plans WHERE k=?", ("a",)).fetchone()[0] == 3
    db = connect(url)
    assert db.execute("SELECT n FROM intent_generation").fetchone()[0] == 1  # one commit
    assert db.execute("SELECT version FROM schema_version WHERE component='extra'"
                      ).fetchone()[0] == 1
    db.close()


def test_two_servers_events_make_one_fleet_view(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    guid = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
    with StateDB(url) as a, StateDB(url) as b:
        for db in (a, b):
            db.defer_writes(lambda flush: None)  # write-behind, as a server runs
        a.saw(ClientIdentity(mac=MAC, guid=guid), 1.0)
        a.record(MAC, "dhcp-offer", 1.0)
        a.flush()
        # The same SMBIOS UUID behind the other server's relay: a clone, seen as shared.
        b.saw(ClientIdentity(mac="52:54:00:00:00:02", guid=guid), 2.0)
        assert b.take_guid_changes() == ({guid}, set())
        b.record(MAC, "tftp-sent", 2.5)  # the same node, its next step served by b
        b.flush()
        assert a.shared_guids() == {guid: {MAC, "52:54:00:00:00:02"}}
        assert [e.kind for e in a.timeline(MAC)] == ["dhcp-offer", "tftp-sent"]
        assert {n.mac for n in b.nodes()} == {MAC, "52:54:00:00:00:02"}
    with StateDB(url, readonly=True) as ro:  # as `netbootd render` opens it
        assert ro.node(MAC) is not None
        with pytest.raises(Exception, match="read-only transaction"):
            ro.record(MAC, "dhcp-offer", 9.0)


async def test_a_cli_change_reaches_a_running_servers_answers_within_a_second(
        tmp_path: Path, pg_server: PgServer) -> None:
    make_store(tmp_path / "store")
    url = pg_server.create_database()
    data = loopback_config(tmp_path, state={"database": url})
    data["groups"]["default"] = {"default": True, "channel": "kvm-stable"}
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    service = Service(parse_config(data, str(cfg)))
    await service.start()
    mac = "52:54:00:00:00:99"
    try:
        for build in ("demo/1.0", "demo/2.0"):
            # Another process, as an operator on another machine would run it.
            r = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "netbootd", "channel", "set", "kvm-stable", build,
                "--config", str(cfg)], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            done = time.monotonic()
            while True:
                _, script = await fetch(service, f"/ipxe/node.ipxe?mac={mac}")
                if f"/builds/{build}/vmlinuz" in script:
                    break
                assert time.monotonic() - done < 1.0, script
                await asyncio.sleep(0.01)
    finally:
        await service.stop()


async def test_a_server_on_postgresql_starts_with_no_state_directory_yet(
        tmp_path: Path, pg_server: PgServer) -> None:
    # Nothing but the admin token, the first-boot key and the spool lives in the state
    # directory of a server whose state is on PostgreSQL: serve makes the directory itself.
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path, state={"database": pg_server.create_database()})
    data["server"]["state_dir"] = str(tmp_path / "fresh" / "state")
    service = Service(parse_config(data, str(tmp_path / "netbootd.toml")))
    await service.start()
    try:
        assert (tmp_path / "fresh" / "state").is_dir()
        status, _ = await fetch(service, "/ipxe/node.ipxe?mac=52:54:00:00:00:98")
        assert status == 200
    finally:
        await service.stop()


@pytest.mark.parametrize("mode", ["fast", "kill"])
def test_after_a_database_restart_the_next_read_and_write_just_work(mode: str) -> None:
    server = PgServer()  # its own: restarting the session's would disturb other tests
    try:
        url = server.start()
        with Registry(url) as r, StateDB(url) as state:
            state.defer_writes(lambda flush: None)
            r.set_channel("stable", "demo/1", who="t", why="", now=1.0)
            assert r.changed()
            server.stop(mode=mode)  # the connections die while nobody uses them
            server.start()
            assert r.channels() == {"stable": "demo/1"}  # a read: retried on a new connection
            r.set_channel("stable", "demo/2", who="t", why="", now=2.0)  # BEGIN retried
            state.record(MAC, "dhcp-offer", 3.0)
            state.flush()
            state.record(MAC, "tftp-sent", 4.0)
            assert [ev.kind for ev in state.timeline(MAC)] == ["dhcp-offer", "tftp-sent"]
            assert r.changed()  # reconnected: reload, whatever happened meanwhile
    finally:
        server.close()
