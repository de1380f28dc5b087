"""Many simulated nodes network-booting one netbootd, every step over the wire (bench/scale.py).

Run in the bench's client namespace: ``python -m bench.scale_client --first N --count C
--concurrency K``. Each node is a MAC from :func:`bench.peers._node_mac` and does what a BIOS
machine with the ``ipxe`` loader does, in order:

1. ``dhcp-pxe``: the PXE ROM's DISCOVER (option 60 ``PXEClient``, 93 = 0, 97), relayed (the
   bench is the relay: sent from udp/67 with ``giaddr`` set), answered by an OFFER naming
   ``ipxe/undionly.kpxe``; then the REQUEST to udp/4011 (the PXE boot server), answered by an
   ACK;
2. ``tftp``: that loader over TFTP (RFC 1350, blksize 1468 per RFC 2348), every block ACKed;
3. ``dhcp-ipxe``: iPXE's own DISCOVER (user class ``iPXE``), answered with the script's URL;
4. ``scripts``: ``/ipxe/boot.ipxe`` then the node's ``/ipxe/node.ipxe?mac=…``;
5. ``kernel``, ``initrd``: the files the script names, every byte read and counted (two
   steps of different sizes: the bench tells the cost per request from the cost per byte);
6. ``firstboot``: the NoCloud ``meta-data`` and ``user-data`` at the seed URL on the kernel
   command line (with the node's token);
7. ``phone-home``: cloud-init's POST to the URL in ``user-data``.

Commands on stdin, one per line, each answered by one JSON line on stdout:
``phase <name>`` runs that step for every node (K at a time), so the bench can read the
server's CPU between steps; ``boot`` runs whole boots (every step in order per node, K nodes
at a time) for nodes not used by the phases; ``quit``. A step that fails (no answer within the
deadline, a short file, a non-200 status) is counted in ``errors`` with its first message;
nothing is retried beyond what a firmware does (DHCP and TFTP resend after 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.peers import _node_mac  # noqa: E402
from bench.sandbox import CLIENT_IP, SERVER_IP  # noqa: E402
from netbootd.dhcp.options import DhcpOption, MessageType  # noqa: E402
from netbootd.dhcp.packet import BOOTREQUEST, DhcpPacket  # noqa: E402

PHASES = ("dhcp-pxe", "tftp", "dhcp-ipxe", "scripts", "kernel", "initrd", "firstboot",
          "phone-home")
PXE_VENDOR = b"PXEClient:Arch:00000:UNDI:002001"
RESEND_S = 1.0  # PXE ROMs and iPXE resend a DISCOVER after about a second
DEADLINE_S = 30.0  # one step of one node; generous, the machine is shared
BLKSIZE = 1468


@dataclass
class Node:
    index: int
    mac: str
    loader: str = ""
    script_url: str = ""
    kernel: str = ""
    initrd: str = ""
    seed: str = ""
    phone_home: str = ""
    bytes_in: int = 0


@dataclass
class Tally:
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    first_error: str = ""
    bytes_in: int = 0
    packets: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what[:300]


class BootError(RuntimeError):
    pass


class DhcpPort(asyncio.DatagramProtocol):
    """One UDP socket; replies are matched to their request by ``xid``."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[DhcpPacket]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            pkt = DhcpPacket.parse(data)
        except Exception:
            return
        fut = self.waiting.get(pkt.xid)
        if fut is not None and not fut.done():
            fut.set_result(pkt)

    async def ask(self, pkt: DhcpPacket, to: tuple[str, int]) -> DhcpPacket:
        assert self.transport is not None
        fut: asyncio.Future[DhcpPacket] = asyncio.get_running_loop().create_future()
        self.waiting[pkt.xid] = fut
        data = pkt.to_bytes()
        deadline = time.monotonic() + DEADLINE_S
        try:
            while True:
                self.transport.sendto(data, to)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), RESEND_S)
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise BootError(f"no DHCP answer to xid {pkt.xid:#x} from {to}") from None
        finally:
            self.waiting.pop(pkt.xid, None)


def _request(node: Node, msg: MessageType, xid: int, *, ipxe: bool, relayed: bool
             ) -> DhcpPacket:
    mac = bytes.fromhex(node.mac.replace(":", ""))
    guid = struct.pack(">I", node.index) + bytes(12)  # unique per node, never all-zero
    opts: list[tuple[int, bytes]] = [
        (DhcpOption.MESSAGE_TYPE, bytes([msg])),
        (DhcpOption.VENDOR_CLASS_ID, PXE_VENDOR),
        (DhcpOption.CLIENT_SYSTEM_ARCH, b"\x00\x00"),
        (DhcpOption.CLIENT_NDI, b"\x01\x02\x01"),
        (DhcpOption.CLIENT_MACHINE_ID, b"\x00" + guid),
        (DhcpOption.PARAM_REQUEST_LIST, bytes([1, 3, 6, 43, 60, 66, 67, 97])),
    ]
    if ipxe:
        opts.append((DhcpOption.USER_CLASS, b"iPXE"))
    return DhcpPacket(op=BOOTREQUEST, htype=1, hlen=6, hops=1 if relayed else 0, xid=xid,
                      secs=0, flags=0, ciaddr="0.0.0.0" if relayed else CLIENT_IP,
                      yiaddr="0.0.0.0", siaddr="0.0.0.0",
                      giaddr=CLIENT_IP if relayed else "0.0.0.0", chaddr=mac, sname=b"",
                      file=b"", options=tuple(opts))


class TftpGet(asyncio.DatagramProtocol):
    """One lock-step RRQ with blksize 1468; ``done`` gets the byte count."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.size = 0
        self.expect = 1
        self.last: bytes = b""
        self.last_at = time.monotonic()
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.last = (b"\x00\x01" + self.name.encode() + b"\x00octet\x00blksize\x00"
                     + str(BLKSIZE).encode() + b"\x00")
        self.transport.sendto(self.last, (SERVER_IP, 69))

    def _send(self, data: bytes) -> None:
        assert self.transport is not None and self.peer is not None
        self.last, self.last_at = data, time.monotonic()
        self.transport.sendto(data, self.peer)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.done.done() or len(data) < 4:
            return
        self.peer = (SERVER_IP, addr[1])
        op = data[1]
        if op == 6:  # OACK (RFC 2347): acknowledge with block 0
            self._send(b"\x00\x04\x00\x00")
        elif op == 3:
            block = struct.unpack(">H", data[2:4])[0]
            if block == self.expect & 0xFFFF:
                self.size += len(data) - 4
                self.expect += 1
                self._send(b"\x00\x04" + data[2:4])
                if len(data) - 4 < BLKSIZE:
                    self.done.set_result(self.size)
        elif op == 5:
            self.done.set_exception(BootError(f"TFTP error {data[4:-1]!r} for {self.name}"))

    def resend(self) -> None:
        if self.transport is not None and time.monotonic() - self.last_at > RESEND_S:
            dest = self.peer or (SERVER_IP, 69)
            self.last_at = time.monotonic()
            self.transport.sendto(self.last, dest)


class Client:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.relay = DhcpPort()
        self.proxy = DhcpPort()
        self.http: aiohttp.ClientSession | None = None
        self._xid = 0x5CA1E000

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.relay, local_addr=(CLIENT_IP, 67))
        await loop.create_datagram_endpoint(lambda: self.proxy, local_addr=(CLIENT_IP, 0))
        conn = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        self.http = aiohttp.ClientSession(connector=conn,
                                          timeout=aiohttp.ClientTimeout(total=DEADLINE_S * 4))

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    def xid(self) -> int:
        self._xid += 1
        return self._xid & 0xFFFFFFFF

    # ---------------------------------------------------------------- steps
    async def dhcp_pxe(self, node: Node, t: Tally) -> None:
        offer = await self.relay.ask(_request(node, MessageType.DISCOVER, self.xid(), ipxe=False,
                                              relayed=True), (SERVER_IP, 67))
        if offer.message_type != MessageType.OFFER or not offer.bootfile:
            raise BootError(f"{node.mac}: PXE DISCOVER answered by {offer.message_type} "
                            f"bootfile {offer.bootfile!r}")
        node.loader = offer.bootfile
        ack = await self.proxy.ask(_request(node, MessageType.REQUEST, self.xid(), ipxe=False,
                                            relayed=False), (SERVER_IP, 4011))
        if ack.message_type != MessageType.ACK or ack.bootfile != node.loader:
            raise BootError(f"{node.mac}: udp/4011 REQUEST answered by {ack.message_type} "
                            f"bootfile {ack.bootfile!r}")

    async def tftp(self, node: Node, t: Tally) -> None:
        loop = asyncio.get_running_loop()
        proto = TftpGet(node.loader)
        transport, _ = await loop.create_datagram_endpoint(lambda: proto,
                                                           local_addr=(CLIENT_IP, 0))
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not proto.done.done():
                if time.monotonic() > deadline:
                    raise BootError(f"{node.mac}: TFTP {node.loader} timed out")
                try:
                    await asyncio.wait_for(asyncio.shield(proto.done), RESEND_S)
                except TimeoutError:
                    proto.resend()
            size = proto.done.result()
        finally:
            transport.close()
        if size <= 0:
            raise BootError(f"{node.mac}: TFTP {node.loader}: empty")
        node.bytes_in += size
        t.bytes_in += size

    async def dhcp_ipxe(self, node: Node, t: Tally) -> None:
        offer = await self.relay.ask(_request(node, MessageType.DISCOVER, self.xid(), ipxe=True,
                                              relayed=True), (SERVER_IP, 67))
        url = offer.bootfile
        if offer.message_type != MessageType.OFFER or not url.startswith("http://"):
            raise BootError(f"{node.mac}: iPXE DISCOVER answered by {offer.message_type} "
                            f"bootfile {url!r}")
        node.script_url = url

    async def _get(self, url: str, node: Node, t: Tally) -> bytes:
        assert self.http is not None
        async with self.http.get(url) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise BootError(f"{node.mac}: GET {url}: {resp.status} {body[:200]!r}")
            if resp.content_length is not None and len(body) != resp.content_length:
                raise BootError(f"{node.mac}: GET {url}: {len(body)} of "
                                f"{resp.content_length} bytes")
        node.bytes_in += len(body)
        t.bytes_in += len(body)
        return body

    async def scripts(self, node: Node, t: Tally) -> None:
        stage1 = (await self._get(node.script_url, node, t)).decode()
        m = re.search(r"chain --autofree (\S+?)\?", stage1)
        if not m:
            raise BootError(f"{node.mac}: stage 1 script without a chain: {stage1[:200]!r}")
        script = (await self._get(f"{m.group(1)}?mac={node.mac.replace(':', '-')}&uuid="
                                  f"&buildarch=i386&platform=pcbios", node, t)).decode()
        kernel = re.search(r"^kernel (\S+)(.*)$", script, re.M)
        initrd = re.search(r"^initrd (\S+)", script, re.M)
        seed = re.search(r"ds=nocloud-net;s=(\S+)", script)
        if not (kernel and initrd and seed):
            raise BootError(f"{node.mac}: node script lacks kernel/initrd/seed: {script!r}")
        node.kernel, node.initrd, node.seed = kernel.group(1), initrd.group(1), seed.group(1)

    async def kernel_file(self, node: Node, t: Tally) -> None:
        await self._get(node.kernel, node, t)

    async def initrd_file(self, node: Node, t: Tally) -> None:
        await self._get(node.initrd, node, t)

    async def firstboot(self, node: Node, t: Tally) -> None:
        await self._get(node.seed + "meta-data", node, t)
        user_data = (await self._get(node.seed + "user-data", node, t)).decode()
        m = re.search(r"^phone_home:\s*\n\s+url:\s*\"([^\"]+)\"", user_data, re.M)
        if not m:
            raise BootError(f"{node.mac}: user-data without a phone_home url")
        node.phone_home = m.group(1)

    async def phone_home(self, node: Node, t: Tally) -> None:
        assert self.http is not None
        form = {"instance_id": f"iid-{node.index}", "hostname": f"n{node.index:05d}",
                "fqdn": f"n{node.index:05d}.bench", "pub_key_ed25519": "ssh-ed25519 AAAA bench"}
        async with self.http.post(node.phone_home, data=form) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise BootError(f"{node.mac}: phone-home: {resp.status} {body[:200]!r}")

    # ---------------------------------------------------------------- runs
    async def run(self, nodes: list[Node], steps: tuple[str, ...]) -> Tally:
        t = Tally()
        sem = asyncio.Semaphore(self.concurrency)
        funcs = {"dhcp-pxe": self.dhcp_pxe, "tftp": self.tftp, "dhcp-ipxe": self.dhcp_ipxe,
                 "scripts": self.scripts, "kernel": self.kernel_file,
                 "initrd": self.initrd_file, "firstboot": self.firstboot,
                 "phone-home": self.phone_home}

        async def one(node: Node) -> None:
            async with sem:
                try:
                    for step in steps:
                        await funcs[step](node, t)
                    t.ok += 1
                except Exception as e:  # counted, the run goes on: a figure with its losses
                    t.fail(f"{type(e).__name__}: {e}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(n) for n in nodes))
        t.seconds = time.perf_counter() - t0
        return t


def _reply(what: str, t: Tally, nodes: int) -> None:
    print(json.dumps({"what": what, "nodes": nodes, "seconds": t.seconds, "ok": t.ok,
                      "errors": t.errors, "first_error": t.first_error,
                      "bytes_in": t.bytes_in}), flush=True)


async def main_async(args: argparse.Namespace) -> None:
    client = Client(args.concurrency)
    await client.start()
    phase_nodes = [Node(i, _node_mac(i)) for i in range(args.first, args.first + args.count)]
    boot_first = args.first + args.count
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if not line or line == "quit":
                return
            if line.startswith("phase "):
                step = line.split()[1]
                # a node whose earlier step failed has nothing to go on with
                ready = [n for n in phase_nodes if step == "dhcp-pxe" or n.loader]
                _reply(step, await client.run(ready, (step,)), len(ready))
            elif line.startswith("boot"):
                count = int(line.split()[1]) if len(line.split()) > 1 else args.count
                nodes = [Node(i, _node_mac(i)) for i in range(boot_first, boot_first + count)]
                boot_first += count
                _reply("boot", await client.run(nodes, PHASES), len(nodes))
            else:
                print(json.dumps({"what": "error", "first_error": f"unknown command {line!r}"}),
                      flush=True)
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", type=int, default=0, help="index of the first node")
    ap.add_argument("--count", type=int, default=100, help="nodes per phase / per boot run")
    ap.add_argument("--concurrency", type=int, default=32)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
