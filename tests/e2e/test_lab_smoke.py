"""The virtual lab on its own, without netbootd: a BIOS guest gets a site address, nothing boots.

Proves that ``netbootd.lab.netlab`` builds the namespaces, bridge and site DHCP server, that a
QEMU guest's iPXE ROM reaches dnsmasq through a tap on br0, that the RA responder spares iPXE
its IPv6 autoconfiguration wait, and that teardown leaves nothing behind (also after errors).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from netbootd.lab.netlab import Lab, lab_prerequisites, random_mac

MISSING = lab_prerequisites("bios")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.skipif(bool(MISSING), reason="lab prerequisites missing: " + "; ".join(MISSING)),
    pytest.mark.timeout(180),
]

GUEST_UUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); the lab reaps what it starts, so check the state too
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_bios_guest_gets_site_address_and_finds_nothing_to_boot() -> None:
    mac = random_mac()
    with Lab() as lab:
        names = (lab.netns, lab.site_netns)
        assert all(n in _netns_list() for n in names)
        tmpdir = lab.tmpdir
        guest = lab.start_qemu("smoke", firmware="bios", mac=mac, uuid=GUEST_UUID)
        lease = lab.wait_for_lease(mac, timeout=60)
        t_lease = time.monotonic() - guest.started
        assert lease.ip.startswith("10.77.0.")
        assert 100 <= int(lease.ip.rsplit(".", 1)[1]) <= 200

        # iPXE configures the address, then finds no boot file (plain DHCP: no PXE options)
        guest.wait_for_serial(r"Nothing to boot", timeout=60)
        t_gave_up = time.monotonic() - guest.started
        serial = guest.serial_text()
        assert f"net0: {lease.ip}/255.255.255.0" in serial
        log = lab.dnsmasq_text()
        assert f"DHCPACK(vsite1) {lease.ip} {mac}" in log
        assert "PXEClient" in log  # the ROM's vendor class, seen by the site server

        # the RA responder answered iPXE's router solicitation, so no ~16 s IPv6 wait
        assert "sent RA" in lab.ra_log.read_text()
        assert t_gave_up - t_lease < 10, (t_lease, t_gave_up)

        pids = [guest.pid, *(p.pid for p in lab.processes)]
        assert all(_alive(p) for p in pids)

    assert not any(n in _netns_list() for n in names)
    assert not any(_alive(p) for p in pids)
    assert not tmpdir.exists()


def test_teardown_after_exception() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), Lab() as lab:
        names = (lab.netns, lab.site_netns)
        guest = lab.start_qemu("boom", firmware="bios", mac=random_mac())
        pid = guest.pid
        raise Boom
    assert not any(n in _netns_list() for n in names)
    assert not _alive(pid)
    assert not lab.tmpdir.exists()


@pytest.mark.skipif(
    bool(lab_prerequisites("uefi")), reason="; ".join(lab_prerequisites("uefi")) or "-"
)
@pytest.mark.parametrize("stock_efi_pxe", [True, False], ids=["edk2-pxe", "ipxe-efi"])
def test_uefi_guest_reaches_site_dhcp(stock_efi_pxe: bool) -> None:
    mac = random_mac()
    with Lab() as lab:
        guest = lab.start_qemu(
            "uefi", firmware="uefi", mac=mac, uuid=GUEST_UUID, stock_efi_pxe=stock_efi_pxe
        )
        # EDK2's own PXE client (empty romfile=) or QEMU's iPXE EFI ROM, told apart by option 60
        undi = "003000" if stock_efi_pxe else "003010"
        deadline = time.monotonic() + 90
        while f"PXEClient:Arch:00007:UNDI:{undi}" not in lab.dnsmasq_text():
            assert guest.running(), guest.qemu_output()
            assert time.monotonic() < deadline, lab.dnsmasq_text()[-2000:]
            time.sleep(0.2)
        if not stock_efi_pxe:
            # iPXE takes the plain offer; EDK2 ignores offers without a boot file (no lease)
            lab.wait_for_lease(mac, timeout=60)
            guest.wait_for_serial(r"Nothing to boot", timeout=60)
