"""/metrics on a running service: after a DHCP exchange, TFTP downloads, HTTP requests and a
phone-home, the scrape (parsed with prometheus_client's own parser) holds the right values."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_service import Running, discover

from helpers import TEST_NOW, loopback_config, loopback_dhcp, make_store
from netbootd.config import parse_config
from netbootd.service import Service

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.setblocking(False)
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path, dhcp=loopback_dhcp(relay.getsockname()[1]))
    # One transfer per client address, so the test can hit a limit from 127.0.0.1.
    data["tftp"] |= {"max_sessions_per_client": 1, "timeout": 2.0, "retries": 3}
    service = Service(parse_config(data, "test"), clock=lambda: TEST_NOW)
    await service.start()
    try:
        yield Running(service, tmp_path / "unused.toml", relay)
    finally:
        await service.stop()
        relay.close()


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_scrape_after_dhcp_tftp_http_and_phone_home(running: Running) -> None:
    svc = running.service
    port = svc.config.dhcp.port
    pxe = b"PXEClient:Arch:00000:UNDI:002001"
    assert await running.dhcp(discover("52:54:00:00:00:02", vendor=pxe), port) is not None
    assert await running.dhcp(discover("52:54:00:10:00:01", vendor=b"udhcp", arch=None),
                              port, timeout=0.5) is None
    assert await running.dhcp(b"\x01\x01\x06", port, timeout=0.5) is None  # truncated

    assert await running.tftp("builds/demo/2.0/vmlinuz") == b"kernel 2.0"
    assert await running.tftp("builds/demo/2.0/nope") is None

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.http}/builds/demo/2.0/vmlinuz") as r:
            assert r.status == 200
        async with http.get(f"{running.http}/no/such/route") as r:
            assert r.status == 404
        async with http.get(f"{running.http}/ipxe/node.ipxe?mac=52-54-00-00-00-02&arch=7") as r:
            seed = re.search(r"ds=nocloud-net;s=http://[^/]+(\S+/)", await r.text())
        assert seed is not None
        async with http.get(running.http + seed[1] + "meta-data") as r:
            assert r.status == 200
        async with http.get(running.http + seed[1] + "user-data") as r:
            phone_home = re.search(r'url: "?http://[^/]+([^"\s]+)', await r.text())
        assert phone_home is not None
        async with http.post(running.http + phone_home[1], data={"build": "demo/2.0"}) as r:
            assert r.status == 200
        async with http.get(f"{running.http}/nocloud/52-54-00-00-00-02/demo/2.0/"
                            "1.2.forged/meta-data") as r:
            assert r.status == 403

        # One transfer held open (no ACK), a second one from the same address hits the limit.
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
            rrq = b"\x00\x01builds/demo/2.0/initrd.img\x00octet\x00"
            for s, opcode in ((held, b"\x00\x03"), (second, b"\x00\x05")):  # DATA, ERROR
                s.setblocking(False)
                s.sendto(rrq, ("127.0.0.1", svc.tftp_port or 0))
                reply = await asyncio.wait_for(loop.sock_recv(s, 1024), 5)
                assert reply[:2] == opcode
            during = await scrape(http, running.http)
        after = await scrape(http, running.http)

    m = during
    assert value(m, "netbootd_dhcp_answered_total", type="offer") == 1
    assert value(m, "netbootd_dhcp_ignored_total", reason="not-pxe") == 1
    assert sum(v for (n, _), v in m.items() if n == "netbootd_dhcp_malformed_total") == 1
    assert value(m, "netbootd_tftp_transfers_total", outcome="completed") == 1
    assert value(m, "netbootd_tftp_refused_total", reason="not-found") == 1
    assert value(m, "netbootd_tftp_bytes_sent_total") >= len(b"kernel 2.0")
    assert value(m, "netbootd_tftp_active_sessions") == 1
    assert ("netbootd_tftp_errors_total", frozenset()) in m  # exported before any error
    assert value(m, "netbootd_tftp_errors_total") == 0
    assert value(m, "netbootd_limits_hit_total", limit="tftp.max_sessions_per_client") == 1
    assert value(m, "netbootd_limits_hit_total", limit="tftp.max_sessions") == 0
    build_route = "/builds/{name}/{version}/{file}"
    assert value(m, "netbootd_http_requests_total", route=build_route, status="200") == 1
    assert value(m, "netbootd_http_requests_total", route="unmatched", status="404") == 1
    firstboot = "/nocloud/{key}/{name}/{version}/{token}/{what}"
    assert value(m, "netbootd_http_requests_total", route=firstboot, status="200") == 2
    assert value(m, "netbootd_http_requests_total", route=firstboot, status="403") == 1
    assert value(m, "netbootd_boots_total", build="demo/2.0") == 1
    assert value(m, "netbootd_phone_homes_total", build="demo/2.0") == 1
    assert value(m, "netbootd_firstboot_refused_total", reason="bad-signature") == 1
    assert value(m, "netbootd_process_resident_memory_bytes") > 0
    # The first scrape was itself counted; no label carries a MAC, a path or a token.
    assert value(after, "netbootd_http_requests_total", route="/metrics", status="200") == 1
    assert not any("52-54-00" in v or "forged" in v for (_, labels) in after for _, v in labels)
