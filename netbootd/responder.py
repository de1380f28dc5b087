"""Answers for every protocol, each from the node's one BootPlan, and the boot timeline.

The endpoints (dhcp/, tftp/, web/) call in here with what they parsed; this module enriches
the identity with what was seen before (``Sightings``), calls the pure ``decide()``, renders
from the plan and records events. It holds no protocol rules of its own.

Client IP -> MAC: the proxy never assigns addresses, but a PXE client's DHCPREQUEST to the
site server carries option 50 (requested address, RFC 2131 section 4.3.2), and later requests
carry the MAC in their path or query; both teach us which MAC stands behind a TFTP or HTTP
source address, so loader and kernel downloads land in the right node's timeline. The pairs
expire like leases and the newest MAC at an address wins (core/ip_macs.py): a request that
cannot be tied to a node that way gets the default answer, never another node's.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from netbootd.config import Config, NodeSpec
from netbootd.core.bootfile import BootTarget, NoLoader, choose_bootfile
from netbootd.core.identity import (
    Arch,
    ClientIdentity,
    guid_candidates,
    normalize_mac,
)
from netbootd.core.intent import Intent
from netbootd.core.inventory import Inventory
from netbootd.core.ip_macs import IpMacs
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.core.report import parse_boot_report
from netbootd.errors import NotFound
from netbootd.metrics import Counters
from netbootd.paths import contain, split_client_path
from netbootd.render.node_files import NodeRenderer, RenderedFile, RenderError
from netbootd.render.tokens import TokenRefused
from netbootd.render.urls import SiteUrls
from netbootd.state.events import StateDB
from netbootd.state.registry import Action, Registry
from netbootd.state.sightings import Sightings
from netbootd.store.builds import HashCache
from netbootd.store.catalog import Build, BuildCatalog
from netbootd.world import World, WorldWatcher

log = logging.getLogger("netbootd.decision")

_HEX_IP = re.compile(r"^[0-9A-F]{1,8}$")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A file rendered for this client from its plan."""

    text: str


@dataclass(frozen=True, slots=True)
class StaticFile:
    path: Path
    kind: str  # "loader" or "build"
    build: str | None = None


class Responder:
    """Everything a client asks, answered from its plan.

    Every answer is decided from one ``World`` (netbootd/world.py), taken from the watcher
    once at the start of the request; the store, the intent and GUID sharing are watched
    there, so changes apply at the next request. What is learnt about clients as they ask
    (``Sightings``, IP -> MAC pairs) is kept here, across Worlds."""

    def __init__(self, config: Config, catalog: BuildCatalog, state: StateDB,
                 renderer: NodeRenderer, clock: Callable[[], float] = time.time, *,
                 registry: Registry | None = None, store_dir: Path | None = None,
                 counters: Counters | None = None, verify: HashCache | None = None) -> None:
        self.counters = counters if counters is not None else Counters()
        self.state = state
        self.registry = registry
        self.watcher = WorldWatcher(config, catalog, renderer, state, registry=registry,
                                    store_dir=store_dir, verify=verify)
        self.sightings = Sightings(config.state.max_clients)
        self.clock = clock
        self._mac_by_ip = IpMacs(config.state.ip_mac_ttl, config.state.max_clients)

    # The World being served (read-only views, for the service's gauges and the CLI).
    @property
    def world(self) -> World:
        return self.watcher.world

    @property
    def config(self) -> Config:
        return self.watcher.world.config

    @property
    def catalog(self) -> BuildCatalog:
        return self.watcher.world.catalog

    @property
    def inventory(self) -> Inventory:
        return self.watcher.world.inventory

    @property
    def intent(self) -> Intent:
        return self.watcher.world.intent

    @property
    def renderer(self) -> NodeRenderer:
        return self.watcher.world.renderer

    @property
    def urls(self) -> SiteUrls:
        return self.watcher.world.urls

    @property
    def verify(self) -> HashCache | None:
        return self.watcher.verify

    @verify.setter
    def verify(self, value: HashCache | None) -> None:
        self.watcher.verify = value

    def reconfigure(self, config: Config, catalog: BuildCatalog,
                    renderer: NodeRenderer) -> None:
        """Swap in a reloaded config and store; what was learnt about clients is kept."""
        self.watcher.reload(config, catalog, renderer)
        self.sightings.capacity = config.state.max_clients
        self._mac_by_ip.ttl = config.state.ip_mac_ttl
        self._mac_by_ip.capacity = config.state.max_clients

    def refresh(self) -> World:
        """The World to answer the request that is starting from (the watcher looks)."""
        return self.watcher.current()

    def build(self, ref: str) -> Build:
        """A build by NAME/VERSION, from the store as it is now (NotFound lists the known)."""
        return self.refresh().catalog.get(ref)

    # -- identity ------------------------------------------------------------------------------
    def learn_ip(self, ip: str, mac: str) -> None:
        self._mac_by_ip.learn(ip, mac, self.clock())

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC last learnt at ``ip``, if learnt within ``state.ip_mac_ttl`` seconds."""
        return self._mac_by_ip.mac_for(ip, self.clock())

    def _renderer(self, w: World) -> NodeRenderer:
        """The renderer for an answer given now (first-boot tokens are issued per answer)."""
        return w.renderer.at(self.clock())

    def plan_for(self, ident: ClientIdentity,
                 build_override: str | None = None) -> BootPlan | Decline:
        return self._plan(self.refresh(), ident, build_override)

    def _plan(self, w: World, ident: ClientIdentity,
              build_override: str | None = None) -> BootPlan | Decline:
        return decide(self.sightings.enrich(ident), w.inventory, w.catalog, build_override,
                      w.intent)

    def _event(self, mac: str | None, kind: str, **detail: object) -> None:
        if mac is not None:
            self.state.record(mac, kind, self.clock(), **detail)

    # -- DHCP ----------------------------------------------------------------------------------
    def observe_dhcp(self, ident: ClientIdentity) -> None:
        """A PXE client's packet: remember who it is (and its address, when it has one)."""
        if ident.mac is None:
            return
        # Recorded before deciding: an unknown machine is discovered even when declined, and a
        # GUID that turns up on a second machine stops identifying anyone at this very boot.
        self.state.saw(ident, self.clock())
        self.sightings.saw(ident)
        if ident.ip:
            self.learn_ip(ident.ip, ident.mac)

    def dhcp_boot_target(self, ident: ClientIdentity, *, is_ipxe: bool, http_boot: bool,
                         message: str) -> BootTarget | None:
        """What a PXE client should boot, or None to stay silent (decline, logged)."""
        self.observe_dhcp(ident)
        # After observing: a GUID this packet shows on a second machine already counts.
        w = self.refresh()
        plan = self._plan(w, ident)
        if isinstance(plan, Decline):
            log.info("decline mac=%s guid=%s arch=%s: %s", ident.mac, ident.guid,
                     _arch_name(ident.arch), plan.reason)
            self._event(ident.mac, "dhcp-decline", reason=plan.reason)
            return None
        try:
            target = choose_bootfile(plan, ident.arch, is_ipxe=is_ipxe, http_boot=http_boot,
                                     bootfiles=w.config.loaders.bootfiles,
                                     http_base=w.urls.http_base)
        except NoLoader as e:
            log.info("decline mac=%s arch=%s: %s", ident.mac, _arch_name(ident.arch), e)
            self._event(ident.mac, "dhcp-decline", reason=str(e))
            return None
        if plan.node is not None:  # observe_dhcp recorded the rest; this adds the node's name
            self.state.saw(plan.identity, self.clock(), node=plan.node)
        log.info("%s mac=%s guid=%s arch=%s node=%s group=%s build=%s mode=%s bootfile=%s",
                 message, ident.mac, ident.guid, _arch_name(ident.arch), plan.node, plan.group,
                 plan.build.ref if plan.build else None, plan.mode, target.bootfile)
        self._event(ident.mac, f"dhcp-{message}", bootfile=target.bootfile,
                    arch=_arch_name(ident.arch), guid=ident.guid, ipxe=is_ipxe,
                    http_boot=http_boot, node=plan.node, group=plan.group,
                    build=plan.build.ref if plan.build else None, mode=plan.mode)
        return target

    # -- TFTP ----------------------------------------------------------------------------------
    def tftp_lookup(self, filename: str, client_ip: str) -> Rendered | StaticFile:
        """Map a TFTP file name to a rendered file or a file on disk; NotFound/PathRefused."""
        w = self.refresh()
        parts = split_client_path(filename)
        head = parts[0]
        if head in w.pxelinux_prefixes and len(parts) == 3 and parts[1] == "pxelinux.cfg":
            return Rendered(self._pxelinux_cfg(w, parts[2], client_ip))
        if head in w.grub_prefixes and len(parts) == 2 and parts[1].startswith("grub.cfg"):
            return Rendered(self._grub_cfg(w, parts[1], client_ip))
        if head == "builds" and len(parts) >= 4:
            build = w.catalog.get(f"{parts[1]}/{parts[2]}")
            return StaticFile(build.path_of("/".join(parts[3:])), "build", build.ref)
        if head == "esxi" and len(parts) == 5 and parts[4] == "boot.cfg":
            return Rendered(self._esxi_boot_cfg(w, parts[1], f"{parts[2]}/{parts[3]}", client_ip))
        return StaticFile(self._loader_path(w, filename), "loader")

    def loader_path(self, client_path: str) -> Path:
        return self._loader_path(self.refresh(), client_path)

    def _loader_path(self, w: World, client_path: str) -> Path:
        parts = split_client_path(client_path)
        dirs = w.config.loaders.dirs.get(parts[0])
        if dirs is None or len(parts) < 2:
            raise NotFound(f"no such file: {client_path}")
        rest = "/".join(parts[1:])
        for d in dirs:
            p = contain(d, rest)
            if p.is_file():
                return p
        raise NotFound(f"no such file: {client_path}")

    def _pxelinux_cfg(self, w: World, name: str, client_ip: str) -> str:
        if name.startswith("01-"):
            try:
                mac = normalize_mac(name[3:])
            except ValueError:
                raise NotFound(f"pxelinux.cfg/{name}: not a MAC") from None
            self.learn_ip(client_ip, mac)
            plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip))
            if isinstance(plan, Decline):
                return self._renderer(w).pxelinux_decline(plan.reason)
            return self._renderer(w).pxelinux_config(plan)
        if len(name) == 36 and name.count("-") == 4:
            # pxelinux spells the GUID in raw byte order; firmware may use the canonical one.
            by_guid = self._plan_by_guid_name(w, name, client_ip)
            if by_guid is None:
                raise NotFound(f"pxelinux.cfg/{name}: no node with this GUID")
            return self._renderer(w).pxelinux_config(by_guid)
        if name == "default":
            known = self.mac_for_ip(client_ip)
            plan = self._plan(w, ClientIdentity(mac=known, ip=client_ip)) if known else \
                Decline("client not identified (no MAC known for its address)")
            if isinstance(plan, Decline):
                return self._renderer(w).pxelinux_decline(plan.reason)
            return self._renderer(w).pxelinux_config(plan)
        if _HEX_IP.match(name):
            raise NotFound(f"pxelinux.cfg/{name}: configs are per GUID and MAC")
        raise NotFound(f"pxelinux.cfg/{name}: no such config")

    def _plan_by_guid_name(self, w: World, name: str, client_ip: str) -> BootPlan | None:
        """The plan of the node configured by the GUID ``name`` (either byte order), or None
        when no node is: the loader then asks for its per-MAC name."""
        try:
            candidates = guid_candidates(name)
        except ValueError:
            raise NotFound(f"{name}: not a GUID") from None
        for guid in candidates:
            # Only a node configured by this GUID answers here; anyone else gets "not
            # found" and the loader goes on to 01-<mac>. So does a GUID seen on several
            # machines: it identifies none of them.
            node = None if guid in w.intent.ambiguous_guids else \
                w.inventory.find_node(ClientIdentity(guid=guid))
            if node is None:
                continue
            # The MAC that sent this GUID in DHCP; after a restart, the stored one; as a
            # last resort, the MAC last seen at this address.
            ident = self.sightings.enrich(ClientIdentity(guid=guid, ip=client_ip))
            if ident.mac is None:
                ident = replace(ident, mac=self.state.mac_for_guid(guid) or
                                self._ip_mac_of(w, node, client_ip))
            plan = self._plan(w, ident)
            if isinstance(plan, BootPlan):
                self.learn_ip(client_ip, plan.identity.mac or "")
                return plan
        return None

    def _ip_mac_of(self, w: World, node: NodeSpec, client_ip: str) -> str | None:
        """The MAC learnt at ``client_ip``, only if it is not another node's: a plan (and the
        first-boot tokens in it) is never made with a MAC that names someone else."""
        mac = self.mac_for_ip(client_ip)
        if mac is None:
            return None
        owner = w.inventory.find_node(ClientIdentity(mac=mac))
        return mac if owner is None or owner.name == node.name else None

    def _grub_cfg(self, w: World, name: str, client_ip: str) -> str:
        """GRUB's config names (docs/boot-flows.md): ``grub.cfg-<uuid>`` (asked first: only
        a node configured by that GUID answers), ``grub.cfg-01-<mac>`` (grub-mknetdir's
        images ask it next; the ``grub.cfg`` dispatcher asks it with colons, as GRUB spells
        ``$net_default_mac``), ``grub.cfg-ip-<a.b.c.d>`` (the dispatcher, when GRUB knows no
        MAC), hex-IP names (not found: configs are per MAC) and ``grub.cfg`` itself."""
        if name == "grub.cfg":
            return self._renderer(w).grub_dispatch()
        ident: ClientIdentity | None = None
        if name.startswith("grub.cfg-01-"):
            try:
                mac = normalize_mac(name[len("grub.cfg-01-"):])
            except ValueError:
                raise NotFound(f"{name}: not a MAC") from None
            self.learn_ip(client_ip, mac)
            ident = ClientIdentity(mac=mac, ip=client_ip)
        elif name.startswith("grub.cfg-ip-"):
            known = self.mac_for_ip(name[len("grub.cfg-ip-"):])
            ident = ClientIdentity(mac=known, ip=client_ip) if known else None
        elif len(name) == len("grub.cfg-") + 36 and name.count("-") == 5:
            # GRUB 2.06 (Debian) asks grub.cfg-<SMBIOS UUID> before the MAC name.
            by_guid = self._plan_by_guid_name(w, name[len("grub.cfg-"):], client_ip)
            if by_guid is None:
                raise NotFound(f"{name}: no node with this GUID")
            return self._renderer(w).grub_config(by_guid)
        elif _HEX_IP.match(name[len("grub.cfg-"):]):
            raise NotFound(f"{name}: configs are per MAC")
        else:
            raise NotFound(f"{name}: no such config")
        plan = self._plan(w, ident) if ident is not None else \
            Decline("client not identified (no MAC known for its address)")
        if isinstance(plan, Decline):
            self._event(ident.mac if ident else None, "grub-decline", reason=plan.reason)
            return self._renderer(w).grub_decline(plan.reason)
        return self._renderer(w).grub_config(plan)

    def tftp_done(self, filename: str, client_ip: str, outcome: str, nbytes: int) -> None:
        mac = self.mac_for_ip(client_ip)
        kind = "tftp-sent" if outcome == "completed" else "tftp-ended"
        self._event(mac, kind, file=filename, bytes=nbytes, outcome=outcome, ip=client_ip)

    # -- HTTP ----------------------------------------------------------------------------------
    def esxi_boot_cfg(self, node_key: str, build_ref: str, client_ip: str) -> str:
        return self._esxi_boot_cfg(self.refresh(), node_key, build_ref, client_ip)

    def _esxi_boot_cfg(self, w: World, node_key: str, build_ref: str, client_ip: str) -> str:
        plan = self._plan_by_key(w, node_key, client_ip, build_ref)
        try:
            return self._renderer(w).esxi_boot_cfg(plan)
        except RenderError as e:  # e.g. the build named in the path is not an ESXi build
            raise NotFound(str(e)) from e

    def _plan_by_key(self, w: World, node_key: str, client_ip: str | None,
                     build_override: str | None = None) -> BootPlan:
        try:
            mac = normalize_mac(node_key)
        except ValueError:
            raise NotFound(f"{node_key!r} is not a node key (MAC with dashes)") from None
        if client_ip:
            self.learn_ip(client_ip, mac)
        if build_override is not None:
            w.catalog.get(build_override)  # NotFound lists the known builds
        plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip), build_override)
        if isinstance(plan, Decline):
            raise NotFound(f"no boot plan for {mac}: {plan.reason}")
        return plan

    def ipxe_script(self, ident: ClientIdentity) -> str:
        if ident.mac:
            self.observe_dhcp(ident)  # what iPXE tells us of itself, as in a DHCP packet
        w = self.refresh()
        plan = self._plan(w, ident)
        if isinstance(plan, Decline):
            self._event(ident.mac, "ipxe-decline", reason=plan.reason)
            return f"#!ipxe\necho netbootd: not booting this node: {plan.reason}\nexit 1\n"
        if plan.node is not None:  # observe_dhcp recorded the rest; this adds the node's name
            self.state.saw(plan.identity, self.clock(), node=plan.node)
        self._event(ident.mac, "ipxe-script", node=plan.node, group=plan.group,
                    build=plan.build.ref if plan.build else None, mode=plan.mode)
        return self._renderer(w).ipxe_script(plan)

    def check_token(self, node_key: str, subject: str, token: str, what: str,
                    client_ip: str | None) -> str:
        """The node's MAC if ``token`` opens ``what`` (a first-boot file, phone-home, a reimage
        report) of ``node_key`` for ``subject`` (the build ref, or the reimage action); else
        TokenRefused (logged and counted, without the token) or NotFound (not a node key)."""
        w = self.refresh()
        try:
            mac = normalize_mac(node_key)
        except ValueError:
            raise NotFound(f"{node_key!r} is not a node key (MAC with dashes)") from None
        try:
            w.urls.tokens.check(token, mac, subject, self.clock())
        except TokenRefused as e:
            self.counters.inc("firstboot_refused", reason=e.reason)
            log.warning("first-boot refused: %s for mac=%s (%s) from %s: %s",
                        what, mac, subject, client_ip, e)
            raise
        return mac

    def firstboot(self, node_key: str, build_ref: str, what: str, token: str,
                  client_ip: str | None) -> str:
        """First-boot file ``what`` of the node booting ``build_ref`` (named by the URL, so a
        node that picked a build at a menu, or booted just before a change, gets its own),
        for a client that shows this node's token for this build (TokenRefused otherwise)."""
        w = self.refresh()
        self.check_token(node_key, build_ref, token, what, client_ip)
        if what == "vendor-data":  # netbootd has none; asked by cloud-init, so answered empty
            return ""
        plan = self._plan_by_key(w, node_key, client_ip, build_ref)
        renderer = self._renderer(w)
        render = {"meta-data": renderer.meta_data, "user-data": renderer.user_data,
                  "network-config": renderer.network_config, "ks.cfg": renderer.kickstart}[what]
        text = render(plan)
        build = plan.build.ref if plan.build else None
        if what in ("meta-data", "ks.cfg"):  # once per boot: the first file each flow fetches
            self.counters.inc("boots", build=str(build))
        self._event(plan.identity.mac, "firstboot", file=what, build=build)
        return text

    def phone_home(self, node_key: str, build_ref: str, token: str, client_ip: str | None,
                   fields: dict[str, str]) -> None:
        """A node reports it booted. Only with the token its first-boot config carried, so a
        host that was never handed that config cannot fake the report (TokenRefused)."""
        w = self.refresh()
        mac = self.check_token(node_key, build_ref, token, "phone-home", client_ip)
        plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip))
        node = plan.node if isinstance(plan, BootPlan) else None
        # The build is the one this node was served, signed into its token: cloud-init's own
        # phone_home sends no build field. One the node does send is kept as what it claims.
        claimed = fields.get("build", "")[:200] or None
        hostname = fields.get("hostname", "")[:253]
        log.info("phone-home mac=%s node=%s hostname=%s build=%s claimed=%s",
                 mac, node, hostname, build_ref, claimed)
        self.counters.inc("phone_homes", build=build_ref)
        self.state.phoned_home(mac, self.clock(), build=build_ref, hostname=hostname,
                               ip=client_ip, node=node, claimed_build=claimed,
                               instance_id=fields.get("instance_id", "")[:200],
                               fqdn=fields.get("fqdn", "")[:253] or None,
                               **_optional_fields(fields))

    def boot_report(self, node_key: str, build_ref: str, client_ip: str | None,
                    fields: dict[str, str]) -> str:
        """The node's final word after cloud-init: ``ready`` (status done) or ``failed``
        (anything else, with cloud-init's errors). The caller checked the token."""
        w = self.refresh()
        mac = normalize_mac(node_key)
        report = parse_boot_report(fields)
        plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip))
        node = plan.node if isinstance(plan, BootPlan) else None
        log.info("report mac=%s node=%s build=%s: %s%s", mac, node, build_ref, report.state,
                 "" if not report.errors else f" ({len(report.errors)} errors)")
        self.counters.inc("boot_reports", state=report.state)
        self.state.reported(mac, self.clock(), state=report.state, build=build_ref,
                            ip=client_ip, node=node, **report.detail())
        return report.state

    def reimage_report(self, node_key: str, action_id: int, client_ip: str | None,
                       fields: dict[str, str]) -> Action:
        """The installer's report. ``done``: the node boots local from now on; anything else:
        the order stays open (the node stays in reimage) with the reason recorded."""
        w = self.refresh()
        if self.registry is None:
            raise NotFound("this server keeps no reimage orders (quick mode)")
        mac = normalize_mac(node_key)
        action = self.registry.action(action_id)
        node = w.inventory.find_node(ClientIdentity(mac=mac))
        if action.kind != "reimage" or node is None or node.name != action.node:
            raise NotFound(f"reimage action {action_id} is not for {mac}")
        ok = fields.get("status") == "done"
        reason = fields.get("reason", "")[:500] if not ok else \
            f"wrote {fields.get('bytes', '?')} bytes, sha256 {fields.get('sha256', '?')[:64]}"
        if not ok and not reason:
            reason = f"installer reported status {fields.get('status', '')[:40]!r}"
        done = self.registry.finish_reimage(action_id, ok=ok, reason=reason, now=self.clock())
        self.refresh()  # the order is closed: the next request is answered from a new World
        log.info("reimage %s node=%s mac=%s image=%s: %s", "done" if ok else "FAILED",
                 action.node, mac, action.image, reason)
        self._event(mac, "reimage-done" if ok else "reimage-failed", node=action.node,
                    image=action.image, action=action_id, reason=reason)
        return done

    def http_sent(self, path: str, client_ip: str | None, status: int) -> None:
        mac = self.mac_for_ip(client_ip) if client_ip else None
        self._event(mac, "http-sent", path=path, status=status)

    def render_plan(self, ident: ClientIdentity) -> BootPlan | Decline:
        """For ``netbootd render``: the plan, exactly as a server that saw ``ident`` decides."""
        w = self.refresh()
        self.sightings.saw(ident)
        return self._plan(w, ident)

    def render_files(self, plan: BootPlan, target: BootTarget | None) -> list[RenderedFile]:
        """Every dynamic file the node of ``plan`` fetches after DHCP answered ``target``."""
        w = self.refresh()
        ident = plan.identity
        if target is None:  # no loader for this arch: the node gets nothing
            prefixes: tuple[str, ...] = ()
        elif ident.arch is None:
            prefixes = w.pxelinux_prefixes
        elif not target.via_http and target.bootfile in \
                w.config.loaders.bootfiles["pxelinux"].values():
            prefixes = (target.bootfile.split("/", 1)[0],)
        else:
            prefixes = ()
        grub = None
        if target is not None and plan.loader == "grub":  # choose_bootfile named GRUB or shim
            grub = target.bootfile.split("/", 1)[0] if not target.via_http else \
                (w.grub_prefixes[0] if w.grub_prefixes else None)
            prefixes = ()
        runs_ipxe = target is not None and grub is None and (ident.arch is None or not prefixes)
        by_guid = ident.guid is not None and ident.guid not in w.intent.ambiguous_guids and \
            w.inventory.find_node(ClientIdentity(guid=ident.guid)) is not None
        return self._renderer(w).files_for(plan, prefixes, runs_ipxe, by_guid, grub)


# Facts a node may add to its phone-home, kept in the event when present: the demo agent
# reports the UEFI Secure Boot state it read (on, off, or none for BIOS).
_REPORTED = {"secure_boot": {"on", "off", "none", "unknown"}}


def _optional_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, allowed in _REPORTED.items() if (v := fields.get(k, "")) in allowed}


def _arch_name(arch: Arch | None) -> str | None:
    return None if arch is None else arch.name.lower()
