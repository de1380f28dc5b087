"""Faults (docs/security.md, "Faults"): SIGKILL and restart, SIGHUP under load, bad configs.

Each test runs ``python -m netbootd serve`` as a child process and ends it by its pid.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from hostile import (
    PAYLOAD,
    REPO,
    Served,
    ServerProcess,
    curl_tftp,
    served_config,
    sha256,
    tftp_fetch,
    tftp_rrq,
)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

PXE_DISCOVER = bytes(
    BOOTP(op=1, chaddr=bytes.fromhex("525400000002") + bytes(10), xid=9, giaddr="127.0.0.1")
    / DHCP(options=[("message-type", "discover"), ("client-arch", b"\0\0"),
                    ("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), "end"]))


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def test_sigkill_while_serving_then_restart_is_clean(tmp_path: Path) -> None:
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(5)
    served = served_config(tmp_path, payload_size=8_000_000, relay_port=relay.getsockname()[1])
    server = ServerProcess(served, tmp_path / "netbootd.log").start()
    stalled: list[socket.socket] = []
    try:
        for _ in range(20):  # boot events being written when the kill comes
            relay.sendto(PXE_DISCOVER, ("127.0.0.1", served.dhcp_port))
            relay.recvfrom(4096)
        # HTTP downloads the clients stop reading: the server is mid-write on each.
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", served.http_port))
            s.sendall(b"GET /loaders/files/payload.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        # A TFTP transfer that is never acknowledged, and one running.
        tftp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tftp.sendto(tftp_rrq(PAYLOAD), ("127.0.0.1", served.tftp_port))
        stalled.append(tftp)
        time.sleep(0.5)
        server.signal(signal.SIGKILL)
        assert server.proc is not None and server.proc.wait(10) == -signal.SIGKILL
        # Restart at once on the same ports and the same state directory.
        restarted = ServerProcess(served, tmp_path / "netbootd.log").start()
        try:
            assert asyncio.run(curl_tftp(served.tftp_port, PAYLOAD)) == served.payload
            response = http_get(served.http_port, "/loaders/files/payload.bin")
            assert response.startswith(b"HTTP/1.1 200 ")
            assert sha256(response.split(b"\r\n\r\n", 1)[1]) == sha256(served.payload)
            relay.sendto(PXE_DISCOVER, ("127.0.0.1", served.dhcp_port))
            assert relay.recvfrom(4096)[0]
        finally:
            restarted.stop()
        assert restarted.proc is not None and restarted.proc.returncode == 0
    finally:
        for s in stalled:
            s.close()
        relay.close()
        server.kill()
    # The database is whole, holds what was committed before the kill and what came after,
    # and nothing still locks it.
    with sqlite3.connect(served.state_db, timeout=1) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        offers = db.execute("SELECT COUNT(*) FROM events WHERE mac='52:54:00:00:00:02' AND "
                            "kind='dhcp-offer'").fetchone()[0]
        assert offers == 21
        db.execute("BEGIN IMMEDIATE")  # takes the write lock: no stale lock is left
        db.execute("ROLLBACK")


def test_sighup_reload_during_a_100_client_storm(tmp_path: Path) -> None:
    """100 clients on 100 addresses download while the config is reloaded five times."""
    served = served_config(tmp_path, payload_size=600_000)
    server = ServerProcess(served, tmp_path / "netbootd.log").start()
    name = "bios/pxelinux.cfg/01-52-54-00-77-00-01"  # an unknown node: the default group
    try:
        before = asyncio.run(curl_tftp(served.tftp_port, name))
        assert before is not None and b"boots demo/1.0" in before

        async def storm() -> list[bytes | None]:
            downloads = [curl_tftp(served.tftp_port, PAYLOAD, interface=f"127.0.0.{10 + i}",
                                   timeout=240) for i in range(100)]
            return await asyncio.gather(*downloads, reload_repeatedly())

        async def reload_repeatedly() -> None:
            await asyncio.sleep(0.5)
            served.data["groups"]["default"]["build"] = "demo/2.0"
            served.write()
            for _ in range(5):
                server.signal(signal.SIGHUP)
                await asyncio.sleep(0.4)

        results = asyncio.run(storm())[:100]
        assert server.alive()
        failed = [i for i, r in enumerate(results)
                  if r is None or sha256(r) != sha256(served.payload)]
        assert failed == [], f"{len(failed)} failed transfers: {failed}"
        after = asyncio.run(curl_tftp(served.tftp_port, name))
        assert after is not None and b"boots demo/2.0" in after
    finally:
        counters = server.stop()
    assert server.log_text().count("reloaded ") == 5
    assert counters["tftp_transfers{outcome=completed}"] == 100 + 2
    assert not {k for k in counters if k.startswith("tftp_transfers") and "completed" not in k}
    assert counters.get("tftp_errors", 0) == 0


def serve_with(config: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netbootd", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)


def broken_configs(served: Served) -> dict[str, tuple[Path, list[str]]]:
    """name -> (config path, phrases the error must contain)."""
    tmp = served.tmp
    text = served.path.read_text()
    cases: dict[str, tuple[str | bytes | None, list[str]]] = {
        "missing": (None, ["cannot read the file", "No such file"]),
        "a-directory": (None, ["cannot read the file", "Is a directory"]),
        "not-utf8": (b"\xff\xfe[server]\n", ["not valid TOML"]),
        "not-toml": ("[server\naddress = 1", ["not valid TOML"]),
        "bad-values": (text.replace(f"port = {served.tftp_port}", "port = 70000")
                       .replace('address = "127.0.0.1"', 'address = "nope"', 1)
                       + "\n[state]\nmax_nodes = 0\nbogus = 1\n",
                       ["tftp.port: must be 0..65535", "server.address: must be an IPv4",
                        "state.max_nodes: must be between", "state.bogus: unknown key",
                        "4 problem(s)"]),
    }
    out: dict[str, tuple[Path, list[str]]] = {}
    for name, (content, phrases) in cases.items():
        path = tmp / f"{name}.toml"
        if name == "a-directory":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        out[name] = (path, phrases)
    return out


def test_invalid_config_exits_with_a_clear_message_and_starts_nothing(tmp_path: Path) -> None:
    served = served_config(tmp_path)
    state_dir = Path(served.data["server"]["state_dir"])
    for name, (path, phrases) in broken_configs(served).items():
        proc = serve_with(path)
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
        message = proc.stderr
        assert "Traceback" not in message, (name, message)
        for phrase in phrases:
            assert phrase in message, (name, phrase, message)
        assert "netbootd serving" not in proc.stdout + message
        assert not state_dir.exists(), f"{name}: a state directory was created"
        for kind, port in ((socket.SOCK_DGRAM, served.tftp_port),
                           (socket.SOCK_DGRAM, served.dhcp_port),
                           (socket.SOCK_STREAM, served.http_port)):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))  # nothing was left bound


def test_a_port_in_use_is_named_and_the_other_ports_are_released(tmp_path: Path) -> None:
    served = served_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", served.http_port))
        taken.listen()
        proc = serve_with(served.path)
    assert proc.returncode == 2, proc.stderr
    assert f"http: cannot listen on 127.0.0.1:{served.http_port}: Address already in use" \
        in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    for kind, port in ((socket.SOCK_DGRAM, served.tftp_port),
                       (socket.SOCK_DGRAM, served.dhcp_port),
                       (socket.SOCK_DGRAM, served.proxy_port)):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))
    # And the same config serves once the port is free.
    server = ServerProcess(served, tmp_path / "netbootd.log").start()
    try:
        data, _ = asyncio.run(fetch(served))
        assert sha256(data) == sha256(served.payload)
    finally:
        server.stop()


def test_the_admin_port_in_use_is_named_without_a_traceback(tmp_path: Path) -> None:
    served = served_config(tmp_path)
    admin_port = served.data["admin"]["port"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", admin_port))
        taken.listen()
        proc = serve_with(served.path)
    assert proc.returncode == 2, proc.stderr
    assert f"admin: cannot listen on 127.0.0.1:{admin_port}: Address already in use" \
        in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


async def fetch(served: Served) -> tuple[bytes, dict[str, str]]:
    return await tftp_fetch(served.tftp_port, tftp_rrq(PAYLOAD))
