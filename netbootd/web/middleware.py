"""Per-request accounting on the HTTP listener: a counter by route and status, an access line.

The route label is the route's pattern (``/nocloud/{key}/{name}/{version}/{token}/{what}``),
or ``unmatched``: bounded, so a scanner cannot create a series per URL, and free of tokens.
The DEBUG access line shows the path with the token segment, and anything else shaped like a
token, replaced by ``<token>``: a first-boot token in a log would open that node's config to
whoever reads the log.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from netbootd.metrics import Counters

log = logging.getLogger("netbootd.http")

COUNTERS = web.AppKey("counters", Counters)
REDACTED = "<token>"


# A first-boot token's shape (render/tokens.py), also where no route matched (a client that
# mangled its URL still must not get a live token into the log).
TOKEN_SHAPE = re.compile(r"\d{1,12}\.\d{1,12}\.[A-Za-z0-9_-]{16,}")


def loggable_path(request: web.Request) -> str:
    """The request path without secrets (the first-boot token segment)."""
    path = request.path
    token = request.match_info.get("token")
    if token:
        path = path.replace(token, REDACTED)
    return TOKEN_SHAPE.sub(REDACTED, path)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500  # an exception other than an HTTP error ends as 500 in aiohttp
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        request.app[COUNTERS].inc("http_requests", route=route_label(request),
                                  status=str(status))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %d from %s", request.method, loggable_path(request), status,
                      request.remote)
