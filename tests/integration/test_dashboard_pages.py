"""The dashboard's pages over real HTTP on a running service's admin listener.

A node walked through a boot (the funnel tests' fixture) gives the fleet and node pages real
states and a real funnel; a discovered machine whose DHCP DISCOVER (a real packet, through the
proxy's parse path) carries markup in its vendor class, host name and user class, an adopted node
with a hostile hostname and a channel change with a hostile reason check that every value
reaches the page as text. The cross-site rules are checked on the API the pages' buttons use:
no token, a token from another origin, a browser's cross-site form post.
"""

from __future__ import annotations

import re
import socket
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from test_funnel_api import booted  # noqa: F401  (the fixture: db1 booted to ready)

from netbootd.core.identity import ClientIdentity
from netbootd.dhcp.packet import DhcpPacket
from netbootd.dhcp.proxy import PxeRequest, classify
from netbootd.service import Service
from netbootd.web.ui_security import CSP

pytestmark = pytest.mark.usefixtures("booted")

HOSTILE = "<script>window.__pwned=1</script>\"'{{ 7*7 }}<img src=x onerror=alert(1)>"
EVIL = HOSTILE.encode()
EVIL_MAC = "52:54:00:66:66:01"


class _Text(HTMLParser):
    """The page's text content and every tag with its attributes (as a browser parses it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Text:
    p = _Text()
    p.feed(html)
    return p


def cells(html: str, node: str) -> dict[str, str]:
    """The fleet table's row of ``node``: each cell's text by its class."""
    m = re.search(rf'<tr data-node="{re.escape(node)}">(.*?)</tr>', html, re.S)
    assert m is not None, node
    return {c: " ".join("".join(parse(body).text).split())
            for c, body in re.findall(r'<td class="(\w+)[^"]*"[^>]*>(.*?)</td>', m[1], re.S)}


def _token(service: Service) -> str:
    return (service.config.server.state_dir / "admin.token").read_text().strip()


def _base(service: Service) -> str:
    return f"http://127.0.0.1:{service.api_port}"


async def _get(service: Service, path: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as s, s.get(_base(service) + path,
                                                   allow_redirects=False) as r:
        return r.status, await r.text(), r.headers


async def _post(service: Service, path: str, body: Any = None,
                headers: dict[str, str] | None = None, data: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(_base(service) + path, json=body,
                                                    data=data, headers=headers or {}) as r:
        return r.status, await r.json()


def _hostile_fleet(service: Service) -> None:
    """A discovered machine whose DHCP vendor class, host name and user class carry markup,
    one adopted under a hostile hostname, and a channel whose history holds a hostile reason."""
    assert service.admin is not None
    options = [("message-type", "discover"), ("vendor_class_id", b"PXEClient:" + EVIL),
               ("hostname", EVIL), ("user_class", EVIL), (93, b"\x00\x00"), "end"]
    raw = bytes(BOOTP(op=1, chaddr=bytes.fromhex(EVIL_MAC.replace(":", "")), xid=1)
                / DHCP(options=options)).ljust(300, b"\x00")
    request = classify(DhcpPacket.parse(raw), port=67)
    assert isinstance(request, PxeRequest)
    service.responder.observe_dhcp(request.identity)  # what the proxy endpoint does first
    service.state.saw(ClientIdentity(mac="52:54:00:66:66:02", vendor_class=HOSTILE), 1.0e9)
    service.state.flush()
    service.admin.adopt("52:54:00:66:66:02", "evil", hostname=HOSTILE, who="test")
    service.admin.channel_set("kvm-stable", "demo/1.0", who="test", why=HOSTILE)
    service.admin.channel_set("kvm-stable", "demo/2.0", who="test", why="second")


def _no_markup_from_data(html: str) -> None:
    page = parse(html)
    scripts = [a for t, a in page.tags if t == "script"]
    assert scripts == [{"src": "/ui/static/dash.js", "defer": None}], scripts
    assert not [t for t, _ in page.tags if t == "img"]
    assert not [(t, k) for t, a in page.tags for k in a if k.startswith("on")]
    assert "window.__pwned" not in re.sub(r"&lt;script&gt;window\.__pwned", "", html)


async def test_pages_read_without_a_token(booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    status, html, headers = await _get(service, "/ui/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = parse(html)
    rows = [a for t, a in page.tags if t == "tr" and "data-node" in a]
    assert service.admin is not None
    api = {n["name"]: n for n in service.admin.nodes()}
    assert [r["data-node"] for r in rows] == sorted(api)
    db1 = cells(html, "db1")
    assert db1["state"] == "ready" and db1["current"] == "demo/2.0"
    assert (db1["next"], db1["why"]) == (api["db1"]["next"]["build"], api["db1"]["next"]["why"])
    assert db1["group"] == api["db1"]["next"]["group"] and db1["boots"] == "1"
    assert cells(html, "web1")["state"] == "never seen"
    assert '<body data-refresh="15">' in html and 'id="auto-refresh"' in html
    status, html, _ = await _get(service, "/ui/nodes/db1")
    assert status == 200
    page = parse(html)
    stages = [a["data-stage"] for t, a in page.tags if t == "g" and "data-stage" in a]
    assert stages == ["dhcp", "loader", "kernel", "initrd", "meta-data", "user-data",
                      "phone-home", "ready"]
    reached = {a["data-stage"]: a["data-reached"] for t, a in page.tags if t == "g"}
    assert reached["dhcp"] == "no" and reached["ready"] == "yes"  # DHCP is off here
    assert len([t for t, _ in page.tags if t == "rect"]) == len(stages)
    assert '<body data-refresh="0">' in html and 'id="auto-refresh"' not in html
    for path in ("/ui/channels", "/ui/discovered", "/ui/static/dash.js", "/ui/static/dash.css"):
        status, _, _ = await _get(service, path)
        assert status == 200, path
    status, _, headers = await _get(service, "/ui")
    assert status == 302 and headers["Location"] == "/ui/"
    # the API itself still wants the token for reads
    status, _, _ = await _get(service, "/api/v1/nodes")
    assert status == 401


async def test_unknown_pages_and_files(booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    status, html, _ = await _get(service, "/ui/nodes/%3Cscript%3Ex")
    assert status == 404 and "no node &#39;&lt;script&gt;x&#39;" in html
    assert (await _get(service, "/ui/static/..%2Fui_routes.py"))[0] == 404
    assert (await _get(service, "/ui/static/nope.js"))[0] == 404


async def test_security_headers(booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    for path in ("/ui/", "/ui/nodes/db1", "/ui/nodes/nobody", "/ui/static/dash.js",
                 "/api/v1/nodes"):
        _, _, h = await _get(service, path)
        assert h["Content-Security-Policy"] == CSP, path
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP


async def test_hostile_values_render_as_text(booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    _hostile_fleet(service)
    for path, where in (("/ui/", "fleet"), ("/ui/nodes/evil", "node"),
                        ("/ui/discovered", "discovered"), ("/ui/channels", "channels")):
        status, html, _ = await _get(service, path)
        assert status == 200, (path, html[-2000:])
        _no_markup_from_data(html)
        text = "".join(parse(html).text)
        assert HOSTILE in text, where  # shown, as the characters it is made of
    _, html, _ = await _get(service, "/ui/discovered")
    macs = [a["data-mac"] for t, a in parse(html).tags if t == "tr" and "data-mac" in a]
    assert macs == [EVIL_MAC]  # the other one is a node now
    m = re.search(rf'<tr data-mac="{EVIL_MAC}">(.*?)</tr>', html, re.S)
    assert m is not None
    row = {c: "".join(parse(body).text)
           for c, body in re.findall(r'<td class="([\w-]+)">(.*?)</td>', m[1], re.S)}
    assert row["dhcp-hostname"] == HOSTILE and row["user-class"] == HOSTILE
    assert row["vendor-class"] == "PXEClient:" + HOSTILE
    assert service.admin is not None
    (record,) = service.admin.nodes(discovered=True)
    assert (record["dhcp_hostname"], record["user_class"]) == (HOSTILE, HOSTILE)


async def test_actions_need_the_token_and_the_same_origin(
        booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    assert service.admin is not None
    service.admin.channel_set("kvm-stable", "demo/1.0", who="test")
    service.admin.channel_set("kvm-stable", "demo/2.0", who="test")
    auth = {"Authorization": f"Bearer {_token(service)}"}
    path = "/api/v1/channels/kvm-stable/rollback"

    async def channel() -> str:
        return service.admin.channels()["kvm-stable"]  # type: ignore[union-attr]

    status, body = await _post(service, path, {"why": "no token"})
    assert status == 401 and await channel() == "demo/2.0"
    status, body = await _post(service, path, {"why": "evil page"},
                               {**auth, "Origin": "http://evil.example"})
    assert status == 403 and "Origin" in body["error"] and await channel() == "demo/2.0"
    status, body = await _post(service, path, {"why": "evil page"},
                               {**auth, "Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "Sec-Fetch-Site" in body["error"]
    assert await channel() == "demo/2.0"
    # what a plain HTML form on another site sends: no token can ride along, and its
    # origin gives it away
    status, body = await _post(service, path, data={"why": "form"},
                               headers={"Origin": "null", "Sec-Fetch-Site": "cross-site",
                                        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and await channel() == "demo/2.0"
    history = service.admin.channel_history("kvm-stable")
    assert [h["action"] for h in history] == ["set", "set"]
    # the dashboard's own page: same origin, its token
    status, body = await _post(service, path, {"why": "from the dashboard"},
                               {**auth, "Origin": _base(service),
                                "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and body["to"] == "demo/1.0" and await channel() == "demo/1.0"


async def test_pages_take_no_writes(booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    async with aiohttp.ClientSession() as s:
        for method in ("POST", "PUT", "DELETE"):
            async with s.request(method, _base(service) + "/ui/channels") as r:
                assert r.status == 401, method  # no token: not even a 405 is given away
            async with s.request(method, _base(service) + "/ui/channels",
                                 headers={"Authorization": f"Bearer {_token(service)}"}) as r:
                assert r.status == 405, method


async def test_rollouts_page_shows_progress_and_its_buttons(
        booted: tuple[Service, Any]) -> None:  # noqa: F811
    service, _ = booted
    admin = service.admin
    assert admin is not None
    for node in ("db1", "lab1"):
        admin.set_node(node, channel="kvm-stable", mode="appliance")
    admin.channel_set("kvm-stable", "demo/1.0", who="test")
    auth = {"Authorization": f"Bearer {_token(service)}"}
    status, r = await _post(service, "/api/v1/rollouts", {
        "channel": "kvm-stable", "build": "demo/2.0", "canary": 1, "batch": "1"}, auth)
    assert status == 201, r
    status, html, _ = await _get(service, "/ui/rollouts")
    assert status == 200
    page = parse(html)
    (section,) = [a for t, a in page.tags if t == "section" and "data-rollout" in a]
    assert (section["data-rollout"], section["data-phase"]) == (str(r["id"]), "running")
    (bar,) = [a for t, a in page.tags if t == "progress"]
    assert (bar["max"], bar["value"]) == ("2", "0")
    rows = re.findall(r'<tr data-node="([^"]+)">.*?class="status status-(\w+)"', html, re.S)
    first, second = r["batches"]
    assert rows == [(first[0], "waiting"), (second[0], "pending")]
    buttons = [a for t, a in page.tags if t == "button" and a.get("data-action") == "rollout"]
    assert [b["data-verb"] for b in buttons] == ["pause", "abort"]
    assert {b["data-rollout"] for b in buttons} == {str(r["id"])}
    # what the Pause button sends, from the page's origin
    status, p = await _post(service, f"/api/v1/rollouts/{r['id']}/pause", {},
                            {**auth, "Origin": _base(service), "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and p["phase"] == "paused"
    _, html, _ = await _get(service, "/ui/rollouts")
    verbs = [a["data-verb"] for t, a in parse(html).tags if a.get("data-action") == "rollout"]
    assert verbs == ["resume", "abort"]


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8081", 200), ("[::1]:8081", 200), ("localhost:8081", 200),
    ("dash.localhost", 200), (socket.gethostname(), 200), ("evil.example:8081", 403),
    ("127.0.0.1.evil.example", 403)])
async def test_pages_answer_only_to_an_address_or_this_machines_name(
        booted: tuple[Service, Any], host: str, status: int) -> None:  # noqa: F811
    """DNS rebinding: a page of another site whose name resolves to this listener sends
    that name as Host; it must not read the pages."""
    service, _ = booted
    async with aiohttp.ClientSession() as s, s.get(_base(service) + "/ui/",
                                                   headers={"Host": host}) as r:
        assert r.status == status, await r.text()
        if status == 403:
            assert "Host" in (await r.json())["error"]
