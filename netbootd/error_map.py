"""How an error raised while answering reaches the client: one table for HTTP and TFTP.

The answers raise the exception tree of errors.py (and the renderer's ``RenderError``,
the token check's ``TokenRefused``); the web and TFTP edges look the exception up here
instead of each choosing a status. The first row whose type matches wins, so more
specific types come first.

- ``TokenRefused``: a first-boot URL without the node's own valid token: 403 (the reason
  says what to do: boot the node again).
- ``NotFound`` (incl. ``NoSuchFile``: this node has no such first-boot file, e.g. an ESXi
  boot.cfg for a Linux node): 404 / TFTP 1 "file not found".
- ``NoRootPassword``: an ESXi kickstart without a root password hash is refused, not served:
  404, its message names the var to set.
- ``PathRefused``: a name that climbs out of its root: 403 / TFTP 2 "access violation".
- ``FileUnavailable``: a build file an edge has not got from its origin yet (origin down, the
  fetch refused or too slow): 503 / TFTP 0 "file not available yet"; the client may retry.
- ``RenderError`` (a template that fails, a kernel command line with a newline, a bad
  seed value): the server's configuration is at fault, not the request: 500 / TFTP 0
  "internal error", logged with its cause.
- anything else: 500 / TFTP 0, logged with a traceback (a bug).
"""

from __future__ import annotations

from dataclasses import dataclass

from netbootd.errors import FileUnavailable, NotFound, PathRefused
from netbootd.render.node_files import NoRootPassword, RenderError
from netbootd.render.tokens import TokenRefused


@dataclass(frozen=True, slots=True)
class Refusal:
    http_status: int
    # The TFTP refusal reason: a ``tftp_refused`` counter label, whose ERROR packet
    # (code 1 not found, 2 access violation, 0 otherwise) tftp/admission.py holds.
    tftp: str
    expected: bool  # False: a bug or a broken config, logged with its cause


TABLE: tuple[tuple[type[BaseException], Refusal], ...] = (
    (TokenRefused, Refusal(403, "access", True)),
    (NotFound, Refusal(404, "not-found", True)),
    (NoRootPassword, Refusal(404, "not-found", True)),
    (PathRefused, Refusal(403, "access", True)),
    (FileUnavailable, Refusal(503, "unavailable", True)),
    (RenderError, Refusal(500, "error", False)),
)
UNEXPECTED = Refusal(500, "error", False)


def refusal_for(exc: BaseException) -> Refusal:
    """The row for ``exc`` (``UNEXPECTED`` when no row matches)."""
    for kind, refusal in TABLE:
        if isinstance(exc, kind):
            return refusal
    return UNEXPECTED
