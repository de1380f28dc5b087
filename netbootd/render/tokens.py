"""Per-node, per-boot signed tokens for first-boot URLs (NoCloud, kickstart, phone-home).

A token is ``<issued>.<expires>.<sig>`` where ``sig`` is HMAC-SHA256 (RFC 2104) under the
server key over the node's MAC, the subject (the exact build ``name/version``, or a reimage
order), ``issued`` and ``expires``, base64url without padding (RFC 4648 section 5), so it fits
a URL path segment and a kernel command line. ``issued`` is the time the boot config was
handed out, rounded down to ``BUCKET`` seconds: a later boot gets a fresh token, while
``netbootd render`` and the server, asked within the same bucket (or ``render --at``), print
the same one.

What a token proves: the holder was handed this node's boot config for this build by this
server, less than ``ttl`` seconds ago. It cannot prove who the holder is (PXE has no client
authentication: docs/security.md). Pure: the caller passes ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from netbootd.errors import NetbootdError

BUCKET = 60  # seconds; the granularity of "per boot"
MIN_KEY_BYTES = 32  # HMAC-SHA256 key as long as the hash output (RFC 2104 section 3)
# A token issued this far in the future of the verifier's clock is still accepted: the server
# and a `render` on another host may disagree by a little.
CLOCK_SKEW = 300
_DOMAIN = b"netbootd-firstboot-v1"


class TokenRefused(NetbootdError):
    """A first-boot request without a valid token; ``reason`` is a short counter label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class FirstbootTokens:
    key: bytes
    ttl: int  # seconds a token stays valid after it was issued

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"first-boot key must be at least {MIN_KEY_BYTES} bytes")

    def __repr__(self) -> str:  # never print the key, e.g. in a traceback or a debug log
        return f"FirstbootTokens(key=<{len(self.key)} bytes>, ttl={self.ttl})"

    def issue(self, mac: str, subject: str, now: float) -> str:
        issued = int(now) // BUCKET * BUCKET
        expires = issued + self.ttl
        return f"{issued}.{expires}.{self._sign(mac, subject, issued, expires)}"

    def check(self, token: str, mac: str, subject: str, now: float) -> None:
        """Return if ``token`` opens ``mac``'s files or reports for ``subject`` at ``now``;
        else raise TokenRefused saying why (never echoing the token)."""
        parts = token.split(".")
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 12
                                      for p in parts[:2]):
            raise TokenRefused("malformed", "first-boot token missing or malformed")
        issued, expires = int(parts[0]), int(parts[1])
        expected = self._sign(mac, subject, issued, expires)
        # Constant time: a timing side channel must not leak the signature byte by byte.
        if not hmac.compare_digest(expected.encode(), parts[2].encode("utf-8", "replace")):
            raise TokenRefused("bad-signature", f"first-boot token is not valid for node {mac} "
                                                f"and {subject}")
        if issued > now + CLOCK_SKEW:
            raise TokenRefused("not-yet-valid", "first-boot token issued in the future: check "
                                                "the server clock")
        if now >= expires:
            raise TokenRefused("expired", f"first-boot token expired {int(now - expires)} s "
                                          "ago: network-boot the node again for a fresh one")

    def _sign(self, mac: str, subject: str, issued: int, expires: int) -> str:
        msg = b"\0".join([_DOMAIN, mac.lower().encode(), subject.encode(),
                          str(issued).encode(), str(expires).encode()])
        digest = hmac.new(self.key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
