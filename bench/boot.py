"""QEMU power-on to phone-home: netbootd against dnsmasq + a static web server, same payload.

Both sides boot the demo appliance (netbootd.lab.demo) into a BIOS QEMU guest (TCG, SeaBIOS
with QEMU's iPXE NIC ROM) in a lab network (netbootd.lab.netlab: site dnsmasq hands out
addresses only, in its own namespace):

- netbootd: ``netbootd serve`` on the lab bridge, ProxyDHCP + TFTP (lpxelinux.0) + HTTP; the
  phone-home time is netbootd's own record (its state database).
- peer: dnsmasq as ProxyDHCP and TFTP server (``dhcp-range=…,proxy``, ``pxe-service``,
  ``enable-tftp``) serving the same lpxelinux.0 and ldlinux.c32 from Debian's packages and a
  static pxelinux config, and a static HTTP server (:data:`STATIC_SERVER`, Python's
  http.server) serving the same kernel and initrd, a static NoCloud seed and receiving the
  phone-home POST. The static files are the very bytes netbootd renders for that node
  (``netbootd render --file``), so both sides serve the same payload at the same URLs.

The clock starts when QEMU is started and stops at the phone-home request.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.sandbox import BenchError

MAC = "52:54:00:de:00:b1"
UUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
HTTP_PORT = 8080

# A static file server that also records the first phone-home POST (its arrival time, epoch).
STATIC_SERVER = r'''
import http.server, sys, time
root, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=root, **kw)
    def do_POST(self):
        if self.path.startswith("/phone-home/"):
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(n, 65536))
            with open(out, "a") as f:
                f.write(f"{time.time()} {self.path}\n")
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
'''


def _render(config: Path, name: str) -> bytes:
    proc = subprocess.run([sys.executable, "-m", "netbootd", "render", "--config", str(config),
                           "--mac", MAC, "--uuid", UUID, "--arch", "bios", "--file", name],
                          capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise BenchError(f"netbootd render --file {name}: {proc.stderr.decode()[-300:]}")
    return proc.stdout


def _rendered_names(config: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "netbootd", "render", "--config", str(config),
                           "--mac", MAC, "--uuid", UUID, "--arch", "bios", "--list"],
                          capture_output=True, text=True, timeout=60, check=True)
    return [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line]


def boot_times(workdir: Path, timeout: float) -> tuple[float, float]:
    """(netbootd seconds, peer seconds) from power-on to phone-home, one BIOS boot each."""
    from netbootd.lab.demo import build_demo, lab_config, start_netbootd, wait_for_event
    from netbootd.lab.netlab import Lab, lab_prerequisites

    problems = lab_prerequisites("bios")
    if problems:
        raise BenchError("; ".join(problems))
    store = workdir / "store"
    build_demo(store, "1.0")
    with Lab() as lab:
        config = lab_config(lab, workdir, store, groups={
            "default": {"default": True, "build": "demo/1.0",
                        "vars": {"power_state": "poweroff"}}},
            nodes={"appliance-01": {"uuid": UUID, "hostname": "appliance-01"}},
            http={"port": HTTP_PORT})
        nb = start_netbootd(lab, ["serve", "--config", str(config)], workdir,
                            workdir / "state" / "state.sqlite3")
        t0 = time.time()
        guest = lab.start_qemu("nb", firmware="bios", mac=MAC, uuid=UUID)
        try:
            home = wait_for_event(nb.state_db, MAC, "phone-home", timeout, guest=guest)
        finally:
            guest.kill()
        netbootd_s = home.ts - t0
        lab.stop(nb.proc)

        peer_s = _peer_boot(lab, workdir, store, config, timeout)
    return netbootd_s, peer_s


def _peer_boot(lab: object, workdir: Path, store: Path, config: Path,
               timeout: float) -> float:
    from netbootd.lab.netlab import Lab

    assert isinstance(lab, Lab)
    tftp_root = workdir / "peer-tftp"
    web_root = workdir / "peer-web"
    for d in (tftp_root / "pxelinux.cfg", web_root / "builds" / "demo"):
        d.mkdir(parents=True)
    shutil.copy("/usr/lib/PXELINUX/lpxelinux.0", tftp_root)
    shutil.copy("/usr/lib/syslinux/modules/bios/ldlinux.c32", tftp_root)
    shutil.copytree(store / "builds" / "demo" / "1.0", web_root / "builds" / "demo" / "1.0")
    prefix = f"http://{lab.server_ip}:{HTTP_PORT}/"
    for name in _rendered_names(config):
        data = _render(config, name)
        if name.startswith(prefix):  # NoCloud seed: same URL path on the static server
            target = web_root / name[len(prefix):]
        elif "/pxelinux.cfg/" in name:  # same file name, under the TFTP root
            target = tftp_root / "pxelinux.cfg" / name.rsplit("/", 1)[1]
        else:
            raise BenchError(f"unexpected rendered file {name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    key = MAC.replace(":", "-")
    (web_root / "nocloud" / key / "demo" / "1.0" / "vendor-data").write_text("")
    homes = workdir / "peer-phone-home.txt"
    server = lab.run([sys.executable, "-c", STATIC_SERVER, str(web_root), str(HTTP_PORT),
                      str(homes)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dnsmasq = lab.run(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                       f"--interface={lab.bridge}", "--bind-interfaces",
                       f"--dhcp-range={lab.network.network_address},proxy",
                       '--pxe-service=x86PC,"netboot",lpxelinux', "--enable-tftp",
                       f"--tftp-root={tftp_root}", f"--log-facility={workdir / 'peer.log'}",
                       "--user=root", "--leasefile-ro", "--log-dhcp"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # both bind at once; a second is far below the boot's own variance
    if server.poll() is not None or dnsmasq.poll() is not None:
        raise BenchError("peer web server or dnsmasq exited at start")
    t0 = time.time()
    guest = lab.start_qemu("peer", firmware="bios", mac=MAC, uuid=UUID)
    deadline = time.monotonic() + timeout
    try:
        while not (homes.exists() and homes.read_text().strip()):
            if time.monotonic() > deadline or not guest.running():
                log = (workdir / "peer.log").read_text()[-1500:] \
                    if (workdir / "peer.log").exists() else ""
                raise BenchError(f"peer boot: no phone-home within {timeout:.0f} s; console "
                                 f"tail: {guest.serial_text()[-1200:]}\ndnsmasq: {log}")
            time.sleep(0.1)
    finally:
        guest.kill()
        lab.stop(dnsmasq)
        lab.stop(server)
    return float(homes.read_text().split()[0]) - t0
