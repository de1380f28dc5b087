"""The whole service on loopback: DHCP (scapy-built packets), TFTP (curl), HTTP (aiohttp).

Proves that `netbootd render` prints byte-for-byte what the running server serves, that the
ProxyDHCP stays silent for non-PXE clients and never hands out an address, and that one boot's
requests end up in the node's timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from scapy.layers.dhcp import BOOTP, DHCP

from helpers import BASE_CONFIG, TEST_NOW, free_port, loopback_config, make_store, write_build
from netbootd.admin import Admin
from netbootd.cli import main as cli_main
from netbootd.config import parse_config
from netbootd.lab.demo import toml_dump
from netbootd.service import Service
from netbootd.state.events import StateDB

WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
WEB1_WIRE = bytes.fromhex("004f5a1c8e7d2b394c9a600f1e2d3c4b5a")
WEB1_MAC = "52:54:00:00:00:01"
GRUB1_MAC = "52:54:00:00:00:06"
SB1_MAC = "52:54:00:00:00:07"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


class Running:
    def __init__(self, service: Service, config_path: Path, relay: socket.socket) -> None:
        self.service = service
        self.config_path = config_path
        self.relay = relay  # stands for a DHCP relay: the proxy answers it at giaddr:relay_port

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    async def dhcp(self, pkt: bytes, port: int, timeout: float = 2.0) -> BOOTP | None:
        loop = asyncio.get_running_loop()
        self.relay.sendto(pkt, ("127.0.0.1", port))
        try:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.relay, 4096), timeout)
        except TimeoutError:
            return None
        return BOOTP(data)

    async def tftp(self, name: str, blksize: int = 1468) -> bytes | None:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--tftp-blksize", str(blksize),
            f"tftp://127.0.0.1:{self.service.tftp_port}/{name}", "-o", "-",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out if proc.returncode == 0 else None

    async def render(self, *args: str) -> str:
        # The CLI is synchronous and opens its own state; run it off the event loop.
        def run() -> str:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cli_main(["render", "--config", str(self.config_path),
                                 "--at", str(TEST_NOW), *args]) == 0
            return buf.getvalue()
        return await asyncio.to_thread(run)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    make_store(tmp_path / "store")
    raw = bytes(range(256)) * 16  # a disk image, for a reimage order
    write_build(tmp_path / "store", "lab-disk", "1", {"disk.img": raw}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": len(raw),
                      "raw_sha256": hashlib.sha256(raw).hexdigest()})
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.setblocking(False)
    data = json.loads(json.dumps(BASE_CONFIG))
    # GRUB nodes: by MAC (grub.cfg-01-<mac>) and a Secure Boot group (shim, grub.cfg dispatch)
    data["groups"]["sb"] = {"build": "demo/1.0", "secure_boot": True}
    data["nodes"]["grub1"] = {"mac": GRUB1_MAC, "loader": "grub", "cmdline": 'a="b c;d"'}
    data["nodes"]["sb1"] = {"mac": SB1_MAC, "group": "sb"}
    data["server"] = {"address": "127.0.0.1", "state_dir": str(tmp_path / "state"),
                      "store_dir": str(tmp_path / "store")}
    data["dhcp"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM),
                    "proxy_port": free_port(socket.SOCK_DGRAM),
                    "relay_port": relay.getsockname()[1]}
    data["tftp"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM)}
    data["http"] = {"listen": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)}
    data["admin"] = {"listen": "127.0.0.1", "port": 0}
    data["reimage"] = {"installer": "demo/2.0", "target": "/dev/vdb"}
    path = tmp_path / "netbootd.toml"
    path.write_text(toml_dump(data))
    # A pinned clock: first-boot tokens depend on the time, and `render --at` the same time
    # must print the same ones.
    service = Service(parse_config(data, str(path)), config_path=path, clock=lambda: TEST_NOW)
    await service.start()
    try:
        yield Running(service, path, relay)
    finally:
        await service.stop()
        relay.close()


def discover(mac: str, *, vendor: bytes | None, arch: int | None = 0,
             guid_wire: bytes | None = None, user_class: bytes | None = None,
             msg: str = "discover", ciaddr: str = "0.0.0.0") -> bytes:
    opts: list[Any] = [("message-type", msg)]
    if arch is not None:
        opts.append(("client-arch", arch.to_bytes(2, "big")))  # option 93
    if vendor is not None:
        opts.append(("vendor_class_id", vendor))
    if user_class is not None:
        opts.append(("user_class", user_class))
    if guid_wire is not None:
        opts.append((97, guid_wire))
    opts.append("end")
    return bytes(BOOTP(op=1, chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10,
                       xid=0x1234, giaddr="127.0.0.1", ciaddr=ciaddr) / DHCP(options=opts))


def options_of(reply: BOOTP) -> dict[Any, Any]:
    return {o[0]: o[1] for o in reply[DHCP].options if isinstance(o, tuple)}


async def test_proxy_is_silent_for_non_pxe_and_never_gives_an_address(running: Running) -> None:
    port = running.service.config.dhcp.port
    plain = discover("52:54:00:10:00:01", vendor=b"udhcp 1.35.0", arch=None)
    assert await running.dhcp(plain, port, timeout=1.0) is None
    assert running.service.counters.get("dhcp_ignored", reason="not-pxe") == 1
    assert running.service.counters.get("dhcp_answered") == 0

    pxe = discover("52:54:00:10:00:01", vendor=b"PXEClient:Arch:00000:UNDI:002001")
    reply = await running.dhcp(pxe, port)
    assert reply is not None
    opts = options_of(reply)
    assert reply.yiaddr == "0.0.0.0" and opts["message-type"] == 2  # OFFER
    assert not {"lease_time", "subnet_mask", "router", "name_server",
                "requested_addr"} & set(opts)
    assert opts["vendor_class_id"] == b"PXEClient"


async def test_render_prints_exactly_what_is_served(running: Running) -> None:
    # web1 as SeaBIOS + iPXE ROM shows itself: BIOS arch, GUID in option 97, MAC.
    pkt = discover(WEB1_MAC, vendor=b"PXEClient:Arch:00000:UNDI:002001",
                   guid_wire=WEB1_WIRE)
    reply = await running.dhcp(pkt, running.service.config.dhcp.port)
    assert reply is not None and reply.file.rstrip(b"\0") == b"bios/lpxelinux.0"

    cases = [["--mac", WEB1_MAC, "--uuid", WEB1_GUID, "--arch", "bios"],
             ["--mac", "52:54:00:00:00:02", "--arch", "efi64", "--ipxe"],
             ["--mac", "52:54:00:00:00:03", "--arch", "bios"],
             ["--mac", "52:54:00:00:00:03", "--arch", "efi64"],
             ["--mac", GRUB1_MAC, "--arch", "bios"],
             ["--mac", SB1_MAC, "--arch", "efi64"]]
    checked = await render_equals_served(running, cases)
    assert checked >= 18
    # GRUB's own spellings: the dispatcher asks with colons ($net_default_mac), and GRUB
    # sends a leading '/': both get the node's file.
    name = f"grub/grub.cfg-01-{SB1_MAC.replace(':', '-')}"
    expected = (await running.render("--mac", SB1_MAC, "--arch", "efi64", "--file",
                                     name)).encode()
    assert await running.tftp(f"/grub/grub.cfg-01-{SB1_MAC}") == expected
    assert b"sb1 boots demo/1.0" in expected
    assert await running.tftp("grub/grub.cfg-0A4D4DFB") is None  # configs are per MAC


async def render_equals_served(running: Running, cases: list[list[str]]) -> int:
    """Every file `render --list` names for each case, fetched from the server as the node
    would (TFTP or HTTP): byte-for-byte what `render --file` prints. Returns how many."""
    checked = 0
    async with aiohttp.ClientSession() as http:
        for case in cases:
            listing = (await running.render(*case, "--list")).splitlines()
            assert listing, case
            for line in listing:
                channel, name = line.split(" ", 1)
                expected = (await running.render(*case, "--file", name)).encode()
                if channel == "tftp":
                    served = await running.tftp(name)
                else:
                    url = name.replace("http://127.0.0.1:" + str(running.service.config.http.port),
                                       running.http)
                    async with http.get(url) as r:
                        assert r.status == 200, (url, await r.text())
                        served = await r.read()
                assert served == expected, (case, name)
                checked += 1
    return checked


async def test_render_equals_served_for_a_shared_guid_and_a_reimage_order(
        running: Running) -> None:
    svc = running.service
    clones = ["52:54:00:00:30:01", "52:54:00:00:30:02"]
    # Two machines show web1's SMBIOS UUID (a cloned image): it identifies neither of them.
    for mac in clones:
        pkt = discover(mac, vendor=b"PXEClient:Arch:00000:UNDI:002001", guid_wire=WEB1_WIRE)
        assert await running.dhcp(pkt, svc.config.dhcp.port) is not None
    state_db = svc.config.server.state_dir / "state.sqlite3"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:  # the server commits what it saw in batches; render reads the committed state
        with StateDB(state_db, readonly=True) as seen:
            if WEB1_GUID in seen.shared_guids():
                break
        assert loop.time() < deadline, "the shared GUID never reached the state database"
        await asyncio.sleep(0.05)
    with Admin(svc.config) as admin:  # as the CLI would
        admin.reimage("lab1", "lab-disk/1", who="test")
    lab1 = "52:54:00:00:00:05"
    cases = [["--mac", clones[0], "--uuid", WEB1_GUID, "--arch", "bios"],
             ["--mac", clones[1], "--uuid", WEB1_GUID, "--arch", "efi64", "--ipxe"],
             ["--mac", lab1, "--arch", "bios"],
             ["--mac", lab1, "--arch", "efi64", "--ipxe"]]
    assert await render_equals_served(running, cases) >= 4
    # What was compared is what the server decides: neither clone is web1, lab1 reimages.
    for case in cases[:2]:
        assert "decision: node=- " in await running.render(*case)
    assert "mode=reimage build=demo/2.0" in await running.render(*cases[2])


async def test_pxelinux_guid_file_in_both_byte_orders(running: Running) -> None:
    pxelinux_spelling = "4f5a1c8e-7d2b-394c-9a60-0f1e2d3c4b5a"
    pkt = discover(WEB1_MAC, vendor=b"PXEClient:Arch:00000:UNDI:002001", guid_wire=WEB1_WIRE)
    assert await running.dhcp(pkt, running.service.config.dhcp.port) is not None
    a = await running.tftp(f"bios/pxelinux.cfg/{pxelinux_spelling}")
    b = await running.tftp(f"bios/pxelinux.cfg/{WEB1_GUID}")
    assert a is not None and a == b and b"web1 boots demo/1.0" in a
    # A GUID that names no node: not found, so pxelinux goes on to 01-<mac>.
    assert await running.tftp("bios/pxelinux.cfg/11111111-2222-3333-4444-555555555555") is None
    assert await running.tftp("bios/pxelinux.cfg/0A4D4DFB") is None
    # boot.cfg exists for ESXi builds only: "file not found", not a server error.
    assert await running.tftp("esxi/52-54-00-00-00-03/demo/1.0/boot.cfg") is None
    assert running.service.counters.get("tftp_refused", reason="error") == 0
    unknown = await running.tftp("bios/pxelinux.cfg/01-52-54-00-aa-bb-cc")
    assert unknown is not None and b"node-525400aabbcc boots demo/1.0" in unknown


async def test_build_files_over_http_range_etag_head(running: Running) -> None:
    url = f"{running.http}/builds/demo/2.0/vmlinuz"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200 and await r.read() == b"kernel 2.0"
            etag = r.headers["ETag"]
        async with http.get(url, headers={"Range": "bytes=3-5"}) as r:
            assert r.status == 206 and await r.read() == b"nel"
        async with http.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with http.head(url) as r:
            assert r.status == 200 and r.headers["Content-Length"] == "10"
        for bad in ["/builds/demo/2.0/manifest.json", "/builds/demo/9.9/vmlinuz",
                    "/builds/demo/2.0/%2e%2e/1.0/vmlinuz", "/loaders/bios/..%2f..%2fetc/passwd"]:
            # encoded=True: send the path as written (the client would normalise "..").
            async with http.get(yarl.URL(running.http + bad, encoded=True)) as r:
                assert r.status in (403, 404), bad


async def test_one_boot_lands_in_the_node_timeline(running: Running) -> None:
    svc = running.service
    mac = "52:54:00:00:00:02"  # db1, pinned to demo/2.0, BIOS via pxelinux
    vendor = b"PXEClient:Arch:00000:UNDI:002001"
    assert await running.dhcp(discover(mac, vendor=vendor), svc.config.dhcp.port)
    # Its REQUEST to the site server (option 50) teaches the proxy its address: 127.0.0.1.
    req = bytes(BOOTP(op=1, chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10,
                      xid=7, giaddr="127.0.0.1")
                / DHCP(options=[("message-type", "request"), ("requested_addr", "127.0.0.1"),
                                ("vendor_class_id", vendor), "end"]))
    assert await running.dhcp(req, svc.config.dhcp.port, timeout=0.5) is None
    # The 4011 exchange answers with an ACK carrying the boot file.
    ack = await running.dhcp(discover(mac, vendor=vendor, msg="request", ciaddr="127.0.0.1"),
                             svc.config.dhcp.proxy_port)
    assert ack is not None and options_of(ack)["message-type"] == 5
    assert ack.file.rstrip(b"\0") == b"bios/lpxelinux.0" and ack.yiaddr == "0.0.0.0"
    cfg = await running.tftp("bios/pxelinux.cfg/01-52-54-00-00-00-02")
    assert cfg is not None
    # The node follows the URLs its boot config gives it, tokens included.
    seed = re.search(r"ds=nocloud-net;s=http://[^/]+(/\S+/)", cfg.decode())
    assert seed is not None
    async with aiohttp.ClientSession() as http:
        for path in ["/builds/demo/2.0/vmlinuz", "/builds/demo/2.0/initrd.img",
                     seed[1] + "meta-data", seed[1] + "user-data"]:
            async with http.get(running.http + path) as r:
                assert r.status == 200, path
                user_data = await r.text()
        phone_home = re.search(r'url: "?http://[^/]+(/[^"\s]+)', user_data)
        assert phone_home is not None
        async with http.post(running.http + phone_home[1],
                             # what cloud-init's phone_home posts: no build field
                             data={"hostname": "db1", "instance_id": "db1-demo-2.0"}) as r:
            assert r.status == 200
    events = svc.state.timeline(mac)
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["dhcp-offer", "dhcp-ack"], kinds
    assert "tftp-sent" in kinds and kinds[-1] == "phone-home"
    assert [e.detail["path"] for e in events if e.kind == "http-sent"] == \
        ["/builds/demo/2.0/vmlinuz", "/builds/demo/2.0/initrd.img"]
    assert [e.detail["file"] for e in events if e.kind == "firstboot"] == \
        ["meta-data", "user-data"]
    node = svc.state.node(mac)
    assert node is not None and node.current_build == "demo/2.0" and node.boot_count == 1
    assert node.node == "db1" and node.hostname == "db1"
    # the build comes from the token netbootd signed, not from a field the node sends
    assert events[-1].detail["build"] == "demo/2.0"
    assert events[-1].detail["claimed_build"] is None


async def test_reload_applies_new_config_and_refuses_a_broken_one(running: Running) -> None:
    name = "bios/pxelinux.cfg/01-52-54-00-77-00-01"
    before = await running.tftp(name)
    assert before is not None and b"boots demo/1.0" in before
    text = running.config_path.read_text()
    running.config_path.write_text(text.replace('build = "demo/1.0"', 'build = "demo/2.0"', 1))
    running.service.reload()  # what SIGHUP calls
    after = await running.tftp(name)
    assert after is not None and b"boots demo/2.0" in after
    # A broken file is refused; the running config stays.
    running.config_path.write_text(text.replace('address = "127.0.0.1"', 'address = "nope"'))
    running.service.reload()
    assert await running.tftp(name) == after
    assert running.service.config.server.address == "127.0.0.1"


async def test_sighup_reaches_reload(tmp_path: Path) -> None:
    """`serve` wires SIGHUP to reload and SIGTERM to a clean stop."""
    import os
    import signal

    from netbootd.service import serve

    calls: list[str] = []

    class Probe(Service):
        def reload(self) -> None:
            calls.append("reload")

    make_store(tmp_path / "store")
    data = loopback_config(tmp_path, admin={"enabled": False})
    ready = asyncio.Event()
    task = asyncio.create_task(serve(Probe(parse_config(data)), ready))
    await asyncio.wait_for(ready.wait(), 10)
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(50):
        if calls:
            break
        await asyncio.sleep(0.02)
    assert calls == ["reload"]
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)


async def test_build_files_over_tftp_only_from_the_manifest(running: Running) -> None:
    assert await running.tftp("builds/demo/2.0/vmlinuz") == b"kernel 2.0"
    assert await running.tftp("/builds/demo/1.0/initrd.img") == b"initrd 1.0"
    # Raw RRQs: curl would normalise ".." before sending. Error 1 = not found, 2 = refused.
    for refused, code in [("builds/demo/2.0/manifest.json", 1), ("builds/nope/1/vmlinuz", 1),
                          ("builds/demo/2.0/../1.0/vmlinuz", 2), ("bios/../../etc/passwd", 2)]:
        assert await tftp_error_code(running.service.tftp_port, refused) == code, refused


async def tftp_error_code(port: int | None, name: str) -> int | None:
    """Send one octet RRQ; the error code of the ERROR reply, or None for anything else."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", ("127.0.0.1", port or 0))
        data = await asyncio.wait_for(loop.sock_recv(s, 2048), 5)
    return int.from_bytes(data[2:4], "big") if data[:2] == b"\x00\x05" else None


async def test_ipxe_script_matches_a_node_by_serial(running: Running) -> None:
    url = (f"{running.http}/ipxe/node.ipxe?mac=52-54-00-66-00-01&uuid=&serial=CZJ1234567"
           "&asset=&manufacturer=QEMU&product=Standard%20PC&buildarch=x86_64&platform=efi")
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        text = await r.text()
    assert r.status == 200 and text.startswith("#!ipxe\n")
    assert "tagged (tagged, group uefi-ipxe" in text and "/builds/demo/2.0/vmlinuz" in text
    async with aiohttp.ClientSession() as http, \
            http.get(f"{running.http}/ipxe/node.ipxe?serial=x") as r:
        assert r.status == 400 and "mac=" in await r.text()
