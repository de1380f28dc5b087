"""Process-wide event counters owned by the service and handed to each endpoint.

Endpoints count what they drop and why (``dhcp_ignored{reason=not-pxe}``); the counters are a
plain object passed in, never module state, so tests can make their own.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    """Named counters with optional labels, e.g. ``inc("dhcp_malformed", reason="truncated")``."""

    def __init__(self) -> None:
        self._c: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self._c[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name: str, **labels: str) -> int:
        """Value of one series; with no labels given, the sum over every label set of ``name``."""
        if labels:
            return self._c[(name, tuple(sorted(labels.items())))]
        return sum(v for (n, _), v in self._c.items() if n == name)

    def series(self) -> list[tuple[str, dict[str, str], int]]:
        """Every series as (name, labels, value), sorted; what /metrics exports."""
        return [(name, dict(labels), value) for (name, labels), value in sorted(self._c.items())]

    def snapshot(self) -> dict[str, int]:
        """Flat ``name{k=v,...}`` -> value mapping, for logs, the API and tests."""
        out: dict[str, int] = {}
        for (name, labels), value in sorted(self._c.items()):
            key = name + ("{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else "")
            out[key] = value
        return out
