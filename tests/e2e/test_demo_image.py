"""The demo appliance recipe: build it, then boot it directly (-kernel/-initrd) on the lab bridge.

The guest takes its address from the lab's site DHCP server, fetches its NoCloud seed from a
small HTTP server running inside the lab namespace on the server address, and phones home;
the test checks the POST names the hostname from meta-data and ``build=demo/1.0``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from e2e_helpers import read_posts, start_recording_server
from netbootd.lab.netlab import Lab, lab_prerequisites, random_mac

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "images" / "demo" / "build.py"
CACHE = REPO / "images" / ".cache"
MISSING = lab_prerequisites("bios")
SEED_PORT = 8080

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

def run_recipe(store: Path, version: str = "1.0") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPE), "--store", str(store), "--name", "demo",
         "--version", version, "--cache", str(CACHE)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    t0 = time.monotonic()
    proc = run_recipe(store)
    assert proc.returncode == 0, proc.stderr
    print(f"demo build: {time.monotonic() - t0:.1f} s")
    return store / "builds" / "demo" / "1.0"


def test_build_layout_and_manifest(demo_build: Path) -> None:
    manifest = json.loads((demo_build / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert (manifest["name"], manifest["version"], manifest["kind"]) == ("demo", "1.0", "linux")
    assert manifest["kernel"] == "vmlinuz"
    assert manifest["initrds"] == ["initrd.img"]
    assert manifest["cmdline"] == "console=ttyS0 panic=-1"
    assert set(manifest["files"]) == {"vmlinuz", "initrd.img"}
    for name, entry in manifest["files"].items():
        assert (demo_build / name).stat().st_size == entry["size"]
        assert len(entry["sha256"]) == 64
    assert manifest["files"]["initrd.img"]["size"] < 4 * 1024 * 1024
    assert not list(demo_build.parent.parent.glob(".tmp-*"))


def test_initramfs_contents(demo_build: Path, tmp_path: Path) -> None:
    listing = subprocess.run(
        f"zcat {demo_build / 'initrd.img'} | cpio -itv --quiet",
        shell=True, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = {line.split()[-1] for line in listing.splitlines()}
    assert {"init", "dev/console", "etc/netbootd-build", "bin/busybox"} <= names
    assert "lib/modules/virtio_net.ko" in names and "lib/modules/e1000.ko" in names
    assert "lib/modules/net_failover.ko" in names and "lib/modules/failover.ko" in names
    console = next(line for line in listing.splitlines() if line.endswith(" dev/console"))
    assert console.startswith("c")
    subprocess.run(
        f"zcat {demo_build / 'initrd.img'} | cpio -id --quiet etc/netbootd-build",
        shell=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert (tmp_path / "etc" / "netbootd-build").read_text().strip() == "demo/1.0"


def test_rebuild_is_idempotent_and_conflicts_are_refused(demo_build: Path) -> None:
    store = demo_build.parents[2]
    before = (demo_build / "manifest.json").read_bytes()
    again = run_recipe(store)
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stderr
    assert (demo_build / "manifest.json").read_bytes() == before

    # a different build already published under demo/2.0: refused, left untouched
    other = store / "builds" / "demo" / "2.0"
    other.mkdir(parents=True)
    fake = json.loads(before)
    fake["version"] = "2.0"
    fake["description"] = "something else"
    (other / "manifest.json").write_text(json.dumps(fake))
    refused = run_recipe(store, "2.0")
    assert refused.returncode == 1
    assert "different manifest" in refused.stderr
    assert json.loads((other / "manifest.json").read_text()) == fake
    assert not list((store / "builds").glob(".tmp-*"))


@pytest.mark.needs_root
@pytest.mark.skipif(bool(MISSING), reason="lab prerequisites missing: " + "; ".join(MISSING))
@pytest.mark.parametrize("nic_model", ["virtio-net-pci", "e1000"])
def test_demo_boots_and_phones_home(demo_build: Path, tmp_path: Path, nic_model: str) -> None:
    short = "virtio" if nic_model.startswith("virtio") else nic_model
    hostname = f"demo-node-{short}"
    instance_id = f"iid-{short}-0001"
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
    posts = tmp_path / "posts.jsonl"
    server_log = tmp_path / "seed-server.log"
    mac = random_mac()
    with Lab() as lab:
        base = f"http://{lab.server_ip}:{SEED_PORT}/"
        (seed / "user-data").write_text(
            "#cloud-config\n"
            "phone_home:\n"
            f"  url: {base}phone-home/$INSTANCE_ID\n"
            "  post: all\n"
            "  tries: 10\n"
            "power_state:\n"
            "  mode: poweroff\n"
        )
        start_recording_server(lab, seed, SEED_PORT, posts, server_log)

        guest = lab.start_qemu(
            f"demo-{short}",
            firmware="bios",
            mac=mac,
            nic_model=nic_model,
            kernel=demo_build / "vmlinuz",
            initrd=demo_build / "initrd.img",
            append=f"console=ttyS0 panic=-1 ds=nocloud-net;s={base}",
        )
        status = guest.wait(timeout=120)
        elapsed = time.monotonic() - guest.started
        serial = guest.serial_text()
        print(f"{nic_model}: QEMU start to power-off {elapsed:.1f} s")
        assert status == 0, guest.qemu_output()
        assert "netbootd-agent: phone-home ok" in serial, serial[-3000:]
        assert "FAILED" not in serial
        lease = lab.wait_for_lease(mac, timeout=1)
        assert f"netbootd-agent: address {lease.ip}/24" in serial
        assert f"hostname {hostname}" in serial

    records = read_posts(posts)
    assert len(records) == 1, records
    assert records[0]["path"] == f"/phone-home/{instance_id}"
    form = parse_qs(records[0]["body"], strict_parsing=True)
    assert form == {"instance_id": [instance_id], "hostname": [hostname], "build": ["demo/1.0"]}
    assert "build=demo/1.0" in records[0]["body"]
