"""The power driver interface: what every driver does, and the result of one action.

A driver turns one action (``on``, ``off``, ``cycle``, ``status``) on one machine into the
machine's power state afterwards, or raises ``PowerError`` with a message that says what to
check. Drivers hold no secrets of their own: the password comes with each call (from the
credentials file) and goes to the BMC by a channel that ``ps`` does not show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from netbootd.errors import NetbootdError

ACTIONS = ("on", "off", "cycle", "status")
STATES = ("on", "off", "unknown")


class PowerError(NetbootdError):
    """A power action that failed or cannot be done; the message never holds a secret."""


class PowerUnsupported(PowerError):
    """The node's driver cannot do this action at all (Wake-on-LAN can only power on)."""


class PowerUnavailable(PowerError):
    """The BMC did not answer or refused the login; exit code 4 like other unreachables."""

    exit_code = 4


class PowerDriver(Protocol):
    """One machine's power control. ``secret`` is its BMC password (None if it needs none)."""

    @property
    def name(self) -> str:
        """The driver's name as in the config (``ipmi``, ``wol``)."""
        ...

    def run(self, action: str, secret: str | None) -> str:
        """Do ``action``; return the power state after it (one of ``STATES``)."""
        ...


@dataclass(frozen=True, slots=True)
class PowerResult:
    """What one action on one node did: ``ok`` with the state after it, or the error."""

    node: str
    action: str
    driver: str
    ok: bool
    state: str  # on, off, unknown
    message: str
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {"node": self.node, "action": self.action, "driver": self.driver,
                "ok": self.ok, "state": self.state, "message": self.message,
                "seconds": round(self.seconds, 3)}
