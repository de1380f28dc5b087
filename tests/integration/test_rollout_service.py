"""Rollouts through a running server: the admin API starts them, nodes fetch their iPXE script
and post their ready/failed report over real HTTP with their real tokens, the server's
ticker steps the rollout; everything is read back from the API and the intent database.

The service's clock is a value the test moves (deadlines); the ticker runs on the server's
own loop, so every wait polls the API with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_firstboot_tokens import Clock

from helpers import loopback_config, make_store
from netbootd.config import parse_config
from netbootd.service import Service

NODES = {"n1": "52:54:00:10:00:01", "n2": "52:54:00:10:00:02", "n3": "52:54:00:10:00:03",
         "pinned": "52:54:00:10:00:09"}
OLD, NEW = "demo/1.0", "demo/2.0"


class Fleet:
    def __init__(self, tmp: Path, clock: Clock) -> None:
        self.tmp, self.clock = tmp, clock
        data = loopback_config(tmp)
        data["groups"] = {"default": {"default": True, "build": OLD},
                          "fleet": {"match": {"mac_prefix": "52:54:00:10"},
                                    "channel": "kvm-stable"}}
        data["nodes"] = {n: {"mac": m} for n, m in NODES.items()}
        data["nodes"]["pinned"]["build"] = OLD  # in the group, but pinned
        self.data = data
        self.service: Service | None = None

    async def start(self) -> None:
        self.service = Service(parse_config(self.data, "rollout-test"), clock=self.clock)
        await self.service.start()
        self.token = (self.tmp / "state" / "admin.token").read_text().strip()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    @property
    def s(self) -> Service:
        assert self.service is not None
        return self.service

    async def api(self, method: str, path: str, body: Any = None,
                  token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with aiohttp.ClientSession() as c, c.request(
                method, f"http://127.0.0.1:{self.s.api_port}/api/v1{path}", headers=headers,
                data=None if body is None else json.dumps(body)) as r:
            return r.status, await r.json()

    def local(self, url: str) -> str:
        return re.sub(r"^http://[^/]+", f"http://127.0.0.1:{self.s.http_port}", url)

    async def boot(self, node: str) -> tuple[str, str]:
        """What the node boots now (the build in its iPXE script) and its report URL."""
        key = NODES[node].replace(":", "-")
        async with aiohttp.ClientSession() as c:
            async with c.get(f"http://127.0.0.1:{self.s.http_port}/ipxe/node.ipxe",
                             params={"mac": key, "arch": "7"}) as r:
                script = await r.text()
                assert r.status == 200, script
            seed = re.search(r"ds=nocloud-net;s=(\S+/)", script)
            assert seed is not None, script
            async with c.get(self.local(seed[1] + "user-data")) as r:
                user = await r.text()
                assert r.status == 200, user
        build = re.search(r"/nocloud/[^/]+/([^/]+/[^/]+)/", seed[1])
        report = re.search(r'^    - "(http://[^"]+/report/[^"]+)"$', user, re.M)
        assert build is not None and report is not None, user
        return build[1], report[1]

    async def report(self, url: str, ok: bool, errors: list[str] | None = None) -> None:
        fields = {"status": "done" if ok else "error", "errors": json.dumps(errors or [])}
        async with aiohttp.ClientSession() as c, c.post(self.local(url), data=fields) as r:
            assert r.status == 200, await r.text()

    async def rollout(self, rid: int) -> dict[str, Any]:
        status, body = await self.api("GET", f"/rollouts/{rid}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def until(self, rid: int, ok: Callable[[dict[str, Any]], bool],
                    timeout: float = 60.0) -> dict[str, Any]:
        """Poll the rollout until ``ok`` (the ticker runs on the server's loop)."""
        end = time.monotonic() + timeout
        while True:
            r = await self.rollout(rid)
            if ok(r):
                return r
            assert time.monotonic() < end, f"rollout never got there: {r}"
            await asyncio.sleep(0.05)

    async def history(self) -> list[dict[str, Any]]:
        status, body = await self.api("GET", "/channels/kvm-stable/history")
        assert status == 200
        return body  # type: ignore[no-any-return]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    make_store(tmp_path / "store")
    f = Fleet(tmp_path, Clock())
    await f.start()
    try:
        status, _ = await f.api("PUT", "/channels/kvm-stable", {"build": OLD})
        assert status == 200
        yield f
    finally:
        await f.stop()


START = {"channel": "kvm-stable", "build": NEW, "canary": 1, "batch": 1,
         "ready_within": "10m", "max_failed": 1}


async def test_a_good_build_reaches_every_node_and_the_channel_moves(fleet: Fleet) -> None:
    status, r = await fleet.api("POST", "/rollouts", START)
    assert status == 201, r
    assert r["nodes"] == ["n1", "n2", "n3"]  # "pinned" does not follow the channel
    assert r["phase"] == "running" and r["batches"] == [["n1"], ["n2"], ["n3"]]
    rid = r["id"]
    # Only the canary boots the new build; node show says why.
    assert (await fleet.boot("n2"))[0] == OLD
    build, url = await fleet.boot("n1")
    assert build == NEW
    status, n1 = await fleet.api("GET", "/nodes/n1")
    assert n1["next"]["build"] == NEW
    assert n1["next"]["why"] == f"channel kvm-stable (groups.fleet), rollout {rid}, batch 0"
    await fleet.report(url, ok=True)
    r = await fleet.until(rid, lambda r: r["batch_index"] == 1)
    assert r["node_states"]["n1"]["status"] == "ready"
    for node, batch in (("n2", 1), ("n3", 2)):
        build, url = await fleet.boot(node)
        assert build == NEW
        await fleet.report(url, ok=True)
        if batch == 1:
            await fleet.until(rid, lambda r: r["batch_index"] == 2)
    r = await fleet.until(rid, lambda r: r["phase"] == "done")
    status, channels = await fleet.api("GET", "/channels")
    assert channels["kvm-stable"] == NEW
    last = (await fleet.history())[-1]
    assert (last["action"], last["from"], last["to"], last["who"]) == \
        ("set", OLD, NEW, f"rollout {rid}")
    assert last["why"] == f"rollout {rid}: 3 of 3 nodes ready on {NEW}"
    assert (await fleet.boot("pinned"))[0] == OLD


async def test_a_failed_canary_stops_reverts_and_boots_the_old_build_again(
        fleet: Fleet) -> None:
    status, r = await fleet.api("POST", "/rollouts", {**START, "canary": 2})
    rid = r["id"]
    build, url = await fleet.boot("n1")
    assert build == NEW
    await fleet.report(url, ok=False, errors=["Invalid cloud-config provided"])
    r = await fleet.until(rid, lambda r: r["phase"] == "stopped")
    assert r["node_states"]["n1"] == {**r["node_states"]["n1"], "status": "reverted",
                                      "reason": "Invalid cloud-config provided"}
    assert (await fleet.boot("n1"))[0] == OLD  # the canary's next boot: the old build
    assert (await fleet.boot("n2"))[0] == OLD
    status, channels = await fleet.api("GET", "/channels")
    assert channels["kvm-stable"] == OLD
    last = (await fleet.history())[-1]
    assert (last["action"], last["from"], last["to"]) == ("rollout-revert", NEW, OLD)
    assert last["why"] == f"rollout {rid}: node n1 failed: Invalid cloud-config provided"
    # A rollback still goes to what the channel really had before OLD: nothing.
    status, body = await fleet.api("POST", "/channels/kvm-stable/rollback", {})
    assert status == 404 and "no earlier build" in body["error"]


async def test_silence_past_the_deadline_stops_it(fleet: Fleet) -> None:
    status, r = await fleet.api("POST", "/rollouts", START)
    assert status == 201
    rid = r["id"]
    assert (await fleet.boot("n1"))[0] == NEW  # boots but never reports
    fleet.clock.now += 10 * 60  # the deadline: the timer tick fails it
    r = await fleet.until(rid, lambda r: r["phase"] == "stopped")
    assert "node n1 failed: silent: no ready report within 10m" in r["reason"]
    assert (await fleet.boot("n1"))[0] == OLD


async def test_a_restarted_server_goes_on_where_it_stopped(fleet: Fleet) -> None:
    status, r = await fleet.api("POST", "/rollouts", START)
    assert status == 201
    rid = r["id"]
    _, url = await fleet.boot("n1")
    await fleet.report(url, ok=True)
    await fleet.until(rid, lambda r: r["batch_index"] == 1)
    await fleet.stop()
    await fleet.start()
    assert (await fleet.boot("n1"))[0] == NEW  # still pinned after the restart
    build, url = await fleet.boot("n2")
    assert build == NEW
    await fleet.report(url, ok=True)
    await fleet.until(rid, lambda r: r["batch_index"] == 2)


async def test_pause_resume_abort_and_refusals(fleet: Fleet) -> None:
    status, body = await fleet.api("POST", "/rollouts", START, token="wrong")
    assert status == 401
    status, body = await fleet.api("POST", "/rollouts", {**START, "build": "nope/1"})
    assert status == 404 and "demo/2.0" in body["error"]
    status, body = await fleet.api("POST", "/rollouts", {**START, "ready_within": "soon"})
    assert status == 400
    status, body = await fleet.api("POST", "/rollouts", {**START, "build": OLD})
    assert status == 409
    status, r = await fleet.api("POST", "/rollouts", START)
    rid = r["id"]
    status, body = await fleet.api("POST", "/rollouts", START)
    assert status == 409 and f"rollout {rid}" in body["error"]
    status, r = await fleet.api("POST", f"/rollouts/{rid}/pause")
    assert status == 200 and r["phase"] == "paused" and r["deadline"] is None
    _, url = await fleet.boot("n1")
    await fleet.report(url, ok=True)
    r = await fleet.until(rid, lambda r: r["node_states"]["n1"]["status"] == "ready")
    assert r["batch_index"] == 0  # paused: no next batch
    status, r = await fleet.api("POST", f"/rollouts/{rid}/resume")
    assert status == 200
    await fleet.until(rid, lambda r: r["batch_index"] == 1)
    status, r = await fleet.api("POST", f"/rollouts/{rid}/abort", {"why": "change freeze"})
    assert status == 200 and r["phase"] == "aborted"
    assert r["reason"].endswith("aborted by api@127.0.0.1: change freeze")
    assert (await fleet.boot("n1"))[0] == OLD
    status, body = await fleet.api("POST", f"/rollouts/{rid}/resume")
    assert status == 409
    status, body = await fleet.api("GET", "/rollouts/999")
    assert status == 404
    status, rs = await fleet.api("GET", "/rollouts")
    assert [x["id"] for x in rs] == [rid]
