"""The whole service on loopback: a config name that names no MAC (``pxelinux.cfg/default``)
and the downloads that follow are tied to a node only while the address's MAC is fresh.

Before: once a node had fetched its config from an address, a later client at that address got
the node's config (its MAC and first-boot token) for ``default``, and its downloads were filed
in the node's timeline. Now the pair expires after ``state.ip_mac_ttl`` and a newer MAC at the
address replaces it. The clock is the service's own (pinned, moved by the test).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import TEST_NOW, loopback_config, make_store
from netbootd.config import parse_config
from netbootd.service import Service

DB1 = "52:54:00:00:00:02"  # role=db
KIOSK = "52:54:00:00:00:04"
TTL = 300.0

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


class Clock:
    def __init__(self) -> None:
        self.now = TEST_NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Service, Clock]]:
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path, state={"ip_mac_ttl": TTL})
    clock = Clock()
    service = Service(parse_config(data, "test"), clock=clock)
    await service.start()
    try:
        yield service, clock
    finally:
        await service.stop()


async def tftp(service: Service, name: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", f"tftp://127.0.0.1:{service.tftp_port}/{name}", "-o", "-",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, name
    return out.decode()


def sent_files(service: Service, mac: str) -> list[str]:
    return [str(e.detail["file"]) for e in service.state.timeline(mac) if e.kind == "tftp-sent"]


async def until(check: object, what: str) -> None:
    """Poll the state (the TFTP done callback runs after curl has its last block)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)


async def test_default_and_downloads_follow_the_fresh_mac_at_the_address(
        served: tuple[Service, Clock]) -> None:
    service, clock = served
    # db1 names itself, then asks `default` from the same address: its own config.
    assert "role=db" in await tftp(service, "bios/pxelinux.cfg/01-52-54-00-00-00-02")
    assert "role=db" in await tftp(service, "bios/pxelinux.cfg/default")
    await until(lambda: sent_files(service, DB1).count("bios/pxelinux.cfg/default") == 1,
                "db1's default in its timeline")

    # Past the ttl, a client at that address that names no MAC is nobody we know.
    clock.now += TTL
    cfg = await tftp(service, "bios/pxelinux.cfg/default")
    assert "role=db" not in cfg and "52-54-00-00-00-02" not in cfg and "LOCALBOOT 0" in cfg
    # Its transfer is filed under no node: db1's timeline still has the one `default`.
    assert await tftp(service, "bios/pxelinux.cfg/01-52-54-00-00-00-04")  # a marker, below
    await until(lambda: "bios/pxelinux.cfg/01-52-54-00-00-00-04" in sent_files(service, KIOSK),
                "the kiosk's transfer recorded")
    assert sent_files(service, DB1).count("bios/pxelinux.cfg/default") == 1

    # The kiosk named itself at that address (within the ttl): `default` is the kiosk's now,
    # and lands in the kiosk's timeline, not db1's.
    cfg = await tftp(service, "bios/pxelinux.cfg/default")
    assert "52-54-00-00-00-04" in cfg and "role=db" not in cfg
    await until(lambda: "bios/pxelinux.cfg/default" in sent_files(service, KIOSK),
                "the kiosk's default in its timeline")
    assert sent_files(service, DB1).count("bios/pxelinux.cfg/default") == 1
