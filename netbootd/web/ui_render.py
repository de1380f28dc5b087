"""The dashboard's page renderer: the package's jinja2 templates with autoescaping always on.

Node names, hostnames, vendor classes and event details are whatever a machine on the network
or an admin typed, so every value reaches the page through autoescaping (``<``, ``>``, ``&``,
quotes); nothing from the data is ever compiled as a template, so a ``{{`` in a hostname is
text. Links build path segments with ``seg`` (quotes ``/`` as well), never by hand.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from netbootd.cli_views import human_size, utc


def seg(value: object) -> str:
    """One URL path segment: everything but unreserved characters percent-encoded."""
    return urllib.parse.quote(str(value), safe="")


def ago(ts: float | None, now: float | None = None) -> str:
    """``3 min ago``; ``never`` for None."""
    if ts is None:
        return "never"
    d = max(0.0, (time.time() if now is None else now) - ts)
    if d < 90:
        return f"{d:.0f} s ago"
    if d < 5400:
        return f"{d / 60:.0f} min ago"
    if d < 172800:
        return f"{d / 3600:.0f} h ago"
    return f"{d / 86400:.0f} days ago"


def compact_json(value: object) -> str:
    """An event's detail on one line (escaped by the template like any other text)."""
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("netbootd.web", "ui_templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(seg=seg, utc=utc, ago=ago, size=human_size, compact=compact_json)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
