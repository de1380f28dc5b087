"""TftpServer against real TFTP clients (curl, atftp, tftp-hpa, tftpy) on loopback.

Every download is checked by sha256 against the served file. Raw-socket clients cover what
the stock clients cannot be made to do: a foreign TID, EDK2's tsize probe, a busy server.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from netbootd.errors import NotFound, PathRefused
from netbootd.metrics import Counters
from netbootd.tftp.endpoint import TftpServer, TransferRecord
from netbootd.tftp.packet import Ack, Data, Error, OptionAck, ReadRequest, parse_packet
from netbootd.tftp.session import OutcomeKind, SessionLimits, TftpSource
from netbootd.tftp.sources import FileSource

ROLLOVER_SIZE = 65536 * 512 + 100  # more blocks than a 16-bit counter holds at blksize 512


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed on this machine")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tftproot")
    sizes = {"small.bin": 100_003, "exact.bin": 1468 * 40, "empty.bin": 0}
    out: dict[str, Path] = {}
    for name, size in sizes.items():
        p = root / name
        p.write_bytes(bytes((i * 7 + 3) % 256 for i in range(size)))
        out[name] = p
    big = root / "big.bin"
    # Non-repeating content so a mis-ordered block after the wrap would change the digest.
    with big.open("wb") as fh:
        block = hashlib.sha256(b"seed").digest() * 2048
        for i in range(ROLLOVER_SIZE // len(block) + 1):
            fh.write(hashlib.sha256(i.to_bytes(4, "big")).digest() + block[32:])
    with big.open("r+b") as fh:
        fh.truncate(ROLLOVER_SIZE)
    out["big.bin"] = big
    out["sub/dir/file.txt"] = root / "nested.txt"
    out["sub/dir/file.txt"].write_text("nested\n")
    return out


class Harness:
    def __init__(
        self,
        server: TftpServer,
        counters: Counters,
        records: list[TransferRecord],
        opened: list[FileSource],
    ) -> None:
        self.server = server
        self.counters = counters
        self.records = records
        self.opened = opened

    @property
    def port(self) -> int:
        return self.server.port


def make_resolver(
    files: dict[str, Path], opened: list[FileSource]
) -> Callable[[str, tuple[str, int]], TftpSource]:
    def resolve(name: str, client: tuple[str, int]) -> TftpSource:
        if name == "secret":
            raise PathRefused("not for you")
        if name == "explode":
            raise RuntimeError("resolver bug")
        path = files.get(name)
        if path is None:
            raise NotFound(f"no {name!r}")
        src = FileSource(path)
        opened.append(src)
        return src

    return resolve


async def start_server(files: dict[str, Path], **kwargs: object) -> Harness:
    counters = Counters()
    records: list[TransferRecord] = []
    opened: list[FileSource] = []
    limits = kwargs.pop("limits", SessionLimits(max_blksize=8192, timeout=0.5))
    server = TftpServer(
        make_resolver(files, opened),
        limits=limits,  # type: ignore[arg-type]
        counters=counters,
        on_transfer_done=records.append,
        **kwargs,  # type: ignore[arg-type]
    )
    await server.start("127.0.0.1", 0)
    return Harness(server, counters, records, opened)


@pytest.fixture
async def harness(files: dict[str, Path]) -> AsyncIterator[Harness]:
    h = await start_server(files)
    yield h
    await h.server.stop()
    assert h.server.active_sessions == 0


async def run(*argv: str, timeout: float = 30.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def wait_records(h: Harness, n: int) -> None:
    # The client may exit a moment before the server has seen the final ACK.
    for _ in range(200):
        if len(h.records) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} transfer records, have {h.records}")


# ----------------------------------------------------------------- curl


@pytest.mark.parametrize("blksize", [512, 1468, 8192])
async def test_curl_download(
    harness: Harness, files: dict[str, Path], tmp_path: Path, blksize: int
) -> None:
    curl = need("curl")
    out = tmp_path / "out"
    url = f"tftp://127.0.0.1:{harness.port}/small.bin"
    rc, text = await run(curl, "-s", "-S", url, "--tftp-blksize", str(blksize), "-o", str(out))
    assert rc == 0, text
    assert sha256(out) == sha256(files["small.bin"])
    await wait_records(harness, 1)
    assert harness.records[0].outcome is OutcomeKind.COMPLETED
    assert harness.records[0].blksize == blksize


async def test_curl_blksize_clamped_by_default_limits(
    files: dict[str, Path], tmp_path: Path
) -> None:
    curl = need("curl")
    h = await start_server(files, limits=SessionLimits())
    try:
        out = tmp_path / "out"
        url = f"tftp://127.0.0.1:{h.port}/exact.bin"
        rc, text = await run(curl, "-s", "-S", url, "--tftp-blksize", "8192", "-o", str(out))
        assert rc == 0, text
        assert sha256(out) == sha256(files["exact.bin"])
        await wait_records(h, 1)
        assert h.records[0].blksize == 1468
    finally:
        await h.server.stop()


async def test_curl_rollover_over_32mb_at_512(
    harness: Harness, files: dict[str, Path], tmp_path: Path
) -> None:
    curl = need("curl")
    out = tmp_path / "big"
    url = f"tftp://127.0.0.1:{harness.port}/big.bin"
    rc, text = await run(curl, "-s", "-S", url, "--tftp-blksize", "512", "-o", str(out), timeout=40)
    assert rc == 0, text
    assert out.stat().st_size == ROLLOVER_SIZE
    assert sha256(out) == sha256(files["big.bin"])
    await wait_records(harness, 1)
    assert harness.records[0].outcome is OutcomeKind.COMPLETED
    assert harness.records[0].bytes_transferred == ROLLOVER_SIZE


async def test_curl_missing_file(harness: Harness, tmp_path: Path) -> None:
    curl = need("curl")
    rc, _ = await run(
        curl, "-s", f"tftp://127.0.0.1:{harness.port}/nope", "-o", str(tmp_path / "x")
    )
    assert rc != 0
    assert harness.counters.get("tftp_refused", reason="not-found") == 1
    assert harness.records[0].outcome is OutcomeKind.REFUSED
    assert harness.records[0].error_code == 1


async def test_garbage_on_listener_then_download(
    harness: Harness, files: dict[str, Path], tmp_path: Path
) -> None:
    curl = need("curl")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (
            b"\xff" * 3000,
            b"\x00",
            b"\x00\x09hello",
            b"\x00\x01\x00\x00",
            b"\x00\x04\x00\x01",
            b"\x00\x05\x00\x00oops\x00",
        ):
            s.sendto(junk, ("127.0.0.1", harness.port))
    await asyncio.sleep(0.05)
    out = tmp_path / "out"
    rc, text = await run(
        curl, "-s", "-S", f"tftp://127.0.0.1:{harness.port}/small.bin", "-o", str(out)
    )
    assert rc == 0, text
    assert sha256(out) == sha256(files["small.bin"])
    c = harness.counters
    assert c.get("tftp_malformed", reason="too-long") == 1
    assert c.get("tftp_malformed") == 4
    assert c.get("tftp_ignored", reason="ack-on-listener") == 1
    assert c.get("tftp_ignored", reason="error-on-listener") == 1
    assert c.get("tftp_errors") == 0


# ----------------------------------------------------------------- atftp


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("small.bin", ["blksize 512"]),
        ("small.bin", ["blksize 1468"]),
        ("small.bin", ["blksize 8192"]),
        ("exact.bin", ["blksize 1468", "windowsize 8"]),
        ("small.bin", ["blksize 8192", "windowsize 8", "tsize 0"]),
        ("empty.bin", ["windowsize 8"]),
        ("sub/dir/file.txt", []),
    ],
)
async def test_atftp_download(
    harness: Harness, files: dict[str, Path], tmp_path: Path, name: str, options: list[str]
) -> None:
    atftp = need("atftp")
    out = tmp_path / "out"
    argv = [atftp, "--get", "-r", name, "-l", str(out)]
    for opt in options:
        argv += ["--option", opt]
    rc, text = await run(*argv, "127.0.0.1", str(harness.port))
    assert rc == 0, text
    assert sha256(out) == sha256(files[name])
    await wait_records(harness, 1)
    record = harness.records[0]
    assert record.outcome is OutcomeKind.COMPLETED
    if "windowsize 8" in options:
        assert record.windowsize == 8


async def test_atftp_missing_and_refused(harness: Harness, tmp_path: Path) -> None:
    atftp = need("atftp")
    rc, text = await run(
        atftp, "--get", "-r", "nope", "-l", str(tmp_path / "x"), "127.0.0.1", str(harness.port)
    )
    assert rc != 0
    assert "not found" in text
    rc, text = await run(
        atftp, "--get", "-r", "secret", "-l", str(tmp_path / "y"), "127.0.0.1", str(harness.port)
    )
    assert rc != 0
    assert harness.counters.get("tftp_refused", reason="access") == 1


# ----------------------------------------------------------------- tftp-hpa


async def test_tftp_hpa_download(harness: Harness, files: dict[str, Path], tmp_path: Path) -> None:
    tftp = need("tftp")
    out = tmp_path / "out"
    rc, text = await run(
        tftp, "127.0.0.1", str(harness.port), "-m", "binary", "-c", "get", "exact.bin", str(out)
    )
    assert rc == 0, text
    assert sha256(out) == sha256(files["exact.bin"])


async def test_tftp_hpa_missing_file_and_wrq_refused(
    harness: Harness, files: dict[str, Path], tmp_path: Path
) -> None:
    tftp = need("tftp")
    # tftp-hpa exits 0 even on errors, so its message is what we check.
    _, text = await run(
        tftp,
        "127.0.0.1",
        str(harness.port),
        "-m",
        "binary",
        "-c",
        "get",
        "nope",
        str(tmp_path / "x"),
    )
    assert "Error code 1" in text
    _, text = await run(
        tftp,
        "127.0.0.1",
        str(harness.port),
        "-m",
        "binary",
        "-c",
        "put",
        str(files["small.bin"]),
        "upload.bin",
    )
    assert "Error code 2" in text
    assert harness.counters.get("tftp_refused", reason="write") == 1


# ----------------------------------------------------------------- tftpy


@pytest.mark.parametrize("blksize", [512, 1468, 8192])
async def test_tftpy_download(
    harness: Harness, files: dict[str, Path], tmp_path: Path, blksize: int
) -> None:
    tftpy = pytest.importorskip("tftpy")
    out = tmp_path / "out"

    def download() -> None:
        client = tftpy.TftpClient("127.0.0.1", harness.port, options={"blksize": blksize})
        client.download("small.bin", str(out), timeout=5)

    await asyncio.to_thread(download)
    assert sha256(out) == sha256(files["small.bin"])


# ----------------------------------------------------------------- raw sockets


class RawClient:
    """A blocking UDP client run in a thread, for exchanges stock clients cannot make."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def recv(self) -> tuple[object, tuple[str, int]]:
        data, addr = self.sock.recvfrom(70000)
        return parse_packet(data), addr

    def close(self) -> None:
        self.sock.close()


async def test_edk2_tsize_probe_then_windowed_download(
    harness: Harness, files: dict[str, Path]
) -> None:
    listen = ("127.0.0.1", harness.port)
    expected = files["small.bin"].read_bytes()

    def edk2() -> bytes:
        c = RawClient()
        try:
            c.send(ReadRequest("small.bin", "octet", {"tsize": "0"}).to_bytes(), listen)
            oack, tid = c.recv()
            assert oack == OptionAck({"tsize": str(len(expected))})
            c.send(Error(8, "got the size").to_bytes(), tid)
            c.send(
                ReadRequest(
                    "small.bin", "octet", {"blksize": "1468", "windowsize": "4"}
                ).to_bytes(),
                listen,
            )
            oack, tid = c.recv()
            assert oack == OptionAck({"blksize": "1468", "windowsize": "4"})
            c.send(Ack(0).to_bytes(), tid)
            got = bytearray()
            while True:
                pkt, _ = c.recv()
                assert isinstance(pkt, Data)
                got += pkt.payload
                if pkt.block % 4 == 0 or len(pkt.payload) < 1468:
                    c.send(Ack(pkt.block).to_bytes(), tid)
                if len(pkt.payload) < 1468:
                    return bytes(got)
        finally:
            c.close()

    assert await asyncio.to_thread(edk2) == expected
    await wait_records(harness, 2)
    kinds = [r.outcome for r in harness.records]
    assert kinds == [OutcomeKind.ABORTED, OutcomeKind.COMPLETED]
    assert harness.records[0].error_code == 8
    assert harness.counters.get("tftp_transfers", outcome="aborted-by-client") == 1


async def test_foreign_tid_gets_error_5_and_transfer_continues(
    harness: Harness, files: dict[str, Path]
) -> None:
    listen = ("127.0.0.1", harness.port)
    expected = files["exact.bin"].read_bytes()

    def exchange() -> bytes:
        a, b = RawClient(), RawClient()
        try:
            a.send(ReadRequest("exact.bin", "octet", {"blksize": "1468"}).to_bytes(), listen)
            _, tid = a.recv()
            assert tid != listen  # a new socket per transfer (RFC 1350 TID)
            b.send(Ack(0).to_bytes(), tid)
            err, _ = b.recv()
            assert isinstance(err, Error)
            assert err.code == 5
            a.send(Ack(0).to_bytes(), tid)
            got = bytearray()
            while True:
                pkt, src = a.recv()
                assert isinstance(pkt, Data)
                assert src == tid
                got += pkt.payload
                a.send(Ack(pkt.block).to_bytes(), tid)
                if len(pkt.payload) < 1468:
                    return bytes(got)
        finally:
            a.close()
            b.close()

    assert await asyncio.to_thread(exchange) == expected
    assert harness.counters.get("tftp_unknown_tid") == 1


async def test_busy_client_refused_and_stop_closes_sources(files: dict[str, Path]) -> None:
    h = await start_server(files, max_sessions_per_client=1)
    listen = ("127.0.0.1", h.port)

    def two_requests() -> object:
        a, b = RawClient(), RawClient()
        try:
            a.send(ReadRequest("small.bin", "octet", {}).to_bytes(), listen)
            first, _ = a.recv()
            assert isinstance(first, Data)
            # Same client resending its RRQ: ignored, not a second transfer.
            a.send(ReadRequest("small.bin", "octet", {}).to_bytes(), listen)
            b.send(ReadRequest("small.bin", "octet", {}).to_bytes(), listen)
            refused, _ = b.recv()
            return refused
        finally:
            a.close()
            b.close()

    try:
        refused = await asyncio.to_thread(two_requests)
        assert refused == Error(0, "server busy")
        assert h.server.active_sessions == 1
        assert h.counters.get("tftp_refused", reason="busy-client") == 1
        assert h.counters.get("tftp_ignored", reason="duplicate-request") == 1
    finally:
        await h.server.stop()
    assert h.server.active_sessions == 0
    assert len(h.opened) == 1
    with pytest.raises(OSError):
        h.opened[0].read(0, 1)  # closed by stop()
    assert [r.outcome for r in h.records] == [OutcomeKind.REFUSED, OutcomeKind.FAILED]


async def test_unanswered_transfer_times_out(files: dict[str, Path]) -> None:
    h = await start_server(files, limits=SessionLimits(timeout=0.05, retries=2))
    listen = ("127.0.0.1", h.port)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.sendto(ReadRequest("small.bin", "octet", {}).to_bytes(), listen)
            await wait_records(h, 1)
        assert h.records[0].outcome is OutcomeKind.TIMED_OUT
        assert h.records[0].retransmits == 2
        assert h.server.active_sessions == 0
        assert h.opened[0]._fd is None
    finally:
        await h.server.stop()


async def ask_once(port: int, filename: str, mode: str = "octet") -> tuple[object, tuple[str, int]]:
    """Send one RRQ from a fresh raw client; the first reply and the address it came from."""

    def ask() -> tuple[object, tuple[str, int]]:
        c = RawClient()
        try:
            c.send(ReadRequest(filename, mode, {}).to_bytes(), ("127.0.0.1", port))
            return c.recv()
        finally:
            c.close()

    return await asyncio.to_thread(ask)


async def test_resolver_crash_answers_error_0(harness: Harness) -> None:
    assert (await ask_once(harness.port, "explode"))[0] == Error(0, "internal error")
    assert harness.counters.get("tftp_refused", reason="error") == 1


async def test_wildcard_listener_replies_from_the_address_asked(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # Listening on 0.0.0.0: the transfer socket and error replies must use the address the
    # request was sent to (IP_PKTINFO), or clients that check the server address drop them.
    curl = need("curl")
    counters = Counters()
    records: list[TransferRecord] = []
    server = TftpServer(
        make_resolver(files, []), counters=counters, on_transfer_done=records.append
    )
    await server.start("0.0.0.0", 0)
    try:
        out = tmp_path / "out"
        url = f"tftp://127.0.0.1:{server.port}/small.bin"
        rc, text = await run(curl, "-s", "-S", url, "-o", str(out))
        assert rc == 0, text
        assert sha256(out) == sha256(files["small.bin"])

        err, src = await ask_once(server.port, "nope")
        assert err == Error(1, "file not found")
        assert src == ("127.0.0.1", server.port)
    finally:
        await server.stop()


async def test_mail_mode_refused_before_any_file_is_opened(harness: Harness) -> None:
    # The transfer-mode rule lives in session.refusal(); the server is where it is applied.
    answer, _ = await ask_once(harness.port, "small.bin", mode="mail")
    assert isinstance(answer, Error)
    assert answer.code == 4  # illegal TFTP operation
    assert harness.counters.get("tftp_refused", reason="mode") == 1
    assert harness.opened == []
    assert [r.outcome for r in harness.records] == [OutcomeKind.REFUSED]
