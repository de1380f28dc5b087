"""systemd's service notification protocol (sd_notify(3)) over ``NOTIFY_SOCKET``, no libsystemd.

The protocol is one datagram per notification on an AF_UNIX SOCK_DGRAM socket whose path is in
``NOTIFY_SOCKET`` (a leading ``@`` names a Linux abstract socket: the first byte becomes NUL),
holding newline-separated ``KEY=VALUE`` lines. netbootd sends ``READY=1`` once every listener
is bound, ``RELOADING=1`` / ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when it begins
to stop, and ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` from the event loop itself, so a
wedged loop stops the pings and systemd restarts the service (systemd.service(5), WatchdogSec).

Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. A failed send is logged once and
never stops the service: notifications are advisory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; ignored",
                        address)
            address = None
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one notification of ``KEY=VALUE`` fields; True if it was sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(fields).encode(), target)
        except OSError as e:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s (further failures not logged)",
                            self.address, e)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to this
        # message; older systemd ignores the field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked.

    WATCHDOG_PID, when set, names the process systemd expects pings from; another process
    (a child that inherited the environment) must not ping (sd_watchdog_enabled(3)).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Ping until cancelled; runs on the service's event loop, so it stops if the loop stalls."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
