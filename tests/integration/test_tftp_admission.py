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

# The server's own timeout and retries: its transfers give up after 0.4 s, and admission may
# end a transfer silent for 0.6 s (timeout x (retries + 2)) for a newcomer.
TIMEOUT = 0.2
LIMITS = SessionLimits(timeout=TIMEOUT, retries=1)
ABANDON = TIMEOUT * 3
# The silent clients ask for a 30 s timeout (RFC 2349): their transfers outlive ABANDON.
LONG = "30"


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


async def start(root: Path, limits: SessionLimits = LIMITS, **admission: int
                ) -> tuple[TftpServer, Counters, list[TransferRecord], list[FileSource]]:
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

    server = TftpServer(resolve, limits=limits, counters=counters,
                        on_transfer_done=records.append, **admission)
    await server.start("127.0.0.1", 0)
    return server, counters, records, opened


async def silent_for(seconds: float, since: float) -> None:
    """Wait until ``seconds`` have passed since ``since`` (loop time)."""
    loop = asyncio.get_running_loop()
    while loop.time() < since + seconds:
        await asyncio.sleep(0.02)


async def test_silent_transfer_is_evicted_at_the_per_client_limit(root: Path) -> None:
    server, counters, records, opened = await start(root, max_sessions_per_client=1)
    loop = asyncio.get_running_loop()
    first, second = Client(), Client()
    try:
        # A transfer that never acknowledges anything holds the client's only place.
        answer = await asyncio.to_thread(first.rrq, "a.bin", server.port, timeout=LONG)
        assert isinstance(answer, OptionAck)
        heard = loop.time()
        assert server.active_sessions == 1
        # Silent for longer than the server's own transfers live: evicted for the next.
        await silent_for(ABANDON + 0.2, heard)
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
    # A server that keeps trying for a minute: however slow this machine is, the first
    # transfer is younger than that when the second request comes.
    server, counters, _, _ = await start(root, SessionLimits(timeout=20.0, retries=1),
                                         max_sessions_per_client=1)
    first, second = Client(), Client()
    try:
        assert isinstance(await asyncio.to_thread(first.rrq, "a.bin", server.port), Data)
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
    old, new = Client(), Client()
    try:
        answer = await asyncio.to_thread(old.rrq, "a.bin", server.port, timeout=LONG)
        assert isinstance(answer, OptionAck)
        heard = loop.time()
        await silent_for(ABANDON + 0.2, heard)
        # The client restarted the fetch from a fresh port: the old transfer ends.
        restarted = await asyncio.to_thread(new.rrq, "a.bin", server.port, timeout=LONG)
        assert isinstance(restarted, OptionAck)
        assert counters.get("tftp_superseded", why="new-port") == 1
        assert server.active_sessions == 1
        ended = [r for r in records if r.client_port == old.sock.getsockname()[1]]
        assert [r.outcome for r in ended] == [OutcomeKind.ABORTED]
    finally:
        old.close()
        new.close()
        await server.stop()
