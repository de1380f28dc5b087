"""A TFTP file that is not ready when asked for (an edge still fetching it from its origin):
the real TftpServer on loopback starts the transfer when the resolver's awaitable resolves,
ignores the client's retransmitted RRQ meanwhile (one transfer, not two), and answers an
ERROR when the awaitable fails."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from pathlib import Path

from netbootd.errors import FileUnavailable
from netbootd.metrics import Counters
from netbootd.tftp.endpoint import TftpServer, TransferRecord
from netbootd.tftp.packet import Data, Error, ReadRequest, parse_packet
from netbootd.tftp.session import SessionLimits, TftpSource
from netbootd.tftp.sources import FileSource

PAYLOAD = bytes(range(256)) * 6  # 3 blocks of 512


async def test_a_deferred_file_is_served_once_ready_and_a_failed_one_is_refused(
        tmp_path: Path) -> None:
    (tmp_path / "late.bin").write_bytes(PAYLOAD)
    ready = asyncio.Event()
    asked: list[str] = []

    async def later(name: str) -> TftpSource:
        await ready.wait()
        if name == "gone.bin":
            raise FileUnavailable("origin unreachable")
        return FileSource(tmp_path / name)

    def resolve(name: str, client: tuple[str, int]) -> Awaitable[TftpSource]:
        asked.append(name)
        return later(name)

    counters = Counters()
    records: list[TransferRecord] = []
    server = TftpServer(resolve, limits=SessionLimits(timeout=1.0, retries=3),
                        counters=counters, on_transfer_done=records.append)
    await server.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    late, gone = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        for s in (late, gone):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        for _ in range(3):  # the first RRQ and two retransmissions while the file is fetched
            late.sendto(ReadRequest("late.bin", "octet", {}).to_bytes(),
                        ("127.0.0.1", server.port))
            gone.sendto(ReadRequest("gone.bin", "octet", {}).to_bytes(),
                        ("127.0.0.1", server.port))
            await asyncio.sleep(0.1)
        assert sorted(asked) == ["gone.bin", "late.bin"]  # retransmissions did not re-ask
        ready.set()
        got = bytearray()
        while True:
            data, peer = await asyncio.wait_for(loop.sock_recvfrom(late, 2048), 30)
            pkt = parse_packet(data)
            assert isinstance(pkt, Data)
            got += pkt.payload
            late.sendto(b"\x00\x04" + pkt.block.to_bytes(2, "big"), peer)
            if len(pkt.payload) < 512:
                break
        assert bytes(got) == PAYLOAD
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(gone, 2048), 30)
        err = parse_packet(data)
        assert isinstance(err, Error) and err.message == "file not available yet"
        assert counters.get("tftp_refused", reason="unavailable") == 1
        deadline = loop.time() + 30
        while not records and loop.time() < deadline:
            await asyncio.sleep(0.05)
        done = [r for r in records if r.filename == "late.bin"]
        assert len(done) == 1 and done[0].bytes_transferred == len(PAYLOAD)
    finally:
        late.close()
        gone.close()
        await server.stop()
