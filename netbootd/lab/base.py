"""Small helpers every lab module shares: the lab's error, ``ip``, ending processes, MACs."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from typing import Any

BRIDGE = "br0"
SITE_VETH_LAB = "vsite0"
SITE_VETH_SITE = "vsite1"
TERM_GRACE_S = 3.0


class LabError(RuntimeError):
    """The lab could not be set up or a command in it failed; the message says which."""



def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _stop_process(proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S) -> None:
    """End one process we started, by its PID: SIGTERM, wait, then SIGKILL; always reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _valid_mac(mac: str) -> str:
    mac = mac.lower().replace("-", ":")
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
        raise LabError(f"bad MAC {mac!r}: use six hex pairs, e.g. 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise LabError(f"MAC {mac} is multicast; use a unicast one (first octet even)")
    return mac


def random_mac() -> str:
    """A random locally administered unicast MAC in QEMU's 52:54:00 style."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))

