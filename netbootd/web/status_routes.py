"""``GET /api/v1/status`` on the admin API: the state database's health and the event spool,
and the answer an admin request gets while that database is unreachable (503).

Registered by the service on the admin app it made (``add_status_routes``); the app's error
middleware calls ``database_down`` for every error that means the database cannot be reached
(state/health.py), so every route, the CLI's and any added later, refuses the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from netbootd.state.health import refused

Status = Callable[[], dict[str, Any]]
STATUS: web.AppKey[Status] = web.AppKey("status")
WHERE = web.AppKey("database_where", str)


def database_down(request: web.Request, exc: BaseException) -> web.Response:
    """503 with the reason; a change says nothing was changed (the transaction rolled back)."""
    where = request.app.get(WHERE, "the configured address")
    err = refused(where, exc, changed=request.method not in ("GET", "HEAD"))
    resp = web.json_response({"error": str(err), "hint": "the server goes on booting nodes "
                              "from what it last read; retry when the database is back"},
                             status=503)
    resp.headers["Retry-After"] = "5"
    return resp


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS]())


def add_status_routes(app: web.Application, status_of: Status, where: str) -> None:
    app[STATUS] = status_of
    app[WHERE] = where
    app.router.add_get("/api/v1/status", status)
