"""netbootd installed from its wheel, as an operator installs it, and run outside the checkout.

The wheel is built from the committed tree (``git archive HEAD`` into a temporary directory,
so the checkout gets no build/ or egg-info), installed into a fresh venv, and every command
runs from that venv with a working directory outside the checkout: nothing can come from the
source tree. A file netbootd reads at run time that the wheel lacks fails a test here (the
templates did: every iPXE script answered 500).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP
from test_service import discover

import netbootd
from helpers import loopback_config, loopback_dhcp
from netbootd.config import DEFAULT_LOADER_DIRS
from netbootd.lab.demo import toml_dump
from netbootd.render.environment import builtin_templates_dir

REPO = Path(__file__).resolve().parents[2]
NODE = "pkg1"
NODE_MAC = "52:54:00:0a:0b:01"
NODE_KEY = NODE_MAC.replace(":", "-")
BIOS_PXE = b"PXEClient:Arch:00000:UNDI:002001"  # SeaBIOS + iPXE ROM before it chains

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("curl") is None
    or not (REPO / ".git").exists(),
    reason="needs git, curl and a git checkout to build the wheel from")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def _build_litter() -> set[str]:
    """What a build in the checkout would leave at its top (all of it git-ignored)."""
    return {p.name for p in REPO.iterdir() if p.name in ("build", "dist")
            or p.name.endswith(".egg-info")}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    cwd: Path  # a working directory outside the checkout

    @property
    def env(self) -> dict[str, str]:
        """This process's environment without anything that points into the checkout."""
        drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NETBOOTD_CONFIG", "NOTIFY_SOCKET"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``netbootd ARGS`` from the venv; fails the test (with its output) if it fails."""
        r = subprocess.run([str(self.venv / "bin" / "netbootd"), *args], cwd=self.cwd,
                           env=self.env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    assert REPO not in base.parents, "the temporary directory must lie outside the checkout"
    litter = _build_litter()
    src, dist, venv, cwd = base / "src", base / "dist", base / "venv", base / "cwd"
    src.mkdir()
    cwd.mkdir()
    _git("archive", "--format=tar", "-o", str(base / "src.tar"), "HEAD")
    subprocess.run(["tar", "-xf", str(base / "src.tar"), "-C", str(src)], check=True,
                   timeout=60)
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(src)], cwd=base, env=pip_env, check=True, timeout=600)
    (wheel,) = dist.glob("netbootd-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   cwd=base, env=pip_env, check=True, timeout=600)
    assert _build_litter() == litter, "building the wheel wrote into the checkout"
    return Installed(wheel, venv, cwd)


def test_wheel_holds_every_module_and_template(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    tracked = _git("ls-files", "netbootd", "pxelinux_templates").split()
    modules = {f for f in tracked if f.startswith("netbootd/") and f.endswith(".py")}
    templates = {f"netbootd/{f}" for f in tracked if f.startswith("pxelinux_templates/")}
    assert {f"netbootd/pxelinux_templates/{t}.j2" for t in ("ipxe-node.ipxe", "pxelinux.cfg",
                                                            "nocloud-user-data")} <= templates
    assert sorted(modules - names) == []
    assert sorted(templates - names) == []
    # the dashboard's templates, script and style sheet (package data of netbootd.web)
    ui = {f for f in tracked if f.startswith(("netbootd/web/ui_templates/",
                                              "netbootd/web/ui_static/"))}
    assert {"netbootd/web/ui_templates/fleet.html", "netbootd/web/ui_static/dash.js"} <= ui
    assert sorted(ui - names) == []
    # Nothing else lands at the top of site-packages (no stray pxelinux_templates/ there).
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"netbootd", f"netbootd-{installed.wheel.name.split('-')[1]}.dist-info"}


def test_the_checkout_reads_its_own_top_level_templates() -> None:
    """The suite's editable install (and a bare checkout) read the folder the wheel packs."""
    assert builtin_templates_dir() == REPO / "pxelinux_templates"
    assert not (REPO / "netbootd" / "pxelinux_templates").exists()


def test_version_and_templates_come_from_the_installed_package(installed: Installed) -> None:
    version = installed.wheel.name.split("-")[1]
    assert version == netbootd.__version__
    assert installed.run("--version").stdout.strip() == f"netbootd {version}"
    probe = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import netbootd; from netbootd.render.environment import builtin_templates_dir as d;"
         "print(netbootd.__file__); print(d())"],
        cwd=installed.cwd, env=installed.env, capture_output=True, text=True, check=True,
        timeout=60)
    package, templates = map(Path, probe.stdout.split())
    site = installed.venv.resolve()
    assert site in package.parents and site in templates.parents, probe.stdout
    assert templates == package.parent / "pxelinux_templates"
    assert REPO not in package.parents and REPO not in templates.parents


@pytest.fixture
def relay() -> Iterator[socket.socket]:
    """Stands for a DHCP relay: the proxy answers relayed requests at giaddr:relay_port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def notify() -> Iterator[tuple[str, socket.socket]]:
    """NOTIFY_SOCKET's listening end: READY=1 says every listener is bound."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"netbootd-wheel-{os.getpid()}-{time.monotonic_ns()}"
    s.bind("\0" + name)
    try:
        yield "@" + name, s
    finally:
        s.close()


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "netbootd serve exited before it was ready"
        sock.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        if "READY=1" in message.splitlines():
            return
    raise AssertionError("netbootd serve did not become ready")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _tftp(port: int, name: str) -> bytes:
    r = subprocess.run(["curl", "-sf", f"tftp://127.0.0.1:{port}/{name}", "-o", "-"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, (name, r.returncode)
    return r.stdout


def test_installed_package_serves_a_node(installed: Installed, tmp_path: Path,
                                         relay: socket.socket,
                                         notify: tuple[str, socket.socket]) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"tiny kernel\n" * 4096)
    initrd.write_bytes(b"tiny initrd\n" * 1024)
    # The operator's folder overrides one template (the build stanza the packaged node
    # script includes); every other one comes from the wheel.
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "ipxe-build.ipxe.j2").write_text(
        (REPO / "pxelinux_templates" / "ipxe-build.ipxe.j2").read_text()
        + "echo netbootd: site template\n")
    data = loopback_config(tmp_path, dhcp=loopback_dhcp(relay.getsockname()[1]))
    data["server"]["templates_dir"] = str(site)
    data["groups"] = {"default": {"default": True, "build": "tiny/1.0"}}
    data["nodes"] = {NODE: {"mac": NODE_MAC, "hostname": NODE}}
    config = tmp_path / "netbootd.toml"
    config.write_text(toml_dump(data))

    installed.run("image", "import", "--config", str(config), "--name", "tiny",
                  "--version", "1.0", "--cmdline", "console=ttyS0", str(kernel), str(initrd))
    checked = installed.run("check", "--config", str(config)).stdout
    assert checked.strip().startswith(f"{config}: ok (1 groups, 1 nodes, "), checked

    env = dict(installed.env, NOTIFY_SOCKET=notify[0])
    proc = subprocess.Popen([str(installed.venv / "bin" / "netbootd"), "serve", "--config",
                             str(config)], cwd=installed.cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(notify[1], proc, timeout=120)
        http = f"http://127.0.0.1:{data['http']['port']}"
        tftp_port = data["tftp"]["port"]

        # DHCP: a relayed PXE DISCOVER is offered the BIOS loader ...
        relay.sendto(discover(NODE_MAC, vendor=BIOS_PXE), ("127.0.0.1", data["dhcp"]["port"]))
        offer = BOOTP(relay.recv(4096))
        bootfile = offer.file.rstrip(b"\0").decode()
        assert bootfile == "bios/lpxelinux.0"
        # ... TFTP serves that loader from Debian's package and the node's pxelinux config.
        prefix, _, rest = bootfile.partition("/")
        loader = next(Path(d, rest) for d in DEFAULT_LOADER_DIRS[prefix] if Path(d, rest).is_file())
        assert _tftp(tftp_port, bootfile) == loader.read_bytes()
        cfg = _tftp(tftp_port, f"bios/pxelinux.cfg/01-{NODE_KEY}").decode()
        assert f"{http}/builds/tiny/1.0/vmlinuz" in cfg and "console=ttyS0" in cfg

        # HTTP: the node's iPXE script, rendered from the packaged templates, and its kernel.
        status, body = _get(f"{http}/ipxe/node.ipxe?mac={NODE_KEY}&arch=7")
        script = body.decode()
        assert status == 200 and script.startswith("#!ipxe"), script
        assert f"# netbootd: {NODE} ({NODE}, group default" in script
        assert "echo netbootd: site template\n" in script
        assert _get(f"{http}/builds/tiny/1.0/vmlinuz") == (200, kernel.read_bytes())

        # First boot: the seed the script hands the kernel, and phone-home with its token.
        seed = re.search(r"ds=nocloud(?:-net)?;s=(\S+/)", script)
        assert seed is not None, script
        status, meta = _get(seed[1] + "meta-data")
        assert status == 200 and f"instance-id: {NODE}-tiny-1.0" in meta.decode()
        status, user = _get(seed[1] + "user-data")
        assert status == 200 and user.startswith(b"#cloud-config"), user
        home = re.search(r'(http://[^\s"]+/phone-home/[^\s"]+)', user.decode())
        assert home is not None, user
        post = urllib.request.Request(home[1], data=b"hostname=pkg1&instance_id=pkg1",
                                      method="POST")
        with urllib.request.urlopen(post, timeout=30) as r:
            assert r.status == 200

        # netbootd's own record of the boot, read with the installed CLI.
        deadline = time.monotonic() + 60
        while True:
            timeline = json.loads(installed.run("node", "timeline", NODE, "--config",
                                                str(config), "--json").stdout)
            kinds = [e["kind"] for e in timeline["events"]]
            if "phone-home" in kinds or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "phone-home" in kinds, kinds
        home_event = next(e for e in timeline["events"] if e["kind"] == "phone-home")
        # build: the one the phone-home URL's token was signed for, the one this node was served.
        assert home_event["detail"]["build"] == "tiny/1.0"
        assert home_event["detail"]["hostname"] == NODE

        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert rc == 0, stderr[-4000:]
