"""The DHCP socket loop on a real loopback socket: a burst is read in few wake-ups, every
datagram is answered, and closing releases the socket and tells the protocol."""

from __future__ import annotations

import asyncio
import socket
import time

from netbootd.dhcp.endpoint import (
    DRAIN_BUDGET,
    DhcpEndpoint,
    DrainingTransport,
    open_dhcp_socket,
    start_dhcp_endpoint,
)
from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import BootAnswer, PxeRequest
from netbootd.metrics import Counters

LOOPBACK = "127.0.0.1"


def _discover(i: int) -> bytes:
    return DhcpPacket(
        op=1, htype=1, hlen=6, hops=1, xid=i, secs=0, flags=0, ciaddr="0.0.0.0",
        yiaddr="0.0.0.0", siaddr="0.0.0.0", giaddr=LOOPBACK,
        chaddr=bytes([0x52, 0x54, 0, 0, i >> 8, i & 255]), sname=b"", file=b"",
        options=((53, b"\x01"), (60, b"PXEClient:Arch:00000:UNDI:002001"), (93, b"\x00\x00")),
    ).to_bytes()


def _answer(req: PxeRequest) -> BootAnswer:
    return BootAnswer(server_ip=LOOPBACK, bootfile="bios/lpxelinux.0")


async def test_a_burst_is_answered_in_full_and_read_several_per_wake_up() -> None:
    loop = asyncio.get_running_loop()
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind((LOOPBACK, 0))
    relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    relay.setblocking(False)
    counters = Counters()
    transport, endpoint = await start_dhcp_endpoint(
        loop, address=LOOPBACK, port=0, interface=None, handler=_answer, counters=counters,
        offer_bootfile=True, role="dhcp", relay_port=relay.getsockname()[1])
    wake_ups = 0
    read_ready = transport._read_ready  # type: ignore[attr-defined]

    def counting() -> None:
        nonlocal wake_ups
        wake_ups += 1
        read_ready()

    # Re-register the reader through the counter (same fd, same loop).
    loop.remove_reader(transport.get_extra_info("socket").fileno())
    loop.add_reader(transport.get_extra_info("socket").fileno(), counting)
    burst = 3 * DRAIN_BUDGET
    try:
        # Queued in the kernel before the loop runs again: one wake-up per datagram would need
        # `burst` wake-ups; draining needs about burst / DRAIN_BUDGET.
        for i in range(burst):
            relay.sendto(_discover(i), (LOOPBACK, endpoint.port))
        xids = set()
        deadline = time.monotonic() + 30
        while len(xids) < burst and time.monotonic() < deadline:
            try:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(relay, 4096), 5)
            except TimeoutError:
                break
            reply = DhcpPacket.parse(data)
            assert reply.op == 2 and reply.bootfile == "bios/lpxelinux.0"
            xids.add(reply.xid)
        assert xids == set(range(burst))
        assert counters.get("dhcp_answered", type="offer") == burst
        assert wake_ups < burst / 4, wake_ups
    finally:
        transport.close()
        relay.close()


async def test_close_releases_the_socket_and_reports_connection_lost() -> None:
    lost: list[Exception | None] = []

    class Watched(DhcpEndpoint):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)
            super().connection_lost(exc)

    sock = open_dhcp_socket(LOOPBACK, 0, None)
    port = sock.getsockname()[1]
    transport = DrainingTransport(asyncio.get_running_loop(), sock,
                                  Watched(port, _answer, Counters(), True, role="proxy"))
    assert not transport.is_closing()
    transport.close()
    assert transport.is_closing()
    for _ in range(100):
        if lost:
            break
        await asyncio.sleep(0.01)
    assert lost == [None] and sock.fileno() == -1
    # The port is free again.
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    again.bind((LOOPBACK, port))
    again.close()
