"""The IPMI driver: ``ipmitool chassis power ...`` over IPMI-over-LAN (lanplus by default).

Why ipmitool and not a Python IPMI library: it is Debian's packaged, widely deployed client,
talks to every BMC it is tested against, and keeps RMCP+ session crypto out of netbootd
(docs/design-choices.md has the measurements). The password reaches it through a pipe
(``-f /dev/fd/N``, the read end passed to the child alone), so it is neither on the command
line (``ps``, ``/proc/<pid>/cmdline``) nor in the environment (``ps e``,
``/proc/<pid>/environ``), as ``-P`` or ``-E`` would put it; the child's environment holds
nothing but PATH.

``cycle`` on a machine that is off is ``on``: IPMI v2.0 section 28.3 lets a BMC refuse a
power cycle in the "off" state (ipmi_sim answers "Command not supported in present state"),
and "restart it" means "make it boot again" to an operator either way.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

from netbootd.power.driver import PowerError, PowerUnavailable
from netbootd.power.spec import PowerSpec

IPMITOOL = "ipmitool"
_STATE_RE = re.compile(r"Chassis Power is (on|off)", re.IGNORECASE)
# Messages ipmitool prints when it never got a session: wrong address, user or password.
_NO_SESSION = ("unable to establish", "activate session", "rakp", "unauthorized name",
               "insufficient privilege", "get auth capabilities", "no response", "timeout")


@dataclass(frozen=True, slots=True)
class IpmiDriver:
    spec: PowerSpec
    timeout: float = 30.0
    tool: str = IPMITOOL
    name: str = "ipmi"

    def argv(self, password_fd: int, *command: str) -> list[str]:
        """ipmitool's arguments: no secret among them (``-f`` names the pipe it comes by)."""
        s = self.spec
        # -N/-R: 1 s between retransmissions, 3 retries: a loaded BMC answers within that.
        iface = s.interface or "lanplus"
        cipher = ["-C", str(s.cipher)] if iface == "lanplus" else []
        return [self.tool, "-I", iface, *cipher, "-H", s.address, "-p", str(s.port),
                "-U", s.user, "-f", f"/dev/fd/{password_fd}", "-N", "1", "-R", "3", *command]

    def _call(self, secret: str | None, *command: str) -> str:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        read_end, write_end = os.pipe()
        try:
            # at most 20 bytes (credentials.py): far below the pipe's buffer, never blocks
            os.write(write_end, (secret or "").encode() + b"\n")
            os.close(write_end)
            write_end = -1
            done = subprocess.run(self.argv(read_end, *command), capture_output=True,
                                  text=True, env=env, timeout=self.timeout, check=False,
                                  stdin=subprocess.DEVNULL, pass_fds=(read_end,))
        except FileNotFoundError:
            raise PowerError("ipmitool is not installed (Debian: apt install ipmitool)") \
                from None
        except subprocess.TimeoutExpired:
            raise PowerUnavailable(f"the BMC {self.spec.address}:{self.spec.port} did not "
                                   f"answer within {self.timeout:g} s; check the address and "
                                   "that IPMI-over-LAN is enabled on it") from None
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        out = _scrub(done.stdout + done.stderr, secret)
        if done.returncode != 0:
            first = next((line.strip() for line in out.splitlines() if line.strip()),
                         f"exit status {done.returncode}")
            if any(m in out.lower() for m in _NO_SESSION):
                raise PowerUnavailable(f"no IPMI session with {self.spec.address}:"
                                       f"{self.spec.port} as {self.spec.user!r}: {first}; "
                                       "check the address, the user and its password in the "
                                       "credentials file")
            raise PowerError(f"the BMC {self.spec.address} refused chassis power "
                             f"{command[-1]}: {first}")
        return out

    def status(self, secret: str | None) -> str:
        m = _STATE_RE.search(self._call(secret, "chassis", "power", "status"))
        return m.group(1).lower() if m else "unknown"

    def run(self, action: str, secret: str | None) -> str:
        if action == "status":
            return self.status(secret)
        if action == "cycle" and self.status(secret) == "off":
            action = "on"
        self._call(secret, "chassis", "power", action)
        # The state after the action as the BMC reports it. "off" may first ask the OS to
        # shut down (ipmi_sim does, over its VM channel, for poweroff_wait seconds); wait for
        # the state the action leads to, within the timeout, and report what is seen then.
        want = "off" if action == "off" else "on"
        deadline = time.monotonic() + self.timeout
        while (state := self.status(secret)) != want and time.monotonic() < deadline:
            time.sleep(0.5)
        return state


def _scrub(text: str, secret: str | None) -> str:
    """ipmitool never echoes the password; this keeps it so if a future one did."""
    return text.replace(secret, "***") if secret else text
