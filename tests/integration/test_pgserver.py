"""The PostgreSQL test server helper (tests/pgserver.py): starts as ``postgres``, accepts the
role's password over TCP and refuses a wrong one, survives stop/start on its data directory,
and ends only its own postmaster."""

from __future__ import annotations

import os
import subprocess

import pytest

from pgserver import PgServer
from pgserver import alive as pgserver_alive


def _query(server: PgServer, dsn: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(server.bindir / "psql"), "-X", "-A", "-t", "-d", dsn, "-c", sql],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.needs_root
def test_start_stop_start_keeps_data(pg_server: PgServer) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs postgres as the postgres user: needs root")
    dsn = pg_server.create_database()
    r = _query(pg_server, dsn, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7); "
               "SELECT current_user")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == pg_server.user
    pid = pg_server.pid
    assert pid is not None
    with open(f"/proc/{pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert int(uid_line.split()[1]) != 0  # the postmaster is not root
    pg_server.stop()
    assert not pg_server.running
    assert not pgserver_alive(pid)  # ended (a zombie until init reaps it)
    assert _query(pg_server, dsn, "SELECT 1").returncode != 0  # down means down
    pg_server.start()
    r = _query(pg_server, dsn, "SELECT x FROM t")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "7"


@pytest.mark.needs_root
def test_wrong_password_refused(pg_server: PgServer) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs postgres as the postgres user: needs root")
    assert pg_server.password is not None
    bad = pg_server.dsn.replace(pg_server.password, "wrong")
    r = _query(pg_server, bad, "SELECT 1")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr


@pytest.mark.needs_root
def test_close_removes_directory() -> None:
    if os.geteuid() != 0:
        pytest.skip("runs postgres as the postgres user: needs root")
    server = PgServer(auth="trust")
    root = server.root
    try:
        server.start()
        pid = server.pid
        r = _query(server, server.dsn, "SELECT 1")
        assert r.returncode == 0, r.stderr
    finally:
        server.close()
    assert not root.exists()
    assert pid is not None and not pgserver_alive(pid)


@pytest.mark.needs_root
def test_listens_on_an_address_inside_a_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("namespaces and the postgres user need root")
    ns = f"nbpg{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.99.0.1/32", "dev", "lo"], check=True)
        server = PgServer(listen="10.99.0.1", netns=["ip", "netns", "exec", ns])
        try:
            server.start()
            assert server.port == 5432 and "@10.99.0.1:5432/" in server.dsn
            inside = subprocess.run(
                ["ip", "netns", "exec", ns, str(server.bindir / "psql"), "-X", "-A", "-t",
                 "-d", server.dsn, "-c", "SELECT inet_server_addr()"],
                capture_output=True, text=True, timeout=60, check=False)
            assert inside.returncode == 0, inside.stderr
            assert inside.stdout.strip() == "10.99.0.1"
        finally:
            server.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
