"""The systemd service: the unit verifies and is hardened, a real `netbootd serve` speaks the
notify protocol, and it serves DHCP, TFTP and HTTP as an unprivileged user holding only the
unit's capabilities.

systemd is not PID 1 on test machines, so the unit cannot be started here: its directives are
checked by ``systemd-analyze verify`` and ``systemd-analyze security --offline``, and what the
unit grants (user, capabilities) is reproduced with ``setpriv`` in a network namespace.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP
from test_service import discover

import netbootd
from helpers import loopback_config, make_store, private_netns
from netbootd.lab.demo import toml_dump

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "netbootd.service"
WORKTREE = Path(netbootd.__file__).resolve().parents[1]
NOBODY = 65534


def directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, values of repeated keys in order."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_capabilities() -> list[str]:
    """The capability names the unit grants, as setpriv spells them (net_bind_service)."""
    d = directives(UNIT)
    ambient = d["AmbientCapabilities"][0].split()
    assert ambient == d["CapabilityBoundingSet"][0].split()
    return [c.removeprefix("CAP_").lower() for c in ambient]


def runnable_unit(tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout (verify checks the binary exists;
    /usr/local/bin/netbootd is where a system-wide pip install puts it, absent here)."""
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable} -m netbootd",
                  UNIT.read_text(), flags=re.M)
    path = tmp / "netbootd.service"  # verify wants a unit name ending in .service
    path.write_text(text)
    return path


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze not installed")


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = runnable_unit(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # Warnings (unknown keys, bad values) do not change the exit code: none may name our unit.
    ours = [line for line in (r.stdout + r.stderr).splitlines()
            if "netbootd.service" in line or str(tmp_path) in line]
    assert not ours, ours


@needs_systemd_analyze
def test_unit_is_hardened(tmp_path: Path) -> None:
    d = directives(UNIT)
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["NotifyAccess"] == ["main"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit_capabilities() == ["net_bind_service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "DynamicUser": "yes", "StateDirectory": "netbootd"}.items():
        assert d[key] == [value], key
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_UNIX"}
    assert "@system-service" in d["SystemCallFilter"]
    # systemd's own exposure score (0 = locked down, 10 = unsafe); `--threshold` is in tenths.
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                        "--no-pager", str(runnable_unit(tmp_path))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr


class NotifySocket:
    """The listening end of NOTIFY_SOCKET, as systemd holds it."""

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address, self.sock = address, sock

    def next(self, timeout: float = 30.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    def wait_for(self, key: str, timeout: float = 30.0) -> list[dict[str, str]]:
        """Messages up to and including the first one holding ``key``."""
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while not seen or key not in seen[-1]:
            seen.append(self.next(max(0.1, deadline - time.monotonic())))
        return seen


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"netbootd-test-{secrets.token_hex(6)}"
        sock.bind("\0" + name)
        address = "@" + name
    try:
        yield NotifySocket(address, sock)
    finally:
        sock.close()


def test_serve_notifies_ready_watchdog_reload_and_stopping(notify_socket: NotifySocket,
                                                           tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path)
    config = tmp_path / "netbootd.toml"
    config.write_text(toml_dump(data))
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "netbootd", "serve", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        first = notify_socket.next()
        assert first["READY"] == "1" and "tftp port" in first["STATUS"]
        # READY means bound: the listeners answer at once, no retry loop.
        with socket.create_connection(("127.0.0.1", data["http"]["port"]), timeout=5):
            pass
        tftp = subprocess.run(["curl", "-sf", f"tftp://127.0.0.1:{data['tftp']['port']}/"
                               "builds/demo/2.0/vmlinuz"], capture_output=True, timeout=30)
        assert tftp.stdout == b"kernel 2.0"
        pings = [m for m in (notify_socket.next() for _ in range(3)) if m.get("WATCHDOG")]
        assert len(pings) == 3  # every 0.2 s: half of WATCHDOG_USEC

        proc.send_signal(signal.SIGHUP)
        seen = notify_socket.wait_for("RELOADING")
        assert seen[-1]["RELOADING"] == "1" and seen[-1]["MONOTONIC_USEC"].isdigit()
        assert "READY" in notify_socket.wait_for("READY")[-1]

        proc.send_signal(signal.SIGTERM)
        assert notify_socket.wait_for("STOPPING")[-1]["STOPPING"] == "1"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_no_watchdog_pings_for_another_pid(tmp_path: Path) -> None:
    from netbootd.sdnotify import watchdog_interval
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


# -- unprivileged, in a network namespace of the test's own ----------------------------------

needs_root_tools = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "setpriv", "ss", "curl"))
    or not Path("/usr/bin/python3").exists(),
    reason="needs root, ip, setpriv, ss, curl and /usr/bin/python3")


@pytest.fixture
def netns() -> Iterator[str]:
    with private_netns("nbdsvc") as name:
        yield name


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory the service user owns (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="netbootd-svc-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def in_netns(ns: str, *cmd: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                          timeout=60, **kw)  # type: ignore[call-overload]


def service_user_tree(dest: Path) -> str:
    """A PYTHONPATH the service user can read: this checkout's package and templates, and the
    installed packages it imports, copied under ``dest``. The venv's interpreter, and maybe the
    checkout, sit under a private home (/root is 0700), out of that user's reach as on a real
    host; Debian's /usr/bin/python3 (the same 3.11 ABI) runs the copy."""
    imported = ("import sys, netbootd.cli\n"
                "for m in list(sys.modules.values()): print(getattr(m, '__file__', None) or '')")
    probe = subprocess.run([sys.executable, "-c", imported], capture_output=True, text=True,
                           check=True, timeout=60)
    paths = sysconfig.get_paths()
    sites = {Path(paths["purelib"]), Path(paths["platlib"])}
    tops = {(site, Path(f).relative_to(site).parts[0]) for f in probe.stdout.split()
            for site in sites if site in Path(f).parents}
    for site, top in sorted(tops):
        src = site / top
        if src.is_dir():
            shutil.copytree(src, dest / "site" / top, dirs_exist_ok=True)
        else:
            (dest / "site").mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / "site" / top)
    for part in ("netbootd", "pxelinux_templates"):
        shutil.copytree(WORKTREE / part, dest / "src" / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return f"{dest / 'src'}:{dest / 'site'}"


# A DHCP relay at 127.0.0.1:6767 inside the namespace: send one PXE DISCOVER to udp/67 and
# print the answer (hex). The proxy answers relayed requests at giaddr:relay_port.
RELAY = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 6767)); s.settimeout(10)
s.sendto(bytes.fromhex(sys.argv[1]), ("127.0.0.1", 67))
print(s.recv(4096).hex())
"""


@needs_root_tools
@pytest.mark.needs_root
def test_serves_as_an_unprivileged_user_with_only_the_units_capabilities(
        netns: str, nobody_dir: Path) -> None:
    make_store(nobody_dir / "store")
    data = loopback_config(nobody_dir)
    data["server"]["interface"] = "lo"  # SO_BINDTODEVICE, without CAP_NET_RAW
    data["dhcp"] = {"listen": "0.0.0.0", "port": 67, "proxy_port": 4011, "relay_port": 6767}
    data["tftp"] = {"listen": "0.0.0.0", "port": 69}
    data["http"] = {"listen": "0.0.0.0", "port": 80}
    config = nobody_dir / "netbootd.toml"
    config.write_text(toml_dump(data))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(nobody_dir / "notify.sock"))

    caps = ",".join(["-all", *(f"+{c}" for c in unit_capabilities())])
    pythonpath = service_user_tree(nobody_dir / "python")
    for p in [nobody_dir, *nobody_dir.rglob("*")]:
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
    env = dict(os.environ, PYTHONPATH=pythonpath,
               NOTIFY_SOCKET=str(nobody_dir / "notify.sock"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
         "--clear-groups", f"--inh-caps={caps}", f"--ambient-caps={caps}",
         f"--bounding-set={caps}", "--no-new-privs",
         "/usr/bin/python3", "-m", "netbootd", "serve", "--config", str(config)],
        env=env, cwd=nobody_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        notify.settimeout(60)
        try:
            ready = notify.recv(4096)
        except TimeoutError:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"no READY=1 from the unprivileged server: {err.decode()[-3000:]}")
        assert b"READY=1" in ready

        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
        assert uids is not None and set(uids[1].split()) == {str(NOBODY)}
        cap_eff = re.search(r"^CapEff:\s+([0-9a-f]+)$", status, re.M)
        assert cap_eff is not None and int(cap_eff[1], 16) == 1 << 10  # CAP_NET_BIND_SERVICE

        udp = in_netns(netns, "ss", "-Hlnup").stdout.decode()
        tcp = in_netns(netns, "ss", "-Hlntp").stdout.decode()
        for port, table in ((67, udp), (4011, udp), (69, udp), (80, tcp)):
            assert re.search(rf":{port}\s.*pid={proc.pid},", table), (port, table)

        tftp = in_netns(netns, "curl", "-sf", "tftp://127.0.0.1/builds/demo/2.0/vmlinuz")
        assert tftp.stdout == b"kernel 2.0", tftp.stderr
        http = in_netns(netns, "curl", "-sf", "http://127.0.0.1/builds/demo/1.0/vmlinuz")
        assert http.stdout == b"kernel 1.0", http.stderr
        pkt = discover("52:54:00:00:00:02", vendor=b"PXEClient:Arch:00000:UNDI:002001")
        dhcp = in_netns(netns, "/usr/bin/python3", "-c", RELAY, pkt.hex())
        assert dhcp.returncode == 0, dhcp.stderr
        reply = BOOTP(bytes.fromhex(dhcp.stdout.decode().strip()))
        assert reply.file.rstrip(b"\0") == b"bios/lpxelinux.0"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
