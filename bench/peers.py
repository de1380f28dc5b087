"""The servers under test: netbootd and its Debian peers, installed and configured alike.

Installation: ``apt-get install`` of whatever is missing, under a ``/usr/sbin/policy-rc.d`` that
exits 101 so no postinst starts a daemon on host ports (the file is removed afterwards only if
we created it). tftpd-hpa and atftpd conflict in Debian (both provide ``tftpd``), so atftpd's
package is fetched with ``apt-get download`` and unpacked into a private folder: its binary runs
from there, and it is never registered with dpkg nor started by a maintainer script.

Every server is started by the bench in the server namespace, in the foreground, by pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.sandbox import SERVER_IP, BenchError, run

ROOT = Path(__file__).resolve().parent.parent
ATFTPD_CACHE = Path("/var/cache/netbootd-bench/atftpd")

# Debian package -> a file it ships that the bench needs.
APT_PACKAGES: dict[str, str] = {
    "tftpd-hpa": "/usr/sbin/in.tftpd",
    "dnsmasq-base": "/usr/sbin/dnsmasq",
    "nginx": "/usr/sbin/nginx",
    "kea-admin": "/usr/sbin/perfdhcp",  # Debian ships perfdhcp in kea-admin
    "wrk": "/usr/bin/wrk",
    "curl": "/usr/bin/curl",
    "atftp": "/usr/bin/atftp",
    "iproute2": "/usr/sbin/ip",
    "util-linux": "/usr/bin/taskset",
}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def ensure_installed() -> list[str]:
    """Install what is missing; returns what was installed (empty when nothing was)."""
    missing = [pkg for pkg, path in APT_PACKAGES.items() if not Path(path).exists()]
    if missing:
        created = not POLICY_RC_D.exists()
        if created:
            POLICY_RC_D.write_text("#!/bin/sh\n# netbootd bench: never start daemons\nexit 101\n")
            POLICY_RC_D.chmod(0o755)
        try:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            run(["apt-get", "update", "-q"], timeout=600, env=env)
            run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q",
                 "--no-install-recommends", *missing], timeout=1200, env=env)
        finally:
            if created:
                POLICY_RC_D.unlink()
    atftpd_binary()
    return missing


def atftpd_binary() -> Path:
    """atftpd unpacked from Debian's package into a private folder (see module docstring)."""
    binary = ATFTPD_CACHE / "usr" / "sbin" / "atftpd"
    if binary.is_file():
        return binary
    ATFTPD_CACHE.mkdir(parents=True, exist_ok=True)
    work = ATFTPD_CACHE.parent / "download"
    work.mkdir(parents=True, exist_ok=True)
    # _apt cannot write into root's folders; download as root into our own.
    run(["apt-get", "download", "atftpd"], cwd=work, timeout=300)
    debs = sorted(work.glob("atftpd_*.deb"))
    if not debs:
        raise BenchError("apt-get download atftpd produced no .deb")
    run(["dpkg-deb", "-x", str(debs[-1]), str(ATFTPD_CACHE)])
    shutil.rmtree(work, ignore_errors=True)
    if not binary.is_file():
        raise BenchError(f"{debs[-1].name} has no usr/sbin/atftpd")
    return binary


# ------------------------------------------------------------------------------- files

@dataclass(frozen=True)
class Files:
    """The payload every server serves: one build folder in netbootd's store layout."""

    store: Path
    build_dir: Path  # store/builds/bench/1.0: tftpd-hpa's and atftpd's root, nginx's /builds/..
    sizes: dict[str, int]

    def tftp_path(self, server: str, name: str) -> str:
        # netbootd serves build files under builds/<name>/<version>/ (as a kernel would be
        # fetched); the peers' root is the build folder itself. Same bytes on disk.
        return f"builds/bench/1.0/{name}" if server == "netbootd" else name

    def http_path(self, name: str) -> str:
        return f"/builds/bench/1.0/{name}"


def make_files(root: Path, sizes: dict[str, int]) -> Files:
    """Random files of the given sizes plus a manifest (sha256), readable by nobody."""
    store = root / "store"
    build = store / "builds" / "bench" / "1.0"
    build.mkdir(parents=True)
    manifest_files = {}
    for name, size in sizes.items():
        h = hashlib.sha256()
        with (build / name).open("wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 4 << 20))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        manifest_files[name] = {"size": size, "sha256": h.hexdigest()}
    (build / "manifest.json").write_text(json.dumps({
        "format": 1, "name": "bench", "version": "1.0", "kind": "linux",
        "kernel": next(iter(sizes)), "initrds": [], "cmdline": "console=ttyS0",
        "files": manifest_files}))
    # tftpd-hpa and atftpd drop to nobody: every folder up to the files must be searchable.
    for p in (root, store, store / "builds", store / "builds" / "bench", build):
        p.chmod(0o755)
    for p in build.iterdir():
        p.chmod(0o644)
    return Files(store, build, dict(sizes))


# ------------------------------------------------------------------------------- servers

def netbootd_config(workdir: Path, files: Files, *, extra_nodes: int = 0,
                    extra_groups: int = 0) -> Path:
    """A netbootd config serving ``files`` on the server namespace's address.

    max_sessions_per_client is raised: in the bench every storm client shares one address.
    """
    sys.path.insert(0, str(ROOT))
    from netbootd.lab.demo import toml_dump

    cfg = {
        "server": {"address": SERVER_IP, "state_dir": str(workdir / "state"),
                   "store_dir": str(files.store)},
        "dhcp": {"listen": "0.0.0.0", "port": 67, "proxy_port": 4011, "relay_port": 67},
        "tftp": {"listen": "0.0.0.0", "port": 69, "max_blksize": 65464,
                 "max_windowsize": 64, "max_sessions": 4000, "max_sessions_per_client": 4000},
        "http": {"listen": "0.0.0.0", "port": 80},
        "groups": {"default": {"default": True, "build": "bench/1.0"}},
        "nodes": {},
    }
    groups = cfg["groups"]
    nodes = cfg["nodes"]
    assert isinstance(groups, dict) and isinstance(nodes, dict)
    for g in range(extra_groups):
        groups[f"g{g:04d}"] = {"build": "bench/1.0",
                               "match": {"mac_prefix": f"02:{g >> 8:02x}:{g & 255:02x}",
                                         "arch": "bios"}}
    for n in range(extra_nodes):
        nodes[f"n{n:05d}"] = {"mac": _node_mac(n), "group": f"g{n % max(extra_groups, 1):04d}"
                              if extra_groups else "default"}
    path = workdir / "netbootd.toml"
    path.write_text(toml_dump(cfg))
    return path


def netbootd_server_config(workdir: Path, files: Files) -> Path:
    """netbootd with ``[dhcp] mode = "server"``: a /16 pool for the relay's network (the
    bench's namespaces hold no other DHCP server, so the start-up probe is off)."""
    sys.path.insert(0, str(ROOT))
    from netbootd.lab.demo import toml_dump

    path = workdir / "netbootd-server.toml"
    cfg = {
        "server": {"address": SERVER_IP, "state_dir": str(workdir / "state"),
                   "store_dir": str(files.store)},
        "dhcp": {"listen": "0.0.0.0", "port": 67, "proxy_port": 4011, "relay_port": 67,
                 "mode": "server", "probe": False, "max_leases": 200_000,
                 "pools": {"bench": {"subnet": SERVER_POOL[0], "range": list(SERVER_POOL[1:]),
                                     "router": SERVER_IP, "dns": [SERVER_IP],
                                     "lease_time": 3600}}},
        "tftp": {"enabled": False}, "http": {"listen": "0.0.0.0", "port": 80},
        "groups": {"default": {"default": True, "build": "bench/1.0"}}, "nodes": {},
    }
    path.write_text(toml_dump(cfg))
    return path


# Server-mode DHCP pool of both servers: subnet, first, last (10.78.0.x is the link).
SERVER_POOL = ("10.78.0.0/16", "10.78.1.1", "10.78.250.254")


def dnsmasq_server_cmd(workdir: Path, server_if: str, *, lease_file: bool = False) -> list[str]:
    """dnsmasq as a DHCP server with the same pool; per-exchange logging off (--quiet-dhcp),
    as netbootd logs no line per plain client. Without ``lease_file`` dnsmasq keeps its leases
    in memory only (--leasefile-ro): its fastest setting. With it, dnsmasq rewrites its whole
    lease file after changes (its default), which costs more as the leases grow."""
    return [*_dnsmasq_server_args(workdir, server_if),
            *(() if lease_file else ("--leasefile-ro",))]


def _dnsmasq_server_args(workdir: Path, server_if: str) -> list[str]:
    return ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={server_if}", "--bind-interfaces", "--no-ping",
            f"--dhcp-range={SERVER_POOL[1]},{SERVER_POOL[2]},255.255.0.0,1h",
            "--dhcp-lease-max=200000", "--dhcp-authoritative", "--quiet-dhcp",
            f"--dhcp-option=option:router,{SERVER_IP}",
            f"--dhcp-option=option:dns-server,{SERVER_IP}",
            f"--log-facility={workdir / 'dnsmasq.log'}", f"--pid-file={workdir / 'dnsmasq.pid'}",
            "--user=root", f"--dhcp-leasefile={workdir / 'leases'}"]


def _node_mac(n: int) -> str:
    return f"52:54:01:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


def netbootd_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "netbootd", "serve", "--config", str(config)]


def tftpd_hpa_cmd(files: Files) -> list[str]:
    # --foreground: standalone, no fork of the listener; one child per transfer (its design).
    return ["/usr/sbin/in.tftpd", "--foreground", "--address", f"{SERVER_IP}:69", "--secure",
            "--user", "nobody", str(files.build_dir)]


def atftpd_cmd(files: Files, logfile: Path) -> list[str]:
    return [str(atftpd_binary()), "--daemon", "--no-fork", "--port", "69", "--bind-address",
            SERVER_IP, "--maxthread", "4000", "--tftpd-timeout", "100000", "--no-multicast",
            "--logfile", str(logfile), "--verbose=1", "--user", "nobody", "--group", "nogroup",
            str(files.build_dir)]


def dnsmasq_proxy_cmd(workdir: Path, server_if: str) -> list[str]:
    """dnsmasq as a ProxyDHCP (no DNS, no addresses), answering PXE clients like netbootd."""
    return ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={server_if}", "--bind-interfaces",
            "--dhcp-range=10.78.0.0,proxy,255.255.255.0",
            '--pxe-service=x86PC,"netboot",bios/lpxelinux',
            f"--log-facility={workdir / 'dnsmasq.log'}", f"--pid-file={workdir / 'dnsmasq.pid'}",
            "--user=root", "--leasefile-ro", f"--dhcp-leasefile={workdir / 'leases'}"]


def nginx_cmd(workdir: Path, root: Path) -> list[str]:
    """nginx with one worker (like netbootd's one process), sendfile on, no access log."""
    conf = workdir / "nginx.conf"
    tmp = workdir / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    conf.write_text(f"""
daemon off;
worker_processes 1;
user root;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen {SERVER_IP}:80;
    root {root};
  }}
}}
""")
    return ["/usr/sbin/nginx", "-p", str(workdir), "-c", str(conf), "-e",
            str(workdir / "nginx-error.log")]


def have(tool: str) -> bool:
    return shutil.which(tool) is not None or Path(tool).exists()


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0][:80] if text else "?"
