"""The state database goes away and comes back; a real ``netbootd serve`` keeps booting nodes.

A PostgreSQL server of the test's own (tests/pgserver.py, on loopback) holds the state; the
server under test is a ``python -m netbootd serve`` subprocess on loopback ports. With the
database stopped: DHCP (relayed, scapy-built), TFTP (tftpy) and HTTP (the iPXE script, a build
file) are still answered; an admin change through the API is 503 and through the CLI exit
code 4, and changes nothing; the events of those boots are spooled, then reach the database
after it is started again (counted in the database itself); a server stopped during the
outage replays its spool when it starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from helpers import free_port, loopback_config, make_store
from netbootd.lab.demo import toml_dump
from netbootd.state.spool import Spool
from pgserver import PgServer, started_or_skip

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the PostgreSQL test server runs as postgres: root")

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 120.0  # a loaded machine: generous, every wait polls


def _mac(i: int) -> str:
    return f"52:54:00:0d:{i >> 8:02x}:{i & 0xff:02x}"


@pytest.fixture
def pg() -> Iterator[PgServer]:
    with started_or_skip() as server:  # its own: the tests stop and start it
        yield server


class Served:
    """One ``netbootd serve`` subprocess and the loopback sockets to talk to it."""

    def __init__(self, tmp: Path, dsn: str) -> None:
        make_store(tmp / "store")
        self.relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.relay.bind(("127.0.0.1", 0))
        self.relay.settimeout(5.0)
        self.api_port = free_port(socket.SOCK_STREAM)
        data = loopback_config(tmp, admin={"listen": "127.0.0.1", "port": self.api_port})
        data["dhcp"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM),
                        "proxy_port": free_port(socket.SOCK_DGRAM),
                        "relay_port": self.relay.getsockname()[1]}
        data["state"] = {"database": dsn}
        data["groups"]["default"]["channel"] = "kvm-stable"
        del data["groups"]["default"]["build"]
        self.data = data
        self.config = tmp / "netbootd.toml"
        self.config.write_text(toml_dump(data))
        self.state_dir = tmp / "state"
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netbootd", "serve", "--config", str(self.config)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + DEADLINE
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(OSError, ValueError):
                if self.status()["database"]["up"]:
                    return
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(DEADLINE)
        self.proc = None
        return code

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(DEADLINE)
        self.relay.close()

    @property
    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/v1{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def status(self) -> dict[str, Any]:
        code, _, body = self.api("GET", "/status")
        assert code == 200, body
        return dict(body)

    def wait_status(self, what: str, ok: Any) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while not ok(s := self.status()):
            assert time.monotonic() < deadline, f"{what}: {s}"
            time.sleep(0.2)
        return s

    def dhcp(self, mac: str) -> BOOTP:
        opts: list[Any] = [("message-type", "discover"),
                           ("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), "end"]
        pkt = bytes(BOOTP(op=1, chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10,
                          xid=0x5151, giaddr="127.0.0.1") / DHCP(options=opts))
        chaddr = bytes.fromhex(mac.replace(":", ""))
        for _ in range(4):  # a PXE ROM retransmits too; the machine may be loaded
            self.relay.sendto(pkt, ("127.0.0.1", self.data["dhcp"]["port"]))
            with contextlib.suppress(TimeoutError):
                while True:  # skip a late answer to an earlier client's retransmission
                    reply = BOOTP(self.relay.recvfrom(4096)[0])
                    if bytes(reply.chaddr)[:6] == chaddr:
                        return reply
        raise AssertionError(f"no DHCP answer for {mac}: {self.log.read_text()[-3000:]}")

    def tftp(self, name: str) -> bytes:
        import io

        import tftpy

        buf = io.BytesIO()
        tftpy.TftpClient("127.0.0.1", self.data["tftp"]["port"]).download(
            name, buf, timeout=10, retries=5)
        return buf.getvalue()

    async def http(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.data['http']['port']}{path}"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.read()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "netbootd", *args, "--config",
                               str(self.config)], capture_output=True, text=True,
                              timeout=DEADLINE, cwd=REPO, check=False)


@pytest.fixture
def served(tmp_path: Path, pg: PgServer) -> Iterator[Served]:
    s = Served(tmp_path, pg.dsn)
    try:
        yield s
    finally:
        s.close()


def _events_in_db(pg: PgServer, macs: list[str]) -> dict[str, int]:
    """Events per MAC as the database holds them (psql, not netbootd)."""
    listed = ",".join(f"'{m}'" for m in macs)
    out = pg.psql(f"SELECT mac, count(*) FROM events WHERE mac IN ({listed}) GROUP BY mac",
                  dbname=pg.dbname)
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if "|" in line:
            mac, n = (p.strip() for p in line.split("|"))
            counts[mac] = int(n)
    return counts


def _boot(served: Served, mac: str) -> None:
    """What a BIOS PXE client fetches: DHCP offer, pxelinux.cfg over TFTP, iPXE's script."""
    reply = served.dhcp(mac)
    assert reply.file.rstrip(b"\0") == b"bios/lpxelinux.0"
    cfg = served.tftp(f"bios/pxelinux.cfg/01-{mac.replace(':', '-')}")
    assert b"demo/2.0" in cfg  # kvm-stable, set before the outage
    status, script = asyncio.run(served.http(
        f"/ipxe/node.ipxe?mac={mac.replace(':', '-')}&arch=0"))
    assert status == 200 and b"demo/2.0" in script


def test_nodes_boot_through_an_outage_and_the_events_arrive_after(
        served: Served, pg: PgServer) -> None:
    served.start()
    assert served.api("PUT", "/channels/kvm-stable", {"build": "demo/2.0"})[0] == 200
    _boot(served, _mac(0))
    served.wait_status("first boot committed", lambda s: _events_in_db(pg, [_mac(0)]))

    pg.stop()
    outage = [_mac(i) for i in range(1, 9)]
    for mac in outage:
        _boot(served, mac)
    s = served.wait_status("outage noticed and events spooled",
                           lambda s: not s["database"]["up"] and s["spool"]["events"] > 0)
    assert s["database"]["database"] == f"127.0.0.1:{pg.port}"

    code, headers, body = served.api("PUT", "/channels/kvm-stable", {"build": "demo/1.0"})
    assert code == 503, body
    assert body["error"].startswith(f"the state database at 127.0.0.1:{pg.port} is "
                                    "unreachable: ")
    assert body["error"].endswith("; nothing was changed; retry when it is back")
    assert headers["Retry-After"] == "5"
    cli = served.cli("channel", "set", "kvm-stable", "demo/1.0")
    assert cli.returncode == 4, cli.stderr
    assert cli.stderr.startswith(f"netbootd: the state database at 127.0.0.1:{pg.port} is "
                                 "unreachable: "), cli.stderr
    assert cli.stderr.endswith("; nothing was changed; retry when it is back\n"), cli.stderr
    assert len(cli.stderr.splitlines()) == 1  # one line, no traceback
    status, metrics = asyncio.run(served.http("/metrics"))
    assert status == 200 and b"\nnetbootd_state_database_up 0.0\n" in metrics

    # Boots still go on, and the nodes' events wait in the spool.
    _boot(served, _mac(9))
    outage.append(_mac(9))
    served.wait_status("flushed", lambda s: s["spool"]["events"] == s["events_spooled"])

    pg.start()
    s = served.wait_status("spool replayed",
                           lambda s: s["database"]["up"] and s["spool"]["events"] == 0
                           and s["events_replayed"] == s["events_spooled"])
    assert s["events_dropped"] == 0 and s["database"]["outages"] == 1
    import jsonschema
    from test_admin_api import documented_schema

    jsonschema.validate(s, {**documented_schema(), "$ref": "#/$defs/Status"})
    in_db = _events_in_db(pg, outage)
    assert sorted(in_db) == sorted(outage)  # every node booted during the outage is there
    assert sum(in_db.values()) == s["events_spooled"] >= 3 * len(outage)
    # The refused changes changed nothing (the database itself says so) ...
    rows = pg.psql("SELECT build, (SELECT count(*) FROM channel_history) FROM channels "
                   "WHERE name='kvm-stable'", dbname=pg.dbname)
    assert rows.strip().split("|") == ["demo/2.0", "1"], rows
    # ... and the first change after the outage works (no connection left from before).
    code, _, body = served.api("PUT", "/channels/kvm-stable", {"build": "demo/1.0"})
    assert code == 200, body
    code, _, channels = served.api("GET", "/channels")
    assert code == 200 and channels["kvm-stable"] == "demo/1.0"
    assert served.stop() == 0


def test_a_server_stopped_during_the_outage_replays_its_spool_when_it_starts(
        served: Served, pg: PgServer) -> None:
    served.start()
    assert served.api("PUT", "/channels/kvm-stable", {"build": "demo/2.0"})[0] == 200
    _boot(served, _mac(19))  # the World the server answers from during the outage
    pg.stop()
    outage = [_mac(i) for i in range(20, 26)]
    for mac in outage:
        _boot(served, mac)
    spooled = served.wait_status("spooled", lambda s: s["spool"]["events"] > 0)
    assert served.stop() == 0  # what was still queued goes to the spool on the way out
    on_disk = Spool(served.state_dir / "spool", max_bytes=1 << 30).events
    assert on_disk >= spooled["spool"]["events"] >= 3 * len(outage)

    pg.start()
    served.start()
    s = served.wait_status("replayed after the restart",
                           lambda s: s["spool"]["events"] == 0 and s["events_replayed"] > 0)
    in_db = _events_in_db(pg, outage)
    assert sorted(in_db) == sorted(outage)
    assert sum(in_db.values()) == s["events_replayed"] == on_disk
    assert not list((served.state_dir / "spool").glob("*.seg"))
