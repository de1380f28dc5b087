"""Hostile datagrams against a running netbootd (docs/security.md, "Hostile packets").

Each probe is sent to the live DHCP (udp/67 role, udp/4011 role) or TFTP listener on loopback.
After each one: the drop is counted under its reason, no handler error was counted
(``tftp_errors``/``dhcp_errors`` stay 0, so nothing reached a catch-all), and the server still
answers a PXE DISCOVER and serves a 300 kB file whose sha256 curl's copy matches.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from hostile import (
    PAYLOAD,
    Served,
    TftpFailure,
    curl_tftp,
    running_service,
    served_config,
    sha256,
    tftp_fetch,
    tftp_rrq,
)
from netbootd.service import Service

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

MAC = bytes.fromhex("525400c0ffee")
PXE = b"PXEClient:Arch:00000:UNDI:002001"


class Live:
    def __init__(self, service: Service, served: Served, relay: socket.socket) -> None:
        self.service = service
        self.served = served
        self.relay = relay  # the "relay" the proxy answers (giaddr 127.0.0.1)

    def count(self, name: str, **labels: str) -> int:
        return self.service.counters.get(name, **labels)

    def send(self, data: bytes, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", port))

    async def dhcp_reply(self, data: bytes, port: int, timeout: float = 2.0) -> BOOTP | None:
        loop = asyncio.get_running_loop()
        self.relay.sendto(data, ("127.0.0.1", port))
        try:
            reply, _ = await asyncio.wait_for(loop.sock_recvfrom(self.relay, 4096), timeout)
        except TimeoutError:
            return None
        return BOOTP(reply)

    async def counted(self, name: str, before: int, **labels: str) -> None:
        for _ in range(200):
            if self.count(name, **labels) > before:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{name}{labels} not counted; counters: "
                             f"{self.service.counters.snapshot()}")

    async def still_serves(self) -> None:
        """A PXE DISCOVER gets its OFFER and a real client downloads the payload intact."""
        offer = await self.dhcp_reply(pxe_discover(), self.served.dhcp_port)
        assert offer is not None and offer.file.rstrip(b"\0") == b"bios/lpxelinux.0"
        got = await curl_tftp(self.served.tftp_port, PAYLOAD)
        assert got is not None and sha256(got) == sha256(self.served.payload)
        assert self.count("tftp_errors") == 0 and self.count("dhcp_errors") == 0, \
            self.service.counters.snapshot()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.setblocking(False)
    served = served_config(tmp_path, relay_port=relay.getsockname()[1])
    try:
        async with running_service(served) as service:
            yield Live(service, served, relay)
    finally:
        relay.close()


def pxe_discover(*extra: Any, vendor: bytes = PXE) -> bytes:
    opts: list[Any] = [("message-type", "discover"), ("client-arch", b"\x00\x00"),
                       ("vendor_class_id", vendor), *extra, "end"]
    return bytes(BOOTP(op=1, chaddr=MAC + bytes(10), xid=0x5EED, giaddr="127.0.0.1")
                 / DHCP(options=opts)).ljust(300, b"\0")


def header(**fields: Any) -> bytes:
    """A BOOTP header and magic cookie with no options yet."""
    return bytes(BOOTP(op=1, chaddr=MAC + bytes(10), giaddr="127.0.0.1", **fields)) + \
        b"\x63\x82\x53\x63"


def opt(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


# --------------------------------------------------------------------------- TFTP listener
# (datagram, counter, labels): what each probe must be counted as.
TFTP_DROPS: dict[str, tuple[bytes, str, dict[str, str]]] = {
    "empty": (b"", "tftp_malformed", {"reason": "truncated"}),
    "one-byte": (b"\x01", "tftp_malformed", {"reason": "truncated"}),
    "unknown-opcode": (b"\x00\x09junk\x00", "tftp_malformed", {"reason": "bad-opcode"}),
    "opcode-65535": (b"\xff\xff", "tftp_malformed", {"reason": "bad-opcode"}),
    "rrq-without-nul": (b"\x00\x01files/payload.bin", "tftp_malformed", {"reason": "truncated"}),
    "rrq-without-mode": (b"\x00\x01files/payload.bin\x00", "tftp_malformed",
                         {"reason": "no-mode"}),
    "rrq-empty-name": (b"\x00\x01\x00octet\x00", "tftp_malformed", {"reason": "empty-filename"}),
    "60000-random-bytes": (os.urandom(60_000), "tftp_malformed", {"reason": "too-long"}),
    "ack-to-listener": (b"\x00\x04\x00\x01", "tftp_ignored", {"reason": "ack-on-listener"}),
    "data-to-listener": (b"\x00\x03\x00\x01hello", "tftp_ignored", {"reason": "data-on-listener"}),
    "error-to-listener": (b"\x00\x05\x00\x00bye\x00", "tftp_ignored",
                          {"reason": "error-on-listener"}),
    "oack-to-listener": (b"\x00\x06blksize\x00512\x00", "tftp_ignored",
                         {"reason": "optionack-on-listener"}),
}


@pytest.mark.parametrize("probe", sorted(TFTP_DROPS))
async def test_tftp_garbage_is_dropped_and_counted(live: Live, probe: str) -> None:
    data, counter, labels = TFTP_DROPS[probe]
    before = live.count(counter, **labels)
    live.send(data, live.served.tftp_port)
    await live.counted(counter, before, **labels)
    await live.still_serves()


# (request, TFTP error code, refusal reason)
TFTP_REFUSED: dict[str, tuple[bytes, int, str]] = {
    "unknown-mode": (tftp_rrq(PAYLOAD, mode="bogus"), 4, "mode"),
    "mail-mode": (tftp_rrq(PAYLOAD, mode="mail"), 4, "mode"),
    "1000-byte-name": (tftp_rrq("files/" + "a" * 994), 2, "access"),
    "wrq": (b"\x00\x02files/new.bin\x00octet\x00", 2, "write"),
}


@pytest.mark.parametrize("probe", sorted(TFTP_REFUSED))
async def test_tftp_refused_requests_get_the_right_error(live: Live, probe: str) -> None:
    request, code, reason = TFTP_REFUSED[probe]
    before = live.count("tftp_refused", reason=reason)
    with pytest.raises(TftpFailure) as failure:
        await tftp_fetch(live.served.tftp_port, request)
    assert failure.value.code == code
    assert live.count("tftp_refused", reason=reason) == before + 1
    await live.still_serves()


# Options the server must ignore or clamp (RFC 2347: leave them out of the OACK), never choke
# on: (options, expected OACK). tftpy 0.8.7 died on blksize=abc.
TFTP_ODD_OPTIONS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "blksize-0": ({"blksize": "0"}, {}),
    "blksize-7": ({"blksize": "7"}, {}),
    "blksize-99999": ({"blksize": "99999"}, {"blksize": "1468"}),
    "blksize-abc": ({"blksize": "abc"}, {}),
    "blksize-huge-number": ({"blksize": "9" * 400}, {}),
    "windowsize-0": ({"windowsize": "0"}, {}),
    "windowsize-99999": ({"windowsize": "99999"}, {}),
    "tsize-abc": ({"tsize": "abc"}, {}),
    "timeout-0": ({"timeout": "0"}, {}),
    "unknown-option": ({"x-evil": "\xff" * 50}, {}),
}


@pytest.mark.parametrize("probe", sorted(TFTP_ODD_OPTIONS))
async def test_odd_options_are_ignored_or_clamped(live: Live, probe: str) -> None:
    options, oack = TFTP_ODD_OPTIONS[probe]
    data, got_oack = await tftp_fetch(live.served.tftp_port, tftp_rrq(PAYLOAD, **options))
    assert got_oack == oack
    assert sha256(data) == sha256(live.served.payload)
    await live.still_serves()


async def test_garbage_and_a_wrong_tid_mid_transfer(live: Live) -> None:
    """Noise on the transfer port, from the client and from a stranger: the download goes on."""
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        stranger.bind(("127.0.0.1", 0))
        stranger.setblocking(False)
        client.sendto(tftp_rrq(PAYLOAD), ("127.0.0.1", live.served.tftp_port))
        first, transfer = await asyncio.wait_for(loop.sock_recvfrom(client, 2048), 5)
        assert first[:4] == b"\x00\x03\x00\x01"
        tid_before = live.count("tftp_unknown_tid")
        for junk in (b"", b"\x00", os.urandom(700), b"\x00\x01again\x00octet\x00",
                     b"\x00\x04\xff\xff", b"\x00\x03\x00\x01data"):
            client.sendto(junk, transfer)  # garbage from the right TID: ignored
        stranger.sendto(b"\x00\x04\x00\x01", transfer)  # a wrong TID: ERROR 5 to it
        answer, _ = await asyncio.wait_for(loop.sock_recvfrom(stranger, 2048), 5)
        assert answer[:4] == b"\x00\x05\x00\x05"
        assert live.count("tftp_unknown_tid") == tid_before + 1
        # Now acknowledge block 1 and finish the transfer on the same socket.
        data, _ = await tftp_fetch_rest(client, transfer, first)
        assert sha256(data) == sha256(live.served.payload)
    finally:
        client.close()
        stranger.close()
    for _ in range(100):
        if live.count("tftp_ignored", reason="in-transfer") >= 6:
            break
        await asyncio.sleep(0.02)
    assert live.count("tftp_ignored", reason="in-transfer") >= 6
    await live.still_serves()


async def tftp_fetch_rest(sock: socket.socket, peer: tuple[str, int],
                          first: bytes) -> tuple[bytes, int]:
    """Continue a lock-step download whose block 1 is ``first``."""
    loop = asyncio.get_running_loop()
    out = bytearray(first[4:])
    block = 1
    sock.sendto(b"\x00\x04" + first[2:4], peer)
    while len(first) - 4 == 512:
        first, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 5)
        if first[:2] != b"\x00\x03":
            continue
        number = int.from_bytes(first[2:4], "big")
        if number == (block + 1) & 0xFFFF:
            out += first[4:]
            block += 1
        sock.sendto(b"\x00\x04" + first[2:4], peer)
    return bytes(out), block


# --------------------------------------------------------------------------- DHCP listeners
DHCP_DROPS: dict[str, tuple[bytes, str, dict[str, str]]] = {
    "empty": (b"", "dhcp_malformed", {"reason": "truncated"}),
    "one-byte": (b"\x01", "dhcp_malformed", {"reason": "truncated"}),
    "truncated-header": (pxe_discover()[:100], "dhcp_malformed", {"reason": "truncated"}),
    "no-magic-cookie": (header()[:-4] + b"\x00\x00\x00\x00" + opt(53, b"\x01"),
                        "dhcp_malformed", {"reason": "bad-magic-cookie"}),
    "bad-op": (b"\x07" + pxe_discover()[1:], "dhcp_malformed", {"reason": "bad-opcode"}),
    "hlen-200": (pxe_discover()[:2] + b"\xc8" + pxe_discover()[3:], "dhcp_malformed",
                 {"reason": "bad-hlen"}),
    "truncated-option": (header() + opt(53, b"\x01") + b"\x3c\x40PXEClient", "dhcp_malformed",
                         {"reason": "truncated-option"}),
    "option-without-length": (header() + opt(53, b"\x01") + b"\x3c", "dhcp_malformed",
                              {"reason": "truncated-option"}),
    # An option area longer than the receive buffer: the kernel cuts the datagram, the cut
    # option no longer fits, and the packet is dropped.
    "overlong-options": (header() + opt(53, b"\x01") + opt(60, PXE) +
                         b"".join(opt(250, os.urandom(255)) for _ in range(40)),
                         "dhcp_malformed", {"reason": "truncated-option"}),
    "overload-bad-value": (header() + opt(53, b"\x01") + opt(60, PXE) + opt(52, b"\x07"),
                           "dhcp_malformed", {"reason": "bad-overload"}),
    # Option 52 pointing at file and sname, which hold option 52 again: a loop.
    "overload-loop": (header(file=opt(52, b"\x03") + b"\xff", sname=opt(52, b"\x01") + b"\xff")
                      + opt(53, b"\x01") + opt(60, PXE) + opt(52, b"\x03"),
                      "dhcp_malformed", {"reason": "overload-loop"}),
    "overload-unterminated": (header(file=b"\x2b\xff" + b"A" * 126)
                              + opt(53, b"\x01") + opt(60, PXE) + opt(52, b"\x01"),
                              "dhcp_malformed", {"reason": "truncated-option"}),
    "not-pxe": (pxe_discover(vendor=b"udhcp 1.36"), "dhcp_ignored", {"reason": "not-pxe"}),
    "pxe-without-message-type": (header() + opt(60, PXE) + b"\xff", "dhcp_ignored",
                                 {"reason": "no-message-type"}),
    "bootreply-from-a-client": (b"\x02" + pxe_discover()[1:], "dhcp_ignored",
                                {"reason": "not-bootrequest"}),
}


@pytest.mark.parametrize("probe", sorted(DHCP_DROPS))
@pytest.mark.parametrize("role", ["dhcp", "proxy"])
async def test_dhcp_garbage_is_dropped_and_counted(live: Live, probe: str, role: str) -> None:
    data, counter, labels = DHCP_DROPS[probe]
    port = live.served.dhcp_port if role == "dhcp" else live.served.proxy_port
    before = live.count(counter, **labels)
    assert await live.dhcp_reply(data, port, timeout=0.3) is None
    await live.counted(counter, before, **labels)
    await live.still_serves()


async def test_giant_option_43_from_a_client_is_not_echoed(live: Live) -> None:
    """A 3000-byte option 43 (RFC 3396 instances) is carried, ignored, never reflected."""
    giant = [(43, os.urandom(255)) for _ in range(12)]
    reply = await live.dhcp_reply(pxe_discover(*giant), live.served.dhcp_port)
    assert reply is not None
    raw = bytes(reply)
    assert len(raw) < 576  # a normal OFFER: nothing of the client's option 43 came back
    opts = {o[0]: o[1] for o in reply[DHCP].options if isinstance(o, tuple)}
    assert opts["vendor_specific"] == b"\x06\x01\x08\xff"  # only our discovery control
    await live.still_serves()
