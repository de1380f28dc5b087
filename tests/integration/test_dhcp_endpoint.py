"""The DHCP endpoint on real UDP sockets, loopback only, unprivileged ports.

The "dhcp" role endpoint replies to relays (giaddr) on a configurable port, so a PXE DISCOVER
with giaddr=127.0.0.1 brings the OFFER back to the test's socket; the "proxy" role replies to the
request's source, as on udp/4011.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

import netbootd.dhcp.endpoint
from netbootd.core.identity import Arch
from netbootd.dhcp.endpoint import RECV_SIZE, DhcpEndpoint, Observer, Role, start_dhcp_endpoint
from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import BootAnswer, PxeRequest, classify
from netbootd.metrics import Counters

LOOPBACK = "127.0.0.1"
MAC = bytes.fromhex("525400123456")
GUID_97 = bytes.fromhex("004f5a1c8e7d2b394c9a600f1e2d3c4b5a")
EDK2_OPTIONS = [(57, b"\x05\xc0"), (55, bytes([1, 3, 6, 43, 60, 66, 67, 97])), (97, GUID_97),
                (94, b"\x01\x03\x00"), (93, b"\x00\x07"),
                (60, b"PXEClient:Arch:00007:UNDI:003000")]
UDHCPC_OPTIONS = [(57, b"\x02\x40"), (55, bytes([1, 3, 6, 12, 15, 28, 42])),
                  (60, b"udhcp 1.35.0"), (61, b"\x01" + MAC)]
LEASE_AND_NETWORK_OPTIONS = ("requested_addr", "lease_time", "renewal_time", "rebinding_time",
                             "subnet_mask", "router", "name_server")


def request(mtype: int, options: list[tuple[int, bytes]], **bootp: Any) -> bytes:
    fields: dict[str, Any] = {"op": 1, "chaddr": MAC, "xid": 0xC0FFEE}
    fields.update(bootp)
    return bytes(BOOTP(**fields) / DHCP(options=[(53, bytes([mtype])), *options, "end"]))


@dataclass
class Harness:
    counters: Counters
    endpoint: DhcpEndpoint
    transport: asyncio.DatagramTransport
    client: socket.socket  # the test's socket; also plays the relay
    seen: list[PxeRequest]

    @property
    def server(self) -> tuple[str, int]:
        return LOOPBACK, self.endpoint.port

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.client, data, self.server)

    async def receive(self, timeout: float = 2.0) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.client, 4096), timeout)
        decoded = BOOTP(data)
        opts = {o[0]: o[1] for o in decoded[DHCP].options if isinstance(o, tuple)}
        return decoded, opts

    async def no_reply(self, timeout: float = 1.0) -> bool:
        try:
            await self.receive(timeout)
        except TimeoutError:
            return True
        return False

    async def counted(self, name: str, expected: int, **labels: str) -> None:
        for _ in range(200):
            if self.counters.get(name, **labels) >= expected:
                break
            await asyncio.sleep(0.005)
        assert self.counters.get(name, **labels) == expected, self.counters.snapshot()


def _plan(seen: list[PxeRequest]) -> Callable[[PxeRequest], BootAnswer | None]:
    def handler(req: PxeRequest) -> BootAnswer | None:
        seen.append(req)
        if req.identity.vendor_class == "PXEClient:decline-me":
            return None
        if req.identity.vendor_class == "PXEClient:crash-me":
            raise RuntimeError("planner bug")
        return BootAnswer(server_ip=LOOPBACK, bootfile="efi64/ipxe.efi")
    return handler


async def _harness(role: Role, offer_bootfile: bool, observer: Observer | None = None) -> Harness:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((LOOPBACK, 0))
    client.setblocking(False)
    counters = Counters()
    seen: list[PxeRequest] = []
    transport, endpoint = await start_dhcp_endpoint(
        asyncio.get_running_loop(), address=LOOPBACK, port=0, interface=None,
        handler=_plan(seen), counters=counters, offer_bootfile=offer_bootfile, role=role,
        relay_port=client.getsockname()[1], observer=observer,
    )
    return Harness(counters, endpoint, transport, client, seen)


@pytest.fixture
async def dhcp() -> AsyncIterator[Harness]:
    h = await _harness("dhcp", offer_bootfile=True)
    yield h
    h.transport.close()
    h.client.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Harness]:
    h = await _harness("proxy", offer_bootfile=False)
    yield h
    h.transport.close()
    h.client.close()


def _encode(options: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes((code, len(value))) + value for code, value in options)


async def test_datagram_larger_than_the_receive_buffer_is_cut_and_dropped(dhcp: Harness) -> None:
    # A PXE DISCOVER padded with PAD options to 6000 bytes, its vendor class (option 60) placed
    # so that it straddles RECV_SIZE. Read whole, the endpoint would answer it; read through a
    # RECV_SIZE buffer (asyncio's default is 256 KiB), the kernel drops the rest of the datagram
    # and the cut option makes it malformed.
    head = request(1, [], giaddr=LOOPBACK)
    assert head.endswith(b"\x35\x01\x01\xff")  # header, cookie, option 53, END
    vendor = next(o for o in EDK2_OPTIONS if o[0] == 60)
    others = [o for o in EDK2_OPTIONS if o[0] != 60]
    start = RECV_SIZE - 16
    oversized = (head[:-1] + b"\x00" * (start - len(head) + 1)
                 + _encode([vendor, *others]) + b"\xff").ljust(6000, b"\x00")
    assert len(oversized) == 6000 and oversized[start] == 60
    assert isinstance(classify(DhcpPacket.parse(oversized), port=67), PxeRequest)

    await dhcp.send(oversized)
    await dhcp.counted("dhcp_malformed", 1, reason="truncated-option")
    assert await dhcp.no_reply(0.3)
    assert dhcp.counters.get("dhcp_answered") == 0
    assert dhcp.seen == []

    await dhcp.send(request(1, EDK2_OPTIONS, giaddr=LOOPBACK))
    _, opts = await dhcp.receive()
    assert opts["message-type"] == 2
    assert dhcp.counters.get("dhcp_received") == 2
    assert dhcp.counters.get("dhcp_answered", type="offer") == 1


async def test_non_pxe_discover_gets_no_reply(dhcp: Harness) -> None:
    await dhcp.send(request(1, UDHCPC_OPTIONS, giaddr=LOOPBACK))
    assert await dhcp.no_reply(1.0)
    assert dhcp.counters.get("dhcp_ignored", reason="not-pxe") == 1
    assert dhcp.counters.get("dhcp_answered") == 0
    assert dhcp.seen == []


async def test_relayed_pxe_discover_gets_an_offer(dhcp: Harness) -> None:
    await dhcp.send(request(1, EDK2_OPTIONS, giaddr=LOOPBACK))
    decoded, opts = await dhcp.receive()
    assert opts["message-type"] == 2
    assert decoded.yiaddr == "0.0.0.0"
    assert decoded.xid == 0xC0FFEE
    assert decoded.giaddr == LOOPBACK
    for name in LEASE_AND_NETWORK_OPTIONS:
        assert name not in opts, name
    assert opts["vendor_class_id"] == b"PXEClient"
    assert opts["server_id"] == LOOPBACK
    assert opts["pxe_client_machine_identifier"] == GUID_97
    assert opts["vendor_specific"] == b"\x06\x01\x08\xff"
    assert decoded.file.rstrip(b"\x00") == b"efi64/ipxe.efi"
    assert dhcp.counters.get("dhcp_answered", type="offer") == 1
    assert dhcp.seen[0].identity.guid == "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
    assert dhcp.seen[0].relayed


async def test_request_on_67_is_left_to_the_site_server(dhcp: Harness) -> None:
    await dhcp.send(request(3, EDK2_OPTIONS, giaddr=LOOPBACK))
    assert await dhcp.no_reply(0.3)
    assert dhcp.counters.get("dhcp_ignored", reason="request-for-site-server") == 1


async def test_garbage_is_counted_and_the_endpoint_keeps_answering(dhcp: Harness) -> None:
    valid = request(1, EDK2_OPTIONS, giaddr=LOOPBACK)
    garbage = [b"", b"\x01", b"\xff" * 400, valid[:239], valid[:240] + b"\x3c\x20PXE",
               valid.replace(b"\x63\x82\x53\x63", b"\x00\x00\x00\x00")]
    for data in garbage:
        await dhcp.send(data)
    await dhcp.counted("dhcp_malformed", len(garbage))
    assert dhcp.counters.get("dhcp_malformed", reason="truncated") == 3
    assert dhcp.counters.get("dhcp_malformed", reason="truncated-option") == 1
    assert dhcp.counters.get("dhcp_malformed", reason="bad-opcode") == 1
    assert dhcp.counters.get("dhcp_malformed", reason="bad-magic-cookie") == 1
    assert await dhcp.no_reply(0.2)
    await dhcp.send(valid)
    _, opts = await dhcp.receive()
    assert opts["message-type"] == 2
    assert dhcp.counters.get("dhcp_received") == len(garbage) + 1


async def test_declined_and_crashing_handler_stay_silent(dhcp: Harness) -> None:
    declined = [*EDK2_OPTIONS[:-1], (60, b"PXEClient:decline-me")]
    crashing = [*EDK2_OPTIONS[:-1], (60, b"PXEClient:crash-me")]
    await dhcp.send(request(1, declined, giaddr=LOOPBACK))
    await dhcp.send(request(1, crashing, giaddr=LOOPBACK))
    assert await dhcp.no_reply(0.5)
    assert dhcp.counters.get("dhcp_declined") == 1
    assert dhcp.counters.get("dhcp_errors") == 1
    await dhcp.send(request(1, EDK2_OPTIONS, giaddr=LOOPBACK))
    _, opts = await dhcp.receive()
    assert opts["message-type"] == 2


async def test_proxy_role_acks_to_the_request_source(proxy: Harness) -> None:
    await proxy.send(request(3, EDK2_OPTIONS, ciaddr=LOOPBACK))
    decoded, opts = await proxy.receive()
    assert opts["message-type"] == 5
    assert decoded.yiaddr == "0.0.0.0"
    assert decoded.siaddr == LOOPBACK
    assert decoded.file.rstrip(b"\x00") == b"efi64/ipxe.efi"
    assert opts["boot-file-name"] == b"efi64/ipxe.efi"
    assert opts["pxe_client_machine_identifier"] == GUID_97
    assert proxy.counters.get("dhcp_answered", type="ack") == 1
    await proxy.send(request(1, EDK2_OPTIONS))
    assert await proxy.no_reply(0.3)
    assert proxy.counters.get("dhcp_ignored", reason="unsupported-message-type") == 1


def test_role_is_inferred_from_the_well_known_ports() -> None:
    def handler(_: PxeRequest) -> None:
        return None

    assert DhcpEndpoint(67, handler, Counters(), True).role == "dhcp"
    assert DhcpEndpoint(4011, handler, Counters(), True).role == "proxy"
    with pytest.raises(ValueError, match="role"):
        DhcpEndpoint(6767, handler, Counters(), True)


async def test_observer_hears_the_address_a_pxe_client_requests_from_the_site_server() -> None:
    # classify() ignores this REQUEST on 67, but it is the packet that tells the client's IP.
    hints: list[tuple[str, str]] = []
    h = await _harness("dhcp", offer_bootfile=True,
                       observer=lambda mac, ip: hints.append((mac, ip)))
    try:
        await h.send(request(3, [*EDK2_OPTIONS, (50, bytes([192, 0, 2, 77]))], giaddr=LOOPBACK))
        await h.counted("dhcp_ignored", 1, reason="request-for-site-server")
        assert hints == [("52:54:00:12:34:56", "192.0.2.77")]
        await h.send(request(3, [*UDHCPC_OPTIONS, (50, bytes([192, 0, 2, 78]))], giaddr=LOOPBACK))
        await h.counted("dhcp_ignored", 1, reason="not-pxe")
        assert hints == [("52:54:00:12:34:56", "192.0.2.77")]
    finally:
        h.transport.close()
        h.client.close()


async def test_arch_is_logged_at_debug_and_not_computed_otherwise(
    dhcp: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Arch | None] = []
    real = netbootd.dhcp.endpoint._arch_name

    def counting(arch: Arch | None) -> str:
        calls.append(arch)
        return real(arch)

    monkeypatch.setattr(netbootd.dhcp.endpoint, "_arch_name", counting)
    declined = [*EDK2_OPTIONS[:-1], (60, b"PXEClient:decline-me")]

    caplog.set_level(logging.INFO, logger="netbootd.dhcp.endpoint")
    await dhcp.send(request(1, EDK2_OPTIONS, giaddr=LOOPBACK))
    await dhcp.receive()
    await dhcp.send(request(1, declined, giaddr=LOOPBACK))
    await dhcp.counted("dhcp_declined", 1)
    assert calls == []

    caplog.set_level(logging.DEBUG, logger="netbootd.dhcp.endpoint")
    await dhcp.send(request(1, EDK2_OPTIONS, giaddr=LOOPBACK))
    await dhcp.receive()
    await dhcp.send(request(1, declined, giaddr=LOOPBACK))
    await dhcp.counted("dhcp_declined", 2)
    assert calls == [Arch.EFI_BC, Arch.EFI_BC]
    assert "offer to mac=52:54:00:12:34:56 arch=efi_bc" in caplog.text
    assert "declined mac=52:54:00:12:34:56 guid=" in caplog.text
    assert "arch=efi_bc (planner said no boot)" in caplog.text
