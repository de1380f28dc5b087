"""A real-firmware storm: N QEMU BIOS guests powered on at once, netbootd against a peer.

Every guest is SeaBIOS with QEMU's iPXE NIC ROM (TCG, small RAM) on a tap of one lab network
(netbootd.lab.netlab: site dnsmasq hands out addresses only, in its own namespace) and boots
the busybox demo appliance (netbootd.lab.demo) to its phone-home:

- netbootd: ``netbootd serve`` on the lab bridge, ProxyDHCP + TFTP (lpxelinux.0) + HTTP; a
  guest's phone-home time is netbootd's own record of it (its state database).
- peer: dnsmasq as ProxyDHCP and TFTP server (``dhcp-range=…,proxy``, ``pxe-service``,
  ``enable-tftp``; lpxelinux.0 and ldlinux.c32 from Debian's packages) and nginx (one
  worker, sendfile) serving the kernel, the initrd and, for every guest, the pxelinux config
  and NoCloud seed exactly as netbootd renders them (``netbootd render --file``, once, before
  the runs), at the same URLs. nginx answers the phone-home POST itself (``return 200``) and
  logs its arrival time (``$msec``); that log is the peer's record.

The clock starts just before the first QEMU is started and stops at the last guest's
phone-home; a guest that has not phoned home by the deadline counts as failed. Runs
alternate, netbootd then the peer, in the same lab.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sandbox import BenchError

HTTP_PORT = 8080
MEMORY_MB = 160  # the demo appliance's kernel and busybox initrd fit in far less


@dataclass
class StormRun:
    """One storm: seconds from power-on to the last phone-home, and who never phoned home."""

    clients: int
    seconds: float
    failed: list[str] = field(default_factory=list)
    per_guest: dict[str, float] = field(default_factory=dict)  # MAC -> seconds


def macs(clients: int) -> list[str]:
    return [f"52:54:00:5e:{i // 256:02x}:{i % 256:02x}" for i in range(1, clients + 1)]


def _uuid(i: int) -> str:
    return f"5e0c5a4f-2b7d-4c39-9a60-{i:012x}"


def _render(config: Path, mac: str, uuid: str, *args: str) -> bytes:
    proc = subprocess.run([sys.executable, "-m", "netbootd", "render", "--config", str(config),
                           "--mac", mac, "--uuid", uuid, "--arch", "bios", *args],
                          capture_output=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise BenchError(f"netbootd render {' '.join(args)} for {mac}: "
                         f"{proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def _nginx_conf(workdir: Path, root: Path, address: str) -> Path:
    tmp = workdir / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
user root;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'} warn;
events {{ worker_connections 1024; }}
http {{
  log_format stamp '$msec $request_method $uri $status';
  access_log {workdir / 'access.log'} stamp;
  sendfile on;
  default_type application/octet-stream;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen {address}:{HTTP_PORT};
    root {root};
    location /phone-home/ {{ return 200 "ok\\n"; }}
  }}
}}
""")
    return conf


class QemuStorm:
    """One lab, the demo build, netbootd's config and the peer's files; runs storms in it."""

    def __init__(self, workdir: Path, clients: int, timeout: float,
                 log: Any = print) -> None:
        self.workdir = workdir
        self.clients = clients
        self.timeout = timeout
        self.log = log
        self.macs = macs(clients)
        self.runs = 0

    def __enter__(self) -> QemuStorm:
        from netbootd.lab.demo import build_demo, lab_config
        from netbootd.lab.netlab import Lab, lab_prerequisites

        problems = lab_prerequisites("bios")
        if problems:
            raise BenchError("; ".join(problems))
        for tool in ("dnsmasq", "nginx"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                raise BenchError(f"{tool} not installed")
        self.store = self.workdir / "store"
        build_demo(self.store, "1.0")
        self.lab = Lab().__enter__()
        try:
            nodes = {f"storm-{i:02d}": {"mac": mac, "uuid": _uuid(i),
                                        "hostname": f"storm-{i:02d}"}
                     for i, mac in enumerate(self.macs, 1)}
            # One first-boot key for every run: `netbootd render` needs it before any serve.
            key = self.workdir / "firstboot.key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
            self._config: dict[str, Any] = {
                "groups": {"default": {"default": True, "build": "demo/1.0",
                                       "vars": {"power_state": "poweroff"}}},
                "nodes": nodes, "http": {"port": HTTP_PORT},
                "firstboot": {"key_file": str(key)}}
            self.config = lab_config(self.lab, self.workdir, self.store, **self._config)
            self._peer_files()
        except BaseException:
            self.lab.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lab.close()

    # ------------------------------------------------------------------ the peer's files
    def _peer_files(self) -> None:
        """The very bytes netbootd renders for every guest, laid out for dnsmasq and nginx."""
        self.tftp_root = self.workdir / "peer-tftp"
        self.web_root = self.workdir / "peer-web"
        for d in (self.tftp_root / "pxelinux.cfg", self.web_root / "builds" / "demo"):
            d.mkdir(parents=True)
        shutil.copy("/usr/lib/PXELINUX/lpxelinux.0", self.tftp_root)
        shutil.copy("/usr/lib/syslinux/modules/bios/ldlinux.c32", self.tftp_root)
        shutil.copytree(self.store / "builds" / "demo" / "1.0",
                        self.web_root / "builds" / "demo" / "1.0")
        prefix = f"http://{self.lab.server_ip}:{HTTP_PORT}/"
        jobs: list[tuple[str, str, str]] = []
        # First-boot tokens (in the NoCloud seed's URL) depend on the time: one instant for
        # every render, so a name from --list is the name --file serves.
        at = str(int(time.time()))
        for i, mac in enumerate(self.macs, 1):
            listing = _render(self.config, mac, _uuid(i), "--list", "--at", at).decode()
            jobs += [(mac, _uuid(i), line.split(" ", 1)[1])
                     for line in listing.splitlines() if " " in line]

        def one(job: tuple[str, str, str]) -> None:
            mac, uuid, name = job
            data = _render(self.config, mac, uuid, "--file", name, "--at", at)
            if name.startswith(prefix):  # NoCloud seed: same URL path on nginx
                target = self.web_root / name[len(prefix):]
            elif "/pxelinux.cfg/" in name:  # same file name, under the TFTP root
                target = self.tftp_root / "pxelinux.cfg" / name.rsplit("/", 1)[1]
            else:
                raise BenchError(f"unexpected rendered file {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, jobs))
        for mac in self.macs:
            seed = self.web_root / "nocloud" / mac.replace(":", "-") / "demo" / "1.0"
            if not (seed / "vendor-data").exists():
                seed.mkdir(parents=True, exist_ok=True)
                (seed / "vendor-data").write_text("")
        for p in [self.web_root, *self.web_root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)

    # ------------------------------------------------------------------ storms
    def _power_on(self) -> tuple[float, list[Any]]:
        self.runs += 1
        t0 = time.time()
        guests = [self.lab.start_qemu(f"r{self.runs}g{i}", firmware="bios", mac=mac,
                                      uuid=_uuid(i), memory_mb=MEMORY_MB)
                  for i, mac in enumerate(self.macs, 1)]
        return t0, guests

    def _collect(self, t0: float, guests: list[Any], homes: Any) -> StormRun:
        """Poll ``homes()`` (MAC -> epoch of its first phone-home) until all are home."""
        deadline = time.monotonic() + self.timeout
        seen: dict[str, float] = {}
        try:
            while True:
                seen = homes()
                if len(seen) == len(self.macs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            for g in guests:
                g.kill()
        per_guest = {mac: ts - t0 for mac, ts in seen.items()}
        failed = [m for m in self.macs if m not in seen]
        last = max(per_guest.values()) if per_guest else float("nan")
        return StormRun(len(self.macs), last if not failed else float(self.timeout), failed,
                        per_guest)

    def netbootd(self) -> StormRun:
        from netbootd.lab.demo import lab_config, start_netbootd
        from netbootd.state.events import StateDB

        # A fresh state folder per run: each storm is a first boot of every node.
        run_dir = self.workdir / f"netbootd-{self.runs + 1}"
        run_dir.mkdir()
        config = lab_config(self.lab, run_dir, self.store, **self._config)
        state_db = run_dir / "state" / "state.sqlite3"
        nb = start_netbootd(self.lab, ["serve", "--config", str(config)], run_dir,
                            state_db, timeout=120)
        try:
            t0, guests = self._power_on()

            def homes() -> dict[str, float]:
                out: dict[str, float] = {}
                if not state_db.exists():
                    return out
                with StateDB.open_readonly(state_db) as db:
                    for mac in self.macs:
                        for e in db.timeline(mac, 0):
                            if e.kind == "phone-home" and e.ts >= t0:
                                out[mac] = e.ts
                                break
                return out

            return self._collect(t0, guests, homes)
        finally:
            self.lab.stop(nb.proc)

    def peer(self) -> StormRun:
        run_dir = self.workdir / f"peer-{self.runs}"
        run_dir.mkdir()
        conf = _nginx_conf(run_dir, self.web_root, self.lab.server_ip)
        nginx = self.lab.run(["/usr/sbin/nginx", "-p", str(run_dir), "-c", str(conf), "-e",
                              str(run_dir / "nginx-error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dnsmasq = self.lab.run([
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={self.lab.bridge}", "--bind-interfaces",
            f"--dhcp-range={self.lab.network.network_address},proxy",
            '--pxe-service=x86PC,"netboot",lpxelinux', "--enable-tftp",
            f"--tftp-root={self.tftp_root}", f"--log-facility={run_dir / 'dnsmasq.log'}",
            "--user=root", "--leasefile-ro", f"--pid-file={run_dir / 'dnsmasq.pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_listening([f"{self.lab.server_ip}:{HTTP_PORT}", ":69", ":67"],
                                 [nginx, dnsmasq])
            t0, guests = self._power_on()
            access = run_dir / "access.log"
            # the phone-home path names the node by its key: MAC with dashes, or its name
            by_key = {m.replace(":", "-"): m for m in self.macs} | {
                f"storm-{i:02d}": m for i, m in enumerate(self.macs, 1)}

            def homes() -> dict[str, float]:
                out: dict[str, float] = {}
                if not access.exists():
                    return out
                for line in access.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 4 and parts[1] == "POST" and \
                            parts[2].startswith("/phone-home/") and parts[3] == "200":
                        mac = by_key.get(parts[2].split("/")[2])
                        if mac and mac not in out:
                            out[mac] = float(parts[0])
                return out

            return self._collect(t0, guests, homes)
        finally:
            self.lab.stop(dnsmasq)
            self.lab.stop(nginx)

    def _wait_listening(self, needles: list[str], procs: list[Any]) -> None:
        deadline = time.monotonic() + 60
        while True:
            if any(p.poll() is not None for p in procs):
                raise BenchError("the peer's nginx or dnsmasq exited at start")
            out = subprocess.run(["ip", "netns", "exec", self.lab.netns, "ss", "-Hlnut"],
                                 capture_output=True, text=True, check=False).stdout
            local = [line.split()[4] for line in out.splitlines() if len(line.split()) > 4]
            if all(any(addr.endswith(n) for addr in local) for n in needles):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the peer does not listen on {needles}: {out}")
            time.sleep(0.1)
