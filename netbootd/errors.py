"""One exception tree for netbootd; every error says what was wrong and what to do.

    NetbootdError
    ├── ConfigError          bad configuration; ``problems`` lists every one, with its key
    ├── MalformedPacket      bytes from the network that are not a valid packet (dropped, counted)
    ├── PathRefused          a client path that escapes its root or is not acceptable
    ├── NotFound             a file, build or node that does not exist (message lists known ones)
    ├── BuildError           a build or manifest that is missing, inconsistent or corrupt
    ├── Conflict             a change refused because something still depends on what it
                             would change (a build a channel points at...)
    └── StartError           the service cannot start: a port in use, no permission to bind
        └── OtherDhcpServer  server mode found another DHCP server on the link (exit code 3)
"""

from __future__ import annotations


class NetbootdError(Exception):
    """Base of every error netbootd raises on purpose."""


class ConfigError(NetbootdError):
    """Configuration rejected at load; ``problems`` holds one ``key: message`` line per problem."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class MalformedPacket(NetbootdError):
    """Bytes that do not parse as a packet of the expected protocol.

    ``reason`` is a short, stable label used as a metrics/counter key
    (e.g. ``"truncated"``, ``"bad-opcode"``); the message adds detail.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PathRefused(NetbootdError):
    """A client-supplied path that is absolute, climbs out of its root, or is otherwise unsafe."""


class NotFound(NetbootdError):
    """Something asked for does not exist; the message names what does."""


class BuildError(NetbootdError):
    """A build or its manifest is missing, inconsistent or corrupt."""


class Conflict(NetbootdError):
    """A change refused because something else still depends on the current state."""


class StartError(NetbootdError):
    """The service cannot start; the message names the socket and what to check."""


class OtherDhcpServer(StartError):
    """Server mode refused to start: another DHCP server answers on the link."""

    exit_code = 3


class FileUnavailable(NetbootdError):
    """A build file that exists but cannot be served yet: an edge has not got it from its
    origin (origin unreachable, the fetch refused or still running). HTTP 503 / TFTP 0."""
