"""First-boot secrets over real HTTP: files and phone-home open only with the node's token.

The URLs are taken from what the server itself hands out (iPXE script -> NoCloud seed ->
user-data -> phone-home; iPXE script -> ESXi boot.cfg -> kickstart), as a node follows them.
The service's clock is a value the test moves, to expire tokens and start a "next boot".
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from helpers import TEST_KEY, TEST_NOW, loopback_config, make_store, write_key
from netbootd.config import parse_config
from netbootd.service import Service
from netbootd.state.keyfile import KeyFileError

DB1 = "52-54-00-00-00-02"  # demo/2.0, linux
WEB1 = "52-54-00-00-00-01"
ESX1 = "52-54-00-00-00-03"  # esxi/8.0u3, vars.root_password_hash = $6$abc$def
TTL = 7200


class Clock:
    def __init__(self) -> None:
        self.now = TEST_NOW

    def __call__(self) -> float:
        return self.now


class Server:
    def __init__(self, service: Service, clock: Clock, http: aiohttp.ClientSession) -> None:
        self.service, self.clock, self.http = service, clock, http
        self.base = f"http://127.0.0.1:{service.http_port}"

    def local(self, url: str) -> str:
        """A URL as the server wrote it (public address and port) -> this test's listener."""
        return re.sub(r"^http://[^/]+", self.base, url)

    async def get(self, url: str) -> tuple[int, str]:
        async with self.http.get(self.local(url)) as r:
            return r.status, await r.text()

    async def post(self, url: str, **fields: str) -> tuple[int, str]:
        async with self.http.post(self.local(url), data=fields) as r:
            return r.status, await r.text()

    async def seed(self, key: str) -> str:
        """The NoCloud seed URL in the node's iPXE script (what its kernel is told)."""
        status, script = await self.get(f"{self.base}/ipxe/node.ipxe?mac={key}&arch=7")
        assert status == 200, script
        found = re.search(r"ds=nocloud-net;s=(\S+/)", script)
        assert found is not None, script
        return found[1]

    async def kickstart(self, key: str) -> str:
        status, script = await self.get(f"{self.base}/ipxe/node.ipxe?mac={key}&arch=7")
        found = re.search(r" -c (\S+)", script)
        assert status == 200 and found is not None, script
        status, boot_cfg = await self.get(found[1])
        ks = re.search(r" ks=(\S+)", boot_cfg)
        assert status == 200 and ks is not None, boot_cfg
        return ks[1]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path, firstboot={"token_ttl": TTL})
    clock = Clock()
    service = Service(parse_config(data, "test"), clock=clock)
    await service.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(service, clock, http)
    finally:
        await service.stop()


def with_token(url: str, token: str) -> str:
    """``url`` with its token segment replaced."""
    return re.sub(r"/\d+\.\d+\.[\w-]+(/|$)", f"/{token}\\1", url)


def token_of(url: str) -> str:
    found = re.search(r"/(\d+\.\d+\.[\w-]+)(?:/|$)", url)
    assert found is not None, url
    return found[1]


async def test_nocloud_files_open_only_with_this_nodes_token(server: Server) -> None:
    seed = await server.seed(DB1)
    status, meta = await server.get(seed + "meta-data")
    assert status == 200 and meta.startswith("instance-id: db1-demo-2.0")
    status, user = await server.get(seed + "user-data")
    assert status == 200 and user.startswith("#cloud-config")

    refused = {
        "no token": f"{server.base}/nocloud/{DB1}/demo/2.0/user-data",
        "garbage": with_token(seed, "123.456.AAAA") + "user-data",
        "another node": seed.replace(DB1, WEB1) + "user-data",
        "another build": seed.replace("/demo/2.0/", "/demo/1.0/") + "user-data",
    }
    for why, url in refused.items():
        status, text = await server.get(url)
        assert status == 403, why
        assert "token" in text and "#cloud-config" not in text, why
    # The same URL with web1's own token opens web1's, so the refusal above was the token's.
    web1 = await server.seed(WEB1)
    assert (await server.get(web1 + "meta-data"))[0] == 200
    assert server.service.counters.get("firstboot_refused") == 3


async def test_tokens_expire_and_the_next_boot_gets_a_fresh_one(server: Server) -> None:
    seed = await server.seed(DB1)
    server.clock.now += TTL - 120
    assert (await server.get(seed + "meta-data"))[0] == 200
    server.clock.now += 120
    status, text = await server.get(seed + "meta-data")
    assert status == 403 and "expired" in text and "boot the node again" in text
    assert server.service.counters.get("firstboot_refused", reason="expired") == 1
    fresh = await server.seed(DB1)  # the next boot's config
    assert token_of(fresh) != token_of(seed)
    assert (await server.get(fresh + "meta-data"))[0] == 200


async def test_kickstart_and_its_password_hash_need_the_token(server: Server) -> None:
    ks = await server.kickstart(ESX1)
    status, text = await server.get(ks)
    assert status == 200 and "rootpw --iscrypted $6$abc$def" in text
    for url in [f"{server.base}/ks/{ESX1}/esxi/8.0u3/ks.cfg",
                with_token(ks, token_of(await server.seed(DB1))),
                ks.replace(ESX1, DB1)]:
        status, text = await server.get(url)
        assert status == 403 and "$6$" not in text, url


async def test_phone_home_needs_the_token_its_config_carried(server: Server) -> None:
    state = server.service.state
    seed = await server.seed(DB1)
    _, user = await server.get(seed + "user-data")
    found = re.search(r'url: "?([^"\s]+)', user)
    assert found is not None
    phone_home = found[1]
    report = {"hostname": "db1", "build": "demo/2.0", "instance_id": "db1-demo-2.0"}
    web1_token = token_of(await server.seed(WEB1))
    for url in [f"{server.base}/phone-home/{DB1}",  # the old, unsigned form
                with_token(phone_home, "1.99999999999.forged"),
                with_token(phone_home, web1_token),
                phone_home.replace("/demo/2.0/", "/demo/1.0/")]:
        status, _ = await server.post(url, **report)
        assert status == 403, url
    node = state.node("52:54:00:00:00:02")
    assert node is None or node.boot_count == 0
    assert "phone-home" not in [e.kind for e in state.timeline("52:54:00:00:00:02")]

    assert (await server.post(phone_home, **report))[0] == 200
    node = state.node("52:54:00:00:00:02")
    assert node is not None and node.boot_count == 1 and node.current_build == "demo/2.0"


async def test_a_reimage_report_needs_the_token_of_its_node_and_order(server: Server) -> None:
    """The installer's report flips a node to local boot: a forged one must not."""
    urls = server.service.responder.urls.at(server.clock.now)  # as the installer is told
    report = urls.reimage_report(DB1, 7)
    assert f"/reimage/{DB1}/7/" in report and report.endswith("/report")
    for url in [f"{server.base}/reimage/{DB1}/7/report",  # unsigned
                with_token(report, "1.99999999999.forged"),
                urls.reimage_report(DB1, 8).replace("/8/", "/7/"),  # another order's token
                urls.reimage_report(WEB1, 7).replace(WEB1, DB1)]:  # another node's
        status, text = await server.post(url, status="done")
        assert status == 403 and "token" in text, url
    # With its token the report reaches the order book, which has no order 7 here.
    status, text = await server.post(report, status="done")
    assert status == 404 and "7" in text, text


async def test_secrets_never_reach_the_logs(server: Server,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seed = await server.seed(DB1)
    ks = await server.kickstart(ESX1)
    _, user = await server.get(seed + "user-data")
    _, kickstart = await server.get(ks)
    found = re.search(r'url: "?([^"\s]+)', user)
    assert found is not None
    await server.post(found[1], hostname="db1", build="demo/2.0")
    await server.get(with_token(seed, "1.99999999999.forged") + "user-data")  # refused
    await server.get(seed + "no/such/file")  # a mangled URL, matching no route
    server.clock.now += TTL
    await server.get(ks)  # expired

    secrets = {"db1 token": token_of(seed), "esx1 token": token_of(ks),
               "password hash": "$6$abc$def", "user-data": user.strip(),
               "key (hex)": TEST_KEY.hex(), "key (repr)": repr(TEST_KEY)[2:-1]}
    key = server.service.config.firstboot_key_file.read_bytes()
    secrets |= {"server key (hex)": key.hex(), "server key (repr)": repr(key)[2:-1]}
    logged = caplog.text
    # Not vacuous: the requests above were logged (access lines, refusals, phone-home).
    assert "GET /nocloud/52-54-00-00-00-02/demo/2.0/<token>/user-data 200" in logged
    assert "first-boot refused" in logged and "phone-home mac=52:54:00:00:00:02" in logged
    timeline = [str(e.detail) for mac in ("52:54:00:00:00:02", "52:54:00:00:00:03")
                for e in server.service.state.timeline(mac)]
    for what, secret in secrets.items():
        assert secret not in logged, what
        assert not any(secret in t for t in timeline), what
    assert "#cloud-config" not in logged and "rootpw" not in logged and kickstart


def test_the_server_key_is_created_private_and_a_readable_one_refused(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    data = loopback_config(tmp_path)
    config = parse_config(data, "test")
    Service(config).state.close()
    key_file = config.firstboot_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    first = key_file.read_bytes()
    Service(config).state.close()
    assert key_file.read_bytes() == first  # kept across restarts: issued tokens stay valid

    key_file.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"accessible to group or others .*chmod 600"):
        Service(config)

    # An operator's key file is used as it is, and never created.
    own = write_key(tmp_path / "etc" / "firstboot.key")
    data["firstboot"] = {"key_file": str(own)}
    Service(parse_config(data, "test")).state.close()
    data["firstboot"] = {"key_file": str(tmp_path / "missing.key")}
    with pytest.raises(KeyFileError, match="no first-boot key"):
        Service(parse_config(data, "test"))
    assert not (tmp_path / "missing.key").exists()
