"""The demo lab: build an appliance, serve it with netbootd, PXE-boot a QEMU client.

By default the appliance is the KVM hypervisor (images/kvm-hypervisor: Debian 12, live-boot,
cloud-init, libvirt); ``--quick`` boots the busybox demo appliance (images/demo) instead.

``python -m netbootd.lab.demo`` (root) is the README's first command after its install step.
The helpers here (start netbootd in the lab namespace, wait for a node's phone-home in
netbootd's own state database, print a boot timeline) are shared with the end-to-end tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.lab.netlab import Firmware, Lab, QemuGuest, lab_prerequisites
from netbootd.state.events import BootEvent, StateDB

REPO = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO / "images" / "demo" / "build.py"
KVM_RECIPE = REPO / "images" / "kvm-hypervisor" / "build.py"
DEFAULT_CACHE = REPO / "images" / ".cache"


def build_demo(store: Path, version: str, cache: Path = DEFAULT_CACHE,
               name: str = "demo", arch: str = "amd64") -> Path:
    """Run the demo appliance recipe (for ``arch``: amd64 or arm64) into ``store``; the
    build's directory."""
    subprocess.run([sys.executable, str(DEMO_RECIPE), "--store", str(store), "--name", name,
                    "--version", version, "--cache", str(cache), "--arch", arch], check=True)
    return store / "builds" / name / version


def toml_dump(data: dict[str, Any]) -> str:
    """A small TOML writer for the lab's generated configs (tables, strings, ints, bools)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(i) for i in v) + "]"
        return json.dumps(str(v))

    def emit(prefix: str, table: dict[str, Any]) -> None:
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {scalar(v)}" for k, v in table.items() if not isinstance(v, dict))
        for k, v in table.items():
            if isinstance(v, dict):
                emit(f"{prefix}.{json.dumps(k) if '.' in k else k}", v)

    for section, table in data.items():
        if section in ("groups", "nodes"):
            for name, t in table.items():
                emit(f"{section}.{name}", t)
        else:
            emit(section, table)
    return "\n".join(lines) + "\n"


def lab_config(lab: Lab, workdir: Path, store: Path, *, groups: dict[str, Any],
               nodes: dict[str, Any] | None = None, **sections: Any) -> Path:
    """Write a netbootd config for ``lab`` (bound to its bridge) and return its path."""
    data: dict[str, Any] = {
        "server": {"address": lab.server_ip, "interface": lab.bridge,
                   "state_dir": str(workdir / "state"), "store_dir": str(store)},
        **sections, "groups": groups, "nodes": nodes or {}}
    path = workdir / "netbootd.toml"
    path.write_text(toml_dump(data))
    return path


@dataclass
class NetbootdProcess:
    proc: subprocess.Popen[Any]
    log: Path
    state_db: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_netbootd(lab: Lab, args: list[str], workdir: Path, state_db: Path,
                   timeout: float = 30.0) -> NetbootdProcess:
    """Run ``python -m netbootd ARGS`` inside the lab namespace and wait until it serves."""
    log = workdir / "netbootd.log"
    fh = log.open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = lab.run([sys.executable, "-m", "netbootd", *args], stdout=fh, stderr=subprocess.STDOUT,
                   env=env, cwd=str(REPO))
    fh.close()
    nb = NetbootdProcess(proc, log, state_db)
    deadline = time.monotonic() + timeout
    while "netbootd serving" not in nb.log_text():
        if proc.poll() is not None:
            raise RuntimeError(f"netbootd exited with {proc.returncode}:\n{nb.log_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"netbootd did not start within {timeout} s:\n{nb.log_text()}")
        time.sleep(0.1)
    return nb


def wait_for_event(state_db: Path, mac: str, kind: str, timeout: float,
                   after_id: int = 0, guest: QemuGuest | None = None) -> BootEvent:
    """Poll netbootd's state database until ``mac`` has an event of ``kind``."""
    deadline = time.monotonic() + timeout
    grace_taken = False
    while True:
        if state_db.exists():
            with StateDB.open_readonly(state_db) as db:
                for e in db.timeline(mac, after_id):
                    if e.kind == kind:
                        return e
        if guest is not None and not guest.running():
            if grace_taken:  # exited, and its last request is not coming
                deadline = 0.0
            else:
                grace_taken = True  # it may power off right after its last request
                time.sleep(1.0)
                continue
        if time.monotonic() > deadline:
            tail = guest.serial_text()[-2000:] if guest is not None else ""
            raise TimeoutError(f"no {kind} event for {mac} within {timeout:.0f} s; "
                               f"console tail:\n{tail}")
        time.sleep(0.25)


def timeline(state_db: Path, mac: str, after_id: int = 0) -> list[BootEvent]:
    with StateDB.open_readonly(state_db) as db:
        return db.timeline(mac, after_id)


def format_timeline(events: list[BootEvent], t0: float) -> str:
    rows = []
    for e in events:
        d = e.detail
        what = d.get("bootfile") or d.get("file") or d.get("path") or d.get("build") or ""
        extra = ""
        if e.kind == "phone-home":
            extra = f" hostname={d.get('hostname')} build={d.get('build')}"
        elif e.kind.startswith("dhcp-"):
            extra = f" arch={d.get('arch')} node={d.get('node')} build={d.get('build')}"
        rows.append(f"  +{e.ts - t0:6.2f}s  {e.kind:<12} {what}{extra}")
    return "\n".join(rows)


DEMO_MAC = "52:54:00:de:00:01"
DEMO_UUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
# The hypervisor's root (squashfs) is fetched into RAM; images/README.md has the minimum.
KVM_DEMO_MEMORY_MB = 1024


def build_kvm(store: Path, version: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Run the KVM hypervisor recipe into ``store`` (cached by its inputs); the build's
    directory."""
    subprocess.run([sys.executable, str(KVM_RECIPE), "--store", str(store), "--version",
                    version, "--cache", str(cache)], check=True)
    return store / "builds" / "kvm-hypervisor" / version


def print_funnel(state_db: Path, mac: str, build_dir: Path) -> None:
    """The node's boot funnel (stages of its last boot), as ``netbootd node timeline`` shows."""
    from netbootd.cli_admin import funnel_lines
    from netbootd.core.funnel import BuildRoles, funnel

    m = json.loads((build_dir / "manifest.json").read_text())
    ref = f"{m['name']}/{m['version']}"
    roles = {ref: BuildRoles(kernel=m.get("kernel"), initrds=tuple(m.get("initrds", ())),
                             rootfs=m.get("rootfs"))}
    print("\n".join(funnel_lines(funnel(timeline(state_db, mac), roles).as_json())))


def wait_for_report(state_db: Path, mac: str, timeout: float,
                    guest: QemuGuest | None = None) -> BootEvent:
    """Poll the state database until ``mac`` has its ready or failed report."""
    deadline = time.monotonic() + timeout
    while True:
        if state_db.exists():
            with StateDB.open_readonly(state_db) as db:
                for e in db.timeline(mac):
                    if e.kind in ("ready", "failed"):
                        return e
        if guest is not None and not guest.running():
            raise TimeoutError(f"the guest exited before its report; console tail:\n"
                               f"{guest.serial_text()[-2000:]}")
        if time.monotonic() > deadline:
            tail = guest.serial_text()[-2000:] if guest is not None else ""
            raise TimeoutError(f"no ready/failed report for {mac} within {timeout:.0f} s; "
                               f"console tail:\n{tail}")
        time.sleep(0.5)


def run_demo(workdir: Path, firmware: Firmware, timeout: float, quick: bool = False) -> int:
    problems = lab_prerequisites(firmware)
    if problems:
        print("the demo needs: " + "; ".join(problems), file=sys.stderr)
        return 2
    store = workdir / "store"
    if quick:
        print("== building the demo appliance (Debian kernel + busybox first-boot agent)")
        build = build_demo(store, "1.0")
        group = {"default": True, "build": "demo/1.0", "vars": {"power_state": "poweroff"}}
        memory = 512
    else:
        print("== building the KVM hypervisor appliance (Debian 12: live-boot, cloud-init, "
              "libvirt; first run a few minutes, then cached)")
        t_build = time.monotonic()
        build = build_kvm(store, "1.0")
        print(f"== build ready in {time.monotonic() - t_build:.1f} s")
        group = {"default": True, "build": "kvm-hypervisor/1.0",
                 "vars": {"power_state": "none"}}
        memory = KVM_DEMO_MEMORY_MB
    with Lab() as lab:
        config = lab_config(lab, workdir, store, groups={"default": group},
                            nodes={"appliance-01": {"uuid": DEMO_UUID,
                                                    "hostname": "appliance-01"}})
        print(f"== netbootd on {lab.server_ip} (namespace {lab.netns}); site DHCP: dnsmasq "
              f"on {lab.site_ip}, addresses only")
        nb = start_netbootd(lab, ["serve", "--config", str(config)], workdir,
                            workdir / "state" / "state.sqlite3")
        print(f"== powering on a {firmware.upper()} QEMU client, MAC {DEMO_MAC}, "
              f"GUID {DEMO_UUID}, {memory} MB RAM")
        t0 = time.time()
        guest = lab.start_qemu("demo", firmware=firmware, mac=DEMO_MAC, uuid=DEMO_UUID,
                               memory_mb=memory)
        try:
            report = wait_for_report(nb.state_db, DEMO_MAC, timeout, guest=guest)
        except TimeoutError as e:
            print(f"demo failed: {e}\n--- netbootd log ---\n{nb.log_text()[-3000:]}",
                  file=sys.stderr)
            return 1
        print("== boot timeline (netbootd's record)")
        print(format_timeline(timeline(nb.state_db, DEMO_MAC), t0))
        print_funnel(nb.state_db, DEMO_MAC, build)
        d = report.detail
        print(f"== {d.get('hostname') or 'appliance-01'} is {report.kind} running "
              f"{d.get('build')} {report.ts - t0:.1f} s after power-on"
              + (f"; libvirtd {d['libvirtd']}" if d.get("libvirtd") else "")
              + (f"; errors: {d.get('errors')}" if report.kind == "failed" else ""))
        if quick:
            try:
                guest.wait(30)
            except subprocess.TimeoutExpired:
                guest.kill()
        else:
            guest.kill()  # a hypervisor stays up; the demo is over
    return 0 if report.kind == "ready" else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netbootd.lab.demo", description=__doc__)
    p.add_argument("--workdir", type=Path, default=REPO / "images" / "out" / "demo")
    p.add_argument("--firmware", choices=["bios", "uefi"], default="bios")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the node's report (default 600; --quick 240)")
    p.add_argument("--quick", action="store_true",
                   help="boot the busybox demo appliance instead of the KVM hypervisor")
    args = p.parse_args(argv)
    if not DEMO_RECIPE.is_file():
        # The appliance recipe is source, not part of the installed package.
        print(f"demo: {DEMO_RECIPE} not found: run the demo from a netbootd source checkout",
              file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("state", "netbootd.log"):
        target = args.workdir / stale
        if target.is_dir():
            for f in target.iterdir():
                f.unlink()
        elif target.exists():
            target.unlink()
    timeout = args.timeout if args.timeout is not None else (240.0 if args.quick else 600.0)
    return run_demo(args.workdir.resolve(), args.firmware, timeout, args.quick)


if __name__ == "__main__":
    sys.exit(main())
