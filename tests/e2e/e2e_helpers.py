"""Shared by the QEMU e2e tests: a lab with netbootd serving, booting a guest in it, and a
recording HTTP peer in the lab namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.lab.demo import DEFAULT_CACHE, NetbootdProcess, timeline, wait_for_event
from netbootd.lab.netlab import Lab
from netbootd.state.events import BootEvent, NodeRecord, StateDB

BOOT_TIMEOUT = 240.0
ROOT = Path(__file__).resolve().parents[2]


def run_python(*args: str, timeout: float = 900) -> str:
    """``python ARGS`` from the checkout's root; its stdout (a failure fails the test)."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def build_reimage_images(work: Path, marker: str) -> dict[str, Any]:
    """The installer build (store ``work/inst``) and an 8 MiB disk image carrying ``marker``
    (``work/lab.img.gz``); the disk recipe's JSON summary."""
    run_python(str(ROOT / "images/installer/build.py"), "--store", str(work / "inst"),
               "--name", "netbootd-installer", "--version", "1.0", "--cache", str(DEFAULT_CACHE))
    info: dict[str, Any] = json.loads(run_python(
        str(ROOT / "images/disk/build.py"), "--out", str(work / "lab.img.gz"), "--marker", marker,
        "--size-mib", "8", "--compression", "gzip").strip().splitlines()[-1])
    return info


@dataclass
class LabServer:
    lab: Lab
    nb: NetbootdProcess

    def boot(self, name: str, firmware: str, mac: str, uuid: str | None = None,
             powers_off: bool = True, **qemu: Any) -> tuple[BootEvent, list[BootEvent]]:
        """Power on a guest, wait for its phone-home and its ready report; (phone-home event,
        this boot's events).

        Events from earlier boots of the same MAC are skipped, so a node can be power-cycled.
        ``qemu`` goes to ``Lab.start_qemu`` (fw_cfg items, ...)."""
        after = self.last_event_id(mac)
        guest = self.lab.start_qemu(name, firmware=firmware,  # type: ignore[arg-type]
                                    mac=mac, uuid=uuid, **qemu)
        try:
            home = wait_for_event(self.nb.state_db, mac, "phone-home", BOOT_TIMEOUT,
                                  after_id=after, guest=guest)
            # then the ready report the seed's user-data has the node send
            wait_for_event(self.nb.state_db, mac, "ready", 60, after_id=home.id, guest=guest)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- netbootd log ---\n{self.nb.log_text()[-4000:]}") \
                from None
        try:
            # With power_state poweroff the agent powers off after phoning home.
            guest.wait(60 if powers_off else 0.1)
        except subprocess.TimeoutExpired:
            guest.kill()
        return home, timeline(self.nb.state_db, mac, after)

    def last_event_id(self, mac: str) -> int:
        if not self.nb.state_db.exists():
            return 0
        events = timeline(self.nb.state_db, mac)
        return events[-1].id if events else 0

    def node(self, mac: str) -> NodeRecord | None:
        with StateDB.open_readonly(self.nb.state_db) as db:
            return db.node(mac)


# Serves a directory (GET) and records every POST as one JSON line {path, content_type, body};
# the e2e tests run it inside the lab namespace as the guests' HTTP peer.
RECORDING_HTTP_SERVER = r"""
import functools, http.server, json, sys
root, addr, port, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "body": body,
                                "content_type": self.headers.get("Content-Type")}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

server = http.server.ThreadingHTTPServer((addr, port), functools.partial(Handler, directory=root))
print("recording server listening", flush=True)
server.serve_forever()
"""


def start_recording_server(lab: Lab, root: Path, port: int, posts: Path,
                           log: Path) -> subprocess.Popen[Any]:
    """Run RECORDING_HTTP_SERVER on ``lab.server_ip:port`` in the lab namespace; wait for it.

    The lab tracks the process and ends it (by PID) at teardown.
    """
    with log.open("wb") as out:
        proc = lab.run([sys.executable, "-c", RECORDING_HTTP_SERVER, str(root), lab.server_ip,
                        str(port), str(posts)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while "listening" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"recording HTTP server did not start: {log.read_text()}")
        time.sleep(0.05)
    return proc


def read_posts(posts: Path) -> list[dict[str, Any]]:
    """The POSTs RECORDING_HTTP_SERVER has recorded so far."""
    if not posts.exists():
        return []
    return [json.loads(line) for line in posts.read_text().splitlines()]
