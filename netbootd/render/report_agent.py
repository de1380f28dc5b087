"""The node-side ready/failed report program that user-data hands to the node.

It runs on the booted node under the system ``python3`` (cloud-init needs one, so every
cloud-init image has it; curl may be missing), started by a ``bootcmd`` as a transient systemd
unit so that it can wait for cloud-init to finish without being part of it. It waits for
``cloud-init status --wait``, then POSTs a form to the report URL given as its argument:
``status`` (``done`` or ``error``, from ``/run/cloud-init/result.json``, waited for: 22.4's
``--wait`` returns at the first stage that failed, before the final stage writes it),
``errors`` (a JSON list), ``detail`` (``cloud-init status --long``), ``hostname``, ``fqdn``,
``host_keys`` (the SSH host key fingerprints) and ``libvirtd`` (``systemctl is-active
libvirtd``). The server side is ``Responder.boot_report``; the payload is bounded there.

Only the standard library, Python 3.7 and later; no single quotes, no jinja markup.
"""

from __future__ import annotations

REPORT_SCRIPT = r"""
import glob, json, os, socket, subprocess, sys, time, urllib.parse, urllib.request
url = sys.argv[1]
def out(*cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=60).stdout.strip()
    except Exception as e:
        return "%s: %s" % (cmd[0], e)
waited = False
try:
    subprocess.run(["cloud-init", "status", "--wait"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=3600)
    waited = True
except Exception:
    pass
# 22.4 ends --wait as soon as a stage reports an error, before its final stage has run and
# written result.json: wait for that file too (at most 15 minutes).
for tick in range(900 if waited else 0):
    if os.path.exists("/run/cloud-init/result.json"):
        break
    time.sleep(1)
errors = []
try:
    with open("/run/cloud-init/result.json") as f:
        errors = [str(e) for e in json.load(f)["v1"].get("errors", [])]
    status = "error" if errors else "done"
except Exception as e:
    status, errors = "error", ["no cloud-init result: %s" % e]
keys = []
for pub in sorted(glob.glob("/etc/ssh/ssh_host_*_key.pub")):
    keys.append(out("ssh-keygen", "-l", "-f", pub))
form = {"status": status, "errors": json.dumps(errors[:20]),
        "detail": out("cloud-init", "status", "--long")[:4000],
        "hostname": socket.gethostname(), "fqdn": socket.getfqdn(),
        "host_keys": "\n".join(keys), "libvirtd": out("systemctl", "is-active", "libvirtd")}
body = urllib.parse.urlencode(form).encode()
for attempt in range(30):
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=20).read()
        print("netbootd report: %s sent" % status)
        break
    except Exception as e:
        print("netbootd report: attempt %d: %s" % (attempt + 1, e))
        time.sleep(5)
"""
