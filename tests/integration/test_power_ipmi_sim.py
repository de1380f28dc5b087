"""Power control against a real BMC: OpenIPMI's ipmi_sim on loopback, spoken to over
IPMI-over-LAN (lanplus) by ipmitool, through ``netbootd node power``, ``node reimage --now``,
the admin API and the batch entry rollouts use. The simulator's "machine" is a process its
startcmd runs (``sleep``), so power state is checked on the process as well as on the BMC's
answer. The password is looked for, and must be absent, in every command line and environment
of the processes that run meanwhile, every output, every API answer and the state database.
Wake-on-LAN: the magic packet is received on a loopback socket and compared byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import free_port, loopback_config, make_store, write_build
from netbootd.admin import Admin
from netbootd.config import load_config
from netbootd.lab.bmc import IpmiSim
from netbootd.lab.demo import toml_dump
from netbootd.power.admin_power import power_cycle
from netbootd.service import Service
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from power_watch import ProcWatch

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Pw-9f3c-e1d7-lab"  # the lab BMC's, looked for in every output
DB1_MAC = "52:54:00:00:00:02"
ESX1_MAC = "52:54:00:00:00:03"
RAW = bytes(range(256)) * 16

pytestmark = pytest.mark.skipif(
    not (shutil.which("ipmi_sim") and shutil.which("ipmitool")),
    reason="needs ipmi_sim (openipmi) and ipmitool")


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[IpmiSim]:
    sim = IpmiSim(tmp_path / "bmc", address="127.0.0.1", port=free_port(socket.SOCK_DGRAM),
                  user="admin", password=PASSWORD,
                  chardev_port=free_port(socket.SOCK_STREAM), guest=["/bin/sleep", "600"])
    with sim:
        sim.start(lambda cmd, **kw: subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw))
        yield sim


def write_credentials(path: Path, password: str = PASSWORD, mode: int = 0o600) -> None:
    path.write_text(f'[db1]\npassword = "{password}"\n')
    path.chmod(mode)


@pytest.fixture
def site(tmp_path: Path, bmc: IpmiSim) -> Path:
    store = make_store(tmp_path / "store")
    write_build(store, "lab-disk", "1", {"disk.img": RAW}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": len(RAW),
                      "raw_sha256": hashlib.sha256(RAW).hexdigest()})
    creds = tmp_path / "power.toml"
    write_credentials(creds)
    data = loopback_config(tmp_path, reimage={"installer": "demo/2.0"},
                           power={"credentials": str(creds), "timeout": 60})
    data["nodes"]["db1"]["power"] = {"driver": "ipmi", "address": "127.0.0.1",
                                     "port": bmc.port, "user": "admin"}
    wol_port = free_port(socket.SOCK_DGRAM)
    data["nodes"]["esx1"]["power"] = {"driver": "wol", "broadcast": "127.0.0.1",
                                      "port": wol_port}
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    return cfg


def nb(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "netbootd", *args, "--config", str(cfg)],
                       cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    assert PASSWORD not in r.stdout + r.stderr
    return r


def js(cfg: Path, *args: str) -> Any:
    r = nb(cfg, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def power_events(cfg: Path, mac: str = DB1_MAC) -> list[dict[str, Any]]:
    with StateDB.open_readonly(cfg.parent / "state" / "state.sqlite3") as db:
        return [e.detail for e in db.timeline(mac) if e.kind == "power"]


def wait_for(probe: Any, timeout: float = 60.0) -> Any:
    """``probe()`` once it is truthy (polled; a loaded machine may take seconds)."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def no_secret_on_disk(cfg: Path) -> None:
    for f in (cfg.parent / "state").iterdir():
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f


def test_on_status_cycle_off_through_the_cli(site: Path, bmc: IpmiSim) -> None:
    with ProcWatch(PASSWORD) as watch:
        assert js(site, "node", "power", "db1", "status")["state"] == "off"
        assert bmc.live_guest() is None
        on = js(site, "node", "power", "db1", "on")
        assert (on["ok"], on["state"], on["driver"]) == (True, "on", "ipmi")
        first = wait_for(bmc.live_guest)
        assert js(site, "node", "power", "db1", "status")["state"] == "on"
        cycled = js(site, "node", "power", "db1", "cycle", "--yes")
        assert cycled["state"] == "on"
        # the simulator ends the old process and starts a new one
        second = wait_for(lambda: (p := bmc.live_guest()) != first and p)
        assert second
        assert js(site, "node", "power", "db1", "off", "--yes")["state"] == "off"
        wait_for(lambda: bmc.live_guest() is None)
        text = nb(site, "node", "power", "db1", "status")
        assert text.returncode == 0 and "power is off" in text.stdout
        shown = nb(site, "node", "show", "db1", "--json").stdout
    assert watch.seen, "no ipmitool process was caught; the password check saw nothing"
    assert all(b"-f\0/dev/fd/" in c for c in watch.seen), watch.seen
    assert not watch.leaks, watch.leaks
    assert PASSWORD not in shown
    events = power_events(site)
    assert [(e["action"], e["state"], e["ok"]) for e in events] == [
        ("status", "off", True), ("on", "on", True), ("status", "on", True),
        ("cycle", "on", True), ("off", "off", True), ("status", "off", True)]
    assert all(e["who"].endswith("@cli") and e["driver"] == "ipmi" for e in events)
    assert len(bmc.guest_pids()) == 2
    no_secret_on_disk(site)


def test_off_and_cycle_ask_first(site: Path, bmc: IpmiSim) -> None:
    r = nb(site, "node", "power", "db1", "off")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert power_events(site) == []


def test_a_wrong_password_is_exit_4_and_names_what_to_check(site: Path, bmc: IpmiSim) -> None:
    wrong = "not-the-pw-7781"
    write_credentials(site.parent / "power.toml", wrong)
    r = nb(site, "node", "power", "db1", "on")
    assert r.returncode == 4, r.stderr
    assert "no IPMI session" in r.stderr and "credentials file" in r.stderr
    assert wrong not in r.stderr
    assert bmc.live_guest() is None
    (event,) = power_events(site)
    assert (event["action"], event["ok"]) == ("on", False)
    assert wrong not in json.dumps(event)


def test_a_credentials_file_others_can_read_is_refused(site: Path, bmc: IpmiSim) -> None:
    creds = site.parent / "power.toml"
    creds.chmod(0o644)
    r = nb(site, "node", "power", "db1", "status")
    assert r.returncode == 2 and f"chmod 600 {creds}" in r.stderr, r.stderr
    check = nb(site, "check", "--json")
    assert check.returncode == 1
    found = json.loads(check.stdout)["errors"]
    assert any(f["key"] == "power.credentials" and "chmod 600" in f["problem"]
               for f in found), found
    creds.chmod(0o600)
    assert nb(site, "check").returncode == 0


def test_reimage_now_orders_then_power_cycles(site: Path, bmc: IpmiSim) -> None:
    a = js(site, "node", "reimage", "db1", "--image", "lab-disk/1", "--now", "--yes")
    assert a["state"] == "pending" and a["image"] == "lab-disk/1"
    assert (a["power"]["action"], a["power"]["state"], a["power"]["ok"]) == ("cycle", "on",
                                                                             True)
    wait_for(bmc.live_guest)  # was off: "cycle" powered it on
    with Registry(site.parent / "state" / "intent.sqlite3") as reg:
        assert reg.open_orders()["db1"].image == "lab-disk/1"
    # cancel semantics are unchanged
    assert js(site, "node", "reimage", "db1", "--cancel")["state"] == "cancelled"


def test_reimage_now_without_power_control_makes_no_order(site: Path, bmc: IpmiSim) -> None:
    r = nb(site, "node", "reimage", "web1", "--image", "lab-disk/1", "--now", "--yes")
    assert r.returncode == 2 and "no power control" in r.stderr
    with Registry(site.parent / "state" / "intent.sqlite3") as reg:
        assert reg.actions("web1") == []


def test_reimage_now_with_the_bmc_down_leaves_the_order_open(site: Path,
                                                              bmc: IpmiSim) -> None:
    bmc.close()
    r = nb(site, "node", "reimage", "db1", "--image", "lab-disk/1", "--now", "--yes")
    assert r.returncode == 4, r.stderr
    assert "stays open" in r.stderr and "--cancel" in r.stderr
    with Registry(site.parent / "state" / "intent.sqlite3") as reg:
        assert reg.open_orders()["db1"].image == "lab-disk/1"


def test_batch_gives_one_result_per_node(site: Path, bmc: IpmiSim) -> None:
    with Admin(load_config(site)) as admin:
        results = power_cycle(admin, ["db1", "nope", "web1", "esx1"], who="rollout:r1")
    by = {r.node: r for r in results}
    assert [r.node for r in results] == ["db1", "nope", "web1", "esx1"]
    assert (by["db1"].ok, by["db1"].state) == (True, "on")
    assert not by["nope"].ok and "no node" in by["nope"].message
    assert not by["web1"].ok and "no power control" in by["web1"].message
    assert not by["esx1"].ok and "Wake-on-LAN can only power a machine on" in \
        by["esx1"].message
    wait_for(bmc.live_guest)
    assert power_events(site)[-1]["who"] == "rollout:r1"


def test_wake_on_lan_sends_the_magic_packet_and_refuses_the_rest(site: Path) -> None:
    port = load_config(site).power.nodes["esx1"].port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", port))
        rx.settimeout(30)
        r = js(site, "node", "power", "esx1", "on")
        packet = rx.recv(1024)
    assert (r["ok"], r["driver"], r["state"]) == (True, "wol", "unknown")
    assert packet == b"\xff" * 6 + bytes.fromhex(ESX1_MAC.replace(":", "")) * 16
    for action in ("off", "cycle", "status"):
        refused = nb(site, "node", "power", "esx1", action, "--yes")
        assert refused.returncode == 2, refused.stderr
        assert "Wake-on-LAN can only power a machine on" in refused.stderr
    assert [e["ok"] for e in power_events(site, ESX1_MAC)] == [True, False, False, False]


class Api:
    def __init__(self, service: Service, token: str) -> None:
        self.base = f"http://127.0.0.1:{service.api_port}/api/v1"
        self.token = token

    async def call(self, method: str, path: str, body: Any = None,
                   token: bool = True) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.request(
                method, self.base + path, headers=headers,
                data=None if body is None else json.dumps(body)) as r:
            text = await r.text()
            assert PASSWORD not in text
            return r.status, json.loads(text)


@pytest.fixture
async def api(site: Path) -> AsyncIterator[Api]:
    service = Service(load_config(site))
    await service.start()
    try:
        token = (site.parent / "state" / "admin.token").read_text().strip()
        yield Api(service, token)
    finally:
        await service.stop()


def documented(kind: str, value: Any) -> None:
    """``value`` is valid against docs/admin-api.md's schema ``kind``."""
    import jsonschema

    text = (ROOT / "docs" / "admin-api.md").read_text()
    block = text.split("## Schemas", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    jsonschema.validate(value, {**json.loads(block), "$ref": f"#/$defs/{kind}"})


async def test_api_power_routes(api: Api, site: Path, bmc: IpmiSim) -> None:
    assert (await api.call("GET", "/nodes/db1/power", token=False))[0] == 401
    assert (await api.call("POST", "/nodes/db1/power", {"action": "on"},
                           token=False))[0] == 401
    assert bmc.live_guest() is None  # refused without a token: nothing happened
    status, r = await api.call("GET", "/nodes/db1/power")
    assert (status, r["state"]) == (200, "off")
    documented("PowerResult", r)
    status, r = await api.call("POST", "/nodes/db1/power", {"action": "on"})
    assert (status, r["state"], r["ok"]) == (200, "on", True)
    assert bmc.live_guest() is not None
    status, r = await api.call("POST", "/nodes/db1/power", {"action": "explode"})
    assert status == 400 and "not one of" in r["error"]
    status, r = await api.call("POST", "/nodes/web1/power", {"action": "on"})
    assert status == 400 and "no power control" in r["error"]
    status, r = await api.call("GET", "/nodes/nope/power")
    assert status == 404
    status, r = await api.call("POST", "/nodes/db1/reimage",
                               {"image": "lab-disk/1", "now": True})
    assert status == 201 and r["state"] == "pending" and r["power"]["ok"]
    documented("ReimageNow", r)
    status, t = await api.call("GET", "/nodes/db1/timeline")
    assert status == 200 and [e["kind"] for e in t["events"]].count("power") == 3
    documented("Timeline", t)
    bmc.close()
    status, r = await api.call("POST", "/nodes/db1/power", {"action": "status"})
    assert status == 502 and "BMC" in r["hint"]
    events = power_events(site)  # a refused or bad request makes none
    assert [(e["action"], e["ok"]) for e in events] == [
        ("status", True), ("on", True), ("cycle", True), ("status", False)]
    assert all(e["who"].startswith("api@") for e in events)
    no_secret_on_disk(site)
    assert stat.S_IMODE((site.parent / "power.toml").stat().st_mode) == 0o600
