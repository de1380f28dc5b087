"""The KVM hypervisor appliance (images/kvm-hypervisor) booted through netbootd by real firmware.

Three QEMU clients power on at once in one lab (netbootd as ProxyDHCP next to the lab's
dnsmasq): a BIOS node known by its SMBIOS GUID, a UEFI (OVMF) node known by its MAC, and a BIOS
node whose user-data carries a module that fails. All three fetch the same build (kernel,
live-boot initramfs, squashfs root over HTTP) and run Debian's cloud-init on the seed netbootd
renders. The first two must reach ``ready`` in netbootd's state with their own hostnames, and
answer over SSH (a key this test made, handed out in the nodes' vars) with their hostname, an
active libvirtd and cloud-init's ``done``; the BIOS node's address sits on the guest bridge its
vars ask for. The third must be ``failed`` with cloud-init's error
in its timeline. Every assertion reads netbootd's state database or the guest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netbootd.lab.demo import DEFAULT_CACHE, KVM_RECIPE, start_netbootd, timeline, toml_dump
from netbootd.lab.netlab import Lab, QemuGuest, lab_prerequisites
from netbootd.state.events import BootEvent, NodeRecord, StateDB

MISSING = lab_prerequisites("uefi")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING)),
]

BUILD = "kvm-hypervisor/1.0"
BIOS = ("52:54:00:4b:00:01", "3f2a9c1e-7b4d-4e21-8c5a-9d0e1f2a3b4c")
UEFI_MAC = "52:54:00:4b:00:02"
BROKEN_MAC = "52:54:00:4b:00:03"
# Measured on a loaded 2-core TCG host (images/README.md): about 175-240 s to ready. The
# deadline leaves room for three guests sharing the cores with other QEMU jobs.
READY_TIMEOUT = 900.0
GUEST_MEMORY_MB = 1024
BROKEN_PATH = "/proc/netbootd-cannot-write-here"

# The default user-data plus a module that fails on every node: write_files into /proc.
BROKEN_USER_DATA = """{% include "nocloud-user-data.j2" %}
write_files:
  - path: """ + BROKEN_PATH + """
    content: "this module fails"
"""


def run_kvm_recipe(store: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(KVM_RECIPE), "--store", str(store), "--version",
                           version, "--cache", str(DEFAULT_CACHE)],
                          capture_output=True, text=True, timeout=1800)


@dataclass
class Node:
    name: str
    mac: str
    guest: QemuGuest
    started: float
    outcome: BootEvent | None = None


@dataclass
class Booted:
    lab: Lab
    state_db: Path
    key: Path
    nodes: dict[str, Node]
    log: Path

    def record(self, name: str) -> NodeRecord:
        with StateDB.open_readonly(self.state_db) as db:
            rec = db.node(self.nodes[name].mac)
        assert rec is not None
        return rec

    def events(self, name: str) -> list[BootEvent]:
        return timeline(self.state_db, self.nodes[name].mac)

    def ssh(self, name: str, command: str) -> str:
        node = self.nodes[name]
        assert node.outcome is not None
        ip = node.outcome.detail["ip"]
        proc = subprocess.run(
            ["ip", "netns", "exec", self.lab.netns, "ssh", "-i", str(self.key),
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30",
             "-o", "LogLevel=ERROR", f"debian@{ip}", command],
            capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, f"ssh {name} ({ip}) {command!r}: {proc.stderr}"
        return proc.stdout.strip()


def wait_outcomes(state_db: Path, nodes: dict[str, Node], timeout: float) -> None:
    """Poll netbootd's state until every node has a ``ready`` or ``failed`` event."""
    deadline = time.monotonic() + timeout
    while True:
        pending = [n for n in nodes.values() if n.outcome is None]
        if not pending:
            return
        if state_db.exists():
            with StateDB.open_readonly(state_db) as db:
                for n in pending:
                    n.outcome = next((e for e in db.timeline(n.mac)
                                      if e.kind in ("ready", "failed")), None)
        for n in pending:
            if n.outcome is None and not n.guest.running():
                raise AssertionError(f"{n.name} exited before its report:\n"
                                     f"{n.guest.serial_text()[-3000:]}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n.name}\n{n.guest.serial_text()[-2000:]}"
                              for n in pending)
            raise AssertionError(f"no ready/failed report within {timeout:.0f} s:\n{tails}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def booted(kvm_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    work = tmp_path_factory.mktemp("kvm")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "netbootd-e2e",
                    "-f", str(key)], check=True)
    pubkey = (work / "id_ed25519.pub").read_text().strip()
    templates = work / "templates"
    templates.mkdir()
    (templates / "broken-user-data.j2").write_text(BROKEN_USER_DATA)
    hv_vars = {"power_state": "none", "ssh_authorized_keys": [pubkey]}
    with Lab() as lab:
        config = work / "netbootd.toml"
        config.write_text(toml_dump({
            "server": {"address": lab.server_ip, "interface": lab.bridge,
                       "state_dir": str(work / "state"), "store_dir": str(kvm_store),
                       "templates_dir": str(templates)},
            "groups": {
                "hypervisors": {"default": True, "build": BUILD, "vars": hv_vars},
                # UEFI: EDK2's own PXE client fetches iPXE, which loads kernel and initrd over
                # HTTP.
                "uefi": {"match": {"arch": "efi64"}, "build": BUILD, "loader": "ipxe",
                         "vars": hv_vars},
            },
            "nodes": {
                "hv-bios": {"uuid": BIOS[1], "hostname": "hv-bios",
                            "vars": {"guest_bridge": "br0"}},
                "hv-uefi": {"mac": UEFI_MAC, "hostname": "hv-uefi"},
                "hv-broken": {"mac": BROKEN_MAC, "hostname": "hv-broken",
                              "user_data": "broken-user-data.j2"},
            },
        }))
        state_db = work / "state" / "state.sqlite3"
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work, state_db)
        nodes: dict[str, Node] = {}
        for name, firmware, mac, uuid in (("hv-bios", "bios", BIOS[0], BIOS[1]),
                                          ("hv-uefi", "uefi", UEFI_MAC, None),
                                          ("hv-broken", "bios", BROKEN_MAC, None)):
            guest = lab.start_qemu(name, firmware=firmware, mac=mac,  # type: ignore[arg-type]
                                   uuid=uuid, memory_mb=GUEST_MEMORY_MB)
            nodes[name] = Node(name, mac, guest, time.time())
        try:
            wait_outcomes(state_db, nodes, READY_TIMEOUT)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- netbootd log ---\n{nb.log_text()[-3000:]}") \
                from None
        for n in nodes.values():
            assert n.outcome is not None
            print(f"{n.name}: {n.outcome.kind} {n.outcome.ts - n.started:.1f} s after power-on")
        yield Booted(lab, state_db, key, nodes, nb.log)


@pytest.mark.parametrize("name", ["hv-bios", "hv-uefi"])
def test_hypervisor_reaches_ready(booted: Booted, name: str) -> None:
    node = booted.nodes[name]
    assert node.outcome is not None and node.outcome.kind == "ready", node.outcome
    detail = node.outcome.detail
    assert detail["status"] == "done" and detail["errors"] == []
    assert detail["hostname"] == name
    assert detail["libvirtd"] == "active"
    assert detail["build"] == BUILD
    rec = booted.record(name)
    assert (rec.node, rec.hostname, rec.current_build, rec.state) == (name, name, BUILD, "ready")
    kinds = [e.kind for e in booted.events(name)]
    # the whole funnel, in order: firmware, loader, kernel+initrd+root over HTTP, seed,
    # cloud-init's phone-home, the report
    for earlier, later in (("dhcp-offer", "http-sent"), ("http-sent", "firstboot"),
                           ("firstboot", "phone-home"), ("phone-home", "ready")):
        assert kinds.index(earlier) < kinds.index(later), kinds
    fetched = [e.detail["path"] for e in booted.events(name) if e.kind == "http-sent"]
    base = f"/builds/{BUILD}/"
    assert {base + "vmlinuz", base + "initrd.img", base + "filesystem.squashfs"} <= set(fetched)


def test_bios_node_was_known_by_guid_and_uefi_by_mac(booted: Booted) -> None:
    bios = booted.record("hv-bios")
    assert bios.guid == BIOS[1]
    offer = next(e for e in booted.events("hv-bios") if e.kind == "dhcp-offer")
    assert offer.detail["node"] == "hv-bios" and offer.detail["guid"] == BIOS[1]
    assert offer.detail["arch"] == "bios"
    uefi_offers = [e for e in booted.events("hv-uefi") if e.kind == "dhcp-offer"]
    assert uefi_offers[0].detail["arch"] in ("efi_bc", "efi_x64")
    assert all(e.detail["node"] == "hv-uefi" for e in uefi_offers)
    assert booted.record("hv-uefi").guid != BIOS[1]


@pytest.mark.parametrize("name", ["hv-bios", "hv-uefi"])
def test_inside_the_hypervisor_over_ssh(booted: Booted, name: str) -> None:
    assert booted.ssh(name, "hostname") == name
    assert booted.ssh(name, "systemctl is-active libvirtd") == "active"
    status = booted.ssh(name, "cloud-init status --long")
    assert "status: done" in status, status
    assert "DataSourceNoCloudNet" in status or "nocloud" in status.lower(), status
    # stateless: the root is live-boot's overlay over the squashfs fetched into RAM
    assert booted.ssh(name, "findmnt -n -o FSTYPE /") == "overlay"
    pools = booted.ssh(name, "sudo -n virsh -c qemu:///system pool-list --name")
    assert pools.split() == ["default"]


def test_guest_bridge_carries_the_nodes_address(booted: Booted) -> None:
    """hv-bios has vars.guest_bridge: its boot NIC is a port of br0, which holds the address
    the node reported from (cloud-init rendered the network-config netbootd put on the kernel
    line)."""
    node = booted.nodes["hv-bios"]
    assert node.outcome is not None
    ip = node.outcome.detail["ip"]
    assert ip in booted.ssh("hv-bios", "ip -o -4 addr show dev br0"), "no address on br0"
    ports = booted.ssh("hv-bios", "ls /sys/class/net/br0/brif").split()
    assert len(ports) == 1
    # the port is the boot NIC, renamed by cloud-init to the name the bridge lists
    assert ports == ["bootnic"]
    assert booted.ssh("hv-bios", f"cat /sys/class/net/{ports[0]}/address") == node.mac


def test_broken_user_data_is_failed_with_cloud_inits_error(booted: Booted) -> None:
    node = booted.nodes["hv-broken"]
    assert node.outcome is not None and node.outcome.kind == "failed", node.outcome
    errors = node.outcome.detail["errors"]
    assert node.outcome.detail["status"] == "error"
    # cloud-init 22.4 names the module write-files in result.json
    assert any("write-files" in e or "write_files" in e for e in errors), errors
    assert any("FileNotFoundError" in e for e in errors), errors
    rec = booted.record("hv-broken")
    assert rec.state == "failed" and rec.hostname == "hv-broken"
    failed = [e for e in booted.events("hv-broken") if e.kind == "failed"]
    assert len(failed) == 1 and failed[0].detail["errors"] == errors


# --------------------------------------------------------------------------------------------
# The build itself (no guest needed)
# --------------------------------------------------------------------------------------------


def test_build_manifest_marks_a_hypervisor_with_a_squashfs_root(kvm_store: Path) -> None:
    build = kvm_store / "builds" / "kvm-hypervisor" / "1.0"
    manifest = json.loads((build / "manifest.json").read_text())
    assert (manifest["kind"], manifest["kernel"], manifest["initrds"]) == \
        ("linux", "vmlinuz", ["initrd.img"])
    assert manifest["rootfs"] == "filesystem.squashfs"
    assert manifest["role"] == "kvm-hypervisor"
    assert manifest["cloud_init"].startswith("22.4")
    assert "boot=live fetch=${rootfs_url}" in manifest["cmdline"]
    assert set(manifest["files"]) == {"vmlinuz", "initrd.img", "filesystem.squashfs"}
    with (build / "filesystem.squashfs").open("rb") as f:
        assert f.read(4) == b"hsqs"  # squashfs magic
    sizes = {name: entry["size"] for name, entry in manifest["files"].items()}
    # lean: the whole appliance stays well under the RAM it boots in
    assert sizes["filesystem.squashfs"] < 250 << 20 and sizes["initrd.img"] < 40 << 20, sizes


def test_rebuild_is_cached_idempotent_and_conflicts_are_refused(kvm_store: Path) -> None:
    build = kvm_store / "builds" / "kvm-hypervisor" / "1.0"
    before = (build / "manifest.json").read_bytes()
    t0 = time.monotonic()
    again = run_kvm_recipe(kvm_store, "1.0")
    assert again.returncode == 0, again.stderr
    assert "reusing cached artefacts" in again.stderr and "already present" in again.stderr
    assert time.monotonic() - t0 < 60
    assert (build / "manifest.json").read_bytes() == before
    # another build already published as 2.0 with other files: refused, left as it was
    other = kvm_store / "builds" / "kvm-hypervisor" / "2.0"
    other.mkdir(parents=True)
    fake = json.loads(before)
    fake["version"] = "2.0"
    fake["files"]["vmlinuz"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(fake))
    try:
        refused = run_kvm_recipe(kvm_store, "2.0")
        assert refused.returncode == 1
        assert "different vmlinuz" in refused.stderr
        assert json.loads((other / "manifest.json").read_text()) == fake
    finally:
        shutil.rmtree(other)
