"""The ``[origin]`` table: where an edge pulls builds from, and how much of them it keeps.

A server with ``[origin] url`` is an *edge*: it learns the builds of another netbootd (the
origin) from its index, fetches their files by sha256 when a boot needs them, and serves
them from a bounded local cache (netbootd/store/origin_*.py, docs/operations.md "Edges and
origins"). Without ``url`` the table is ignored and the server serves its own store only.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from netbootd.config import _Reader

GIB = 1 << 30
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20,
          "gib": 1 << 30, "tib": 1 << 40}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
# Below this an edge could not hold one kernel and initrd; almost surely a unit left out.
MIN_CACHE = 1 << 20


DEFAULT_CACHE_MAX = 20 * GIB
DEFAULT_POLL = 10.0
DEFAULT_WAIT = 120.0


@dataclass(frozen=True, slots=True)
class OriginConfig:
    url: str | None = None  # base URL of the origin's HTTP listener; None: not an edge
    cache_max: int = DEFAULT_CACHE_MAX  # bytes of blobs the edge keeps (LRU out)
    poll: float = DEFAULT_POLL  # seconds between looks at the origin's build index
    wait: float = DEFAULT_WAIT  # seconds a request waits for a blob being fetched


def parse_size(value: object) -> int | None:
    """Bytes from an int or a string like ``"20GiB"``, ``"500 MB"``; None if not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str) or not (m := _SIZE_RE.match(value)):
        return None
    unit = _UNITS.get(m.group(2).lower())
    return None if unit is None else int(float(m.group(1)) * unit)


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be an origin's base URL (None: it can)."""
    try:
        u = urllib.parse.urlsplit(url)
        u.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as e:
        return f"{url!r} is not a URL ({e})"
    if u.scheme not in ("http", "https") or not u.hostname:
        return f"{url!r}: expected http://HOST[:PORT][/PATH] of the origin netbootd"
    if u.query or u.fragment or u.username or u.password:
        return f"{url!r}: no query, fragment or credentials in the origin URL"
    return None


def parse_origin(r: _Reader, data: Mapping[str, Any]) -> OriginConfig:
    """``[origin]``; every problem goes to ``r.problems``."""
    t = r.table(data, "origin", "")
    r.unknown(t, {"url", "cache_max", "poll", "wait"}, "origin.")
    url = r.optional_str(t, "url", "origin.")
    if url is not None and (err := check_url(url)):
        r.problems.append(f"origin.url: {err}")
        url = None
    cache_max = DEFAULT_CACHE_MAX
    if "cache_max" in t:
        size = parse_size(t["cache_max"])
        if size is None:
            r.problems.append(f"origin.cache_max: {t['cache_max']!r} is not a size; give bytes "
                              "or a string like \"20GiB\" or \"500MB\"")
        elif size < MIN_CACHE:
            r.problems.append(f"origin.cache_max: {size} bytes is below 1MiB; did you leave "
                              "out the unit (\"20GiB\")?")
        else:
            cache_max = size

    def seconds(key: str, default: float, low: float, high: float) -> float:
        return r.value(t, key, "origin.", float, default,
                       lambda v: None if low <= v <= high else f"expected {low}..{high} seconds")

    return OriginConfig(url=url.rstrip("/") if url else None, cache_max=cache_max,
                        poll=seconds("poll", DEFAULT_POLL, 0.2, 3600),
                        wait=seconds("wait", DEFAULT_WAIT, 1, 3600))
