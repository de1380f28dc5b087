"""A throw-away virtual boot lab: network namespaces, a bridge, a site DHCP server, QEMU guests.

Used by the demo and the end-to-end tests; needs root. Layout::

    namespace nbdlab-<rand>                          namespace nbdsite-<rand>
    ┌─────────────────────────────────────────┐     ┌──────────────────────────────────┐
    │ br0 10.77.0.1/24  (netbootd binds here) │     │ vsite1 10.77.0.2/24              │
    │  ├── vsite0 ──────────── veth ──────────┼─────┼─► dnsmasq: plain DHCP, addresses │
    │  ├── tap-<guest> ◄── QEMU guest         │     │   .100-.200, no boot options     │
    │  └── RA responder (iPXE IPv6 wait)      │     └──────────────────────────────────┘
    └─────────────────────────────────────────┘

The site DHCP server lives in its own namespace because netbootd binds udp/67 on the bridge.
IPv6 is disabled in both namespaces; because iPXE still waits ~16 s for IPv6 autoconfiguration
when no router advertisement arrives, a small responder (a child process in the lab namespace,
on an AF_PACKET socket) answers every router solicitation with a prefix-less, lifetime-0 RA.

Everything the lab creates (processes, namespaces, links, temporary files) is torn down by
:meth:`Lab.close` (and on leaving the ``with`` block), also after exceptions. Processes are
ended by PID: SIGTERM, then SIGKILL.

Run ``python3 -m netbootd.lab.netlab smoke`` to check the lab alone: a BIOS guest gets an address
from dnsmasq and its iPXE ROM finds nothing to boot.
"""


from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from netbootd.lab.base import (
    BRIDGE,
    SITE_VETH_LAB,
    SITE_VETH_SITE,
    TERM_GRACE_S,
    LabError,
    _ip,
    _stop_process,
    _valid_mac,
    random_mac,
)
from netbootd.lab.firmware import (
    AAVMF_CODE,
    AAVMF_DIR,
    AAVMF_VARS,
    IPXE_ROM_DIR,
    NIC_ROMS,
    OVMF_DIR,
    OVMF_HTTP_BOOT_ONLY,
    OVMF_PAIRS,
    QEMU,
    QEMU_AARCH64,
    SB_OVMF,
    SEABIOS,
    Firmware,
    lab_prerequisites,
    ovmf_files,
    secure_boot_ovmf_files,
)
from netbootd.lab.guests import GuestsMixin, QemuGuest
from netbootd.lab.namespaces import LabNetwork
from netbootd.lab.ra import build_router_advert, ra_responder
from netbootd.lab.site import Lease, SiteDhcpMixin

__all__ = [
    "AAVMF_CODE", "AAVMF_DIR", "AAVMF_VARS", "BRIDGE", "IPXE_ROM_DIR", "NIC_ROMS", "OVMF_DIR",
    "OVMF_HTTP_BOOT_ONLY", "OVMF_PAIRS", "QEMU", "QEMU_AARCH64", "SB_OVMF", "SEABIOS",
    "SITE_VETH_LAB", "SITE_VETH_SITE", "TERM_GRACE_S", "Firmware", "Lab", "LabError",
    "LabNetwork", "Lease", "QemuGuest", "_stop_process", "_valid_mac", "build_router_advert",
    "lab_prerequisites", "main", "ovmf_files", "ra_responder", "random_mac",
    "secure_boot_ovmf_files", "smoke",
]


class Lab(GuestsMixin, SiteDhcpMixin, LabNetwork):
    """Namespaces, bridge, site DHCP server and QEMU guests; use as a context manager.

    >>> with Lab() as lab:                                        # doctest: +SKIP
    ...     guest = lab.start_qemu("g1", firmware="bios", mac="52:54:00:00:00:01")
    ...     guest.wait_for_serial("Nothing to boot", timeout=60)
    """



# --------------------------------------------------------------------------------------------
# Self-check: the lab without netbootd
# --------------------------------------------------------------------------------------------


def smoke(ra: bool = True, timeout: float = 90.0) -> dict[str, float]:
    """Boot a BIOS guest in a fresh lab: dnsmasq leases it an address, iPXE finds no boot file.

    Returns step timings in seconds; raises on failure. The lab is gone afterwards.
    """
    timings: dict[str, float] = {}
    mac = random_mac()
    t0 = time.monotonic()
    with Lab(ra_responder=ra) as lab:
        timings["lab_setup"] = time.monotonic() - t0
        guest = lab.start_qemu(
            "smoke", firmware="bios", mac=mac, uuid="8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
        )
        lease = lab.wait_for_lease(mac, timeout)
        timings["qemu_start_to_lease"] = time.monotonic() - guest.started
        guest.wait_for_serial(
            r"No (configuration methods succeeded|filename or root path)"
            r"|Nothing to boot",
            timeout,
        )
        timings["qemu_start_to_ipxe_gives_up"] = time.monotonic() - guest.started
        print(f"lease {lease.ip} for {lease.mac}; serial tail:\n{guest.serial_text()[-600:]}")
        netns = lab.netns
        t1 = time.monotonic()
    timings["teardown"] = time.monotonic() - t1
    left = _ip("netns", "list", check=False).stdout
    if netns in left:
        raise LabError(f"namespace {netns} still exists after teardown")
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    """``netlab.py ra-responder IFNAME`` (internal) or ``netlab.py smoke [--no-ra]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "ra-responder":
        ra_responder(args[1])
        return 0
    if args and args[0] == "smoke":
        missing = lab_prerequisites("bios")
        if missing:
            print("missing: " + "; ".join(missing), file=sys.stderr)
            return 2
        timings = smoke(ra="--no-ra" not in args)
        for step, secs in timings.items():
            print(f"{step}: {secs:.2f} s")
        return 0
    print("usage: netlab.py smoke [--no-ra] | netlab.py ra-responder IFNAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
