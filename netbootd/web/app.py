"""The aiohttp application: boot routes, image routes, and a health check."""

from __future__ import annotations

from aiohttp import web

from netbootd.responder import Responder
from netbootd.web import boot_routes, image_routes
from netbootd.web.boot_routes import RESPONDER


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(responder: Responder) -> web.Application:
    app = web.Application(client_max_size=65536)
    app[RESPONDER] = responder
    boot_routes.add_routes(app)
    image_routes.add_routes(app)
    app.router.add_get("/healthz", healthz)
    return app
