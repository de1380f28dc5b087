"""Admin API routes for rollouts: ``/api/v1/rollouts`` (docs/admin-api.md).

Registered on the admin app (``admin_routes.make_admin_app``), so the same bearer token and
error mapping apply: bad input 400, an unknown rollout 404, a rollout in the wrong phase or
a channel already being rolled out 409.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from netbootd.admin_rollout import (
    rollout_abort,
    rollout_list,
    rollout_pause,
    rollout_resume,
    rollout_start,
    rollout_status,
)
from netbootd.core.rollout import parse_duration
from netbootd.web.admin_routes import ADMIN, _body, _str, _who


def _id(request: web.Request) -> int:
    raw = request.match_info["rollout"]
    if not raw.isdigit():
        raise ValueError(f"rollout id {raw!r}: a number (GET /api/v1/rollouts lists them)")
    return int(raw)


def _int(d: dict[str, Any], key: str, default: int) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{key} must be a whole number")
    return v


async def start(request: web.Request) -> web.Response:
    d = await _body(request, {"channel", "build", "canary", "batch", "ready_within",
                              "max_failed", "reboot"})
    reboot = d.get("reboot", False)
    if not isinstance(reboot, bool):
        raise ValueError("reboot must be true or false")
    batch = d.get("batch", "25%")
    if isinstance(batch, int) and not isinstance(batch, bool):
        batch = str(batch)
    if not isinstance(batch, str):
        raise ValueError("batch must be a node count or a string like \"25%\"")
    within = d.get("ready_within", "15m")
    if isinstance(within, (int, float)) and not isinstance(within, bool):
        within = f"{within}s"
    if not isinstance(within, str):
        raise ValueError("ready_within must be seconds or a duration like \"15m\"")
    r = rollout_start(request.app[ADMIN], _str(d, "channel", True) or "",
                      _str(d, "build", True) or "", canary=_int(d, "canary", 1), batch=batch,
                      ready_within=parse_duration(within),
                      max_failed=_int(d, "max_failed", 1), reboot=reboot, who=_who(request))
    return web.json_response(r, status=201)


async def list_(request: web.Request) -> web.Response:
    return web.json_response(rollout_list(request.app[ADMIN]))


async def status(request: web.Request) -> web.Response:
    return web.json_response(rollout_status(request.app[ADMIN], _id(request)))


async def pause(request: web.Request) -> web.Response:
    await _body(request, set())
    return web.json_response(rollout_pause(request.app[ADMIN], _id(request)))


async def resume(request: web.Request) -> web.Response:
    await _body(request, set())
    return web.json_response(rollout_resume(request.app[ADMIN], _id(request)))


async def abort(request: web.Request) -> web.Response:
    d = await _body(request, {"why"})
    return web.json_response(rollout_abort(request.app[ADMIN], _id(request),
                                           who=_who(request), why=_str(d, "why") or ""))


def add_rollout_routes(app: web.Application) -> None:
    r = app.router
    v = "/api/v1/rollouts"
    r.add_get(v, list_)
    r.add_post(v, start)
    r.add_get(f"{v}/{{rollout}}", status)
    r.add_post(f"{v}/{{rollout}}/pause", pause)
    r.add_post(f"{v}/{{rollout}}/resume", resume)
    r.add_post(f"{v}/{{rollout}}/abort", abort)
