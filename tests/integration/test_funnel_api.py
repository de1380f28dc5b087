"""The boot funnel through the admin API and the ``netbootd node timeline`` CLI.

A node is walked through a boot over real HTTP (its iPXE script, the kernel and initrd its
script names, the seed files, cloud-init's phone-home, the ready report); the API's answer
is validated against docs/admin-api.md and the CLI, run as a subprocess on the same state,
prints the same stages.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_admin_api import documented_schema

from helpers import loopback_config, make_store
from netbootd.config import parse_config
from netbootd.lab.demo import toml_dump
from netbootd.service import Service
from pgserver import Backend

REPO = Path(__file__).resolve().parents[2]
MAC = "52:54:00:00:00:02"  # db1, demo/2.0


@pytest.fixture
async def booted(tmp_path: Path, backend: Backend) -> AsyncIterator[tuple[Service, Path]]:
    make_store(tmp_path / "store")
    data = backend.configure(loopback_config(tmp_path))
    config = tmp_path / "netbootd.toml"
    config.write_text(toml_dump(data))
    service = Service(parse_config(data, str(config)))
    await service.start()
    base = f"http://127.0.0.1:{service.http_port}"

    def local(url: str) -> str:
        return re.sub(r"^http://[^/]+", base, url)

    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/ipxe/node.ipxe", params={"mac": MAC.replace(
                    ":", "-"), "arch": "7"}) as r:
                script = await r.text()
            for url in re.findall(r"(http://\S+/builds/demo/2\.0/\S+)", script):
                async with http.get(local(url)) as r:
                    assert r.status == 200, url
            seed = re.search(r"ds=nocloud-net;s=(\S+/)", script)
            assert seed is not None, script
            for what in ("meta-data", "user-data", "vendor-data"):
                async with http.get(local(seed[1] + what)) as r:
                    assert r.status == 200
                    if what == "user-data":
                        user = await r.text()
            home = re.search(r'url: "(\S+)"', user)
            report = re.search(r'^    - "(http://\S+/report/\S+)"$', user, re.M)
            assert home is not None and report is not None, user
            async with http.post(local(home[1]), data={"hostname": "db1"}) as r:
                assert r.status == 200
            async with http.post(local(report[1]), data={"status": "done",
                                                         "errors": "[]"}) as r:
                assert await r.text() == "ready\n"
        service.state.flush()
        yield service, config
    finally:
        await service.stop()


async def test_the_api_shows_the_funnel(booted: tuple[Service, Path]) -> None:
    import jsonschema

    service, _ = booted
    token = (service.config.server.state_dir / "admin.token").read_text().strip()
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{service.api_port}/api/v1/nodes/db1/timeline",
            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        tl: dict[str, Any] = await r.json()
    schema = documented_schema()
    jsonschema.validate(tl, {**schema, "$ref": "#/$defs/Timeline"})
    f = tl["funnel"]
    assert f["build"] == "demo/2.0" and f["boots"] == 1
    by = {s["stage"]: s for s in f["stages"]}
    assert list(by) == ["dhcp", "loader", "kernel", "initrd", "meta-data", "user-data",
                        "phone-home", "ready"]  # demo/2.0 has no root file system
    assert by["dhcp"]["start"] is None  # DHCP is off in this test
    for name in list(by)[1:]:
        assert by[name]["start"] is not None and by[name]["duration"] >= 0, name
    assert by["kernel"]["detail"] == "vmlinuz" and by["initrd"]["detail"] == "initrd.img"
    _, nodes = await _get(service, token, "/nodes")
    (db1,) = [n for n in nodes if n["name"] == "db1"]
    assert db1["seen"]["state"] == "ready" and db1["seen"]["current_build"] == "demo/2.0"
    jsonschema.validate(db1, {**schema, "$ref": "#/$defs/Node"})


async def _get(service: Service, token: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{service.api_port}/api/v1{path}",
            headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netbootd", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


async def test_the_cli_prints_the_funnel(booted: tuple[Service, Path]) -> None:
    _, config = booted
    out = cli(config, "node", "timeline", "db1")
    assert out.returncode == 0, out.stderr
    funnel = out.stdout.split("boot funnel", 1)[1].splitlines()
    assert funnel[0] == " (last of 1 boots, build demo/2.0):"
    rows = {line.split()[0]: line.split()[1:] for line in funnel[1:] if line.strip()}
    assert rows["dhcp"] == ["-"]
    for name in ("loader", "kernel", "initrd", "meta-data", "user-data", "phone-home",
                 "ready"):
        assert re.fullmatch(r"\+\d+\.\d\ds", rows[name][0]), rows[name]
        assert re.fullmatch(r"\d+\.\d\ds", rows[name][1]), rows[name]
    as_json = cli(config, "node", "timeline", "db1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [s["stage"] for s in data["funnel"]["stages"] if s["start"] is not None] == \
        ["loader", "kernel", "initrd", "meta-data", "user-data", "phone-home", "ready"]
    listed = cli(config, "node", "list")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith("db1 ")]
    # NODE GROUP NEXT-BUILD WHY STATE LAST-SEEN (UTC) IP
    assert re.match(r"db1\s+\S+\s+demo/2.0\s+pin \(nodes.db1.build\)\s+ready\s+"
                    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row), row


async def test_a_node_known_by_guid_only_has_a_timeline_once_it_booted(
        booted: tuple[Service, Path]) -> None:
    service, config = booted
    assert cli(config, "node", "timeline", "web1").returncode != 0  # not booted yet
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{service.http_port}/ipxe/node.ipxe",
            params={"mac": "52-54-00-00-00-09", "uuid": "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a",
                    "arch": "7"}) as r:
        assert r.status == 200 and "web1" in await r.text()
    service.state.flush()
    out = cli(config, "node", "timeline", "web1", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["mac"] == "52:54:00:00:00:09"
    assert [s["stage"] for s in data["funnel"]["stages"] if s["start"] is not None] == \
        ["loader"]
