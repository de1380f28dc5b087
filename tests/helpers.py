"""Test helpers shared by unit and integration tests: a small store and config on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from netbootd.config import Config, parse_config
from netbootd.render.tokens import FirstbootTokens
from netbootd.render.urls import SiteUrls

if TYPE_CHECKING:
    from netbootd.service import Service

# A fixed first-boot key and clock: rendered URLs (and golden files) do not change run to run.
TEST_KEY = bytes(range(32))
TEST_NOW = 1_795_000_000.0  # 2026-11-18T09:46:40Z
TEST_NOW_ISO = "2026-11-18T09:46:40Z"


def write_key(path: Path, key: bytes = TEST_KEY) -> Path:
    """A first-boot key file as netbootd creates it (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key)
    path.chmod(0o600)
    return path


def site_urls(base: str = "http://10.0.0.1:8080", ip: str = "10.0.0.1",
              now: float = TEST_NOW) -> SiteUrls:
    """Site URLs with the test key, stamped ``now``."""
    return SiteUrls(base, ip, FirstbootTokens(TEST_KEY, 7200)).at(now)


def write_build(store: Path, name: str, version: str, files: dict[str, bytes],
                **fields: Any) -> Path:
    d = store / "builds" / name / version
    d.mkdir(parents=True)
    for fname, data in files.items():
        (d / fname).parent.mkdir(parents=True, exist_ok=True)
        (d / fname).write_bytes(data)
    manifest = {"format": 1, "name": name, "version": version,
                "files": {f: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                          for f, b in files.items()}, **fields}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


ESXI_MODULES = ["jumpstrt.gz", "useropts.gz", "features.gz", "k.b00", "s.v00"]


def make_store(store: Path) -> Path:
    """demo/1.0, demo/2.0 (linux) and esxi/8.0u3 (an ESXi layout) with small fake files."""
    for v in ("1.0", "2.0"):
        write_build(store, "demo", v, {"vmlinuz": f"kernel {v}".encode(),
                                       "initrd.img": f"initrd {v}".encode()},
                    kind="linux", kernel="vmlinuz", initrds=["initrd.img"],
                    cmdline="console=ttyS0 panic=-1")
    esxi_files = {m: m.encode() for m in ["b.b00", *ESXI_MODULES]}
    esxi_files |= {"mboot.c32": b"mboot-bios", "mboot.efi": b"mboot-efi"}
    write_build(store, "esxi", "8.0u3", esxi_files, kind="esxi",
                esxi={"kernel": "b.b00", "modules": ESXI_MODULES,
                      "kernelopt": "runweasel cdromBoot"})
    return store


BASE_CONFIG: dict[str, Any] = {
    "server": {"address": "10.77.0.1"},
    "groups": {
        "default": {"default": True, "build": "demo/1.0", "vars": {"power_state": "poweroff"}},
        "uefi-ipxe": {"match": {"arch": "efi64"}, "build": "demo/1.0", "loader": "ipxe"},
        "hypervisors": {"build": "esxi/8.0u3", "cmdline": "nofb"},
    },
    "nodes": {
        "web1": {"uuid": "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a", "hostname": "web1"},
        "db1": {"mac": "52:54:00:00:00:02", "build": "demo/2.0", "cmdline": "role=db"},
        "esx1": {"mac": "52:54:00:00:00:03", "group": "hypervisors",
                 "vars": {"root_password_hash": "$6$abc$def"}},
        "kiosk": {"mac": "52:54:00:00:00:04", "mode": "menu", "build": "demo/2.0"},
        "lab1": {"mac": "52:54:00:00:00:05", "mode": "local"},
        "tagged": {"serial": "CZJ1234567", "hostname": "tagged", "build": "demo/2.0"},
    },
}


def make_config(tmp: Path, overrides: dict[str, Any] | None = None) -> Config:
    data = json.loads(json.dumps(BASE_CONFIG))
    data["server"]["state_dir"] = str(tmp / "state")
    data["server"]["store_dir"] = str(tmp / "store")
    for k, v in (overrides or {}).items():
        data[k] = v
    return parse_config(data, "test-config")


def free_port(kind: int) -> int:
    """A port free on loopback now (``socket.SOCK_DGRAM`` or ``socket.SOCK_STREAM``)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_config(tmp: Path, **sections: Any) -> dict[str, Any]:
    """BASE_CONFIG on loopback: free TFTP/HTTP ports, DHCP off, the admin API on an ephemeral
    loopback port, state and store under ``tmp``; ``sections`` replace whole sections."""
    data = json.loads(json.dumps(BASE_CONFIG))
    data["server"] = {"address": "127.0.0.1", "state_dir": str(tmp / "state"),
                      "store_dir": str(tmp / "store")}
    data["dhcp"] = {"enabled": False}
    data["tftp"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM)}
    data["http"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)}
    data["admin"] = {"listen": "127.0.0.1", "port": 0}
    data.update(sections)
    return data


def loopback_dhcp(relay_port: int) -> dict[str, Any]:
    """A [dhcp] section on free loopback ports, answering relayed requests at ``relay_port``."""
    return {"listen": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM),
            "proxy_port": free_port(socket.SOCK_DGRAM), "relay_port": relay_port}


@contextlib.contextmanager
def private_netns(prefix: str) -> Iterator[str]:
    """A network namespace of the test's own (loopback up), deleted afterwards; needs root."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def fetch(service: Service, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, str]:
    """GET (or POST ``form`` to) ``path`` on a running service's HTTP port: status and body."""
    url = f"http://127.0.0.1:{service.http_port}{path}"
    async with aiohttp.ClientSession() as s:
        req = s.post(url, data=form) if form is not None else s.get(url)
        async with req as r:
            return r.status, await r.text()
