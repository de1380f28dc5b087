"""Floods and limits against a netbootd process (docs/security.md, "Floods and limits").

The server runs as its own process, so its memory (VmRSS) is measured alone and its counters
are read from the line it logs when it stops. Floods are spoofed with a raw socket (root) from
many loopback addresses and ports, thousands of datagrams per second for several seconds; a
legitimate client downloads and is answered during the flood. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from hostile import (
    PAYLOAD,
    Served,
    ServerProcess,
    TftpFailure,
    curl_tftp,
    flood,
    running_service,
    served_config,
    sha256,
    tftp_fetch,
    tftp_rrq,
)
from netbootd.service import Service

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="spoofed floods need a raw socket")

FLOOD_SECONDS = 6.0
FLOOD_RATE = 4000.0  # datagrams per second
# The RSS a flood may add, whatever its length: bounded structures keep it far below this,
# an unbounded one (a session, an identity or a row per spoofed source) passes it quickly.
RSS_BUDGET_KIB = 64 * 1024


def run_with_client(served: Served, send_flood: Callable[[], None]) -> list[bool]:
    """Run ``send_flood`` while a legitimate client (curl, 127.0.0.1) downloads repeatedly."""
    results: list[bool] = []

    async def client() -> None:
        await asyncio.sleep(0.5)  # let the flood fill the server first
        end = time.monotonic() + FLOOD_SECONDS - 1.0
        while time.monotonic() < end or not results:
            got = await curl_tftp(served.tftp_port, PAYLOAD, timeout=60)
            results.append(got is not None and sha256(got) == sha256(served.payload))

    thread = threading.Thread(target=asyncio.run, args=(client(),))
    thread.start()
    send_flood()
    thread.join(120)
    return results


def rrq_packets(addresses: int) -> Iterator[tuple[tuple[str, int], bytes]]:
    rng = random.Random(5)
    request = tftp_rrq(PAYLOAD)
    while True:
        yield (f"127.0.0.{rng.randrange(2, 2 + addresses)}", rng.randrange(1024, 65536)), request


def test_rrq_flood_is_bounded_and_a_legitimate_client_is_served(tmp_path: Path) -> None:
    # 40 flooding addresses x 32 sessions each stay below max_sessions (2000): the per-client
    # limit is what keeps room for everyone else.
    served = served_config(tmp_path, tftp={"max_sessions": 2000, "max_sessions_per_client": 32})
    server = ServerProcess(served, tmp_path / "netbootd.log").start()
    try:
        assert asyncio.run(curl_tftp(served.tftp_port, PAYLOAD)) == served.payload
        rss_before = server.rss_kib()
        sent = 0

        def send() -> None:
            nonlocal sent
            sent = flood(rrq_packets(40), ("127.0.0.1", served.tftp_port), FLOOD_RATE,
                         FLOOD_SECONDS)

        results = run_with_client(served, send)
        rss_flood = server.rss_kib()
        assert server.alive()
        assert results and all(results), results
        # The flood's sessions time out (timeout x retries); memory must not keep what they held.
        time.sleep(8)
        assert asyncio.run(curl_tftp(served.tftp_port, PAYLOAD)) == served.payload
        rss_after = server.rss_kib()
    finally:
        counters = server.stop()
    assert sent > FLOOD_RATE * FLOOD_SECONDS / 2
    print(f"rrq flood: sent={sent} rss_kib before={rss_before} during={rss_flood} "
          f"after={rss_after} counters={counters}")
    assert rss_flood - rss_before < RSS_BUDGET_KIB and rss_after - rss_before < RSS_BUDGET_KIB
    assert counters["tftp_requests"] > sent / 4
    assert counters["tftp_refused{reason=busy-client}"] > 0
    assert counters.get("tftp_refused{reason=busy}", 0) == 0
    assert counters.get("tftp_errors", 0) == 0


def dhcp_packets() -> Iterator[tuple[tuple[str, int], bytes]]:
    """PXE DISCOVERs from random MACs (scapy builds one; the MAC and xid are patched in)."""
    rng = random.Random(7)
    template = bytearray(bytes(
        BOOTP(op=1, chaddr=bytes(16), giaddr="127.0.0.1")
        / DHCP(options=[("message-type", "discover"), ("client-arch", b"\x00\x00"),
                        ("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), "end"]),
    ).ljust(300, b"\0"))
    while True:
        template[4:8] = rng.randbytes(4)  # xid
        template[28:34] = b"\x52\x54" + rng.randbytes(4)  # chaddr
        yield (f"127.0.0.{rng.randrange(2, 250)}", 68), bytes(template)


def test_dhcp_flood_of_random_macs_is_bounded(tmp_path: Path) -> None:
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # answers land here, unread
    relay.bind(("127.0.0.1", 0))
    served = served_config(tmp_path, relay_port=relay.getsockname()[1],
                           state={"max_nodes": 500, "max_clients": 1000, "max_events": 2000})
    server = ServerProcess(served, tmp_path / "netbootd.log").start()
    try:
        rss_before = server.rss_kib()
        sent = 0

        def send() -> None:
            nonlocal sent
            sent = flood(dhcp_packets(), ("127.0.0.1", served.dhcp_port), FLOOD_RATE,
                         FLOOD_SECONDS)

        results = run_with_client(served, send)
        assert results and all(results), results
        # A configured node (db1) is still answered and recorded, whatever the cap.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        db1 = bytes(BOOTP(op=1, chaddr=bytes.fromhex("525400000002") + bytes(10), xid=1,
                          giaddr="127.0.0.1")
                    / DHCP(options=[("message-type", "discover"), ("client-arch", b"\0\0"),
                                    ("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"),
                                    "end"]))
        deadline = time.monotonic() + 30
        while True:
            probe.sendto(db1, ("127.0.0.1", served.dhcp_port))
            if db1_recorded(served) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        probe.close()
        rss_after = server.rss_kib()
    finally:
        counters = server.stop()
        relay.close()
    nodes, events = db_counts(served)
    print(f"dhcp flood: sent={sent} rss_kib before={rss_before} after={rss_after} "
          f"nodes={nodes} events={events} counters={counters}")
    assert db1_recorded(served)
    assert counters["dhcp_answered{type=offer}"] > 1000  # the flood was really served
    assert nodes <= 500 + 1  # the cap, plus the configured node
    assert events <= 2000 + 1000  # max_events, plus at most one prune batch
    assert counters["state_dropped{reason=node-cap}"] > 0
    assert rss_after - rss_before < RSS_BUDGET_KIB


def db_counts(served: Served) -> tuple[int, int]:
    with sqlite3.connect(f"file:{served.state_db}?mode=ro", uri=True) as db:
        nodes = db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return int(nodes), int(events)


def db1_recorded(served: Served) -> bool:
    with sqlite3.connect(f"file:{served.state_db}?mode=ro", uri=True) as db:
        row = db.execute("SELECT node FROM nodes WHERE mac='52:54:00:00:00:02'").fetchone()
    return row is not None and row[0] == "db1"


# --------------------------------------------------------------------------- limits in-process
@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[Service, Served]]:
    served = served_config(tmp_path, tftp={"max_sessions": 5, "max_sessions_per_client": 2,
                                           "timeout": 0.3, "retries": 1},
                           http={"max_connections": 4})
    async with running_service(served) as service:
        yield service, served


async def test_tftp_sessions_are_capped_per_client_and_globally(
        limited: tuple[Service, Served]) -> None:
    service, served = limited
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []

    async def hold(address: str) -> bytes:
        """An RRQ whose transfer is never acknowledged: it holds a session until timeout."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((address, 0))
        s.setblocking(False)
        held.append(s)
        s.sendto(tftp_rrq(PAYLOAD), ("127.0.0.1", served.tftp_port))
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(s, 2048), 5)
        return data

    try:
        # Two sessions for 127.0.0.2; its third request is refused (busy-client, error 0).
        assert (await hold("127.0.0.2"))[:2] == b"\x00\x03"
        assert (await hold("127.0.0.2"))[:2] == b"\x00\x03"
        assert (await hold("127.0.0.2"))[:4] == b"\x00\x05\x00\x00"
        assert service.counters.get("tftp_refused", reason="busy-client") == 1
        # Three more addresses fill the server (5); the sixth session is refused (busy).
        for address in ("127.0.0.3", "127.0.0.4", "127.0.0.4"):
            assert (await hold(address))[:2] == b"\x00\x03"
        with pytest.raises(TftpFailure) as failure:
            await tftp_fetch(served.tftp_port, tftp_rrq(PAYLOAD), bind="127.0.0.5")
        assert failure.value.code == 0
        assert service.counters.get("tftp_refused", reason="busy") == 1
        assert service._tftp is not None and service._tftp.active_sessions == 5
        # The held sessions time out (0.3 s x 2) and the server serves again.
        for _ in range(100):
            if service._tftp.active_sessions == 0:
                break
            await asyncio.sleep(0.05)
        data, _ = await tftp_fetch(served.tftp_port, tftp_rrq(PAYLOAD), bind="127.0.0.5")
        assert sha256(data) == sha256(served.payload)
    finally:
        for s in held:
            s.close()


async def test_http_connections_are_capped_and_counted(limited: tuple[Service, Served]) -> None:
    service, _ = limited
    port = service.http_port
    assert port is not None
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    try:
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert response.startswith(b"HTTP/1.1 503 "), response
        assert service.counters.get("http_limited", reason="connections") == 1
    finally:
        for _, w in idle:
            w.close()
    # Once the idle connections are gone, requests are served again.
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        if response.startswith(b"HTTP/1.1 200 "):
            break
        await asyncio.sleep(0.05)
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"ok\n")
