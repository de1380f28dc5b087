"""``GET /api/v1/status`` on the admin API: the state database's health and the event spool,
and the answer an admin request gets while that database is unreachable (503).

Registered by the service on the admin app it made (``add_status_routes``); the app's error
middleware calls ``database_down`` for every error that means the database cannot be reached
(state/health.py), so every route, the CLI's and any added later, refuses the same way; and
``down_now`` answers a request at once while the database is known to be down (until the
health's probe says it answers again), so no admin request waits on it on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from netbootd.state.health import DatabaseHealth, refused
from netbootd.state.sql import StateUnavailable

Status = Callable[[], dict[str, Any]]
STATUS: web.AppKey[Status] = web.AppKey("status")
HEALTH = web.AppKey("database_health", DatabaseHealth)


def database_down(request: web.Request, exc: BaseException) -> web.Response:
    """503 with the reason; a change says nothing was changed (the transaction rolled back)."""
    health = request.app.get(HEALTH)
    where = health.where if health is not None else None
    err = refused(where, exc, changed=request.method not in ("GET", "HEAD"))
    resp = web.json_response({"error": str(err), "hint": "the server goes on booting nodes "
                              "from what it last read; retry when the database is back"},
                             status=503)
    resp.headers["Retry-After"] = "5"
    return resp


def down_now(request: web.Request) -> web.Response | None:
    """The 503 for a request while the database is known to be down, else None."""
    health = request.app.get(HEALTH)
    if health is None or health.may_try() or request.path == "/api/v1/status":
        return None
    return database_down(request, StateUnavailable(health.last_error))


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS]())


def add_status_routes(app: web.Application, status_of: Status,
                      health: DatabaseHealth) -> None:
    app[STATUS] = status_of
    app[HEALTH] = health
    app.router.add_get("/api/v1/status", status)
