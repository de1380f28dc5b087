"""The admin API (/api/v1): bearer token on every call, JSON errors that say what to do, the
same core as the CLI; and the running server sees every change at its next request."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import loopback_config, make_store
from netbootd.config import parse_config
from netbootd.errors import ConfigError
from netbootd.service import Service
from pgserver import Backend

UNKNOWN_MAC = "52:54:00:77:66:55"


class Api:
    def __init__(self, service: Service, token: str) -> None:
        self.service = service
        self.token = token
        self.base = f"http://127.0.0.1:{service.api_port}/api/v1"
        self.boot = f"http://127.0.0.1:{service.http_port}"

    async def call(self, method: str, path: str, body: Any = None,
                   token: str | None = "valid") -> tuple[int, Any]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'valid' else token}"
        async with aiohttp.ClientSession() as s, s.request(
                method, self.base + path, headers=headers,
                data=None if body is None else json.dumps(body)) as r:
            return r.status, await r.json()

    async def ipxe(self, mac: str) -> str:
        async with aiohttp.ClientSession() as s, s.get(
                f"{self.boot}/ipxe/node.ipxe", params={"mac": mac}) as r:
            assert r.status == 200
            return await r.text()


@pytest.fixture
async def api(tmp_path: Path, backend: Backend) -> AsyncIterator[Api]:
    make_store(tmp_path / "store")
    data = backend.configure(loopback_config(tmp_path))
    data["groups"]["default"] = {"default": True, "channel": "kvm-stable"}
    data["reimage"] = {"installer": "demo/2.0"}
    service = Service(parse_config(data, "api-test"))
    await service.start()
    try:
        token_file = tmp_path / "state" / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        yield Api(service, token_file.read_text().strip())
    finally:
        await service.stop()


MUTATIONS: list[tuple[str, str, Any]] = [
    ("PUT", "/channels/kvm-stable", {"build": "demo/1.0"}),
    ("POST", "/channels/kvm-stable/rollback", {}),
    ("POST", "/builds", {"kind": "linux", "name": "x", "version": "1", "paths": ["/etc/hostname"]}),
    ("DELETE", "/builds/demo/1.0", None),
    ("POST", "/builds/verify", {}),
    ("POST", "/gc", None),
    ("POST", "/nodes", {"mac": UNKNOWN_MAC, "name": "new1"}),
    ("PATCH", "/nodes/db1", {"mode": "local"}),
    ("POST", "/nodes/db1/rebind", {"mac": UNKNOWN_MAC}),
    ("POST", "/nodes/db1/reimage", {"image": "demo/1.0"}),
    ("DELETE", "/nodes/db1/reimage", None),
]
READS = ["/builds", "/builds/demo/1.0", "/channels", "/nodes", "/nodes/db1",
         "/nodes/db1/timeline", "/channels/kvm-stable/history"]


async def snapshot(api: Api) -> Any:
    admin = api.service.admin
    assert admin is not None
    reg = admin.registry
    return (admin.builds(), reg.channels(), reg.all_history(), reg.adopted_nodes(),
            reg.bindings(), reg.overrides(), reg.actions(),
            sorted(p.name for p in (api.service.config.server.store_dir / "builds").iterdir()))


@pytest.mark.parametrize("token", [None, "", "wrong-token-of-some-length", "valid "])
async def test_every_call_without_a_valid_token_gets_401_and_changes_nothing(
        api: Api, token: str | None) -> None:
    await api.ipxe(UNKNOWN_MAC)  # a discovered node, so that adopt could succeed
    before = await snapshot(api)
    bad = None if token is None else (api.token + " x" if token == "valid " else token)
    for method, path, body in MUTATIONS:
        status, reply = await api.call(method, path, body, token=bad)
        assert status == 401, (method, path, reply)
        assert "bearer token" in reply["error"] and "admin.token" in reply["hint"]
    for path in READS:
        status, _ = await api.call("GET", path, token=bad)
        assert status == 401, path
    assert await snapshot(api) == before


async def test_the_same_calls_with_the_token_work_and_the_server_follows(api: Api) -> None:
    # the channel is unset: the node is declined, with what to do
    assert "netbootd channel set kvm-stable" in await api.ipxe(UNKNOWN_MAC)
    status, e = await api.call("PUT", "/channels/kvm-stable", {"build": "demo/1.0",
                                                               "why": "first"})
    assert status == 200 and (e["from"], e["to"], e["who"]) == (None, "demo/1.0",
                                                                "api@127.0.0.1")
    assert "/builds/demo/1.0/vmlinuz" in await api.ipxe(UNKNOWN_MAC)  # no restart needed
    status, _ = await api.call("PUT", "/channels/kvm-stable", {"build": "demo/2.0"})
    assert status == 200
    assert "/builds/demo/2.0/vmlinuz" in await api.ipxe(UNKNOWN_MAC)
    status, e = await api.call("POST", "/channels/kvm-stable/rollback", {"why": "bad"})
    assert status == 200 and e["to"] == "demo/1.0" and e["action"] == "rollback"
    assert "/builds/demo/1.0/vmlinuz" in await api.ipxe(UNKNOWN_MAC)
    status, hist = await api.call("GET", "/channels/kvm-stable/history")
    assert [h["to"] for h in hist] == ["demo/1.0", "demo/2.0", "demo/1.0"]

    status, nodes = await api.call("GET", "/nodes?discovered=1")
    assert status == 200 and [n["mac"] for n in nodes] == [UNKNOWN_MAC]
    status, n = await api.call("POST", "/nodes", {"mac": UNKNOWN_MAC, "name": "new1",
                                                  "hostname": "new1.lab"})
    assert status == 201 and n["source"] == "adopted" and n["macs"] == [UNKNOWN_MAC]
    assert "netbootd: new1.lab boots demo/1.0" in await api.ipxe(UNKNOWN_MAC)
    status, nodes = await api.call("GET", "/nodes?discovered=1")
    assert nodes == []
    status, n = await api.call("PATCH", "/nodes/new1", {"build": "demo/2.0"})
    assert status == 200 and n["override"]["build"] == "demo/2.0"
    assert "/builds/demo/2.0/vmlinuz" in await api.ipxe(UNKNOWN_MAC)
    # rebind: the MAC moves to db1 (a new NIC in that machine)
    status, n = await api.call("POST", "/nodes/db1/rebind", {"mac": UNKNOWN_MAC})
    assert status == 200 and UNKNOWN_MAC in n["macs"]
    assert "(db1, group default" in await api.ipxe(UNKNOWN_MAC)


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("PUT", "/channels/kvm-stable", {"build": "demo/9"}, 404,
     "no build named demo/9 (known: demo/1.0, demo/2.0, esxi/8.0u3)"),
    ("PUT", "/channels/kvm-stable", {"bulid": "demo/1.0"}, 400, "unknown field(s) bulid"),
    ("PUT", "/channels/bad name", {"build": "demo/1.0"}, 400, "channel name"),
    ("POST", "/channels/nope/rollback", {}, 404, "no channel 'nope'"),
    ("GET", "/nodes/ghost", None, 404, "no node 'ghost'"),
    ("POST", "/nodes/db1/reimage", {"image": "demo/1.0"}, 400,
     "is a linux build; reimage writes a disk image"),
    ("POST", "/nodes", {"mac": UNKNOWN_MAC, "name": "x"}, 404, "has never booted here"),
    ("DELETE", "/builds/demo/2.0", None, 409, "config nodes.db1.build"),
    ("DELETE", "/nodes/db1/reimage", None, 404, "node 'db1' has no open reimage order"),
    ("DELETE", "/nodes/ghost/reimage", None, 404, "no node 'ghost'"),
])
async def test_errors_are_json_and_say_what_to_do(api: Api, method: str, path: str, body: Any,
                                                  status: int, says: str) -> None:
    got, reply = await api.call(method, path, body)
    assert got == status and says in reply["error"], reply


async def test_rollback_outside_the_channels_history_needs_force(api: Api) -> None:
    for build in ("demo/1.0", "demo/2.0"):
        assert (await api.call("PUT", "/channels/kvm-stable", {"build": build}))[0] == 200
    before = await snapshot(api)
    status, e = await api.call("POST", "/channels/kvm-stable/rollback", {"to": "esxi/8.0u3"})
    assert status == 409 and "never pointed at esxi/8.0u3" in e["error"], e
    status, e = await api.call("POST", "/channels/kvm-stable/rollback", {"force": "yes"})
    assert status == 400 and "force must be true or false" in e["error"]
    assert await snapshot(api) == before
    status, e = await api.call("POST", "/channels/kvm-stable/rollback",
                               {"to": "esxi/8.0u3", "force": True})
    assert status == 200 and e["to"] == "esxi/8.0u3"


async def test_the_api_can_listen_on_a_unix_socket_only(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    sock = tmp_path / "admin.sock"
    data = loopback_config(tmp_path, admin={"socket": str(sock)})
    service = Service(parse_config(data, "api-test"))
    await service.start()
    try:
        assert service.api_port is None
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        token = (tmp_path / "state" / "admin.token").read_text().strip()
        conn = aiohttp.UnixConnector(path=str(sock))
        async with aiohttp.ClientSession(connector=conn) as s:
            async with s.get("http://netbootd/api/v1/channels") as r:
                assert r.status == 401
            async with s.get("http://netbootd/api/v1/builds",
                             headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
                assert [b["ref"] for b in await r.json()] == ["demo/1.0", "demo/2.0",
                                                              "esxi/8.0u3"]
    finally:
        await service.stop()


async def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-sufficient-length\n")
    os.chmod(token_file, 0o644)
    data = loopback_config(tmp_path, admin={"port": 0, "token_file": str(token_file)})
    service = Service(parse_config(data, "api-test"))
    with pytest.raises(ConfigError, match=f"readable by other users: chmod 600 {token_file}"):
        await service.start()
    await service.stop()


def documented_schema() -> dict[str, Any]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "admin-api.md").read_text()
    block = text.split("## Schemas", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return dict(json.loads(block))


async def test_answers_match_the_schema_in_docs(api: Api, tmp_path: Path) -> None:
    import jsonschema

    schema = documented_schema()

    def check(kind: str, value: Any) -> None:
        jsonschema.validate(value, {**schema, "$ref": f"#/$defs/{kind}"})

    await api.ipxe(UNKNOWN_MAC)
    _, builds = await api.call("GET", "/builds")
    for b in builds:
        check("Build", b)
    for ref in ("demo/1.0", "esxi/8.0u3"):
        _, b = await api.call("GET", f"/builds/{ref}")
        check("BuildDetail", b)
    status, v = await api.call("POST", "/builds/verify", {})
    check("Verify", v)
    src = tmp_path / "img.raw"
    src.write_bytes(b"\x01" * 4096)
    status, b = await api.call("POST", "/builds", {"kind": "disk", "name": "lab",
                                                   "version": "1", "paths": [str(src)]})
    assert status == 201, b
    check("BuildDetail", b)
    _, e = await api.call("PUT", "/channels/kvm-stable", {"build": "demo/1.0"})
    check("HistoryEntry", e)
    _, hist = await api.call("GET", "/channels/kvm-stable/history")
    for e in hist:
        check("HistoryEntry", e)
    _, seen = await api.call("GET", "/nodes?discovered=1")
    for s in seen:
        check("Seen", s)
    _, n = await api.call("POST", "/nodes", {"mac": UNKNOWN_MAC, "name": "n1"})
    check("NodeDetail", n)
    _, nodes = await api.call("GET", "/nodes")
    for n in nodes:
        check("Node", n)
    status, a = await api.call("POST", "/nodes/n1/reimage", {"image": "lab/1"})
    assert status == 201, a
    check("Action", a)
    _, n = await api.call("GET", "/nodes/n1")
    check("NodeDetail", n)
    assert n["reimage"]["state"] == "pending"
    assert n["next"] == {"group": "default", "mode": "reimage", "build": "lab/1",
                         "why": f"reimage order {a['id']} (installer demo/2.0)"}
    status, c = await api.call("DELETE", "/nodes/n1/reimage")
    assert status == 200, c
    check("Action", c)
    assert (c["id"], c["state"], c["reason"]) == (a["id"], "cancelled",
                                                   "cancelled by api@127.0.0.1")
    _, n = await api.call("GET", "/nodes/n1")
    check("NodeDetail", n)
    assert n["reimage"] is None and n["next"]["why"] == "channel kvm-stable (groups.default)"
    _, tl = await api.call("GET", "/nodes/n1/timeline")
    for ev in tl["events"]:
        check("Event", ev)
