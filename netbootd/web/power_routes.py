"""The admin API's power routes (token-protected like every ``/api/v1`` route):

``GET  /api/v1/nodes/<node>/power``                 the node's power state (``status``)
``POST /api/v1/nodes/<node>/power {"action": ...}``  on, off, cycle or status
``POST /api/v1/nodes/<node>/reimage {"image": ..., "now": true}`` is handled here too:
the reimage order, then a power cycle.

The driver runs in a thread (ipmitool takes up to ``[power] timeout``), so boots go on being
served. A BMC that does not answer or refuses the login is 502 (the server is fine, the
machine's controller is not); an action the driver cannot do (Wake-on-LAN ``off``) is 400.
Answers carry the result (state, message, seconds), never a credential.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from netbootd.power.admin_power import node_power, reimage_now
from netbootd.power.driver import PowerUnavailable
from netbootd.web.admin_routes import ADMIN, _body, _error, _str, _who


def _unavailable(e: Exception) -> web.Response | None:
    cause = getattr(e, "cause", e)
    if isinstance(cause, PowerUnavailable):
        return _error(502, str(e), "check the BMC's address, that IPMI-over-LAN is on, and "
                                   "the user and password (credentials file)")
    return None


async def _power(request: web.Request, action: str) -> web.Response:
    try:
        r = await asyncio.to_thread(node_power, request.app[ADMIN],
                                    request.match_info["node"], action, who=_who(request))
    except PowerUnavailable as e:
        resp = _unavailable(e)
        assert resp is not None
        return resp
    return web.json_response(r)


async def power_status(request: web.Request) -> web.Response:
    return await _power(request, "status")


async def power_action(request: web.Request) -> web.Response:
    d = await _body(request, {"action"})
    return await _power(request, _str(d, "action", True) or "")


async def reimage_now_route(request: web.Request, image: str) -> web.Response:
    """The reimage route's ``"now": true``: order and power-cycle (201 with both)."""
    try:
        a: dict[str, Any] = await asyncio.to_thread(
            reimage_now, request.app[ADMIN], request.match_info["node"], image,
            who=_who(request))
    except Exception as e:
        if (resp := _unavailable(e)) is not None:
            return resp
        raise
    return web.json_response(a, status=201)


def add_power_routes(r: web.UrlDispatcher, v: str) -> None:
    r.add_get(f"{v}/nodes/{{node}}/power", power_status)
    r.add_post(f"{v}/nodes/{{node}}/power", power_action)
