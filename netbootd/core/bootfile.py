"""Which network boot program a DHCP answer names, by arch, loader and boot stage.

- A client that is already iPXE (user class ``iPXE``) never gets the iPXE binary again: it gets
  the HTTP URL of its iPXE script (no chainload loop). This also covers QEMU's BIOS NIC ROM,
  which is iPXE from its first DHCP (docs/firmware-notes.md): for an ``ipxe`` node it goes
  straight to its script, for a ``pxelinux`` or ``grub`` node it is handed that loader, which
  never DHCPs as iPXE.
- A ``secure_boot`` node on UEFI gets shim (``[loaders.bootfiles.shim]``), which loads the
  signed GRUB next to it (docs/secure-boot.md); on BIOS there is no Secure Boot and it gets
  its loader as usual.
- UEFI HTTP Boot (vendor class HTTPClient) gets an http:// URL of the loader's EFI binary.
- Otherwise the loader's binary for the arch family, as a TFTP path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from netbootd.core.identity import Arch
from netbootd.core.plan import BootPlan


@dataclass(frozen=True, slots=True)
class BootTarget:
    """What a DHCP answer tells the client to load: the one type the planner side returns and
    the DHCP codecs (dhcp/proxy.py, dhcp/server.py) encode.

    ``server_ip`` goes into siaddr (next-server) and option 54; ``bootfile`` is a TFTP path or
    an ``http://`` URL (iPXE scripts, UEFI HTTP Boot); ``tftp_server_name`` is option 66 and
    defaults to ``server_ip``.
    """

    server_ip: str
    bootfile: str
    tftp_server_name: str | None = None

    @property
    def via_http(self) -> bool:
        """A URL (fetched over HTTP) rather than a TFTP path."""
        return "://" in self.bootfile


class NoLoader(Exception):
    """No boot program is configured for this arch family and loader."""


def choose_bootfile(plan: BootPlan, arch: Arch | None, *, is_ipxe: bool, http_boot: bool,
                    bootfiles: Mapping[str, Mapping[str, str]], http_base: str,
                    server_ip: str) -> BootTarget:
    family = (arch or Arch.BIOS).family
    loader = plan.loader
    if loader == "pxelinux" and (http_boot or family not in bootfiles["pxelinux"]):
        loader = "ipxe"  # pxelinux exists for BIOS and x86-64 EFI over TFTP only
    if loader == "pxelinux":
        return BootTarget(server_ip, bootfiles["pxelinux"][family])
    if loader == "grub":
        table = "shim" if plan.secure_boot and family != "bios" else "grub"
        return _binary(bootfiles, table, family, http_boot, http_base, server_ip)
    if is_ipxe:
        return BootTarget(server_ip, f"{http_base}/ipxe/boot.ipxe")
    return _binary(bootfiles, "ipxe", family, http_boot, http_base, server_ip)


def _binary(bootfiles: Mapping[str, Mapping[str, str]], table: str, family: str,
            http_boot: bool, http_base: str, server_ip: str) -> BootTarget:
    path = bootfiles.get(table, {}).get(family)
    if path is None:
        what = {"ipxe": "iPXE binary", "grub": "GRUB image", "shim": "shim (Secure Boot)"}[table]
        raise NoLoader(f"no {what} configured for arch family {family}: set "
                       f"[loaders.bootfiles.{table}] {family} = \"PREFIX/FILE\"")
    if http_boot:
        return BootTarget(server_ip, f"{http_base}/loaders/{path}")
    return BootTarget(server_ip, path)
