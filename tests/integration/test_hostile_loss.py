"""TFTP under packet loss (docs/security.md, "Loss").

A transfer under 20 % random loss completes intact: the server and tftp-hpa's client run in a
network namespace the test creates, where nftables drops 20 % of the UDP datagrams received
(both directions of the transfer pass through it); the server's timeout-driven retransmission
(RFC 1350; RFC 1123 4.2.3.1: only on timeout) carries it through. And a lost final ACK does not
block the client's next request.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import private_netns
from hostile import (
    PAYLOAD,
    ServerProcess,
    add_loss,
    dropped_packets,
    running_service,
    served_config,
    sha256,
    tftp_rrq,
)

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed"),
    pytest.mark.skipif(shutil.which("tftp") is None, reason="tftp-hpa not installed"),
]


@pytest.fixture
def netns() -> Iterator[str]:
    with private_netns("nbdloss") as name:
        yield name


def test_tftp_transfer_under_20_percent_loss(netns: str, tmp_path: Path) -> None:
    # retries 10: at 20 % loss each way a round trip fails 36 % of the time; 11 attempts in a
    # row fail once in 75 000 blocks. A 0.2 s timeout keeps the test short: each loss costs one.
    served = served_config(tmp_path, payload_size=100_000,
                           tftp={"timeout": 0.2, "retries": 10}, dhcp={"enabled": False})
    server = ServerProcess(served, tmp_path / "netbootd.log", netns=netns).start()
    out = tmp_path / "downloaded.bin"
    try:
        table = add_loss(netns, 20)
        # tftp-hpa's client: plain RFC 1350 (no options), and it answers every duplicate DATA
        # with an ACK as the RFC asks. (curl asks for a 6 s timeout option, so every loss
        # costs 6 s; atftp stops re-acknowledging a duplicate after one extra ACK.)
        proc = subprocess.run(["ip", "netns", "exec", netns, "tftp", "-m", "binary",
                               "127.0.0.1", str(served.tftp_port), "-c", "get", PAYLOAD,
                               str(out)], capture_output=True, text=True, timeout=400,
                              check=False)
        dropped = dropped_packets(netns, table)
        # If the final ACK was lost the server retransmits until its retries run out
        # (0.2 s x 11): let it conclude before stopping it.
        time.sleep(4)
    finally:
        counters = server.stop()
    print(f"20 % loss: dropped={dropped} counters={counters}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(out.read_bytes()) == sha256(served.payload)
    assert dropped > 20  # the loss was real...
    assert counters["tftp_retransmits"] > 0  # ...and the server's timer recovered from it
    # The client's final ACK may itself be lost (20 %): it has the file, but the server cannot
    # tell and ends the transfer as timed out after its retries. Either way, one transfer.
    assert counters.get("tftp_transfers{outcome=completed}", 0) + \
        counters.get("tftp_transfers{outcome=timed-out}", 0) == 1


async def test_a_new_request_after_a_lost_final_ack_is_served(tmp_path: Path) -> None:
    """pxelinux sends every RRQ from one port (49153). When its final ACK of one file is lost
    it asks for the next file from the same port at once: that request must be served, not
    ignored as a duplicate until the stale transfer times out (seen in the 10 % loss boot).
    """
    served = served_config(tmp_path, payload_size=2000, dhcp={"enabled": False},
                           tftp={"timeout": 5.0})
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        async with running_service(served) as service:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            port = served.tftp_port
            sock.sendto(tftp_rrq(PAYLOAD), ("127.0.0.1", port))
            got = bytearray()
            while True:  # 2000 bytes: blocks 1-3 of 512 and a last one of 464
                data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 5)
                got += data[4:]
                if len(data) - 4 < 512:
                    break  # the final ACK is "lost": never sent
                sock.sendto(b"\x00\x04" + data[2:4], peer)
            assert bytes(got) == served.payload
            # The same request again is a retransmission: ignored while the transfer runs.
            sock.sendto(tftp_rrq(PAYLOAD), ("127.0.0.1", port))
            # The next file, from the same port, is served at once (well before the 5 s timeout).
            sock.sendto(tftp_rrq("bios/pxelinux.cfg/01-52-54-00-00-00-02"), ("127.0.0.1", port))
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
            while data[:4] == b"\x00\x03\x00\x04":  # a late retransmission of the old last block
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
            assert data[:4] == b"\x00\x03\x00\x01" and b"DEFAULT" in data.upper()
    counters = service.counters
    assert counters.get("tftp_ignored", reason="duplicate-request") == 1
    # The first transfer counts as completed: every block was sent and the client moved on.
    assert counters.get("tftp_transfers", outcome="completed") == 1
