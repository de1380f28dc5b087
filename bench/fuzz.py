"""Fuzz netbootd's hostile-input surfaces: the DHCP codec, the TFTP codec, the TFTP session.

    python bench/fuzz.py --target dhcp --inputs 1000000                 # atheris (default)
    python bench/fuzz.py --target all --inputs 1000000 --engine random   # no atheris needed
    python bench/fuzz.py --target tftp-session --inputs 20000 --seed 7   # CI-sized
    python bench/fuzz.py --target dhcp-server --inputs 1000000 --engine random

Each target takes one byte string and checks the contract of docs/security.md: bad bytes raise
``MalformedPacket`` and nothing else, whatever parses re-encodes to itself, and the TFTP session
never raises, never sends an oversized block and always ends with an outcome; the server-mode
lease logic (``dhcp-server``: a sequence of messages from several sources against one lease
table) never raises, never hands a reserved address to another client or one address to two
clients, never offers outside its pool and never keeps more records than its cap. Any other
exception is a finding: the run stops, prints the input (hex) and the traceback, exits 1.

Engines:

- ``atheris``: coverage-guided (libFuzzer) with the netbootd modules instrumented, seeded with
  the real PXE packets below. ``--inputs`` is libFuzzer's ``-runs``.
- ``random``: a seeded mutation fuzzer in plain Python (byte flips, cuts, inserts, splices of the
  same seeds, plus pure noise); deterministic for a given ``--seed``, and about as fast.

The last line printed is ``fuzz: target=T engine=E inputs=N crashes=0 seconds=S``.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

Target = Callable[[bytes], None]

TARGET_NAMES = ("dhcp", "tftp-codec", "tftp-session", "dhcp-server")


# ---------------------------------------------------------------------------------- targets
def _targets() -> dict[str, Target]:
    """Import netbootd here, so the atheris engine can import it under instrumentation."""
    from netbootd.dhcp.packet import DhcpPacket
    from netbootd.dhcp.proxy import (
        BootAnswer,
        PxeRequest,
        address_hint,
        build_reply,
        classify,
        reply_destination,
    )
    from netbootd.errors import MalformedPacket
    from netbootd.tftp.packet import Data, OptionAck, ReadRequest, parse_packet
    from netbootd.tftp.session import ReadSession, SessionLimits, refusal
    from netbootd.tftp.sources import BytesSource

    answers = (BootAnswer("192.0.2.1", "bios/lpxelinux.0"),
               BootAnswer("192.0.2.1", "http://192.0.2.1:8080/ipxe/" + "x" * 200))

    def dhcp(data: bytes) -> None:
        try:
            packet = DhcpPacket.parse(data)
        except MalformedPacket as exc:
            assert exc.reason
            return
        assert DhcpPacket.parse(packet.to_bytes()) == packet, "DHCP re-encoding changed it"
        address_hint(packet)
        for port in (67, 4011):
            verdict = classify(packet, port=port)
            if not isinstance(verdict, PxeRequest):
                continue
            reply = build_reply(packet, verdict, answers[len(data) % 2], port=port,
                                offer_bootfile=bool(len(data) & 2))
            assert reply.yiaddr == "0.0.0.0", "a proxy reply offered an address"
            assert DhcpPacket.parse(reply.to_bytes()) == reply
            host, dport = reply_destination(packet, ("192.0.2.50", 68), port=port)
            assert host and 0 < dport < 65536

    def tftp_codec(data: bytes) -> None:
        try:
            packet = parse_packet(data)
        except MalformedPacket as exc:
            assert exc.reason
            return
        assert parse_packet(packet.to_bytes()) == packet, "TFTP re-encoding changed it"

    limits = SessionLimits(max_blksize=1468, max_windowsize=8, timeout=1.0, retries=3)

    def tftp_session(data: bytes) -> None:
        # Layout: size (2 bytes), then a request datagram (length-prefixed), then steps, each
        # a kind byte (even: datagram, 1 mod 4: timer, 3 mod 4: the client's new request
        # supersedes the transfer), a time step in 1/16 s, a length, the bytes.
        if len(data) < 3:
            return
        size = struct.unpack_from("!H", data)[0] * 3
        req_len = data[2]
        raw_request = b"\x00\x01" + data[3:3 + req_len]
        try:
            request = parse_packet(raw_request)
        except MalformedPacket:
            return
        if not isinstance(request, ReadRequest) or refusal(request) is not None:
            return
        session = ReadSession(request, BytesSource(bytes(size)), limits)
        now = 0.0
        out = session.start(now)
        i = 3 + req_len
        while True:
            for datagram in out:
                sent = parse_packet(datagram)
                if isinstance(sent, Data):
                    assert len(sent.payload) <= session.blksize <= 1468
                else:
                    assert not isinstance(sent, OptionAck) or session.accepted
            if session.finished:
                assert session.deadline is None and session.outcome is not None
            else:
                assert session.deadline is not None
            assert session.bytes_acked <= size
            if i + 3 > len(data):
                break
            kind, dt, length = data[i], data[i + 1], data[i + 2]
            chunk = data[i + 3:i + 3 + length]
            i += 3 + length
            now += dt / 16
            if kind & 3 == 3:
                session.supersede(now)
                out = []
            else:
                out = session.on_timer(now) if kind & 1 else session.on_datagram(chunk, now)

    return {"dhcp": dhcp, "tftp-codec": tftp_codec, "tftp-session": tftp_session,
            "dhcp-server": _dhcp_server_target()}


SERVER_IP = "192.0.2.1"
RESERVED_MAC, RESERVED_IP = "52:54:00:12:34:56", "192.0.2.20"
SOURCES = ("0.0.0.0", "192.0.2.100", "192.0.2.101", "192.0.2.20", "198.51.100.1",
           "203.0.113.9")


def _dhcp_server_target() -> Target:
    """Server mode's lease logic under a sequence of hostile messages.

    Layout: steps of (time delta in seconds, source index, length, packet bytes); each input
    runs against a fresh server with a 6-address local pool, a relayed pool, one reserved
    node and a cap of 7 records, so exhaustion, the cap and expiry are all reached.
    """
    import ipaddress

    from netbootd.dhcp.options import MessageType
    from netbootd.dhcp.packet import DhcpPacket
    from netbootd.dhcp.proxy import BootAnswer, pxe_request
    from netbootd.dhcp.server import LeaseServer, Pool, with_boot
    from netbootd.errors import MalformedPacket

    pools = (Pool.make("local", "192.0.2.0/24", "192.0.2.100", "192.0.2.105",
                       router=SERVER_IP, dns=(SERVER_IP,), domain="lab.test", lease_time=60),
             Pool.make("relayed", "198.51.100.0/24", "198.51.100.50", "198.51.100.52",
                       lease_time=120))
    ranges = {p.name: (p.first, p.last) for p in pools}
    answer = BootAnswer(SERVER_IP, "bios/lpxelinux.0")

    def run(data: bytes) -> None:
        server = LeaseServer(pools, SERVER_IP, reservations={RESERVED_MAC: RESERVED_IP},
                             hostnames={RESERVED_MAC: "node1"}, max_leases=7,
                             offer_hold=10.0, decline_hold=30.0)
        now, i = 1_000_000.0, 0
        while i + 4 <= len(data):
            dt, src, length = data[i], data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            raw = data[i + 4:i + 4 + length]
            i += 4 + length
            now += dt
            try:
                packet = DhcpPacket.parse(raw)
            except MalformedPacket:
                continue
            out = server.handle(packet, now=now, source=SOURCES[src % len(SOURCES)])
            if out.reply is not None:
                assert out.destination is not None and 0 < out.destination[1] < 65536
                assert DhcpPacket.parse(out.reply.to_bytes()) == out.reply
                req = pxe_request(packet)
                if req is not None and out.kind in ("offer", "ack"):
                    with_boot(out.reply, packet, req, answer, offer_bootfile=bool(dt & 1))
                if out.kind in ("offer", "ack"):
                    ip = out.reply.yiaddr
                    assert out.lease is not None and out.lease.ip == ip
                    if ip == RESERVED_IP:
                        assert packet.mac == RESERVED_MAC, "reserved address to another client"
                    else:
                        lo, hi = ranges[out.lease.pool]
                        assert lo <= int(ipaddress.IPv4Address(ip)) <= hi, "outside the pool"
                if out.kind == "nak":
                    assert out.reply.message_type is MessageType.NAK
            leases = server.all_leases()
            assert server.unconfigured_records <= 7, "lease cap exceeded"
            assert len({x.ip for x in leases}) == len(leases)
            owners = [x.client for x in leases if x.client]
            assert len(owners) == len(set(owners)), "one client holds two records"
            assert all(x.ip != RESERVED_IP or x.mac in (RESERVED_MAC, None) for x in leases)

    return run


# ---------------------------------------------------------------------------------- seeds
def _dhcp_option(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def _dhcp_seed(options: bytes, *, op: int = 1, giaddr: bytes = bytes(4), file: bytes = b"",
               sname: bytes = b"") -> bytes:
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, 0x1A2B3C4D, 0, 0x8000,
                         bytes(4), bytes(4), bytes(4), giaddr,
                         bytes.fromhex("525400123456") + bytes(10), sname, file)
    return (header + b"\x63\x82\x53\x63" + options + b"\xff").ljust(300, b"\x00")


GUID_97 = bytes.fromhex("004f5a1c8e7d2b394c9a600f1e2d3c4b5a")
PXE_BIOS = b"PXEClient:Arch:00000:UNDI:002001"
PXE_EFI = b"PXEClient:Arch:00007:UNDI:003000"


def dhcp_seeds() -> list[bytes]:
    """Real client shapes (pxe-facts.md client table) and the hostile ones of the probe suite."""
    o = _dhcp_option
    return [
        # SeaBIOS + iPXE ROM DISCOVER
        _dhcp_seed(o(53, b"\x01") + o(57, b"\x05\xc0") + o(93, b"\x00\x00") +
                   o(94, b"\x01\x02\x01") + o(60, PXE_BIOS) + o(77, b"iPXE") +
                   o(55, bytes([1, 3, 6, 43, 60, 66, 67, 175])) + o(97, GUID_97)),
        # OVMF DISCOVER and its 4011 REQUEST
        _dhcp_seed(o(53, b"\x01") + o(93, b"\x00\x07") + o(97, GUID_97) + o(60, PXE_EFI)),
        _dhcp_seed(o(53, b"\x03") + o(93, b"\x00\x07") + o(97, GUID_97) + o(60, PXE_EFI) +
                   o(50, bytes([192, 0, 2, 50]))),
        # UEFI HTTP Boot, relayed
        _dhcp_seed(o(53, b"\x01") + o(93, b"\x00\x10") +
                   o(60, b"HTTPClient:Arch:00016:UNDI:003001"), giaddr=bytes([198, 51, 100, 1])),
        # option overload: 52 in the option area, file and sname full of options (and of 52)
        _dhcp_seed(o(53, b"\x01") + o(52, b"\x03") + o(60, PXE_BIOS),
                   file=o(52, b"\x03") + o(43, b"A" * 60) + b"\xff",
                   sname=o(52, b"\x01") + o(93, b"\x00\x00") + b"\xff"),
        # a giant option 43 (RFC 3396 split over many instances)
        _dhcp_seed(o(53, b"\x01") + o(60, PXE_BIOS) +
                   b"".join(o(43, bytes(255)) for _ in range(5))),
    ]


def tftp_seeds() -> list[bytes]:
    return [
        b"\x00\x01bios/lpxelinux.0\x00octet\x00",
        b"\x00\x01pxelinux.cfg/01-52-54-00-12-34-56\x00octet\x00blksize\x001468\x00tsize\x000\x00",
        b"\x00\x01ipxe.efi\x00octet\x00blksize\x001468\x00windowsize\x004\x00timeout\x001\x00",
        b"\x00\x01a\x00netascii\x00blksize\x00abc\x00",
        b"\x00\x02x\x00octet\x00",
        b"\x00\x03\x00\x01hello",
        b"\x00\x04\x00\x01",
        b"\x00\x05\x00\x08tsize probe done\x00",
        b"\x00\x06blksize\x00512\x00",
    ]


def session_seeds() -> list[bytes]:
    """A 9 KB file fetched with windowsize 4 and acks, losses and a client error."""
    def step(kind: int, dt: int, data: bytes) -> bytes:
        return bytes((kind, dt, len(data))) + data

    request = b"f\x00octet\x00blksize\x00512\x00windowsize\x004\x00tsize\x000\x00"
    acks = b"".join(step(0, 1, b"\x00\x04" + struct.pack("!H", n)) for n in range(0, 20, 2))
    return [
        struct.pack("!H", 3000) + bytes((len(request),)) + request + acks,
        struct.pack("!H", 3000) + bytes((len(request),)) + request + step(1, 20, b"") +
        step(0, 1, b"\x00\x05\x00\x08x\x00"),
        struct.pack("!H", 0) + b"\x08f\x00octet\x00" + step(0, 0, b"\x00\x04\x00\x01"),
    ]


def _server_msg(mtype: int, mac: bytes, *, dt: int = 1, src: int = 0, extra: bytes = b"",
                ciaddr: bytes = bytes(4), giaddr: bytes = bytes(4)) -> bytes:
    o = _dhcp_option
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x1A2B3C4D, 0, 0,
                         ciaddr, bytes(4), bytes(4), giaddr, mac + bytes(10), b"", b"")
    packet = (header + b"\x63\x82\x53\x63" + o(53, bytes((mtype,))) + extra + b"\xff")
    packet = packet.ljust(300, b"\x00")
    return bytes((dt, src)) + struct.pack("!H", len(packet)) + packet


def server_seeds() -> list[bytes]:
    """DORA of a plain and a PXE client, renew, release, decline, inform, relayed, the node."""
    o = _dhcp_option
    a, b = bytes.fromhex("0200000000aa"), bytes.fromhex("0200000000bb")
    node = bytes.fromhex("525400123456")
    sid = o(54, bytes([192, 0, 2, 1]))
    ip100 = bytes([192, 0, 2, 100])
    pxe = o(60, PXE_BIOS) + o(93, b"\x00\x00") + o(97, GUID_97)
    m = _server_msg
    return [
        m(1, a) + m(3, a, extra=o(50, ip100) + sid) + m(3, a, dt=40, src=1, ciaddr=ip100) +
        m(7, a, src=1, ciaddr=ip100, extra=sid),
        m(1, node, extra=pxe) + m(3, node, extra=pxe + o(50, bytes([192, 0, 2, 20])) + sid) +
        m(1, b, extra=o(50, bytes([192, 0, 2, 20]))) + m(3, b, extra=o(50, bytes([192, 0, 2, 20]))),
        m(1, a) + m(3, a, extra=o(50, ip100) + sid) + m(4, a, extra=o(50, ip100) + sid) +
        m(1, b) + m(8, b, src=2, ciaddr=bytes([192, 0, 2, 101])),
        m(1, a, giaddr=bytes([198, 51, 100, 1]), src=4) +
        m(3, a, giaddr=bytes([198, 51, 100, 1]), src=4,
          extra=o(50, bytes([198, 51, 100, 50])) + sid) +
        m(7, b, src=1, ciaddr=ip100, extra=sid) + m(3, b, extra=o(50, ip100)),
        b"".join(m(1, bytes([2, 0, 0, 0, 1, n])) for n in range(8)) + m(1, a, dt=20),
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "dhcp": dhcp_seeds, "tftp-codec": tftp_seeds, "tftp-session": session_seeds,
    "dhcp-server": server_seeds,
}


# ---------------------------------------------------------------------------------- engines
def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # cut the tail
            del buf[pos:]
        elif op == 2:  # insert bytes
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif op == 3:  # interesting values: lengths and block numbers at their edges
            buf[pos:pos] = rng.choice([b"\x00", b"\xff", b"\x00\x00", b"\xff\xff", b"\x7f",
                                       b"\x34\x01\x03", b"\x2b\xff", b"0", b"65464", b"abc"])
        elif op == 4:  # splice with another seed
            other = rng.choice(seeds)
            buf[pos:] = other[rng.randrange(len(other) + 1):]
        elif buf:  # duplicate a slice (option loops, repeated options)
            a = rng.randrange(len(buf))
            buf[pos:pos] = buf[a:a + rng.randint(1, 40)]
    return bytes(buf)


def run_random(target: Target, seeds: list[bytes], inputs: int, seed: int) -> int:
    rng = random.Random(seed)
    for n in range(inputs):
        if n < len(seeds):
            data = seeds[n]
        elif rng.random() < 0.05:
            data = rng.randbytes(rng.randrange(1600))
        else:
            data = _mutate(rng, rng.choice(seeds), seeds)
        try:
            target(data)
        except Exception:
            print(f"fuzz: CRASH on input {n}: {data.hex()}", file=sys.stderr)
            traceback.print_exc()
            return 1
    return 0


def run_atheris(name: str, seeds: list[bytes], inputs: int, seed: int) -> int:
    """libFuzzer in a child process: it calls exit() when done, so the parent reports."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="netbootd-fuzz-") as corpus:
        for i, s in enumerate(seeds):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(s)
        proc = subprocess.run(
            [sys.executable, __file__, "--target", name, "--atheris-child", "--inputs",
             str(inputs), "--seed", str(seed), corpus],
            check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = proc.stdout.splitlines()
    progress = [line for line in lines if line[:2].startswith("#") and line[1:2].isdigit()]
    if proc.returncode == 0:
        # libFuzzer prints a progress line per new coverage; the last one and the summary do.
        print("\n".join([*progress[-1:], *(ln for ln in lines if ln.startswith("Done "))]))
        return 0
    print("\n".join(lines[-60:]))  # the Python traceback and the crashing input
    return 1


def _atheris_child(name: str, inputs: int, seed: int, corpus: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["netbootd"]):
        targets = _targets()
    max_len = "1600" if name not in ("tftp-session", "dhcp-server") else "4096"
    atheris.Setup([sys.argv[0], f"-runs={inputs}", f"-seed={seed}", f"-max_len={max_len}",
                   "-print_final_stats=1", corpus], targets[name])
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--target", choices=(*TARGET_NAMES, "all"), default="all")
    p.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    p.add_argument("--engine", choices=("atheris", "random"), default="atheris")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--atheris-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("corpus", nargs="?", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.atheris_child:
        _atheris_child(args.target, args.inputs, args.seed, args.corpus)
        return 0
    names = TARGET_NAMES if args.target == "all" else (args.target,)
    failed = 0
    for name in names:
        started = time.monotonic()
        seeds = SEEDS[name]()
        if args.engine == "atheris":
            rc = run_atheris(name, seeds, args.inputs, args.seed)
        else:
            rc = run_random(_targets()[name], seeds, args.inputs, args.seed)
        failed |= rc
        print(f"fuzz: target={name} engine={args.engine} inputs={args.inputs} "
              f"crashes={rc} seconds={time.monotonic() - started:.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
