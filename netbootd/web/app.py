"""The aiohttp application: boot routes, image routes, a health check and /metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from netbootd.metrics_export import exposition
from netbootd.responder import Responder
from netbootd.state.events import StateDB
from netbootd.web import boot_routes, image_routes, origin_routes
from netbootd.web.boot_routes import RESPONDER
from netbootd.web.middleware import COUNTERS, observe

REGISTRY = web.AppKey("registry", CollectorRegistry)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; every label value is bounded and holds no secret."""
    return web.Response(body=exposition(request.app[REGISTRY]),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


class _CommitBarrier:
    """One commit of the queued boot events for every answer prepared in the same loop turn.

    Boot events are written behind (state/events.py). An HTTP answer is a point where the
    client or an operator may read the request's own event next (a report, `netbootd node
    show` after a boot), so it is committed before the answer goes out, as it always was. A
    commit per answer cost ~13 % of an iPXE script answer (docs/performance.md); answers
    prepared in one turn of the event loop (many connections at once) now wait for one
    shared commit, scheduled with ``call_soon`` after them.
    """

    def __init__(self) -> None:
        self._waiting: asyncio.Future[None] | None = None

    async def wait(self, state: StateDB) -> None:
        if not state.has_queued_writes:
            return
        if self._waiting is None:
            loop = asyncio.get_running_loop()
            self._waiting = loop.create_future()
            loop.call_soon(self._commit, state, self._waiting)
        await asyncio.shield(self._waiting)

    def _commit(self, state: StateDB, waiting: asyncio.Future[None]) -> None:
        self._waiting = None
        try:
            state.flush()  # logs and drops on a sqlite error itself
        finally:
            if not waiting.done():
                waiting.set_result(None)


COMMIT_BARRIER = web.AppKey("commit_barrier", _CommitBarrier)


async def _commit_events(request: web.Request, response: web.StreamResponse) -> None:
    await request.app[COMMIT_BARRIER].wait(request.app[RESPONDER].state)


def make_app(responder: Responder, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application(client_max_size=65536, middlewares=[observe])
    app[RESPONDER] = responder
    app[COUNTERS] = responder.counters
    app[COMMIT_BARRIER] = _CommitBarrier()
    boot_routes.add_routes(app)
    image_routes.add_routes(app)
    origin_routes.add_routes(app)
    app.router.add_get("/healthz", healthz)
    if registry is not None:
        app[REGISTRY] = registry
        app.router.add_get("/metrics", metrics)
    app.on_response_prepare.append(_commit_events)
    return app
