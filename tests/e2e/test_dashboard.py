"""The fleet dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven
with selenium) against netbootd serving a lab: a QEMU node booted over PXE gives the fleet page
a real state and the node page a real funnel; a machine that sent a DHCP DISCOVER with markup
in its vendor class, host name and user class (a real packet from a namespace of the test's)
is a discovered machine whose identity must render as text; the rollback button is refused
without the token and moves the channel with it; a cross-site form post is refused; the
machine is adopted from the page; a rollout shows its progress and is paused from the page.

Every check of an outcome reads netbootd's admin API (or the browser's DOM, for what the page
shows); screenshots go to ``$NETBOOTD_SCREENSHOTS`` when set (docs/img/ holds the last ones).
The browser runs in the lab's network namespace: a worker thread enters it (setns) and
starts chromedriver from there, so chromedriver and Chromium live in the namespace and reach
netbootd's loopback admin listener.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import LabServer
from netbootd.lab.demo import lab_config, start_netbootd
from netbootd.lab.netlab import Lab, lab_prerequisites
from netbootd.state.events import StateDB

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _missing() -> list[str]:
    out = list(lab_prerequisites())
    out += [f"{p} (apt-get install chromium chromium-driver)" for p in (CHROMIUM, CHROMEDRIVER)
            if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        out.append("selenium (pip install -e .[test])")
    return out


pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(_missing()), reason="; ".join(_missing()))]

ROOT = Path(__file__).resolve().parents[2]
NODE_MAC = "52:54:00:da:5b:01"
EVIL_MAC = "52:54:00:da:5b:66"
HOSTILE = "<script>window.__pwned=1</script>\"'{{7*7}}<img src=x onerror=window.__pwned=2>"
VENDOR_CLASS = "PXEClient:Arch:00000:UNDI:002001" + HOSTILE
ADMIN_PORT = 18081  # the lab namespace's own loopback: nothing else listens there
BASE = f"http://127.0.0.1:{ADMIN_PORT}"
CLONE_NEWNET = 0x40000000
WAIT = 60.0

# A PXE client's DHCPDISCOVER, broadcast from the test's client namespace (scapy, raw socket).
DISCOVER = r"""
import sys
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, sendp
mac, vendor_class, hostile = sys.argv[1], sys.argv[2], sys.argv[3]
chaddr = bytes.fromhex(mac.replace(":", "")) + bytes(10)
p = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
     / UDP(sport=68, dport=67) / BOOTP(chaddr=chaddr, xid=0x5eed, flags=0x8000)
     / DHCP(options=[("message-type", "discover"), ("vendor_class_id", vendor_class.encode()),
                     ("hostname", hostile.encode()), ("user_class", hostile.encode()),
                     (93, b"\x00\x00"), "end"]))
sendp(p, iface="eth0", count=3, inter=0.5, verbose=False)
"""


def netbootd(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "netbootd", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _enter_netns(netns: str) -> None:
    """This thread (and what it starts) into ``netns``: network namespaces are per thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(netns: str, fn: Callable[[], Any], timeout: float) -> Any:
    with concurrent.futures.ThreadPoolExecutor(
            max_workers=1, initializer=_enter_netns, initargs=(netns,)) as pool:
        return pool.submit(fn).result(timeout=timeout)


def poll(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Api:
    """The admin API with the token (from inside the namespace): the source of truth."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get(self, path: str) -> Any:
        req = urllib.request.Request(BASE + "/api/v1" + path,
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(BASE + "/api/v1" + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def channel(self) -> str:
        return str(self.get("/channels")["kvm-stable"])


def test_dashboard_in_chromium(demo_store: Path, tmp_path: Path) -> None:
    shots = Path(os.environ.get("NETBOOTD_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with Lab() as lab:
        config = lab_config(
            lab, tmp_path, tmp_path / "store",
            groups={"default": {"default": True, "channel": "kvm-stable",
                                "vars": {"power_state": "poweroff"}}},
            nodes={"web1": {"mac": NODE_MAC, "hostname": "web1"}},
            admin={"listen": "127.0.0.1", "port": ADMIN_PORT})
        for v in ("1.0", "2.0"):
            netbootd(config, "image", "import", "--kind", "tree",
                     str(demo_store / "builds" / "demo" / v))
        netbootd(config, "channel", "set", "kvm-stable", "demo/1.0", "--why", "first")
        netbootd(config, "channel", "set", "kvm-stable", "demo/2.0", "--why", "upgrade")
        state_db = tmp_path / "state" / "state.sqlite3"
        nb = start_netbootd(lab, ["serve", "--config", str(config)], tmp_path, state_db)
        server = LabServer(lab, nb)
        server.boot("dash-web1", "bios", NODE_MAC)

        client = lab.add_client_netns("evil", EVIL_MAC)
        sender = lab.run_in(client, [sys.executable, "-c", DISCOVER, EVIL_MAC, VENDOR_CLASS,
                                     HOSTILE])
        assert sender.wait(60) == 0

        def discovered() -> bool:
            with StateDB.open_readonly(state_db) as db:
                return any(r.mac == EVIL_MAC for r in db.discovered())
        poll("the hostile DISCOVER's record", discovered)

        token = (tmp_path / "state" / "admin.token").read_text().strip()
        in_netns(lab.netns, lambda: browse(Api(token), token, shots, tmp_path / "chromium"),
                 timeout=600)
        assert nb.proc.poll() is None


def browse(api: Api, token: str, shots: Path, profile: Path) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)

    def text(css: str) -> str:
        return str(driver.execute_script("return document.querySelector(arguments[0])"
                                         ".textContent.trim()", css))

    def not_pwned() -> None:
        assert driver.execute_script("return window.__pwned === undefined") is True

    def shot(name: str) -> None:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1280, min(max(height + 40, 500), 2000))
        driver.save_screenshot(str(shots / f"dashboard-{name}.png"))
        driver.set_window_size(1280, 900)

    def accept_confirm() -> None:
        def alert() -> Any:
            try:
                return driver.switch_to.alert
            except NoAlertPresentException:
                return None
        poll("the confirm dialog", alert, 30).accept()

    try:
        # -- the fleet page: every node of the API, with the state the API gives it
        driver.get(BASE + "/ui/")
        nodes = {n["name"]: n for n in api.get("/nodes")}
        rows = driver.find_elements(By.CSS_SELECTOR, "#nodes tr[data-node]")
        assert sorted(r.get_attribute("data-node") for r in rows) == sorted(nodes)
        web1 = nodes["web1"]
        assert web1["seen"]["state"] == "ready"
        assert text('tr[data-node="web1"] td.state') == "ready"
        assert text('tr[data-node="web1"] td.current') == web1["seen"]["current_build"] \
            == "demo/2.0"
        assert text('tr[data-node="web1"] td.next') == web1["next"]["build"]
        assert text('tr[data-node="web1"] td.why') == web1["next"]["why"]
        assert text("#token-state") == "read-only"

        # -- the node page: the funnel of the boot the lab just made, stage by stage
        driver.get(BASE + "/ui/nodes/web1")
        funnel = api.get("/nodes/web1/timeline")["funnel"]
        groups = driver.find_elements(By.CSS_SELECTOR, "svg#funnel g[data-stage]")
        assert [g.get_attribute("data-stage") for g in groups] == \
            [s["stage"] for s in funnel["stages"]]
        reached = [g.get_attribute("data-reached") == "yes" for g in groups]
        assert reached == [s["start"] is not None for s in funnel["stages"]]
        assert all(reached), funnel  # a real boot: DHCP to the ready report
        bars = driver.find_elements(By.CSS_SELECTOR, "svg#funnel rect")
        assert len(bars) == len(groups) and all(b.size["width"] > 0 for b in bars)
        shot("node")

        # -- the discovered page: the hostile identity is text, and nothing of it ran
        driver.get(BASE + "/ui/discovered")
        (record,) = [r for r in api.get("/nodes?discovered=1") if r["mac"] == EVIL_MAC]
        assert HOSTILE in record["vendor_class"]
        cell = f'tr[data-mac="{EVIL_MAC}"] td.vendor-class'
        assert text(cell) == record["vendor_class"]
        assert driver.find_elements(By.CSS_SELECTOR, f"{cell} *") == []  # no element in it
        # Options 12 and 77 of the same packet: stored as sent, shown as text.
        assert record["dhcp_hostname"] == HOSTILE and record["user_class"] == HOSTILE
        for cls in ("dhcp-hostname", "user-class"):
            cell = f'tr[data-mac="{EVIL_MAC}"] td.{cls}'
            assert text(cell) == HOSTILE, cls
            assert driver.find_elements(By.CSS_SELECTOR, f"{cell} *") == []
        assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
        not_pwned()
        shot("discovered")

        # -- rollback without the token: refused, the channel stays
        history = api.get("/channels/kvm-stable/history")
        driver.get(BASE + "/ui/channels")
        button = driver.find_element(By.CSS_SELECTOR, 'button[data-action="rollback"]'
                                                      '[data-channel="kvm-stable"]')
        assert button.get_attribute("data-target") == "demo/1.0"
        button.click()
        accept_confirm()
        poll("the refusal", lambda: "refused (401)" in text("#status"))
        assert api.channel() == "demo/2.0"
        assert api.get("/channels/kvm-stable/history") == history

        # -- a cross-site form post (from a page of another origin) is refused too
        form = ("<form method=post action='" + BASE + "/api/v1/channels/kvm-stable/rollback'>"
                "<input name=why value=evil></form>")
        driver.get("data:text/html," + form)
        driver.execute_script("document.forms[0].submit()")
        poll("the form post's answer", lambda: driver.current_url.startswith(BASE))
        answer = json.loads(driver.find_element(By.TAG_NAME, "body").text)
        assert "cross-site request refused" in answer["error"], answer
        assert api.channel() == "demo/2.0"
        assert api.get("/channels/kvm-stable/history") == history

        # -- with the token typed into the page: the rollback moves the channel
        driver.get(BASE + "/ui/channels")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "token-use").click()
        assert text("#token-state") == "token set: actions enabled"
        driver.find_element(By.CSS_SELECTOR, 'button[data-action="rollback"]').click()
        accept_confirm()
        poll("the rollback", lambda: api.channel() == "demo/1.0")
        last = api.get("/channels/kvm-stable/history")[-1]
        assert (last["action"], last["from"], last["to"]) == ("rollback", "demo/2.0", "demo/1.0")
        poll("the page's own word", lambda: "rolled back to demo/1.0" in text("#status"))
        assert text("#channel-kvm-stable .channel-build") == "demo/1.0"
        shot("channels")

        # -- adopt the hostile machine from the page, under a hostile hostname
        driver.get(BASE + "/ui/discovered")
        form_el = driver.find_element(By.CSS_SELECTOR, f'form[data-mac="{EVIL_MAC}"]')
        form_el.find_element(By.NAME, "name").send_keys("evil1")
        form_el.find_element(By.NAME, "hostname").send_keys(HOSTILE)
        form_el.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        poll("the adoption", lambda: any(n["name"] == "evil1" for n in api.get("/nodes")))
        (evil1,) = [n for n in api.get("/nodes") if n["name"] == "evil1"]
        assert evil1["hostname"] == HOSTILE and evil1["macs"] == [EVIL_MAC]
        driver.get(BASE + "/ui/")
        assert text('tr[data-node="evil1"] td.hostname') == HOSTILE
        assert driver.find_elements(By.CSS_SELECTOR, 'tr[data-node="evil1"] td.hostname *') == []
        not_pwned()
        shot("fleet")
        driver.get(BASE + "/ui/nodes/evil1")
        assert text("#identity dd") == HOSTILE
        assert text("#seen dd.dhcp-hostname") == HOSTILE
        assert text("#seen dd.user-class") == HOSTILE
        assert driver.find_elements(By.CSS_SELECTOR, "#seen dd *") == []
        not_pwned()

        # -- a rollout of the channel (both nodes follow it): its progress, then Pause
        r = api.post("/rollouts", {"channel": "kvm-stable", "build": "demo/2.0",
                                   "canary": 1, "batch": "1"})
        driver.get(BASE + "/ui/rollouts")
        sec = f'section[data-rollout="{r["id"]}"]'
        assert driver.find_element(By.CSS_SELECTOR, sec).get_attribute("data-phase") == \
            "running"
        assert text(f"{sec} .progress-text") == f"0 of {len(r['nodes'])} nodes ready"
        shown = [(row.get_attribute("data-node"), row.find_element(
                  By.CSS_SELECTOR, "td.status").text)
                 for row in driver.find_elements(By.CSS_SELECTOR, f"{sec} tr[data-node]")]
        states = api.get(f"/rollouts/{r['id']}")["node_states"]
        assert shown == [(n, states[n]["status"] if n in states else "pending")
                         for b in r["batches"] for n in b]
        driver.find_element(By.CSS_SELECTOR, f'{sec} button[data-verb="pause"]').click()
        poll("the pause", lambda: api.get(f"/rollouts/{r['id']}")["phase"] == "paused")
        poll("the page's own word", lambda: "paused" in text("#status"))
        assert driver.find_element(By.CSS_SELECTOR, sec).get_attribute("data-phase") == \
            "paused"
        shot("rollouts")

        # -- the page's auto-refresh, once ticked, reloads it (and stays ticked)
        driver.execute_script("window.__loaded_before = true")
        driver.find_element(By.ID, "auto-refresh").click()
        poll("the automatic reload", lambda: driver.execute_script(
            "return window.__loaded_before === undefined && "
            "document.readyState === 'complete'"), 90)
        assert driver.find_element(By.ID, "auto-refresh").is_selected()
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
