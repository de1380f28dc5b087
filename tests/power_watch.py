"""A watcher for tests of power control: reads every process's command line and environment
while a test runs, to show that a BMC password appears in none of them (``ps``, ``ps e``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class ProcWatch:
    """Reads every process's command line and environment while it runs, to show that the
    password is in none of them; ``seen`` keeps the ipmitool command lines it caught."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.seen: list[bytes] = []
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        secret = self.secret
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    env = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if b"ipmitool" in cmd and cmd not in self.seen:
                    self.seen.append(cmd)
                if secret in cmd or secret in env:
                    self.leaks.append(f"{pid}: {cmd[:200]!r}")
            # ipmitool lives for 30 ms or more; a short pause keeps the scan off the CPU
            # that the QEMU guests need, without letting one go by unseen
            self._stop.wait(0.003)

    def __enter__(self) -> ProcWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
