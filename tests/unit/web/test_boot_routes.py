"""The boot-side HTTP handlers on a World built from the test config, without sockets.

Each handler is called with a mocked request (aiohttp.test_utils.make_mocked_request): what is
checked is the status a client gets for each kind of request and that the answer comes from
the node's own plan and token.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from helpers import TEST_KEY, TEST_NOW, make_config, make_store
from netbootd.responder import Responder
from netbootd.service import make_responder
from netbootd.state.events import StateDB
from netbootd.web import boot_routes
from netbootd.web.app import make_app

DB1 = "52:54:00:00:00:02"  # pinned to demo/2.0, cmdline role=db
KEY = DB1.replace(":", "-")


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    make_store(tmp_path / "store")
    responder, problems = make_responder(make_config(tmp_path), StateDB(Path(":memory:")),
                                         key=TEST_KEY, clock=lambda: TEST_NOW)
    assert problems == []
    return make_app(responder)


def responder_of(app: web.Application) -> Responder:
    return app[boot_routes.RESPONDER]


def get(app: web.Application, path: str, **match: str) -> web.Request:
    return make_mocked_request("GET", path, app=app, match_info=match)


async def refused(kind: type[web.HTTPException], answer: Awaitable[web.StreamResponse]) -> str:
    """The text of the HTTP error ``answer`` raises, which must be a ``kind``."""
    with pytest.raises(kind) as e:
        await answer
    return e.value.text or ""


def token(app: web.Application, mac: str = DB1, subject: str = "demo/2.0") -> str:
    return responder_of(app).urls.tokens.issue(mac, subject, TEST_NOW)


async def test_ipxe_stage1_and_node_script(app: web.Application) -> None:
    r = await boot_routes.ipxe_stage1(get(app, "/ipxe/boot.ipxe"))
    assert r.text is not None and r.text.startswith("#!ipxe")
    r = await boot_routes.ipxe_node(get(app, f"/ipxe/node.ipxe?mac={KEY}&buildarch=x86_64"))
    assert r.status == 200 and r.text is not None
    assert "/builds/demo/2.0/vmlinuz" in r.text and "role=db" in r.text
    kinds = [e.kind for e in responder_of(app).state.timeline(DB1)]
    assert "ipxe-script" in kinds


async def test_ipxe_node_without_a_mac_is_a_bad_request(app: web.Application) -> None:
    for query in ("", "?mac=", "?mac=zz-zz"):
        answer = boot_routes.ipxe_node(get(app, f"/ipxe/node.ipxe{query}"))
        assert "mac= is required" in await refused(web.HTTPBadRequest, answer)


async def test_firstboot_opens_only_with_the_nodes_own_token(app: web.Application) -> None:
    def req(what: str, tok: str) -> web.Request:
        return get(app, f"/nocloud/{KEY}/demo/2.0/{tok}/{what}", key=KEY, name="demo",
                   version="2.0", token=tok, what=what)

    r = await boot_routes.firstboot(req("meta-data", token(app)))
    assert r.status == 200 and r.text is not None and "instance-id: db1-demo-2.0" in r.text
    assert [e.detail["file"] for e in responder_of(app).state.timeline(DB1)
            if e.kind == "firstboot"] == ["meta-data"]
    for bad in (token(app, mac="52:54:00:00:00:04"),  # another node's
                token(app, subject="demo/1.0"),  # another build's
                "1.2.AAAA", "garbage"):
        await refused(web.HTTPForbidden, boot_routes.firstboot(req("user-data", bad)))
    answer = boot_routes.firstboot(req("secrets", token(app)))
    assert "NoCloud serves" in await refused(web.HTTPNotFound, answer)
    answer = boot_routes.tokenless(get(app, f"/nocloud/{KEY}/demo/2.0/meta-data"))
    assert "carry the node's token" in await refused(web.HTTPForbidden, answer)


async def test_not_found_says_what_was_expected(app: web.Application) -> None:
    answer = boot_routes.firstboot(get(app, "/nocloud/x", key="not-a-mac", name="demo",
                                       version="2.0", token=token(app), what="meta-data"))
    assert "not a node key" in await refused(web.HTTPNotFound, answer)
    # db1 boots linux: there is no ESXi boot.cfg for it
    answer = boot_routes.esxi_boot_cfg(get(app, "/esxi/x", key=KEY, name="demo", version="2.0"))
    assert await refused(web.HTTPNotFound, answer)
    # a build that is not in the store: the message lists the known ones
    answer = boot_routes.esxi_boot_cfg(get(app, "/esxi/x", key=KEY, name="nope", version="9"))
    assert "known" in await refused(web.HTTPNotFound, answer)


async def test_reports_are_refused_before_the_body_is_read(app: web.Application) -> None:
    # No body is given: a refused client must not get to make the server parse one.
    def post(path: str, headers: dict[str, str] | None = None, **match: str) -> web.Request:
        return make_mocked_request("POST", path, app=app, match_info=match, headers=headers)

    await refused(web.HTTPForbidden, boot_routes.phone_home(
        post("/phone-home/x", key=KEY, name="demo", version="2.0", token="1.2.AAAA")))
    await refused(web.HTTPForbidden, boot_routes.boot_report(
        post("/report/x", key=KEY, name="demo", version="2.0",
             token=token(app, mac="52:54:00:00:00:04"))))
    answer = boot_routes.reimage_report(post("/reimage/x", key=KEY, action="x1",
                                             token=token(app)))
    assert "action id" in await refused(web.HTTPNotFound, answer)
    await refused(web.HTTPRequestEntityTooLarge, boot_routes.phone_home(
        post("/phone-home/x", headers={"Content-Length": "1000000"}, key=KEY, name="demo",
             version="2.0", token=token(app))))
    assert [e.kind for e in responder_of(app).state.timeline(DB1)
            if e.kind in ("phone-home", "report")] == []
