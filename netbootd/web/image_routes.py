"""HTTP routes for files on disk: build files and bootloaders.

aiohttp's FileResponse gives Range (RFC 9110 section 14), ETag and If-None-Match,
Last-Modified, HEAD and sendfile(2). Build files are found through the build's manifest
(an allow-list); loaders through the containment function. Nothing here joins a client path
onto a directory by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from netbootd.errors import FileUnavailable, NotFound, PathRefused
from netbootd.store.origin_edge import Edge
from netbootd.web.boot_routes import RESPONDER

EDGE = web.AppKey("edge", Edge)  # set on an edge (``[origin] url``) only

# Build files never change once published (immutable builds), so clients and caches may keep
# them; loaders can change with a Debian package upgrade, so they are revalidated.
IMMUTABLE = "public, max-age=31536000, immutable"
# shim loaded by UEFI HTTP Boot fetches its second stage at its own URL's folder plus
# "/grubx64.efi" (its DEFAULT_LOADER "\\grubx64.efi" with the slash turned around), e.g.
# /loaders/grub//grubx64.efi (Debian 12's shim-signed under OVMF). Only that one empty component,
# before the last name, is folded; every other path goes to the containment function as sent.
_SHIM_DOUBLE_SLASH = re.compile(r"(?<=[^/])//(?=[^/]+$)")


async def build_file(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    responder = request.app[RESPONDER]
    try:
        build = responder.build(f"{m['name']}/{m['version']}")
        path = build.path_of(m["file"])
    except NotFound as e:
        raise web.HTTPNotFound(text=f"{e}\n") from e
    edge = request.app.get(EDGE)
    if edge is not None:  # a build pulled from an origin: served once fetched and verified
        return await edge_file(request, edge, path)
    responder.http_sent(request.path, request.remote, 200)
    return web.FileResponse(path, headers={"Cache-Control": IMMUTABLE})


async def edge_file(request: web.Request, edge: Edge, path: Path) -> web.StreamResponse:
    try:
        sha = await edge.ready(path)
    except FileUnavailable as e:
        raise web.HTTPServiceUnavailable(text=f"{e}\n", headers={"Retry-After": "5"}) from e
    except NotFound as e:
        raise web.HTTPNotFound(text=f"{e}\n") from e
    request.app[RESPONDER].http_sent(request.path, request.remote, 200)
    response = web.FileResponse(path, headers={"Cache-Control": IMMUTABLE})
    if sha is None:
        return response
    try:  # sent here, not after returning, so the blob is held until the last byte
        await response.prepare(request)
        await response.write_eof()
    finally:
        edge.cache.release(sha)
    return response


async def loader_file(request: web.Request) -> web.StreamResponse:
    responder = request.app[RESPONDER]
    try:
        path = responder.loader_path(_SHIM_DOUBLE_SLASH.sub("/", request.match_info["path"]))
    except PathRefused as e:
        raise web.HTTPForbidden(text=f"{e}\n") from e
    except NotFound as e:
        raise web.HTTPNotFound(text=f"{e}\n") from e
    responder.http_sent(request.path, request.remote, 200)
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/builds/{name}/{version}/{file:.+}", build_file)
    app.router.add_get("/loaders/{path:.+}", loader_file)
