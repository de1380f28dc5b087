"""Power control with no hand on the machine: a QEMU guest behind an external BMC (QEMU's
ipmi-bmc-extern + isa-ipmi-kcs, wired to OpenIPMI's ipmi_sim, which starts the guest on
"chassis power on"), reached over IPMI-over-LAN at the lab namespace's address.

``netbootd node power`` turns it on (it PXE-boots the demo appliance through netbootd: its
DHCP and phone-home events), ``status`` says on, ``cycle`` makes it boot again (a second
phone-home), ``off`` and ``status`` say off; then ``node reimage --now`` orders a disk image
and power-cycles the node, which PXE-boots the installer, writes the disk and reports done.
Every step is asserted from netbootd's state (events, the order) or the guest (its process,
its disk); the BMC password is looked for in netbootd's log, every CLI and API answer, and
the command lines and environments of every process while the test runs."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import BOOT_TIMEOUT, build_reimage_images
from netbootd.lab.bmc import IpmiSim, qemu_bios_guest
from netbootd.lab.demo import lab_config, start_netbootd, timeline, wait_for_event
from netbootd.lab.netlab import Lab, lab_prerequisites
from netbootd.state.events import BootEvent
from netbootd.state.registry import Registry
from power_watch import ProcWatch

_missing = lab_prerequisites("bios") + [
    f"{tool} (package {pkg})" for tool, pkg in (("ipmi_sim", "openipmi"),
                                                ("ipmitool", "ipmitool"))
    if shutil.which(tool) is None]
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(_missing), reason="; ".join(_missing))]

ROOT = Path(__file__).resolve().parents[2]
MAC = "52:54:00:e2:90:01"
MARKER = "NETBOOTD-DISK-power-1"
PASSWORD = "Bmc-e2e-5a1f-77"
BMC_PORT = 10623  # inside the lab namespace, which is the test's own
CHARDEV_PORT = 10002


def run(*args: str, timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def power_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The installer build and a disk image with this module's marker."""
    work = tmp_path_factory.mktemp("power")
    return work, build_reimage_images(work, MARKER)


class Site:
    """netbootd's CLI run inside the lab namespace (where the BMC's address is), and its API
    on a unix socket; every answer is checked for the password."""

    def __init__(self, lab: Lab, config: Path, socket_path: Path, token: Path) -> None:
        self.lab, self.config, self.socket, self.token = lab, config, socket_path, token
        self.answers: list[str] = []

    def cli(self, *args: str) -> Any:
        done = subprocess.run(["ip", "netns", "exec", self.lab.netns, sys.executable, "-m",
                               "netbootd", *args, "--config", str(self.config), "--json"],
                              capture_output=True, text=True, timeout=600, cwd=ROOT,
                              check=False)
        self.answers.append(done.stdout + done.stderr)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return json.loads(done.stdout)

    def power(self, action: str) -> dict[str, Any]:
        r: dict[str, Any] = self.cli("node", "power", "lab9", action, "--yes")
        assert r["ok"], r
        return r

    def api(self, method: str, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("localhost", timeout=120)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(str(self.socket))
        conn.sock = sock
        try:
            conn.request(method, f"/api/v1{path}", headers={
                "Authorization": f"Bearer {self.token.read_text().strip()}"})
            resp = conn.getresponse()
            body = resp.read().decode()
        finally:
            conn.close()
        self.answers.append(body)
        return resp.status, json.loads(body)


def boot_after(state_db: Path, after: int, bmc: IpmiSim, console: Path,
               kind: str = "phone-home") -> BootEvent:
    try:
        return wait_for_event(state_db, MAC, kind, BOOT_TIMEOUT, after_id=after)
    except TimeoutError as e:
        tail = console.read_text(errors="replace")[-3000:] if console.exists() else ""
        raise AssertionError(f"{e}\nguests started: {bmc.guest_pids()}\nconsole:\n{tail}") \
            from None


def wait_until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


def test_power_on_cycle_off_and_reimage_now(demo_store: Path, tmp_path: Path,
                                            power_builds: tuple[Path, dict[str, Any]]) -> None:
    work, info = power_builds
    creds = tmp_path / "power.toml"
    creds.write_text(f'[lab9]\npassword = "{PASSWORD}"\n')
    creds.chmod(0o600)
    admin_socket = tmp_path / "admin.sock"
    with Lab() as lab, ProcWatch(PASSWORD) as watch:
        config = lab_config(
            lab, tmp_path, tmp_path / "store",
            reimage={"installer": "netbootd-installer/1.0"},
            power={"credentials": str(creds), "timeout": 120},
            admin={"socket": str(admin_socket)},
            groups={"default": {"default": True, "build": "demo/1.0",
                                "vars": {"power_state": "none"}}},  # stays up once booted
            nodes={"lab9": {"mac": MAC, "hostname": "lab9", "power": {
                "driver": "ipmi", "address": lab.server_ip, "port": BMC_PORT,
                "user": "admin"}}})
        for tree in (demo_store / "builds" / "demo" / "1.0",
                     work / "inst" / "builds" / "netbootd-installer" / "1.0"):
            run("-m", "netbootd", "image", "import", "--kind", "tree", str(tree),
                "--config", str(config))
        run("-m", "netbootd", "image", "import", "--kind", "disk", "--name", "lab-disk",
            "--version", "1", str(work / "lab.img.gz"), "--config", str(config))

        disk = tmp_path / "lab9.raw"
        with disk.open("wb") as f:
            f.truncate(16 << 20)
        console = tmp_path / "lab9.console.log"
        guest = qemu_bios_guest(lab.add_tap("tbmc0"), name="lab9", mac=MAC, disk=disk,
                                console=console, chardev=(lab.server_ip, CHARDEV_PORT))
        with IpmiSim(tmp_path / "bmc", address=lab.server_ip, port=BMC_PORT, user="admin",
                     password=PASSWORD, chardev_port=CHARDEV_PORT, guest=guest) as bmc:
            bmc.start(lab.run)
            state_db = tmp_path / "state" / "state.sqlite3"
            nb = start_netbootd(lab, ["serve", "--config", str(config)], tmp_path, state_db)
            site = Site(lab, config, admin_socket, tmp_path / "state" / "admin.token")

            # off at first: nothing has booted
            assert site.power("status")["state"] == "off"
            assert bmc.live_guest() is None
            assert [e.kind for e in timeline(state_db, MAC)] == ["power"]  # nothing booted
            # on: the BMC starts the machine, which PXE-boots through netbootd
            assert site.power("on")["state"] == "on"
            first = boot_after(state_db, 0, bmc, console)
            kinds = [e.kind for e in timeline(state_db, MAC)]
            assert "dhcp-offer" in kinds and kinds.index("dhcp-offer") < kinds.index(
                "phone-home")
            assert first.detail["build"] == "demo/1.0"
            assert site.power("status")["state"] == "on"
            status, answer = site.api("GET", "/nodes/lab9/power")
            assert (status, answer["state"]) == (200, "on")
            # cycle: it boots again
            assert site.power("cycle")["state"] == "on"
            second = boot_after(state_db, first.id, bmc, console)
            assert second.id > first.id
            offers = [e for e in timeline(state_db, MAC, first.id) if e.kind == "dhcp-offer"]
            assert offers and offers[0].id < second.id
            # off: the machine's process ends, the BMC says off
            assert site.power("off")["state"] == "off"
            wait_until(lambda: bmc.live_guest() is None, 60, "the guest to end")
            assert site.power("status")["state"] == "off"

            # reimage --now: the order, a power cycle, the installer writes the disk
            order = site.cli("node", "reimage", "lab9", "--image", "lab-disk/1", "--now",
                             "--yes")
            assert order["state"] == "pending" and order["power"]["state"] == "on"
            done = boot_after(state_db, second.id, bmc, console, kind="reimage-done")
            assert done.detail["image"] == "lab-disk/1" and done.detail["node"] == "lab9"
            assert info["raw_sha256"] in done.detail["reason"]
            with Registry(tmp_path / "state" / "intent.sqlite3") as reg:
                (action,) = reg.actions("lab9")
                assert (action.id, action.state, action.attempts) == (order["id"], "done", 1)
                assert reg.overrides()["lab9"].mode == "local"
            # the installer powers the machine off after its report
            wait_until(lambda: bmc.live_guest() is None, 120, "the installer to power off")
            status, answer = site.api("GET", "/nodes/lab9/power")
            assert (status, answer["state"]) == (200, "off")
            with disk.open("rb") as f:
                assert MARKER.encode() in f.read(1 << 20)

            power = [e.detail for e in timeline(state_db, MAC) if e.kind == "power"]
            assert [(p["action"], p["state"], p["ok"]) for p in power] == [
                ("status", "off", True), ("on", "on", True), ("status", "on", True),
                ("status", "on", True), ("cycle", "on", True), ("off", "off", True),
                ("status", "off", True), ("cycle", "on", True), ("status", "off", True)]
            assert nb.proc.poll() is None
            log = nb.log_text()
    assert watch.seen, "no ipmitool process was caught; the password check saw nothing"
    assert not watch.leaks, watch.leaks
    assert PASSWORD not in log
    assert not [a for a in site.answers if PASSWORD in a]
    for f in (tmp_path / "state").iterdir():
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f
