"""``decide()``: the one pure function that turns a ClientIdentity into a BootPlan or Decline.

Node settings override their group's; unset settings fall back to mode ``appliance`` and loader
``pxelinux``. An ESXi build on UEFI always uses iPXE (``mboot.c32`` is BIOS-only; UEFI needs
``mboot.efi``). A build named by config but absent from the store is a Decline whose reason
lists the builds that do exist.
"""

from __future__ import annotations

from netbootd.core.identity import ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan, Decline
from netbootd.store.catalog import BuildCatalog


def default_hostname(mac: str) -> str:
    return "node-" + mac.replace(":", "")


def decide(ident: ClientIdentity, inventory: Inventory, catalog: BuildCatalog,
           build_override: str | None = None) -> BootPlan | Decline:
    """Decide what ``ident`` boots. ``build_override`` pins the build (a URL that names one)."""
    if ident.mac is None:
        return Decline("no MAC address known for this client")
    m = inventory.match(ident)
    if m is None:
        return Decline("no group configured: add [groups.default] with default = true")
    gs, ns = m.group.settings, (m.node.settings if m.node else None)

    def pick(attr: str) -> str | None:
        v: str | None = getattr(ns, attr) if ns is not None else None
        if v is None:
            v = getattr(gs, attr)
        return v

    mode = pick("mode") or "appliance"
    loader = pick("loader") or "pxelinux"
    build_ref = build_override or pick("build")
    build = None
    if mode != "local":
        if build_ref is None:
            return Decline(f"group {m.group.name!r} names no build (set build = NAME/VERSION)")
        if build_ref not in catalog:
            known = ", ".join(catalog.refs()) or "none"
            return Decline(f"no build named {build_ref} (known: {known})")
        build = catalog.get(build_ref)
        if build.kind == "disk":
            return Decline(f"build {build_ref} is a disk image and cannot be booted directly")
        if build.kind == "esxi" and ident.arch is not None and ident.arch.is_efi:
            loader = "ipxe"
    cmdline = " ".join(c for c in (gs.cmdline, ns.cmdline if ns else None) if c)
    variables = {**gs.vars, **(ns.vars if ns else {})}
    hostname = (m.node.hostname or m.node.name) if m.node else default_hostname(ident.mac)
    return BootPlan(identity=ident, node=m.node.name if m.node else None, group=m.group.name,
                    mode=mode, loader=loader, build=build, hostname=hostname, cmdline=cmdline,
                    user_data=pick("user_data"), vars=variables)
