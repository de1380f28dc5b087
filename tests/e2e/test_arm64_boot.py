"""ARM64 UEFI (AAVMF) boots its arm64 build through Debian's signed network GRUB, next to an
amd64 node of the same lab that boots its amd64 build; an ARM64 client whose group names an
amd64 build is declined.

AAVMF's own EDK2 PXE client sends arch 11; netbootd's proxy offer names ``grub/grubaa64.efi``
(Debian's ``grubnetaa64.efi.signed``), which AAVMF fetches over TFTP. GRUB ignores ProxyDHCP and
takes its server from the site DHCP server's next-server, which the lab's dnsmasq sets to
netbootd (as a site must for GRUB), then reads ``grub/grub.cfg`` and the node's config, and
fetches the 33 MB arm64 kernel over TFTP (that GRUB has no http module). Every assertion reads
netbootd's state.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import BOOT_TIMEOUT, LabServer
from netbootd.config import DEFAULT_LOADER_DIRS
from netbootd.lab.demo import build_demo, lab_config, start_netbootd, timeline, wait_for_event
from netbootd.lab.netlab import Lab, lab_prerequisites
from netbootd.loaders import SIGNED_ARM64, signed_file

MISSING = lab_prerequisites("aavmf") + lab_prerequisites("bios")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))]

ARM_MAC = "52:54:00:a6:40:01"
ARM_PINNED_MAC = "52:54:00:a6:40:02"  # an arm64 machine pinned to an amd64 build
X86_MAC = "52:54:00:a6:40:86"
SERVER_IP = "10.77.0.1"  # Lab()'s default server address
CACHE = Path("/var/cache/netbootd/debs")  # where .ci/install-deps.sh unpacks signed loaders


@pytest.fixture(scope="module")
def arm_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo/1.0 (amd64) and armdemo/1.0 (arm64), both made by the demo recipe."""
    store = tmp_path_factory.mktemp("arm-store")
    build_demo(store, "1.0")
    build_demo(store, "1.0", name="armdemo", arch="arm64")
    return store


@pytest.fixture(scope="module")
def arm_lab(arm_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    work = tmp_path_factory.mktemp("arm-lab")
    # Debian's signed arm64 network GRUB, next to the x86 GRUB folder of `netbootd loaders
    # grub` (an overlay: this test does not depend on whether that ran with --arm64).
    grub = work / "grub-arm64"
    grub.mkdir()
    for package, member, name in SIGNED_ARM64:
        shutil.copyfile(signed_file(package, member, CACHE), grub / name)
    with Lab(site_next_server=SERVER_IP) as lab:
        assert lab.server_ip == SERVER_IP
        config = lab_config(lab, work, arm_store, groups={
            "default": {"default": True, "build": "demo/1.0",
                        "vars": {"power_state": "poweroff"}},
            # Option 93 = 11 (or 19): the arm64 build; no loader set, so GRUB (the only
            # arm64 loader).
            "arm": {"match": {"arch": "arm64"}, "build": "armdemo/1.0",
                    "vars": {"power_state": "poweroff"}},
        }, nodes={
            "arm1": {"mac": ARM_MAC, "hostname": "arm1"},
            "x86": {"mac": X86_MAC, "hostname": "x86"},
            # An arm64 machine put in the amd64 group by mistake: it must be declined.
            "arm-misplaced": {"mac": ARM_PINNED_MAC, "group": "default"},
        }, dhcp={"site_next_server": SERVER_IP},
            loaders={"dirs": {"grub": [*DEFAULT_LOADER_DIRS["grub"], str(grub)]}})
        nb = start_netbootd(lab, ["serve", "--config", str(config)], work,
                            work / "state" / "state.sqlite3")
        yield LabServer(lab, nb)


def test_arm64_and_amd64_nodes_boot_their_own_builds_side_by_side(arm_lab: LabServer) -> None:
    lab, nb = arm_lab.lab, arm_lab.nb
    arm = lab.start_qemu("arm1", firmware="aavmf", mac=ARM_MAC)
    x86 = lab.start_qemu("x86", firmware="bios", mac=X86_MAC)
    homes = {}
    for mac, guest in ((ARM_MAC, arm), (X86_MAC, x86)):
        try:
            homes[mac] = wait_for_event(nb.state_db, mac, "phone-home", BOOT_TIMEOUT,
                                        guest=guest)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- netbootd log ---\n{nb.log_text()[-4000:]}") \
                from None
    for guest in (arm, x86):
        try:
            guest.wait(60)
        except subprocess.TimeoutExpired:
            guest.kill()
    assert homes[ARM_MAC].detail["build"] == "armdemo/1.0"
    assert homes[ARM_MAC].detail["hostname"] == "arm1"
    assert homes[X86_MAC].detail["build"] == "demo/1.0"
    assert homes[X86_MAC].detail["hostname"] == "x86"

    events = timeline(nb.state_db, ARM_MAC)
    offer = next(e.detail for e in events if e.kind == "dhcp-offer")
    # AAVMF's EDK2 PXE: arch 11, group "arm" by arch, GRUB as the loader over TFTP.
    assert offer["arch"] == "efi_arm64" and not offer["http_boot"]
    assert offer["group"] == "arm" and offer["build"] == "armdemo/1.0"
    assert offer["bootfile"] == "grub/grubaa64.efi"
    sent = [e.detail["file"].lstrip("/") for e in events if e.kind == "tftp-sent"]
    assert "grub/grubaa64.efi" in sent
    # Signed GRUB asks only for grub/grub.cfg (the dispatcher on $net_default_mac), which
    # sends it to the node's own config.
    assert "grub/grub.cfg" in sent and f"grub/grub.cfg-01-{ARM_MAC}" in sent
    # Debian's signed arm64 GRUB has no http module: kernel and initrd came over TFTP.
    assert "builds/armdemo/1.0/vmlinuz" in sent and "builds/armdemo/1.0/initrd.img" in sent
    assert not any(e.detail["path"].startswith("/builds/") for e in events
                   if e.kind == "http-sent")

    x86_offer = next(e.detail for e in timeline(nb.state_db, X86_MAC) if e.kind == "dhcp-offer")
    assert x86_offer["arch"] == "bios" and x86_offer["bootfile"] == "bios/lpxelinux.0"

    for mac, build in ((ARM_MAC, "armdemo/1.0"), (X86_MAC, "demo/1.0")):
        node = arm_lab.node(mac)
        assert node is not None and node.current_build == build


def test_arm64_client_in_an_amd64_group_is_declined(arm_lab: LabServer) -> None:
    lab, nb = arm_lab.lab, arm_lab.nb
    guest = lab.start_qemu("arm-misplaced", firmware="aavmf", mac=ARM_PINNED_MAC)
    try:
        decline = wait_for_event(nb.state_db, ARM_PINNED_MAC, "dhcp-decline", BOOT_TIMEOUT,
                                 guest=guest)
    finally:
        guest.kill()
    assert decline.detail["reason"].startswith(
        "build demo/1.0 is for amd64 machines, but this client is an arm64 machine "
        "(option 93 = 11")
    kinds = {e.kind for e in timeline(nb.state_db, ARM_PINNED_MAC)}
    assert "dhcp-offer" not in kinds and not any(k.startswith("tftp-") for k in kinds)
