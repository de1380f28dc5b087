"""What keeps the admin listener safe to open in a browser: the dashboard's public reads,
cross-site request refusal, and the security headers on every answer.

The dashboard's pages (``GET /ui/...``) are read-only views and need no token; every change
goes through ``/api/v1`` with ``Authorization: Bearer <token>``, which a browser only sends
when the page's own script adds it (docs/operations.md, "The dashboard"). A cross-site page
cannot add that header without a CORS preflight this listener never grants, and on top of
that any unsafe request a browser marks as cross-site (``Sec-Fetch-Site``) or sends from
another origin (``Origin``) is refused with 403 before the token is even looked at. Clients
that are not browsers (the CLI, curl) send neither header and are judged by the token alone.
The public pages answer only to a ``Host`` that is an address or this machine's name, so a
page of another site cannot read them by DNS rebinding either.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from functools import cache

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

log = logging.getLogger("netbootd.api")

UI_PREFIX = "/ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a browser reports for a request its own page made (or the user typed: "none").
SAME_SITE_FETCH = frozenset({"same-origin", "none"})

# No inline script or style at all: the pages load /ui/static/dash.js and dash.css only, so a
# value that slipped through escaping still could not run. SVG presentation attributes
# (fill, width) are not styles and need no 'unsafe-inline'.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP level 2
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_public_read(request: web.Request) -> bool:
    """A dashboard page or its static file: readable without the token."""
    path = request.path
    return request.method in ("GET", "HEAD") and (path == UI_PREFIX or
                                                  path.startswith(UI_PREFIX + "/"))


@cache
def own_names() -> frozenset[str]:
    """This machine's host names (what an admin may type instead of an address)."""
    names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(n for n in names if n)


def rebinding_reason(request: web.Request) -> str | None:
    """Why a public read's ``Host`` looks like DNS rebinding, or None.

    A page of some other site whose name its owner points at this listener's address would be
    same-origin with the dashboard and could read it (no token is needed to read). A browser
    sends the name it resolved as ``Host``, so the pages answer only to an IP address,
    ``localhost`` (``*.localhost``) or this machine's own name.
    """
    try:
        host = (URL(f"http://{request.host}").host or "").lower().rstrip(".")
    except ValueError:
        return f"Host {request.host!r} is not a host name"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if host in own_names() or host.endswith(".localhost"):
        return None
    return (f"Host {host!r} is not an address or this machine's name; open the dashboard by "
            "address, localhost or an SSH tunnel")


def cross_site_reason(request: web.Request) -> str | None:
    """Why an unsafe request looks like it came from another site's page, or None."""
    if request.method in SAFE_METHODS:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in SAME_SITE_FETCH:
        return f"Sec-Fetch-Site is {fetch_site!r}"
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return f"Origin {origin!r} is not this listener's"
    return None


def _refused(reason: str) -> web.Response:
    return web.json_response(
        {"error": f"cross-site request refused ({reason})",
         "hint": "changes come from the dashboard's own page or a client that is not a "
                 "browser, with 'Authorization: Bearer <token>'"}, status=403)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site changes; add the security headers to every answer."""
    reason = rebinding_reason(request) if is_public_read(request) else \
        cross_site_reason(request)
    if reason is not None:
        log.warning("api: refused %s %s from %s: %s", request.method, request.path,
                    request.remote or "unix socket", reason)
        response: web.StreamResponse = _refused(reason)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(SECURITY_HEADERS)
            raise
    response.headers.update(SECURITY_HEADERS)
    return response
