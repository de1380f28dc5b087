"""Power config: node specs and [power] parsed with every problem listed (and no password
accepted in the config); the credentials file's mode and contents; the ipmitool command line
holds no secret; Wake-on-LAN's packet; batch results for nodes without power control."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import loopback_config
from netbootd.config import parse_config
from netbootd.errors import BuildError, ConfigError
from netbootd.power.control import PowerControl
from netbootd.power.credentials import Secret, load_credentials, secret_for
from netbootd.power.driver import PowerError, PowerUnsupported
from netbootd.power.ipmi import IpmiDriver
from netbootd.power.spec import PowerConfig, PowerSpec
from netbootd.power.wol import WolDriver, magic_packet

ROOT = Path(__file__).resolve().parents[2]


def config_with(tmp_path: Path, power: Any = None, **node_power: Any) -> dict[str, Any]:
    data = loopback_config(tmp_path)
    if power is not None:
        data["power"] = power
    for node, spec in node_power.items():
        data["nodes"][node]["power"] = spec
    return data


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.problems


def test_specs_parse_with_defaults(tmp_path: Path) -> None:
    c = parse_config(config_with(
        tmp_path, {"credentials": "/etc/netbootd/power.toml", "parallel": 4},
        db1={"driver": "ipmi", "address": "10.0.9.12", "user": "admin"},
        esx1={"driver": "wol", "interface": "eth0", "broadcast": "10.0.9.255"}))
    assert c.power.credentials == Path("/etc/netbootd/power.toml")
    assert (c.power.parallel, c.power.timeout) == (4, 30.0)
    assert c.power.nodes["db1"] == PowerSpec(driver="ipmi", address="10.0.9.12", port=623,
                                             user="admin", interface="lanplus", cipher=3)
    wol = c.power.nodes["esx1"]
    assert (wol.mac, wol.port, wol.broadcast, wol.interface) == (
        "52:54:00:00:00:03", 9, "10.0.9.255", "eth0")  # the node's MAC by default
    assert set(c.power.nodes) == {"db1", "esx1"}


def test_every_power_problem_is_listed_at_once(tmp_path: Path) -> None:
    found = problems(config_with(
        tmp_path, {"timeout": 0, "parallel": "8", "color": "red"},
        db1={"driver": "ipmi", "address": "bad host!", "password": "hunter2", "cipher": 99},
        esx1={"driver": "wol", "mac": "zz", "broadcast": "10.0.9"},
        web1={"driver": "telnet"}))
    text = "\n".join(found)
    for expected in ("power.color: unknown key", "power.timeout:", "power.parallel:",
                     "nodes.db1.power.address:", "nodes.db1.power.user: required",
                     "nodes.db1.power.password: passwords do not go in the config",
                     "nodes.db1.power.cipher:", "nodes.esx1.power.mac:",
                     "nodes.esx1.power.broadcast:", "nodes.web1.power.driver: 'telnet'"):
        assert expected in text, (expected, found)
    assert "hunter2" not in text


def test_an_ipmi_node_needs_a_credentials_file(tmp_path: Path) -> None:
    found = problems(config_with(tmp_path, db1={"driver": "ipmi", "address": "bmc1",
                                                "user": "admin"}))
    assert any(p.startswith("power.credentials: required") for p in found), found


def test_a_power_value_that_is_not_a_table(tmp_path: Path) -> None:
    found = problems(config_with(tmp_path, db1="ipmi://bmc1"))
    assert any(p.startswith("nodes.db1.power: expected an inline table") for p in found)


def test_credentials_file_mode_and_contents(tmp_path: Path) -> None:
    f = tmp_path / "power.toml"
    f.write_text('[default]\npassword = "pw-default"\n[db1]\npassword = "pw-db1"\n')
    f.chmod(0o640)
    with pytest.raises(ConfigError) as e:
        load_credentials(f)
    assert f"chmod 600 {f}" in str(e.value) and "0640" in str(e.value)
    f.chmod(0o600)
    creds = load_credentials(f)
    assert secret_for(creds, "db1", "") == Secret("pw-db1")
    assert secret_for(creds, "web1", "") == Secret("pw-default")
    assert secret_for(creds, "web1", "rack3") is None  # a named credential does not fall back
    assert "pw-db1" not in repr(creds) and "pw-db1" not in str(creds["db1"])


def test_credentials_file_problems_name_tables_not_values(tmp_path: Path) -> None:
    f = tmp_path / "power.toml"
    f.write_text('[a]\npassword = ""\n[b]\npasword = "typo-secret"\n[c]\n'
                 'password = "123456789012345678901"\n')
    f.chmod(0o600)
    with pytest.raises(ConfigError) as e:
        load_credentials(f)
    text = str(e.value)
    assert "a.password: required" in text and "b.pasword: unknown key" in text
    assert "c.password: longer than 20 bytes" in text
    assert "typo-secret" not in text and "12345678901234567890" not in text
    f.write_text('[a]\npassword = "x\n')  # broken TOML: where, not what
    with pytest.raises(ConfigError) as e:
        load_credentials(f)
    assert "not valid TOML" in str(e.value)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_credentials(missing)
    assert f"install -m 600 /dev/null {missing}" in str(e.value)


def test_a_symlinked_credentials_file_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text('[a]\npassword = "x"\n')
    real.chmod(0o600)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    with pytest.raises(ConfigError):
        load_credentials(link)


def test_ipmitool_argv_holds_no_secret() -> None:
    d = IpmiDriver(PowerSpec(driver="ipmi", address="10.0.9.12", user="admin"))
    argv = d.argv(7, "chassis", "power", "status")
    assert argv == ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "10.0.9.12", "-p", "623",
                    "-U", "admin", "-f", "/dev/fd/7", "-N", "1", "-R", "3", "chassis", "power",
                    "status"]
    lan = IpmiDriver(PowerSpec(driver="ipmi", address="b", user="u", interface="lan"))
    assert "-C" not in lan.argv(3, "x")


def test_a_missing_ipmitool_is_a_clear_error() -> None:
    d = IpmiDriver(PowerSpec(driver="ipmi", address="127.0.0.1", user="u"),
                   tool="/nonexistent/ipmitool")
    with pytest.raises(PowerError, match="ipmitool is not installed"):
        d.run("status", "pw")


def test_wake_on_lan_packet_and_refusals() -> None:
    mac = "52:54:00:ab:cd:ef"
    p = magic_packet(mac)
    assert len(p) == 102 and p[:6] == b"\xff" * 6 and p[6:12] == bytes.fromhex("525400abcdef")
    assert p[6:] == bytes.fromhex("525400abcdef") * 16
    d = WolDriver(PowerSpec(driver="wol", mac=mac))
    for action in ("off", "cycle", "status"):
        with pytest.raises(PowerUnsupported, match="Wake-on-LAN can only power a machine on"):
            d.run(action, None)


class CountingDriver:
    """A driver whose machine is a variable: on/off/cycle change it, status reads it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.state = "off"

    @property
    def name(self) -> str:
        return "counting"

    def run(self, action: str, secret: str | None) -> str:
        self.calls.append(f"{action}:{secret}")
        if action in ("on", "cycle"):
            self.state = "on"
        elif action == "off":
            self.state = "off"
        return self.state


def test_control_runs_records_and_batches(tmp_path: Path) -> None:
    creds = tmp_path / "power.toml"
    creds.write_text('[db1]\npassword = "pw1"\n')
    creds.chmod(0o600)
    power = PowerConfig(credentials=creds, parallel=2, nodes={
        "db1": PowerSpec(driver="ipmi", address="b1", user="u"),
        "db2": PowerSpec(driver="ipmi", address="b2", user="u")})
    machine = CountingDriver()
    seen = []
    control = PowerControl(power, record=seen.append, drivers=lambda s, t: machine)
    assert control.run("db1", "cycle").state == "on"
    with pytest.raises(BuildError, match="no power control"):
        control.run("web1", "on")
    with pytest.raises(BuildError, match="not one of"):
        control.run("db1", "explode")
    results = control.batch(["db1", "db2", "web1"], "off")
    assert [(r.node, r.ok) for r in results] == [("db1", True), ("db2", False),
                                                 ("web1", False)]
    assert "has no [db2]" in results[1].message  # no password for db2, none sent
    assert machine.calls == ["cycle:pw1", "off:pw1"]
    # failures are recorded too (db2: no password); a node without power has nothing to record
    assert sorted((r.node, r.action, r.ok) for r in seen) == [
        ("db1", "cycle", True), ("db1", "off", True), ("db2", "off", False)]
    os.chmod(creds, 0o644)  # a batch whose credentials are refused: every node says why
    assert all(not r.ok and "chmod 600" in r.message
               for r in control.batch(["db1", "db2"], "cycle"))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to become another user (setpriv)")
def test_a_credentials_file_this_user_cannot_read_is_exit_code_4(tmp_path: Path) -> None:
    f = tmp_path / "power.toml"
    f.write_text('[a]\npassword = "x"\n')
    f.chmod(0o600)
    os.chmod(tmp_path, 0o755)  # the directory is open; the file is root's alone
    probe = ("import sys; sys.path.insert(0, sys.argv[1])\n"
             "from netbootd.power.credentials import load_credentials\n"
             "from netbootd.errors import ConfigError\n"
             "try:\n    load_credentials(__import__('pathlib').Path(sys.argv[2]))\n"
             "except ConfigError as e:\n    print(getattr(e, 'exit_code', 2), e)\n")
    out = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                          sys.executable, "-c", probe, str(ROOT), str(f)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("4 ") and "permission denied" in out, out
