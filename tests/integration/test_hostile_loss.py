"""A TFTP transfer under 20 % random packet loss completes intact (docs/security.md, "Loss").

The server and curl run in a network namespace the test creates; nftables drops 20 % of the
UDP datagrams received there (both directions of the transfer pass through it). The server's
timeout-driven retransmission (RFC 1350; RFC 1123 4.2.3.1: only on timeout) carries it through.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostile import (
    PAYLOAD,
    ServerProcess,
    add_loss,
    dropped_packets,
    served_config,
    sha256,
)

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) not installed"),
    pytest.mark.skipif(shutil.which("tftp") is None, reason="tftp-hpa not installed"),
]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"nbdloss-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


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
    finally:
        counters = server.stop()
    print(f"20 % loss: dropped={dropped} counters={counters}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(out.read_bytes()) == sha256(served.payload)
    assert dropped > 20  # the loss was real...
    assert counters["tftp_retransmits"] > 0  # ...and the server's timer recovered from it
    assert counters["tftp_transfers{outcome=completed}"] == 1
