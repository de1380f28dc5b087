"""Channels: named pointers to a build, with an append-only history; the rollback rule.

Pure. A channel's history is a list of entries (set or rollback, from, to). ``rollback_target``
replays it as a stack: every ``set`` pushes the build it replaced, every rollback pops back to
where it went, so ``channel rollback`` repeated walks back through the builds the channel
really had, in order, and a rollback is itself recorded (history is never rewritten).
A rollout's entries (``rollout-start``, ``rollout-revert``, ``rollout-abort``) say what it
did and why without moving the channel, so the stack skips them; a finished rollout's move
is a ``set``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from netbootd.errors import NotFound

CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    channel: str
    ts: float
    who: str
    action: str  # "set" | "rollback" | "rollout-start" | "rollout-revert" | "rollout-abort"
    from_build: str | None
    to_build: str
    why: str

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "channel": self.channel, "ts": self.ts, "who": self.who,
                "action": self.action, "from": self.from_build, "to": self.to_build,
                "why": self.why}


def rollback_stack(history: Sequence[HistoryEntry]) -> list[str]:
    """The builds ``rollback`` would return to, most recent last."""
    stack: list[str] = []
    for e in history:
        if e.action not in ("set", "rollback"):
            continue  # rollout-start/-revert/-abort: recorded, the channel did not move
        if e.action == "set":
            if e.from_build is not None and e.from_build != e.to_build:
                stack.append(e.from_build)
        elif e.to_build in stack:
            # A rollback (to the previous build or, with --to, further back) pops down to it.
            del stack[stack.index(e.to_build):]
        elif e.from_build is not None:
            stack.append(e.from_build)  # --to a build never in this channel: like a set
    return stack


def rollback_target(channel: str, history: Sequence[HistoryEntry], to: str | None) -> str:
    """The build ``channel rollback`` moves to; NotFound says why there is none."""
    if not history:
        raise NotFound(f"channel {channel!r} has no history: nothing to roll back to")
    if to is not None:
        return to
    stack = rollback_stack(history)
    if not stack:
        raise NotFound(f"channel {channel!r} has no earlier build to roll back to "
                       f"(it points at {history[-1].to_build}); use --to NAME/VERSION")
    return stack[-1]
