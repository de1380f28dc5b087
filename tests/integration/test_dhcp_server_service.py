"""Server mode on real UDP sockets (loopback, unprivileged ports) through the whole Service.

The test plays a DHCP relay (giaddr 127.0.0.1): replies come back to its socket on the relay
port. Checks what netbootd records: the lease DB, the admin API (against the documented
schema), `netbootd node show`, counters, and that leases survive a restart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import free_port, loopback_config, make_store, private_netns
from netbootd.config import parse_config
from netbootd.dhcp.options import DhcpOption, MessageType
from netbootd.dhcp.packet import BOOTREQUEST, ZERO_IP, DhcpPacket
from netbootd.service import Service
from netbootd.state.leases import LeaseDB

LO = "127.0.0.1"
DB1_MAC = "52:54:00:00:00:02"
DB1_IP = "127.0.0.50"
PXE_BIOS = ((DhcpOption.VENDOR_CLASS_ID, b"PXEClient:Arch:00000:UNDI:002001"),
            (DhcpOption.CLIENT_SYSTEM_ARCH, b"\x00\x00"))


def packet(mtype: MessageType, mac: str, *, requested: str | None = None,
           server_id: str | None = None, ciaddr: str = ZERO_IP,
           extra: tuple[tuple[int, bytes], ...] = (), xid: int = 0xC0FFEE) -> bytes:
    options: list[tuple[int, bytes]] = [(DhcpOption.MESSAGE_TYPE, bytes((mtype,)))]
    if requested:
        options.append((DhcpOption.REQUESTED_IP, ipaddress.IPv4Address(requested).packed))
    if server_id:
        options.append((DhcpOption.SERVER_ID, ipaddress.IPv4Address(server_id).packed))
    options += extra
    return DhcpPacket(op=BOOTREQUEST, htype=1, hlen=6, hops=1, xid=xid, secs=0, flags=0,
                      ciaddr=ciaddr, yiaddr=ZERO_IP, siaddr=ZERO_IP, giaddr=LO,
                      chaddr=bytes.fromhex(mac.replace(":", "")), sname=b"", file=b"",
                      options=tuple(options)).to_bytes()


class Relay:
    """The test's socket: sends as a relay, receives the replies netbootd sends to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LO, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.server_port = 0

    async def ask(self, data: bytes, timeout: float = 10.0) -> DhcpPacket:
        """Send, and return the reply to this very message (same xid and chaddr)."""
        loop = asyncio.get_running_loop()
        sent = DhcpPacket.parse(data)
        await loop.sock_sendto(self.sock, data, (LO, self.server_port))
        deadline = loop.time() + timeout
        while True:
            raw, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 4096),
                                            deadline - loop.time())
            reply = DhcpPacket.parse(raw)
            if reply.xid == sent.xid and reply.chaddr == sent.chaddr:
                return reply

    async def silent(self, data: bytes, wait: float = 0.5) -> bool:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, data, (LO, self.server_port))
        try:
            await asyncio.wait_for(loop.sock_recvfrom(self.sock, 4096), wait)
        except TimeoutError:
            return True
        return False

    async def dora(self, mac: str, extra: tuple[tuple[int, bytes], ...] = ()
                   ) -> tuple[DhcpPacket, DhcpPacket]:
        offer = await self.ask(packet(MessageType.DISCOVER, mac, extra=extra))
        ack = await self.ask(packet(MessageType.REQUEST, mac, requested=offer.yiaddr,
                                    server_id=LO, extra=extra))
        return offer, ack


@pytest.fixture
def relay() -> Any:
    r = Relay()
    yield r
    r.sock.close()


def server_config(tmp_path: Path, relay: Relay, **dhcp: Any) -> dict[str, Any]:
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path)
    port = free_port(socket.SOCK_DGRAM)
    data["dhcp"] = {"mode": "server", "listen": LO, "port": port,
                    "proxy_port": free_port(socket.SOCK_DGRAM), "relay_port": relay.port,
                    "probe": False, "max_leases": 20,
                    "pools": {"lo": {"subnet": "127.0.0.0/24",
                                     "range": ["127.0.0.100", "127.0.0.119"],
                                     "router": LO, "dns": [LO], "domain": "lab.test",
                                     "lease_time": 600}}, **dhcp}
    data["nodes"]["db1"]["ip"] = DB1_IP
    relay.server_port = port
    return data


@pytest.fixture
async def running(tmp_path: Path, relay: Relay
                  ) -> AsyncIterator[Callable[[], Any]]:
    """Start (and restart) a server-mode Service; stopped at the end."""
    data = server_config(tmp_path, relay)
    services: list[Service] = []

    async def start() -> Service:
        if services:
            await services[-1].stop()
        service = Service(parse_config(data, "server-mode-test"))
        await service.start()
        services.append(service)
        return service

    yield start
    if services:
        await services[-1].stop()


async def node_with_lease(service: Service, name: str, timeout: float = 10.0) -> Any:
    """The node as the API shows it, once the lease is written (one write-behind flush)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        node = await api_get(service, f"/nodes/{name}")
        if (node["lease"] is not None and node["timeline"]) or loop.time() > deadline:
            return node
        await asyncio.sleep(0.05)


async def api_get(service: Service, path: str) -> Any:
    token = (service.config.admin_token_file).read_text().strip()
    async with aiohttp.ClientSession() as s, s.get(
            f"http://{LO}:{service.api_port}/api/v1{path}",
            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        return await r.json()


def documented_schema() -> dict[str, Any]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "admin-api.md").read_text()
    block = text.split("## Schemas", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return dict(json.loads(block))


async def test_dora_pxe_boot_fields_api_and_restart(running: Callable[[], Any], relay: Relay,
                                                    tmp_path: Path) -> None:
    import jsonschema

    service = await running()
    # A PXE node: its reservation, its host name, and the boot file the proxy would give.
    offer, ack = await relay.dora(DB1_MAC, PXE_BIOS)
    assert offer.message_type is MessageType.OFFER and ack.message_type is MessageType.ACK
    assert offer.yiaddr == ack.yiaddr == DB1_IP
    assert ack.option(DhcpOption.HOST_NAME) == b"db1"
    assert ack.bootfile == "bios/lpxelinux.0" and ack.siaddr == LO
    assert ack.option(DhcpOption.VENDOR_CLASS_ID) == b"PXEClient"
    assert ack.option(DhcpOption.SUBNET_MASK) == bytes([255, 255, 255, 0])
    # A plain client: a dynamic address and no boot fields.
    plain_offer, plain_ack = await relay.dora("52:54:00:aa:00:01")
    assert plain_ack.yiaddr == plain_offer.yiaddr == "127.0.0.100"
    assert plain_ack.bootfile == "" and plain_ack.option(DhcpOption.VENDOR_CLASS_ID) is None

    # The state netbootd keeps: boot events, the lease DB, the API, `node show`.
    assert service.counters.get("dhcp_server_replies", type="ack") == 2
    node = await node_with_lease(service, "db1")
    jsonschema.validate(node, {**documented_schema(), "$ref": "#/$defs/NodeDetail"})
    assert node["lease"]["ip"] == DB1_IP and node["lease"]["active"] is True
    assert "dhcp-ack" in [e["kind"] for e in node["timeline"]]
    for n in await api_get(service, "/nodes"):
        jsonschema.validate(n, {**documented_schema(), "$ref": "#/$defs/Node"})

    # Restart: the same addresses are re-ACKed (INIT-REBOOT) from the persisted leases.
    service = await running()
    again = await relay.ask(packet(MessageType.REQUEST, "52:54:00:aa:00:01",
                                   requested="127.0.0.100"))
    assert again.message_type is MessageType.ACK and again.yiaddr == "127.0.0.100"
    taken = await relay.ask(packet(MessageType.REQUEST, "52:54:00:aa:00:02",
                                   requested="127.0.0.100"))
    assert taken.message_type is MessageType.NAK
    node = await node_with_lease(service, "db1")
    assert node["lease"]["ip"] == DB1_IP
    await service.stop()  # flushes the lease DB; the CLI reads it beside the state
    db = LeaseDB.open_readonly(tmp_path / "state" / "leases.sqlite3")
    assert db is not None
    assert {x.ip for x in db.load() if x.state == "bound"} == {DB1_IP, "127.0.0.100"}
    db.close()


async def test_node_show_prints_the_lease(running: Callable[[], Any], relay: Relay,
                                          tmp_path: Path) -> None:
    from netbootd.cli import main

    service = await running()
    await relay.dora(DB1_MAC)
    assert service.leases_db is not None
    service.leases_db.flush()
    config = tmp_path / "netbootd.toml"
    config.write_text(_toml(service.config.server.state_dir, tmp_path))
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["node", "show", "db1", "--config", str(config), "--json"]) == 0
    shown = json.loads(out.getvalue())
    assert shown["lease"]["ip"] == DB1_IP and shown["lease"]["state"] == "bound"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert main(["node", "show", "db1", "--config", str(config)]) == 0
    assert f"lease:    {DB1_IP} bound until 20" in text.getvalue()  # the text view says it too


def _toml(state_dir: Path, tmp_path: Path) -> str:
    return (f'[server]\naddress = "127.0.0.1"\nstate_dir = "{state_dir}"\n'
            f'store_dir = "{tmp_path / "store"}"\n[groups.default]\ndefault = true\n'
            f'build = "demo/1.0"\n[nodes.db1]\nmac = "{DB1_MAC}"\nip = "{DB1_IP}"\n')


async def test_flood_of_random_macs_is_capped_and_nodes_still_served(
        running: Callable[[], Any], relay: Relay, tmp_path: Path) -> None:
    service = await running()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    for n in range(300):
        mac = f"02:00:00:00:{n >> 8:02x}:{n & 0xff:02x}"
        await loop.sock_sendto(relay.sock, packet(MessageType.DISCOVER, mac, xid=n),
                               (LO, relay.server_port))
        # In bursts the socket buffers hold: the flood is about the lease cap, not UDP loss.
        while n % 25 == 24 and service.counters.get("dhcp_received") <= n:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
    _, ack = await relay.dora(DB1_MAC)
    assert ack.yiaddr == DB1_IP
    assert service.counters.get("dhcp_server_replies", type="offer") == 20 + 1
    assert service.counters.get("dhcp_server_silent", reason="lease-cap") == 300 - 20
    assert service.dhcp_server is not None
    assert service.dhcp_server.leases.unconfigured_records == 20
    # Spoofed RELEASE of db1's lease from the relay with another chaddr: ignored, counted.
    assert await relay.silent(packet(MessageType.RELEASE, "02:00:00:00:00:01",
                                     ciaddr=DB1_IP, server_id=LO))
    assert service.counters.get("dhcp_server_silent", reason="spoofed-release") == 1
    assert service.dhcp_server.leases.lease_of(DB1_IP) is not None
    lease = service.dhcp_server.leases.lease_of(DB1_IP)
    assert lease is not None and lease.state == "bound"
    # The lease DB is as bounded as the table: the cap plus the configured node.
    assert service.leases_db is not None
    service.leases_db.flush()
    stored = service.leases_db.load()
    assert len(stored) == 20 + 1 and {x.ip for x in stored} >= {DB1_IP}


async def test_malformed_and_hostile_datagrams_are_dropped_and_counted(
        running: Callable[[], Any], relay: Relay, tmp_path: Path) -> None:
    service = await running()
    good = packet(MessageType.DISCOVER, "52:54:00:aa:00:09")
    probes = {
        "truncated": [b"", b"\x01", good[:100]],
        "bad-magic-cookie": [good[:236] + b"\x00\x00\x00\x00" + good[240:]],
        "bad-opcode": [b"\x09" + good[1:]],
        "truncated-option": [good[:240] + b"\x35\x01"[:1]],
    }
    for datagrams in probes.values():
        for data in datagrams:
            assert await relay.silent(data, wait=0.2)
    for reason, datagrams in probes.items():
        assert service.counters.get("dhcp_malformed", reason=reason) == len(datagrams), reason
    # Well-formed but not for a server: a BOOTREPLY, a message without option 53.
    reply = bytearray(good)
    reply[0] = 2
    assert await relay.silent(bytes(reply), wait=0.2)
    assert service.counters.get("dhcp_server_silent", reason="not-bootrequest") == 1
    # Still serving, and nothing reached the catch-all error counter.
    _, ack = await relay.dora("52:54:00:aa:00:09")
    assert ack.message_type is MessageType.ACK
    assert service.counters.get("dhcp_errors") == 0


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_a_probe_that_cannot_bind_is_a_clear_start_error(tmp_path: Path) -> None:
    """In a namespace of the test's own, udp/68 is held without SO_REUSEADDR: the probe cannot
    bind, and `netbootd serve` says so and what to do, exit status 2, no traceback."""
    from netbootd.lab.demo import toml_dump

    make_store(tmp_path / "store")
    config = tmp_path / "netbootd.toml"
    config.write_text(toml_dump({
        "server": {"address": LO, "state_dir": str(tmp_path / "state"),
                   "store_dir": str(tmp_path / "store")},
        "dhcp": {"mode": "server", "pools": {"lo": {"subnet": "127.0.0.0/24",
                                                    "range": ["127.0.0.100", "127.0.0.119"]}}},
        "tftp": {"enabled": False}, "admin": {"enabled": False},
        "groups": {"default": {"default": True, "build": "demo/1.0"}}}))
    hold = ("import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 68)); print('held', flush=True); time.sleep(120)")
    with private_netns("nbdprb") as ns:
        holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", hold],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "netbootd",
                                   "serve", "--config", str(config)], capture_output=True,
                                  text=True, timeout=120, cwd=Path(__file__).parents[2])
        finally:
            holder.kill()
            holder.wait()
    assert proc.returncode == 2, proc.stderr
    assert "cannot probe for other DHCP servers from udp/68 on lo: Address already in use" \
        in proc.stderr and "dhcp.probe = false" in proc.stderr
    assert "Traceback" not in proc.stderr
