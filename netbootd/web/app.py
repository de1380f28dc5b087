"""The aiohttp application: boot routes, image routes, a health check and /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from netbootd.metrics_export import exposition
from netbootd.responder import Responder
from netbootd.web import boot_routes, image_routes
from netbootd.web.boot_routes import RESPONDER
from netbootd.web.middleware import COUNTERS, observe

REGISTRY = web.AppKey("registry", CollectorRegistry)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; every label value is bounded and holds no secret."""
    return web.Response(body=exposition(request.app[REGISTRY]),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _commit_events(request: web.Request, response: web.StreamResponse) -> None:
    # Boot events are written behind (state/events.py). A node's POST (phone-home, report,
    # reimage report) is the point after which the node or its operator reads the outcome from
    # the database, so the queue is committed before that answer. A GET (iPXE script, build
    # file, seed) is fetched by firmware or a loader, which reads nothing back: its event is
    # committed by the scheduled flush, at most 50 ms later, and reads through this process
    # commit first anyway. Committing per GET cost ~13 % of an iPXE script answer
    # (docs/performance.md).
    if request.method != "GET":
        request.app[RESPONDER].state.flush()


def make_app(responder: Responder, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application(client_max_size=65536, middlewares=[observe])
    app[RESPONDER] = responder
    app[COUNTERS] = responder.counters
    boot_routes.add_routes(app)
    image_routes.add_routes(app)
    app.router.add_get("/healthz", healthz)
    if registry is not None:
        app[REGISTRY] = registry
        app.router.add_get("/metrics", metrics)
    app.on_response_prepare.append(_commit_events)
    return app
