"""The TFTP endpoint carries out admission on real sockets: eviction and new-port supersede.

The rules themselves are unit-tested in tests/unit/tftp/test_admission.py; here a real
TftpServer on loopback must end the silent transfer (its socket, its source, its record) and
serve the newcomer.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from netbootd.errors import NotFound
from netbootd.metrics import Counters
from netbootd.tftp.endpoint import TftpServer, TransferRecord
from netbootd.tftp.packet import Data, OptionAck, ReadRequest, parse_packet
from netbootd.tftp.session import OutcomeKind, SessionLimits, TftpSource
from netbootd.tftp.sources import FileSource

TIMEOUT = 0.2  # the server's timeout; silent for 2 of them = evictable
# Enough retries that the silent transfer is still running when the newcomer arrives.
LIMITS = SessionLimits(timeout=TIMEOUT, retries=50)


class Client:
    """A blocking UDP client on its own port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)

    def rrq(self, name: str, port: int, **options: str) -> object:
        request = ReadRequest(name, "octet", dict(options))
        self.sock.sendto(request.to_bytes(), ("127.0.0.1", port))
        data, _ = self.sock.recvfrom(2048)
        return parse_packet(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(bytes(range(256)) * 40)  # 20 blocks at 512
    return tmp_path


async def start(root: Path, **limits: int) -> tuple[TftpServer, Counters, list[TransferRecord],
                                                     list[FileSource]]:
    counters = Counters()
    records: list[TransferRecord] = []
    opened: list[FileSource] = []

    def resolve(name: str, client: tuple[str, int]) -> TftpSource:
        path = root / name
        if not path.is_file():
            raise NotFound(name)
        src = FileSource(path)
        opened.append(src)
        return src

    server = TftpServer(resolve, limits=LIMITS, counters=counters,
                        on_transfer_done=records.append, **limits)
    await server.start("127.0.0.1", 0)
    return server, counters, records, opened


async def silent_for(timeouts: float, since: float) -> None:
    """Wait until ``timeouts`` server timeouts have passed since ``since`` (loop time)."""
    loop = asyncio.get_running_loop()
    while loop.time() < since + timeouts * TIMEOUT:
        await asyncio.sleep(0.02)


async def test_silent_transfer_is_evicted_at_the_per_client_limit(root: Path) -> None:
    server, counters, records, opened = await start(root, max_sessions_per_client=1)
    loop = asyncio.get_running_loop()
    first, second = Client(), Client()
    try:
        # A transfer that never acknowledges anything holds the client's only place.
        assert isinstance(await asyncio.to_thread(first.rrq, "a.bin", server.port), Data)
        heard = loop.time()
        assert server.active_sessions == 1
        # Silent for 2.5 timeouts (it retransmitted twice into silence): evicted for the next.
        await silent_for(2.5, heard)
        assert isinstance(await asyncio.to_thread(second.rrq, "b.bin", server.port), Data)
        assert counters.get("tftp_evicted") == 1
        assert counters.get("tftp_refused", reason="busy-client") == 0
        assert server.active_sessions == 1
        evicted = [r for r in records if r.client_port == first.sock.getsockname()[1]]
        assert [r.outcome for r in evicted] == [OutcomeKind.TIMED_OUT]
        assert "evicted" in evicted[0].message
        with pytest.raises(OSError):
            opened[0].read(0, 1)  # the evicted transfer's file was closed
    finally:
        first.close()
        second.close()
        await server.stop()


async def test_a_live_transfer_is_not_evicted(root: Path) -> None:
    server, counters, _, _ = await start(root, max_sessions_per_client=1)
    first, second = Client(), Client()
    try:
        # A 30 s timeout (RFC 2349): evictable only after a minute of silence, so however slow
        # this machine is, the first transfer is live when the second request comes.
        first_answer = await asyncio.to_thread(first.rrq, "a.bin", server.port, timeout="30")
        assert isinstance(first_answer, OptionAck)
        refused = await asyncio.to_thread(second.rrq, "b.bin", server.port)
        assert not isinstance(refused, Data)
        assert counters.get("tftp_refused", reason="busy-client") == 1
        assert counters.get("tftp_evicted") == 0
    finally:
        first.close()
        second.close()
        await server.stop()


async def test_same_file_from_a_new_port_supersedes_the_silent_transfer(root: Path) -> None:
    server, counters, records, _ = await start(root)
    loop = asyncio.get_running_loop()
    old, new, other = Client(), Client(), Client()
    try:
        assert isinstance(await asyncio.to_thread(old.rrq, "a.bin", server.port), Data)
        heard = loop.time()
        await silent_for(2.5, heard)
        # The client restarted the fetch from a fresh port: the old transfer ends.
        # (With a 30 s timeout, so it stays live however slow the rest of the test is.)
        restarted = await asyncio.to_thread(new.rrq, "a.bin", server.port, timeout="30")
        assert isinstance(restarted, OptionAck)
        assert counters.get("tftp_superseded", why="new-port") == 1
        assert server.active_sessions == 1
        ended = [r for r in records if r.client_port == old.sock.getsockname()[1]]
        assert [r.outcome for r in ended] == [OutcomeKind.ABORTED]
        # A third download of the same file: the second is live, both run.
        assert isinstance(await asyncio.to_thread(other.rrq, "a.bin", server.port), Data)
        assert counters.get("tftp_superseded", why="new-port") == 1
        assert server.active_sessions == 2
    finally:
        old.close()
        new.close()
        other.close()
        await server.stop()
