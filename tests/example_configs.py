"""The config examples in docs/examples/, made runnable here: each example's builds imported into
a store with the real `netbootd image import` (files with the magic bytes of what they stand
for), and the example's host paths pointed at the test's own folders and loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
import socket
import struct
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esxi_iso_maker import make_esxi8_iso
from helpers import free_port
from hostile import tftp_fetch
from netbootd.lab.demo import toml_dump

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.toml"))


def fake_bzimage(tag: str) -> bytes:
    """Enough of an x86-64 bzImage for a header reader: HdrS at 0x202, boot protocol 2.15,
    XLF_KERNEL_64 set (Documentation/arch/x86/boot.rst)."""
    head = bytearray(0x1000)
    head[0x1FE:0x200] = b"\x55\xaa"
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    head[0x236] = 1
    return bytes(head) + tag.encode()


def fake_initrd(tag: str) -> bytes:
    """A gzip'd newc cpio archive holding one file."""
    name, data = b"hello\0", tag.encode()
    hdr = b"070701" + b"".join(f"{v:08x}".encode() for v in (
        1, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
    body = hdr + name + b"\0" * (-(110 + len(name)) % 4) + data + b"\0" * (-len(data) % 4)
    trailer_name = b"TRAILER!!!\0"
    body += b"070701" + b"".join(f"{v:08x}".encode() for v in (
        0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(trailer_name), 0)) + trailer_name
    return gzip.compress(body, mtime=0)


def netbootd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netbootd", *args], capture_output=True,
                          text=True, cwd=str(REPO), timeout=300, check=check)


def fake_loaders(tmp: Path) -> dict[str, list[str]]:
    """Loader folders holding every default boot file (their bytes are not served here)."""
    d = tmp / "loaders"
    for f in ("lpxelinux.0", "syslinux.efi", "undionly.kpxe", "snponly.efi", "ipxe32.efi",
              "arm64/snponly.efi", "ldlinux.c32", "ldlinux.e64"):
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).write_bytes(b"loader " + f.encode())
    return {p: [str(d)] for p in ("bios", "efi64", "ipxe")}


def example_data(name: str, tmp: Path, loopback: bool = False) -> dict[str, Any]:
    """Example ``name`` with its state, store, templates and loaders under ``tmp``;
    ``loopback``: also address 127.0.0.1, free ports, DHCP off (for a real serve)."""
    data = tomllib.loads((EXAMPLES / f"{name}.toml").read_text())
    server = data["server"]
    server.update(state_dir=str(tmp / "state"), store_dir=str(tmp / "store"))
    if "templates_dir" in server:
        server["templates_dir"] = str(EXAMPLES / "templates")
    data.setdefault("loaders", {})["dirs"] = fake_loaders(tmp)
    if loopback:
        server["address"] = "127.0.0.1"
        data["dhcp"] = {"enabled": False}
        data["tftp"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM)}
        data["http"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)}
        data["admin"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)}
    return data


def write_example(name: str, tmp: Path, loopback: bool = False,
                  data: dict[str, Any] | None = None) -> Path:
    """The example's config file under ``tmp``, its builds imported into its store."""
    if data is None:
        data = example_data(name, tmp, loopback)
    config = tmp / f"{name}.toml"
    config.write_text(toml_dump(data))
    import_builds(config, data, tmp)
    return config


def _refs(data: dict[str, Any]) -> set[str]:
    refs = {t["build"] for section in ("groups", "nodes")
            for t in data.get(section, {}).values() if "build" in t}
    installer = data.get("reimage", {}).get("installer")
    return refs | ({installer} if installer else set())


def import_builds(config: Path, data: dict[str, Any], tmp: Path) -> None:
    files = tmp / "files"
    files.mkdir(exist_ok=True)
    for ref in sorted(_refs(data)):
        name, version = ref.split("/")
        if (tmp / "store" / "builds" / name / version).is_dir():
            continue
        common = ["image", "import", "--config", str(config), "--name", name,
                  "--version", version]
        if name.startswith("esxi"):
            iso = files / f"{name}.iso"
            make_esxi8_iso(iso)
            netbootd(*common, "--kind", "esxi", str(iso))
        elif name.startswith("lab-disk"):
            disk = files / f"{name}.img"
            disk.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 65024)
            netbootd(*common, "--kind", "disk", str(disk))
        else:
            kernel, initrd = files / f"{name}-vmlinuz", files / f"{name}-initrd.img"
            kernel.write_bytes(fake_bzimage(ref))
            initrd.write_bytes(fake_initrd(ref))
            extra = ["--cmdline", "console=ttyS0"]
            if name == "debian-live":
                squash = files / f"{name}.squashfs"
                squash.write_bytes(b"hsqs" + b"\0" * 4092)
                extra = ["--cmdline", "boot=live components fetch=${rootfs_url}",
                         "--rootfs", str(squash)]
            netbootd(*common, *extra, str(kernel), str(initrd))


TOKEN = re.compile(r"\b\d{9,11}\.\d{9,11}\.[A-Za-z0-9_-]{20,}")


def untoken(text: str) -> str:
    """``text`` with its first-boot tokens (issued.expiry.mac) blanked: two renders at two
    moments differ only there."""
    return TOKEN.sub("<token>", text)


def rendered_files(config: Path, mac: str, arch: str, at: float) -> dict[tuple[str, str], str]:
    """Every file `netbootd render` shows for one client: (channel, name) -> content."""
    out = netbootd("render", "--config", str(config), "--mac", mac, "--arch", arch,
                   "--at", str(at)).stdout
    parts = re.split(r"\n==> (tftp|http) (\S+) <==\n", out)
    return {(parts[i], parts[i + 1]): parts[i + 2] for i in range(1, len(parts) - 2, 3)}


@contextlib.contextmanager
def serving(config: Path, timeout: float = 120) -> Iterator[subprocess.Popen[bytes]]:
    """A real `netbootd serve` on ``config``, yielded once READY=1 (every listener bound);
    stopped (SIGTERM, by its PID) afterwards."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"netbootd-examples-{os.getpid()}-{time.monotonic_ns()}"
    s.bind("\0" + name)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["NOTIFY_SOCKET"] = "@" + name
    proc = subprocess.Popen([sys.executable, "-m", "netbootd", "serve", "--config", str(config)],
                            cwd=str(REPO), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "netbootd serve did not become ready"
            s.settimeout(1.0)
            try:
                if "READY=1" in s.recv(4096).decode().splitlines():
                    break
            except TimeoutError:
                continue
        yield proc
    finally:
        s.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def tftp_get(port: int, name: str) -> bytes:
    data, _ = asyncio.run(tftp_fetch(port, b"\x00\x01" + name.encode() + b"\0octet\0",
                                     timeout=30))
    return data
