"""``decide()``: the one pure function that turns a ClientIdentity into a BootPlan or Decline.

Node settings override their group's, and run-time overrides (``core.intent``) override both;
unset settings fall back to mode ``appliance`` and loader ``pxelinux`` (``grub`` for a
``secure_boot`` node: the signed chain is shim -> GRUB). A build is named
exactly (``build = NAME/VERSION``, a pin) or through a channel (``channel = NAME``); the most
specific setting wins, a pin over a channel at the same level. A pending reimage order boots
the installer build with the disk image to write. A node following a channel that an active
rollout has reached boots the rollout's new build (core/intent.py). An ESXi build on UEFI
always uses iPXE (``mboot.c32`` is BIOS-only; UEFI needs ``mboot.efi``), and on BIOS
pxelinux, never GRUB.
A build named by config but absent from the store is a Decline whose reason lists the builds
that do exist. A build of another CPU architecture than the client's (``core.build_arch``) is
a Decline too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from netbootd.core.build_arch import arch_mismatch
from netbootd.core.identity import ClientIdentity
from netbootd.core.intent import EMPTY_INTENT, Intent, NodeOverride
from netbootd.core.inventory import Inventory
from netbootd.core.model import Build, BuildCatalog
from netbootd.core.plan import BootPlan, Decline, Reimage


def default_hostname(mac: str) -> str:
    return "node-" + mac.replace(":", "")


def decide(ident: ClientIdentity, inventory: Inventory, catalog: BuildCatalog,
           build_override: str | None = None,
           intent: Intent = EMPTY_INTENT) -> BootPlan | Decline:
    """Decide what ``ident`` boots. ``build_override`` pins the build (a URL that names one)."""
    mac = ident.mac
    if mac is None:
        return Decline("no MAC address known for this client")
    if ident.guid is not None and ident.guid in intent.ambiguous_guids:
        ident = replace(ident, guid=None)  # seen on several machines: identifies nobody
    m = inventory.match(ident)
    if m is None:
        return Decline("no group configured: add [groups.default] with default = true")
    gs, ns = m.group.settings, (m.node.settings if m.node else None)
    ov = intent.overrides.get(m.node.name, NodeOverride()) if m.node else NodeOverride()

    def pick(attr: str) -> str | None:
        v: str | None = getattr(ns, attr) if ns is not None else None
        if v is None:
            v = getattr(gs, attr)
        return v

    mode = ov.mode or pick("mode") or "appliance"
    secure_boot = bool(ns.secure_boot if ns is not None and ns.secure_boot is not None
                       else gs.secure_boot)
    # Secure Boot's chain is shim -> signed GRUB, so a Secure Boot node's loader is GRUB.
    loader = pick("loader") or ("grub" if secure_boot else "pxelinux")
    if loader == "pxelinux" and ident.arch is not None and ident.arch.family == "arm64":
        # syslinux has no arm64 build and Debian 12 no arm64 iPXE: ARM64 UEFI boots GRUB.
        loader = "grub"
    order = intent.reimage.get(m.node.name) if m.node else None
    cmdline = " ".join(c for c in (gs.cmdline, ns.cmdline if ns else None) if c)
    variables = {**gs.vars, **(ns.vars if ns else {})}
    hostname = (m.node.hostname or m.node.name) if m.node else default_hostname(mac)

    def plan(mode: str, build: Build | None, channel: str | None,
             reimage: Reimage | None = None) -> BootPlan:
        lo = loader
        if build is not None and build.kind == "esxi":
            efi = ident.arch is not None and ident.arch.is_efi
            if efi:
                lo = "ipxe"
            elif lo == "grub":
                lo = "pxelinux"  # ESXi's loader is mboot.c32 (a COM32 module), not GRUB
        return BootPlan(identity=ident, node=m.node.name if m.node else None,
                        group=m.group.name, mode=mode, loader=lo, build=build,
                        hostname=hostname, cmdline=cmdline, user_data=pick("user_data"),
                        vars=variables, channel=channel, reimage=reimage,
                        secure_boot=secure_boot)

    if order is not None:
        p = _reimage_plan(order.action_id, order.image, intent, catalog, plan)
        if isinstance(p, BootPlan) and p.build is not None and p.reimage is not None:
            for b in (p.build, p.reimage.disk):
                if (why := arch_mismatch(b.ref, b.arch, ident.arch)) is not None:
                    return Decline(f"reimage: {why}")
        return p
    if mode == "local":
        return plan("local", None, None)
    ref: str | None
    channel: str | None
    if build_override is not None:
        ref, channel = build_override, None
    else:
        levels = [(ov.build, ov.channel), (ns.build, ns.channel) if ns else (None, None),
                  (gs.build, gs.channel)]
        ref, channel = next(((b, c) for b, c in levels if b or c), (None, None))
        if ref is not None:
            channel = None  # a pin wins over a channel set at the same level
        elif channel is not None:
            ref = intent.channels.get(channel)
            if ref is None:
                known = ", ".join(sorted(intent.channels)) or "none"
                return Decline(f"channel {channel!r} points at no build yet (channels: "
                               f"{known}); run `netbootd channel set {channel} NAME/VERSION`")
            pin = intent.rollout.get(m.node.name) if m.node else None
            if pin is not None and pin.channel == channel:
                ref = pin.build  # the rollout rule (core/intent.py): its batch started
    if ref is None:
        return Decline(f"group {m.group.name!r} names no build (set build = NAME/VERSION "
                       "or channel = NAME)")
    build = _find(catalog, ref)
    if isinstance(build, Decline):
        return build
    if build.kind == "disk":
        return Decline(f"build {ref} is a disk image and cannot be booted directly; "
                       "use `netbootd node reimage` to write it to a node")
    if (why := arch_mismatch(build.ref, build.arch, ident.arch)) is not None:
        return Decline(why)
    return plan(mode, build, channel)


def _find(catalog: BuildCatalog, ref: str) -> Build | Decline:
    if ref not in catalog:
        known = ", ".join(catalog.refs()) or "none"
        return Decline(f"no build named {ref} (known: {known})")
    return catalog.get(ref)


def _reimage_plan(action_id: int, image: str, intent: Intent, catalog: BuildCatalog,
                  plan: Callable[..., BootPlan]) -> BootPlan | Decline:
    disk = _find(catalog, image)
    if isinstance(disk, Decline):
        return disk
    if disk.kind != "disk":
        return Decline(f"reimage: build {image} is a {disk.kind} build, not a disk image")
    inst = intent.installer
    if inst is None:
        return Decline("reimage ordered but no installer configured: set [reimage] "
                       "installer = NAME/VERSION (or a channel name)")
    channel = None
    if "/" not in inst:
        channel, ref = inst, intent.channels.get(inst)
        if ref is None:
            return Decline(f"reimage: installer channel {inst!r} points at no build")
        inst = ref
    installer = _find(catalog, inst)
    if isinstance(installer, Decline):
        return installer
    if installer.kind != "linux":
        return Decline(f"reimage: installer {inst} is not a linux build")
    return plan("reimage", installer, channel, Reimage(action_id, disk))
