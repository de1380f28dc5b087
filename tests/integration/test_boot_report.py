"""The seed's network-config and the ready/failed report, over real HTTP with real tokens.

URLs come from what the server hands out (iPXE script -> seed -> user-data), as a node
follows them. The report is checked in netbootd's state (node state, events) and through
the admin layer, never in log text.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from test_firstboot_tokens import DB1, WEB1, Clock, Server, with_token

from helpers import loopback_config, make_store
from netbootd.config import parse_config
from netbootd.service import Service
from pgserver import Backend

MAC = DB1.replace("-", ":")


@pytest.fixture
async def server(tmp_path: Path, backend: Backend) -> AsyncIterator[Server]:
    make_store(tmp_path / "store")
    clock = Clock()
    service = Service(parse_config(backend.configure(loopback_config(tmp_path)), "test"),
                      clock=clock)
    await service.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(service, clock, http)
    finally:
        await service.stop()


async def report_url(server: Server, key: str) -> str:
    status, user = await server.get(await server.seed(key) + "user-data")
    assert status == 200
    found = re.search(r'^    - "(http://[^"]+/report/[^"]+)"$', user, re.M)
    assert found is not None, user
    return found[1]


async def test_network_config_is_served_with_the_token_rules(server: Server) -> None:
    seed = await server.seed(DB1)
    status, text = await server.get(seed + "network-config")
    assert status == 200 and "version: 2" in text and f'macaddress: "{MAC}"' in text
    for url in [f"{server.base}/nocloud/{DB1}/demo/2.0/network-config",
                with_token(seed, "123.456.AAAA") + "network-config",
                seed.replace(DB1, WEB1) + "network-config"]:
        status, text = await server.get(url)
        assert status == 403 and "version: 2" not in text, url
    events = server.service.state.timeline(MAC)
    assert [e.detail["file"] for e in events if e.kind == "firstboot"] == ["network-config"]


async def test_a_done_report_makes_the_node_ready(server: Server) -> None:
    url = await report_url(server, DB1)
    status, text = await server.post(url, status="done", errors="[]", hostname="db1",
                                     libvirtd="active", host_keys="256 SHA256:abc root@db1")
    assert (status, text) == (200, "ready\n")
    node = server.service.state.node(MAC)
    assert node is not None and node.state == "ready" and node.current_build == "demo/2.0"
    (event,) = [e for e in server.service.state.timeline(MAC) if e.kind == "ready"]
    assert event.detail["build"] == "demo/2.0" and event.detail["errors"] == []
    assert event.detail["libvirtd"] == "active" and event.detail["hostname"] == "db1"
    assert server.service.counters.get("boot_reports", state="ready") == 1


async def test_an_error_report_makes_the_node_failed_with_the_errors(server: Server) -> None:
    url = await report_url(server, DB1)
    errors = ["('init-network', KeyError('x'))", "Invalid cloud-config provided"]
    status, text = await server.post(url, status="error", errors=json.dumps(errors))
    assert (status, text) == (200, "failed\n")
    node = server.service.state.node(MAC)
    assert node is not None and node.state == "failed"
    (event,) = [e for e in server.service.state.timeline(MAC) if e.kind == "failed"]
    assert event.detail["errors"] == errors and event.detail["status"] == "error"
    # a later done report (the next boot) makes it ready again
    assert await server.post(url, status="done", errors="[]") == (200, "ready\n")
    node = server.service.state.node(MAC)
    assert node is not None and node.state == "ready"


async def test_the_report_needs_this_nodes_token(server: Server) -> None:
    url = await report_url(server, DB1)
    for bad in [f"{server.base}/report/{DB1}", with_token(url, "123.456.AAAA"),
                url.replace(DB1, WEB1), url.replace("/demo/2.0/", "/demo/1.0/")]:
        status, _ = await server.post(bad, status="done")
        assert status == 403, bad
    node = server.service.state.node(MAC)
    assert node is None or node.state is None
    assert not [e for e in server.service.state.timeline(MAC) if e.kind in ("ready", "failed")]


async def test_a_hostile_report_is_bounded(server: Server) -> None:
    url = await report_url(server, DB1)
    async with server.http.post(server.local(url), data=b"x" * 70000,
                                headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 413
    # odd but small: not JSON errors, huge fields, unknown fields, an unknown status
    status, text = await server.post(url, status="done\u202e" * 30, errors="{not json",
                                     hostname="h" * 5000, evil="1", detail="d" * 9000)
    assert (status, text) == (200, "failed\n")
    (event,) = [e for e in server.service.state.timeline(MAC) if e.kind == "failed"]
    assert event.detail["errors"] == ["{not json"] and "evil" not in event.detail
    assert len(event.detail["hostname"]) == 253 and len(event.detail["detail"]) == 4000
    assert len(event.detail["status"]) == 40
    # a list of many errors keeps the first 20, each cut to 500 characters
    many = json.dumps(["e" * 900] * 50)
    assert await server.post(url, status="error", errors=many) == (200, "failed\n")
    last = [e for e in server.service.state.timeline(MAC) if e.kind == "failed"][-1]
    assert len(last.detail["errors"]) == 20 and {len(e) for e in last.detail["errors"]} == {500}
    # nesting deeper than the JSON parser goes is kept as text, not a crash
    assert await server.post(url, status="error", errors="[" * 15000) == (200, "failed\n")
    last = [e for e in server.service.state.timeline(MAC) if e.kind == "failed"][-1]
    assert last.detail["errors"] == ["[" * 500]
