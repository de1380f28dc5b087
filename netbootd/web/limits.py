"""A cap on concurrent HTTP connections for an aiohttp server, counted when hit.

aiohttp has no connection limit of its own: every accepted connection gets a RequestHandler and
a descriptor until it closes or its keep-alive timeout (which aiohttp also arms before the first
request) expires. ``limit_connections`` makes the server answer the connection over the limit
with a plain ``503`` and close it, so a connection flood costs one short write per connection
instead of exhausting descriptors, and legitimate clients are served again as soon as
connections close. Counter: ``http_limited{reason=connections}``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from netbootd.metrics import Counters

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 38\r\n\r\n"
        b"netbootd: too many connections, retry\n")


def limit_connections(server: web.Server, limit: int, counters: Counters) -> None:
    """Close (with a 503) every connection beyond ``limit`` open at once on ``server``."""
    admitted = server.connection_made

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        # Registered first, so the closing transport's connection_lost finds and removes it.
        admitted(handler, transport)
        if len(server.connections) > limit:
            counters.inc("http_limited", reason="connections")
            transport.write(BUSY)
            transport.close()

    # aiohttp calls the manager's connection_made for each new connection (RequestHandler);
    # an instance attribute is the smallest hook, with no private API and no subclass of the
    # runner.
    server.connection_made = connection_made  # type: ignore[method-assign]
