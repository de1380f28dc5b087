"""netbootd servers in a :class:`~netbootd.lab.fleet.FleetLab`: their configs and processes.

Each server runs ``python -m netbootd serve`` in its own namespace, bound to that namespace's
``eth0``, with the lab's shared first-boot key (so a token one server signed is accepted by
any other) and its own state directory. A server is ended by PID: :meth:`FleetServer.kill`
sends SIGKILL (a crash), :meth:`FleetServer.stop` SIGTERM then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.lab.base import _stop_process
from netbootd.lab.demo import REPO, toml_dump
from netbootd.lab.fleet import FleetLab, ServerHost

ADMIN_PORT = 8081  # each server has a loopback of its own: the port never collides
HTTP_PORT = 8080


def server_config(lab: FleetLab, name: str, workdir: Path, store: Path, *,
                  groups: dict[str, Any], nodes: dict[str, Any] | None = None,
                  **sections: Any) -> Path:
    """Write ``workdir/netbootd.toml`` for server ``name`` of ``lab``; its path.

    ``sections`` are further tables (``state``, ``origin``, ...) merged over the defaults.
    """
    host = lab.host(name)
    # made here: with a shared database nothing else in it is written before the admin
    # token (which serve creates in it on first start)
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "server": {"address": host.address, "interface": "eth0",
                   "state_dir": str(workdir / "state"), "store_dir": str(store)},
        "http": {"port": HTTP_PORT},
        "admin": {"listen": "127.0.0.1", "port": ADMIN_PORT},
        "firstboot": {"key_file": str(lab.firstboot_key)},
    }
    for key, table in sections.items():
        data[key] = {**data.get(key, {}), **table}
    data["groups"] = groups
    data["nodes"] = nodes or {}
    path = workdir / "netbootd.toml"
    path.write_text(toml_dump(data))
    return path


@dataclass
class FleetServer:
    """One running netbootd in the lab."""

    lab: FleetLab
    host: ServerHost
    config: Path
    workdir: Path
    proc: subprocess.Popen[Any]

    @property
    def log(self) -> Path:
        return self.workdir / "netbootd.log"

    @property
    def state_db(self) -> Path:
        """The server's own sqlite state (when no shared database is configured)."""
        return self.workdir / "state" / "state.sqlite3"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, by PID, as a crash or a power cut would; then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; reaped."""
        _stop_process(self.proc)

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``netbootd ARGS --config <this server's config>`` run in the server's namespace."""
        return self.lab.exec_on(self.host.name, [sys.executable, "-m", "netbootd", *args,
                                                 "--config", str(self.config)],
                                timeout=timeout, cwd=str(REPO))

    def admin(self, method: str, path: str, body: Any = None,
              timeout: float = 30.0) -> tuple[int, Any]:
        """One admin API request from inside the server's namespace; (status, parsed JSON).

        The token is the server's own (``<state_dir>/admin.token``)."""
        token = (self.workdir / "state" / "admin.token").read_text().strip()
        status, text = http_request(self.lab, self.host.name, method,
                                    f"http://127.0.0.1:{ADMIN_PORT}{path}", token=token,
                                    body=None if body is None else json.dumps(body),
                                    timeout=timeout)
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = text
        return status, parsed


def http_request(lab: FleetLab, name: str, method: str, url: str, *, token: str = "",
                 body: str | None = None, timeout: float = 30.0) -> tuple[int, str]:
    """One HTTP request made from inside server namespace ``name``; (status, body text)."""
    done = lab.exec_on(name, [sys.executable, "-c", _HTTP_CLIENT, method, url, token,
                              body or ""], timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{method} {url} from {name}: {done.stderr[-2000:]}")
    status, _, text = done.stdout.partition("\n")
    return int(status), text


# urllib client run inside a namespace: prints the status line, then the body.
_HTTP_CLIENT = r"""
import sys, urllib.error, urllib.request
method, url, token, body = sys.argv[1:5]
headers = {"Content-Type": "application/json"}
if token:
    headers["Authorization"] = "Bearer " + token
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers=headers)
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(status)
print(text)
"""


def start_server(lab: FleetLab, name: str, config: Path, workdir: Path,
                 timeout: float = 60.0) -> FleetServer:
    """Run ``netbootd serve`` in server namespace ``name`` and wait until it serves."""
    log = workdir / "netbootd.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as fh:
        proc = lab.run_on(name, [sys.executable, "-m", "netbootd", "serve", "--config",
                                 str(config)], stdout=fh, stderr=subprocess.STDOUT, env=env,
                          cwd=str(REPO))
    server = FleetServer(lab, lab.host(name), config, workdir, proc)
    deadline = time.monotonic() + timeout
    # the start-up line is the readiness signal (what the single-segment lab waits for too)
    while "netbootd serving" not in server.log_text():
        if proc.poll() is not None:
            raise RuntimeError(f"netbootd on {name} exited with {proc.returncode}:\n"
                               f"{server.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"netbootd on {name} did not start within {timeout} s:\n"
                               f"{server.log_text()[-3000:]}")
        time.sleep(0.1)
    return server
