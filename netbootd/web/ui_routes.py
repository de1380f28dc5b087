"""The fleet dashboard: server-rendered pages under ``/ui`` on the admin listener.

Reads only: each page calls the same ``Admin`` views as ``/api/v1`` and the CLI (so the
dashboard cannot disagree with ``netbootd node list``) and renders them with the package's
templates (``ui_render``). Pages need no token; their buttons (rollback, adopt, a rollout's
pause, resume and abort) are ``fetch`` calls from ``ui_static/dash.js`` to the JSON API with
the admin's bearer token, so an action is checked exactly as a CLI or curl one is
(``ui_security`` for the cross-site rules). The static files are the package's own: the
dashboard works with no internet access.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from aiohttp import web

from netbootd.admin import Admin
from netbootd.admin_rollout import rollout_list
from netbootd.cli_views import node_state
from netbootd.errors import NetbootdError, NotFound
from netbootd.state.registry import StateUnavailable
from netbootd.web.ui_charts import funnel_chart
from netbootd.web.ui_render import render

STATIC = {"dash.js": "text/javascript", "dash.css": "text/css"}
REFRESH = 15  # seconds: the fleet and rollout pages offer to reload themselves this often
STATES = ("booting", "booted", "ready", "failed", "reimaging", "-")

UI_ADMIN = web.AppKey("ui_admin", Admin)
Page = Callable[[web.Request], Awaitable[web.Response]]


def _admin(request: web.Request) -> Admin:
    return request.app[UI_ADMIN]


def _page(template: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(text=render(template, **context), status=status,
                        content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def _error_page(status: int, message: str) -> web.Response:
    return _page("error.html", status=status, page="", title=f"error {status}",
                 message=message)


def _errors_as_pages(page: Page) -> Page:
    """What the admin core refuses (no such node, its state unreadable) as an HTML page with
    the core's own message, instead of the API's JSON."""
    @functools.wraps(page)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await page(request)
        except NotFound as e:
            return _error_page(404, str(e))
        except StateUnavailable as e:
            return _error_page(503, str(e))
        except NetbootdError as e:
            return _error_page(500, str(e))
    return wrapped


@_errors_as_pages
async def fleet(request: web.Request) -> web.Response:
    admin = _admin(request)
    nodes = admin.nodes()
    for n in nodes:
        n["state"] = node_state(n)
    counts = {s: sum(1 for n in nodes if n["state"] == s) for s in STATES}
    return _page("fleet.html", page="fleet", title="fleet", refresh=REFRESH, nodes=nodes,
                 counts={s: c for s, c in counts.items() if c},
                 discovered=len(admin.nodes(discovered=True)), channels=admin.channels())


@_errors_as_pages
async def node(request: web.Request) -> web.Response:
    admin = _admin(request)
    name = request.match_info["node"]
    n = admin.node(name)
    n["state"] = node_state(n)
    try:
        tl = admin.timeline(name)
    except NotFound:  # no MAC and never booted: nothing to chart yet
        tl = None
    chart = funnel_chart(tl["funnel"]) if tl and tl["events"] else None
    events = list(reversed(n["timeline"]))[:100]
    return _page("node.html", page="fleet", title=f"node {name}", node=n, chart=chart,
                 events=events)


@_errors_as_pages
async def channels(request: web.Request) -> web.Response:
    admin = _admin(request)
    rows = []
    for ch, ref in admin.channels().items():
        try:
            target: str | None = admin.registry.rollback_target(ch, None)
            no_target = ""
        except NotFound as e:
            target, no_target = None, str(e)
        rows.append({"name": ch, "build": ref, "target": target, "no_target": no_target,
                     "history": list(reversed(admin.channel_history(ch)))})
    return _page("channels.html", page="channels", title="channels", channels=rows)


@_errors_as_pages
async def discovered(request: web.Request) -> web.Response:
    admin = _admin(request)
    records = sorted(admin.nodes(discovered=True), key=lambda r: -(r["last_seen"] or 0))
    groups = sorted(admin.inventory().groups)
    return _page("discovered.html", page="discovered", title="discovered machines",
                 records=records, groups=groups)


def rollout_view(r: dict[str, Any]) -> dict[str, Any]:
    """A rollout's JSON (``GET /api/v1/rollouts``) with one row per node in batch order,
    ``pending`` for nodes of batches not started yet, and the counts for its progress bar."""
    states: dict[str, dict[str, Any]] = r.get("node_states") or {}
    rows = []
    for i, batch in enumerate(r.get("batches") or []):
        for n in batch:
            s = states.get(n)
            rows.append({"node": n, "batch": i, "status": s["status"] if s else "pending",
                         "since": s.get("at") or s.get("since") if s else None,
                         "reason": (s.get("reason") or "") if s else ""})
    count = {k: sum(1 for x in rows if x["status"] == k) for k in ("ready", "failed",
                                                                   "waiting")}
    return {**r, "rows": rows, "progress": {"total": len(rows), **count}}


@_errors_as_pages
async def rollouts(request: web.Request) -> web.Response:
    views = [rollout_view(r) for r in reversed(rollout_list(_admin(request)))]
    return _page("rollouts.html", page="rollouts", title="rollouts", refresh=REFRESH,
                 rollouts=views)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        return _error_page(404, f"no static file {name!r}")
    body = files("netbootd.web").joinpath("ui_static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name],
                        headers={"Cache-Control": "no-cache"})


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def add_ui_routes(app: web.Application, admin: Admin) -> None:
    """Register the dashboard on the admin app; its pages read ``admin``."""
    app[UI_ADMIN] = admin
    r = app.router
    r.add_get("/ui", root)
    r.add_get("/ui/", fleet)
    r.add_get("/ui/nodes/{node}", node)
    r.add_get("/ui/channels", channels)
    r.add_get("/ui/discovered", discovered)
    r.add_get("/ui/rollouts", rollouts)
    r.add_get("/ui/static/{name}", static)
