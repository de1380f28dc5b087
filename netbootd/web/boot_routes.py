"""HTTP routes that answer a booting node: iPXE scripts, ESXi boot.cfg, first-boot, phone-home,
the ready/failed report.

First-boot files, phone-home and the report open only with the token the node's boot config carried
(render/tokens.py): 403 with the reason otherwise. The token is a path segment and never
logged.

Every handler parses the request into a ClientIdentity or a node key and asks the Responder;
no decision is made here. Unknown or malformed identifiers give 400/404 with a message saying
what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from netbootd.core.identity import (
    Arch,
    ClientIdentity,
    arch_from_ipxe,
    is_identifying_guid,
    normalize_guid,
    normalize_mac,
)
from netbootd.error_map import refusal_for
from netbootd.errors import NetbootdError, NotFound
from netbootd.render.tokens import TokenRefused
from netbootd.render.urls import reimage_subject
from netbootd.responder import Responder

RESPONDER = web.AppKey("responder", Responder)
log = logging.getLogger("netbootd.http")
TEXT = "text/plain"


def _identity_from_query(request: web.Request) -> ClientIdentity:
    q = request.query

    def opt(name: str) -> str | None:
        v = q.get(name, "").strip()
        return v[:128] if v else None

    try:
        mac = normalize_mac(q.get("mac", ""))
    except ValueError:
        raise web.HTTPBadRequest(text="mac= is required: the node's MAC "
                                      "(iPXE: ${mac:hexhyp})\n") from None
    guid = None
    if raw := opt("uuid"):
        try:
            guid = normalize_guid(raw)
        except ValueError:
            guid = None  # iPXE prints nothing useful on boards without SMBIOS UUID
        if guid is not None and not is_identifying_guid(guid):
            guid = None
    arch: Arch | None = None
    if (a := opt("arch")) and a.isdigit():
        try:
            arch = Arch(int(a))
        except ValueError:
            arch = None
    if arch is None:
        arch = arch_from_ipxe(q.get("buildarch", ""), q.get("platform", ""))
    return ClientIdentity(mac=mac, guid=guid, arch=arch, serial=opt("serial"),
                          asset=opt("asset"), manufacturer=opt("manufacturer"),
                          product=opt("product"), user_class="iPXE", ip=request.remote)


async def ipxe_stage1(request: web.Request) -> web.Response:
    return web.Response(text=request.app[RESPONDER].renderer.ipxe_stage1(), content_type=TEXT)


async def ipxe_node(request: web.Request) -> web.Response:
    ident = _identity_from_query(request)
    return _render(request, lambda r: r.ipxe_script(ident))


async def firstboot(request: web.Request) -> web.Response:
    m = request.match_info
    what = m["what"]
    if what not in ("meta-data", "user-data", "vendor-data", "network-config"):
        raise web.HTTPNotFound(text="NoCloud serves meta-data, user-data, vendor-data and "
                                    "network-config\n")
    return _render(request, lambda r: r.firstboot(m["key"], f"{m['name']}/{m['version']}",
                                                   what, m["token"], request.remote))


async def kickstart(request: web.Request) -> web.Response:
    m = request.match_info
    return _render(request, lambda r: r.firstboot(m["key"], f"{m['name']}/{m['version']}",
                                                   "ks.cfg", m["token"], request.remote))


async def tokenless(request: web.Request) -> web.Response:
    """A first-boot URL without its token segment (an old config, or a guess)."""
    raise web.HTTPForbidden(text="first-boot URLs carry the node's token "
                                 "(/<mac>/<name>/<version>/<token>/...): network-boot the node "
                                 "for a fresh boot config\n")


async def esxi_boot_cfg(request: web.Request) -> web.Response:
    m = request.match_info
    return _render(request, lambda r: r.esxi_boot_cfg(m["key"], f"{m['name']}/{m['version']}",
                                                       request.remote or ""))


# error_map.py says which status an answer's error is; these are the responses for them.
_HTTP_ERRORS: dict[int, type[web.HTTPError]] = {
    403: web.HTTPForbidden, 404: web.HTTPNotFound, 500: web.HTTPInternalServerError,
    503: web.HTTPServiceUnavailable}


def _render(request: web.Request, produce: Callable[[Responder], str]) -> web.Response:
    try:
        text = produce(request.app[RESPONDER])
    except NetbootdError as e:
        refusal = refusal_for(e)
        if not refusal.expected:
            log.error("%s: %s", request.path, e)
        raise _HTTP_ERRORS[refusal.http_status](text=f"{e}\n") from e
    return web.Response(text=text, content_type=TEXT)


def _require_token(request: web.Request, subject: str, what: str) -> None:
    """403 unless the URL's token opens ``subject`` for the node it names. Called before the
    body is read: a refused client does not get to make us parse it."""
    m = request.match_info
    try:
        request.app[RESPONDER].check_token(m["key"], subject, m["token"], what, request.remote)
    except TokenRefused as e:
        raise web.HTTPForbidden(text=f"{e}\n") from e
    except NotFound:
        raise web.HTTPNotFound(text="the URL must name the node's MAC (with dashes)\n") from None


async def phone_home(request: web.Request) -> web.Response:
    m = request.match_info
    if request.content_length is not None and request.content_length > 65536:
        raise web.HTTPRequestEntityTooLarge(max_size=65536, actual_size=request.content_length)
    build_ref = f"{m['name']}/{m['version']}"
    _require_token(request, build_ref, "phone-home")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    request.app[RESPONDER].phone_home(m["key"], build_ref, m["token"], request.remote, fields)
    return web.Response(text="ok\n", content_type=TEXT)


# The ready/failed report is small: a status, a few lines of errors, host key fingerprints.
REPORT_MAX = 65536


async def boot_report(request: web.Request) -> web.Response:
    """POST from the booted node once cloud-init finished: status=done|error, errors (a JSON
    list), detail, hostname, fqdn, host_keys, libvirtd (render/report_agent.py)."""
    m = request.match_info
    if request.content_length is not None and request.content_length > REPORT_MAX:
        raise web.HTTPRequestEntityTooLarge(max_size=REPORT_MAX,
                                            actual_size=request.content_length)
    build_ref = f"{m['name']}/{m['version']}"
    _require_token(request, build_ref, "report")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    state = request.app[RESPONDER].boot_report(m["key"], build_ref, request.remote, fields)
    return web.Response(text=f"{state}\n", content_type=TEXT)


async def reimage_report(request: web.Request) -> web.Response:
    """POST from the installer: status=done|failed, reason, sha256, bytes (images/README.md)."""
    m = request.match_info
    if not m["action"].isdigit() or len(m["action"]) > 12:
        raise web.HTTPNotFound(text="the report URL ends with /<action id>/report\n")
    if request.content_length is not None and request.content_length > 65536:
        raise web.HTTPRequestEntityTooLarge(max_size=65536, actual_size=request.content_length)
    # A report flips the node to local boot: only from whoever was handed the URL.
    _require_token(request, reimage_subject(int(m["action"])), "reimage-report")
    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        request.app[RESPONDER].reimage_report(m["key"], int(m["action"]), request.remote,
                                              fields)
    except ValueError:
        raise web.HTTPNotFound(text="the report URL must name the node's MAC\n") from None
    except NotFound as e:
        raise web.HTTPNotFound(text=f"{e}\n") from e
    return web.Response(text="ok\n", content_type=TEXT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ipxe/boot.ipxe", ipxe_stage1)
    app.router.add_get("/ipxe/node.ipxe", ipxe_node)
    app.router.add_get("/nocloud/{key}/{name}/{version}/{token}/{what}", firstboot)
    app.router.add_get("/ks/{key}/{name}/{version}/{token}/ks.cfg", kickstart)
    app.router.add_post("/phone-home/{key}/{name}/{version}/{token}", phone_home)
    app.router.add_post("/report/{key}/{name}/{version}/{token}", boot_report)
    app.router.add_get("/nocloud/{key}/{name}/{version}/{what}", tokenless)
    app.router.add_post("/report/{key}", tokenless)
    app.router.add_get("/ks/{key}/{name}/{version}/ks.cfg", tokenless)
    app.router.add_post("/phone-home/{key}", tokenless)
    app.router.add_get("/esxi/{key}/{name}/{version}/boot.cfg", esxi_boot_cfg)
    app.router.add_post("/reimage/{key}/{action}/{token}/report", reimage_report)
    app.router.add_post("/reimage/{key}/{action}/report", tokenless)
