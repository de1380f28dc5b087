"""Helpers for the hardening tests: a netbootd server process, TFTP clients, a served payload.

``ServerProcess`` runs ``python -m netbootd serve`` as a child (so a crash, its memory and its
exit are observable, and SIGKILL/SIGHUP reach a real server); ``served_config`` writes a config
on loopback ports with a random payload file behind the ``files/`` TFTP prefix and the
``/loaders/files/`` URL. ``tftp_fetch`` is a raw RFC 1350 client for requests the stock clients
cannot be made to send; ``curl_tftp`` is the real client used to prove a download is intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import BASE_CONFIG, free_port, make_store
from netbootd.config import parse_config
from netbootd.lab.demo import toml_dump
from netbootd.service import Service

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = "files/payload.bin"


@contextlib.asynccontextmanager
async def running_service(served: Served) -> AsyncIterator[Service]:
    """The service of ``served`` started in this event loop (counters readable directly)."""
    service = Service(parse_config(served.data, str(served.path)), config_path=served.path)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Served:
    """A config on disk with its ports and the payload it serves."""

    path: Path
    data: dict[str, Any]
    payload: bytes
    tmp: Path

    @property
    def tftp_port(self) -> int:
        return int(self.data["tftp"]["port"])

    @property
    def http_port(self) -> int:
        return int(self.data["http"]["port"])

    @property
    def dhcp_port(self) -> int:
        return int(self.data["dhcp"]["port"])

    @property
    def proxy_port(self) -> int:
        return int(self.data["dhcp"]["proxy_port"])

    @property
    def state_db(self) -> Path:
        return Path(self.data["server"]["state_dir"]) / "state.sqlite3"

    def write(self) -> None:
        self.path.write_text(toml_dump(self.data))


def served_config(tmp: Path, payload_size: int = 300_000, *, relay_port: int | None = None,
                  address: str = "127.0.0.1", **sections: dict[str, Any]) -> Served:
    """Config on free loopback ports; ``sections`` are merged into the generated ones."""
    make_store(tmp / "store")
    files = tmp / "files"
    files.mkdir()
    payload = os.urandom(payload_size)
    (files / "payload.bin").write_bytes(payload)
    data = json.loads(json.dumps(BASE_CONFIG))
    data["server"] = {"address": address, "state_dir": str(tmp / "state"),
                      "store_dir": str(tmp / "store")}
    data["dhcp"] = {"listen": address, "port": free_port(socket.SOCK_DGRAM),
                    "proxy_port": free_port(socket.SOCK_DGRAM),
                    "relay_port": relay_port or free_port(socket.SOCK_DGRAM)}
    data["tftp"] = {"listen": address, "port": free_port(socket.SOCK_DGRAM)}
    data["http"] = {"listen": address, "port": free_port(socket.SOCK_STREAM)}
    # the admin API too: its default (127.0.0.1:8081) may be held by another server here
    data["admin"] = {"port": free_port(socket.SOCK_STREAM)}
    data["loaders"] = {"dirs": {"files": [str(files)]}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    served = Served(tmp / "netbootd.toml", data, payload, tmp)
    served.write()
    return served


@dataclass
class ServerProcess:
    """``python -m netbootd serve`` as a child process; ended by its own pid only."""

    served: Served
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    netns: str | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "netbootd", "serve", "--config",
                 str(self.served.path)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        mark = self.log_text().count("netbootd serving")
        deadline = time.monotonic() + timeout
        while self.log_text().count("netbootd serving") <= mark:
            if self.proc.poll() is not None:
                raise RuntimeError(f"netbootd exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"netbootd did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def rss_kib(self) -> int:
        """Resident memory of the server (VmRSS), read from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGTERM, wait, and return the counters the server logged on its way out."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                assert self.proc is not None
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return last_counters(self.log_text())

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def last_counters(log_text: str) -> dict[str, int]:
    """The ``counters: {...}`` line ``Service.stop`` logs, parsed (empty if there is none)."""
    for line in reversed(log_text.splitlines()):
        if " counters: " in line:
            return dict(json.loads(line.split(" counters: ", 1)[1]))
    return {}


def tftp_rrq(name: str | bytes, mode: str = "octet", **options: str) -> bytes:
    raw = name.encode("latin-1") if isinstance(name, str) else name
    return (b"\x00\x01" + raw + b"\x00" + mode.encode() + b"\x00" +
            b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in options.items()))


class TftpFailure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"TFTP error {code}: {message}")
        self.code = code


async def tftp_fetch(port: int, request: bytes, *, host: str = "127.0.0.1",
                     bind: str = "127.0.0.1", timeout: float = 5.0,
                     sock: socket.socket | None = None) -> tuple[bytes, dict[str, str]]:
    """Download with a raw RRQ (lock-step, one ACK per block); returns (data, OACK options).

    Raises TftpFailure on an ERROR reply and TimeoutError when the server goes silent.
    """
    loop = asyncio.get_running_loop()
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((bind, 0))
    sock.setblocking(False)
    try:
        sock.sendto(request, (host, port))
        out = bytearray()
        oack: dict[str, str] = {}
        blksize, expected = 512, 1
        while True:
            data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 70000), timeout)
            op = int.from_bytes(data[:2], "big")
            if op == 5:
                raise TftpFailure(int.from_bytes(data[2:4], "big"),
                                  data[4:].split(b"\0")[0].decode("latin-1"))
            if op == 6:
                fields = data[2:].split(b"\0")[:-1]
                oack = {fields[i].decode(): fields[i + 1].decode()
                        for i in range(0, len(fields) - 1, 2)}
                blksize = int(oack.get("blksize", "512"))
                sock.sendto(b"\x00\x04\x00\x00", peer)
                continue
            assert op == 3, data[:4]
            block = int.from_bytes(data[2:4], "big")
            if block == expected & 0xFFFF:
                out += data[4:]
                expected += 1
            sock.sendto(b"\x00\x04" + data[2:4], peer)
            if block == (expected - 1) & 0xFFFF and len(data) - 4 < blksize:
                return bytes(out), oack
    finally:
        if own:
            sock.close()


async def curl_tftp(port: int, name: str, *, host: str = "127.0.0.1",
                    interface: str | None = None, blksize: int = 1468,
                    timeout: float = 60.0, netns: str | None = None) -> bytes | None:
    """Download ``name`` with curl; None when curl fails."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    iface = ["--interface", interface] if interface else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, "curl", "-s", "--max-time", str(int(timeout)), "--tftp-blksize", str(blksize),
        *iface, f"tftp://{host}:{port}/{name}", "-o", "-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out if proc.returncode == 0 else None


def spoofed_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4+UDP datagram from any source, for a raw socket (IP_HDRINCL; needs root).

    The UDP checksum is 0 ("none", RFC 768), which IPv4 receivers accept.
    """
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64,
                     socket.IPPROTO_UDP, 0, socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    return ip + udp  # the kernel fills in the IP checksum


def raw_sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    return s


def flood(packets: Iterator[tuple[tuple[str, int], bytes]], dst: tuple[str, int],
          rate: float, seconds: float) -> int:
    """Send spoofed datagrams at ``rate`` per second for ``seconds``; returns how many went."""
    sent = 0
    with raw_sender() as s:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            if sent > elapsed * rate:
                time.sleep(0.001)
                continue
            src, payload = next(packets)
            try:
                s.sendto(spoofed_udp(src, dst, payload), (dst[0], 0))
            except OSError:  # the loopback queue is full: dropped, as on a wire
                continue
            sent += 1
    return sent


def add_loss(netns: str, percent: int, *, bridge: bool = False) -> str:
    """Drop ``percent`` % of packets at random inside ``netns``; returns the nft table name.

    netem would be the usual tool, but this kernel is built without sch_netem
    (CONFIG_NET_SCH_NETEM is not set); nftables' ``numgen random`` gives the same uniform
    random loss. ``bridge``: every frame crossing the lab bridge, to the host or between
    ports (guest <-> site DHCP), in either direction; else every UDP datagram the namespace
    receives (on loopback, each datagram is received once: both directions of a transfer).
    """
    family, match = ("bridge", "") if bridge else ("inet", "meta l4proto udp ")
    hooks = ("input", "forward", "output") if bridge else ("input",)
    table = "".join(
        f"table {family} netbootd_loss {{\n  chain {hook} {{\n"
        f"    type filter hook {hook} priority 0; policy accept;\n"
        f"    {match}numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        for hook in hooks)
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=table.encode(),
                   check=True)
    return f"{family} netbootd_loss"


def dropped_packets(netns: str, table: str) -> int:
    """Packets the loss rules of ``table`` dropped so far."""
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", *table.split()],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(w) for line in out.splitlines() if "counter packets" in line
               for w in [line.split("counter packets")[1].split()[0]])
