"""Which cached blobs an edge evicts to stay within ``[origin] cache_max``: a pure choice.

Least recently used first (last use = last served, or fetched if never served). Never a
blob that a build a channel, an override or the config points at needs (``pinned``), nor
one a transfer is reading (``held``): those stay even if the bound cannot then be met, and
the caller says so. Ties on last use go to the larger blob first (frees the bound sooner),
then by hash, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cached:
    size: int
    last_use: float


@dataclass(frozen=True, slots=True)
class Eviction:
    evict: tuple[str, ...]  # sha256 of the blobs to remove, in order
    over_by: int  # bytes still above the bound after evicting them (0: within it)


def choose_evictions(blobs: Mapping[str, Cached], budget: int, incoming: int = 0, *,
                     pinned: Collection[str] = (), held: Collection[str] = ()) -> Eviction:
    """Blobs to evict so that the cache plus ``incoming`` bytes fits in ``budget``."""
    total = sum(c.size for c in blobs.values()) + incoming
    if total <= budget:
        return Eviction((), 0)
    order = sorted((sha for sha in blobs if sha not in pinned and sha not in held),
                   key=lambda sha: (blobs[sha].last_use, -blobs[sha].size, sha))
    evict: list[str] = []
    for sha in order:
        if total <= budget:
            break
        evict.append(sha)
        total -= blobs[sha].size
    return Eviction(tuple(evict), max(0, total - budget))
