"""The admin API: JSON under ``/api/v1`` on a listener of its own (loopback or a unix socket).

Every request needs ``Authorization: Bearer <token>`` (the token file, see docs/admin-api.md);
without it the answer is 401 and nothing changes. Handlers parse JSON, call the same
``netbootd.admin.Admin`` methods as the CLI, and map errors to statuses with a JSON body that
says what went wrong and what to do: NotFound 404, Conflict 409, bad input 400, the state
database unreachable 503 (web/status_routes.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from netbootd.admin import Admin
from netbootd.errors import BuildError, ConfigError, Conflict, NetbootdError, NotFound
from netbootd.state.health import UNAVAILABLE
from netbootd.web.status_routes import database_down, down_now

log = logging.getLogger("netbootd.api")
ADMIN = web.AppKey("admin", Admin)
TOKEN = web.AppKey("token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 1 << 20


def _error(status: int, message: str, hint: str = "") -> web.Response:
    body: dict[str, str] = {"error": message}
    if hint:
        body["hint"] = hint
    return web.json_response(body, status=status)


@web.middleware
async def auth_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    expected = request.app[TOKEN]
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             expected.encode()):
        log.warning("api: refused %s %s from %s: no valid bearer token", request.method,
                    request.path, request.remote or "unix socket")
        resp = _error(401, "a valid bearer token is required",
                      "send 'Authorization: Bearer <token>' with the token from the server's "
                      "admin token file ([admin] token_file, default <state_dir>/admin.token)")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="netbootd"'
        return resp
    if (refusal := down_now(request)) is not None:
        return refusal
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except UNAVAILABLE as e:
        return database_down(request, e)
    except NotFound as e:
        return _error(404, str(e))
    except Conflict as e:
        return _error(409, str(e))
    except (BuildError, ConfigError, ValueError) as e:
        return _error(400, str(e))
    except NetbootdError as e:
        return _error(400, str(e))


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ValueError(f"request body over {MAX_BODY} bytes")
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (allowed: "
                         f"{', '.join(sorted(allowed))})")
    return data


def _str(data: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = data.get(key)
    if v is None:
        if required:
            raise ValueError(f"{key} is required")
        return None
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string")
    return v


def _who(request: web.Request) -> str:
    return f"api@{request.remote or 'unix'}"


def _ref(request: web.Request) -> str:
    return f"{request.match_info['name']}/{request.match_info['version']}"


# -- builds --------------------------------------------------------------------------------------
async def list_builds(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].builds())


async def show_build(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].build(_ref(request)))


async def import_build(request: web.Request) -> web.Response:
    d = await _body(request, {"kind", "name", "version", "paths", "cmdline", "rootfs",
                              "description", "arch"})
    paths = d.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError("paths: a list of file paths on the server")
    rootfs = _str(d, "rootfs")
    admin = request.app[ADMIN]
    # File I/O for seconds or minutes: off the event loop, so boots go on being served.
    b = await asyncio.to_thread(
        admin.import_build, _str(d, "kind", True) or "", name=_str(d, "name"),
        version=_str(d, "version"), paths=[Path(p) for p in paths],
        cmdline=_str(d, "cmdline") or "", rootfs=Path(rootfs) if rootfs else None,
        description=_str(d, "description") or "", arch=_str(d, "arch"))
    return web.json_response(b, status=201)


async def remove_build(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].remove(_ref(request)))


async def verify(request: web.Request) -> web.Response:
    d = await _body(request, {"build"})
    r = await asyncio.to_thread(request.app[ADMIN].verify, _str(d, "build"))
    return web.json_response(r)


async def gc(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(request.app[ADMIN].gc))


# -- channels ------------------------------------------------------------------------------------
async def list_channels(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].channels())


async def set_channel(request: web.Request) -> web.Response:
    d = await _body(request, {"build", "why"})
    e = request.app[ADMIN].channel_set(request.match_info["channel"],
                                       _str(d, "build", True) or "", who=_who(request),
                                       why=_str(d, "why") or "")
    return web.json_response(e)


async def rollback_channel(request: web.Request) -> web.Response:
    d = await _body(request, {"to", "why", "force"})
    force = d.get("force", False)
    if not isinstance(force, bool):
        raise ValueError("force must be true or false")
    e = request.app[ADMIN].channel_rollback(request.match_info["channel"], to=_str(d, "to"),
                                            who=_who(request), why=_str(d, "why") or "",
                                            force=force)
    return web.json_response(e)


async def channel_history(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].channel_history(request.match_info["channel"]))


# -- nodes ---------------------------------------------------------------------------------------
async def list_nodes(request: web.Request) -> web.Response:
    discovered = request.query.get("discovered", "") in ("1", "true", "yes")
    return web.json_response(request.app[ADMIN].nodes(discovered=discovered))


async def show_node(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].node(request.match_info["node"]))


async def adopt_node(request: web.Request) -> web.Response:
    d = await _body(request, {"mac", "name", "group", "hostname"})
    n = request.app[ADMIN].adopt(_str(d, "mac", True) or "", _str(d, "name", True) or "",
                                 group=_str(d, "group"), hostname=_str(d, "hostname"),
                                 who=_who(request))
    return web.json_response(n, status=201)


async def rebind_node(request: web.Request) -> web.Response:
    d = await _body(request, {"mac", "uuid", "serial"})
    n = request.app[ADMIN].rebind(request.match_info["node"], mac=_str(d, "mac"),
                                  guid=_str(d, "uuid"), serial=_str(d, "serial"),
                                  who=_who(request))
    return web.json_response(n)


async def reimage_node(request: web.Request) -> web.Response:
    d = await _body(request, {"image"})
    a = request.app[ADMIN].reimage(request.match_info["node"], _str(d, "image", True) or "",
                                   who=_who(request))
    return web.json_response(a, status=201)


async def cancel_reimage(request: web.Request) -> web.Response:
    a = request.app[ADMIN].cancel_reimage(request.match_info["node"], who=_who(request))
    return web.json_response(a)


async def patch_node(request: web.Request) -> web.Response:
    d = await _body(request, {"build", "channel", "mode", "clear"})
    clear = d.get("clear", False)
    if not isinstance(clear, bool):
        raise ValueError("clear must be true or false")
    n = request.app[ADMIN].set_node(request.match_info["node"], build=_str(d, "build"),
                                    channel=_str(d, "channel"), mode=_str(d, "mode"),
                                    clear=clear)
    return web.json_response(n)


async def node_timeline(request: web.Request) -> web.Response:
    return web.json_response(request.app[ADMIN].timeline(request.match_info["node"]))


def make_admin_app(admin: Admin, token: str) -> web.Application:
    app = web.Application(middlewares=[auth_and_errors], client_max_size=MAX_BODY)
    app[ADMIN] = admin
    app[TOKEN] = token
    r = app.router
    v = "/api/v1"
    r.add_get(f"{v}/builds", list_builds)
    r.add_post(f"{v}/builds", import_build)
    r.add_post(f"{v}/builds/verify", verify)
    r.add_get(f"{v}/builds/{{name}}/{{version}}", show_build)
    r.add_delete(f"{v}/builds/{{name}}/{{version}}", remove_build)
    r.add_post(f"{v}/gc", gc)
    r.add_get(f"{v}/channels", list_channels)
    r.add_put(f"{v}/channels/{{channel}}", set_channel)
    r.add_post(f"{v}/channels/{{channel}}/rollback", rollback_channel)
    r.add_get(f"{v}/channels/{{channel}}/history", channel_history)
    r.add_get(f"{v}/nodes", list_nodes)
    r.add_post(f"{v}/nodes", adopt_node)
    r.add_get(f"{v}/nodes/{{node}}", show_node)
    r.add_patch(f"{v}/nodes/{{node}}", patch_node)
    r.add_post(f"{v}/nodes/{{node}}/rebind", rebind_node)
    r.add_post(f"{v}/nodes/{{node}}/reimage", reimage_node)
    r.add_delete(f"{v}/nodes/{{node}}/reimage", cancel_reimage)
    r.add_get(f"{v}/nodes/{{node}}/timeline", node_timeline)
    return app
