"""``rollout --reboot`` against a real BMC: OpenIPMI's ipmi_sim on loopback, spoken to by
ipmitool through netbootd/power. The canary is power-cycled by ``rollout start`` (the
CLI), the revert after its failed report by the running server's ticker; both are read back
as ``power`` events in the node's timeline and as the simulator's guest process."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
from test_admin_api import documented_schema
from test_power_ipmi_sim import bmc, js, nb, power_events, wait_for, write_credentials

from helpers import loopback_config, make_store
from netbootd.config import load_config
from netbootd.lab.bmc import IpmiSim
from netbootd.lab.demo import toml_dump
from netbootd.service import Service

__all__ = ["bmc"]  # the fixture, shared with the power tests
DB1_MAC = "52:54:00:00:00:02"


def site(tmp_path: Path, sim: IpmiSim) -> Path:
    make_store(tmp_path / "store")
    creds = tmp_path / "power.toml"
    write_credentials(creds)
    data = loopback_config(tmp_path, power={"credentials": str(creds), "timeout": 60})
    data["groups"]["fleet"] = {"match": {"mac_prefix": "52:54:00:00:00:02"},
                               "channel": "kvm-stable"}
    data["nodes"]["db1"] = {"mac": DB1_MAC, "group": "fleet",
                            "power": {"driver": "ipmi", "address": "127.0.0.1",
                                      "port": sim.port, "user": "admin"}}
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    return cfg


async def report_failed(service: Service, key: str) -> None:
    """db1 boots (its iPXE script, seed, user-data) and reports failed, as its agent would."""
    base = f"http://127.0.0.1:{service.http_port}"

    def local(url: str) -> str:
        return re.sub(r"^http://[^/]+", base, url)

    async with aiohttp.ClientSession() as c:
        async with c.get(f"{base}/ipxe/node.ipxe", params={"mac": key, "arch": "7"}) as r:
            script = await r.text()
        seed = re.search(r"ds=nocloud-net;s=(\S+/)", script)
        assert seed is not None and "/demo/2.0/" in seed[1], script
        async with c.get(local(seed[1] + "user-data")) as r:
            user = await r.text()
        report = re.search(r'^    - "(http://[^"]+/report/[^"]+)"$', user, re.M)
        assert report is not None, user
        async with c.post(local(report[1]), data={"status": "error",
                                                  "errors": json.dumps(["boom"])}) as r:
            assert r.status == 200


async def poll(probe: Callable[[], Any], timeout: float = 120.0) -> Any:
    import asyncio

    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
    return value


async def test_reboot_cycles_the_canary_and_the_revert(tmp_path: Path, bmc: IpmiSim) -> None:
    cfg = site(tmp_path, bmc)
    assert nb(cfg, "channel", "set", "kvm-stable", "demo/1.0").returncode == 0
    # (A --reboot rollout with a node that has no power spec is refused: test_rollout_cli.)
    r = js(cfg, "rollout", "start", "kvm-stable", "demo/2.0", "--reboot", "--yes")
    assert r["nodes"] == ["db1"] and r["reboot"] is True
    jsonschema.validate(r, {**documented_schema(), "$ref": "#/$defs/Rollout"})
    (cycled,) = r["power"]
    assert (cycled["node"], cycled["action"], cycled["ok"]) == ("db1", "cycle", True)
    first = wait_for(bmc.live_guest)
    ev = power_events(cfg)
    assert [(e["action"], e["ok"], e["who"]) for e in ev] == \
        [("cycle", True, f"rollout {r['id']}: batch 0 to demo/2.0")]

    service = Service(load_config(cfg))
    await service.start()
    try:
        await report_failed(service, DB1_MAC.replace(":", "-"))

        def reverted() -> bool:
            status = js(cfg, "rollout", "status", str(r["id"]))
            return bool(status["phase"] == "stopped") and len(power_events(cfg)) == 2

        await poll(reverted)
    finally:
        await service.stop()
    last = power_events(cfg)[-1]
    assert (last["action"], last["ok"], last["who"]) == \
        ("cycle", True, f"rollout {r['id']}: back to demo/1.0")
    # A new guest process: it really was cycled (the BMC may answer the cycle before the
    # simulator has ended the old guest, so the new one is waited for).
    wait_for(lambda: bmc.live_guest() not in (None, first))
