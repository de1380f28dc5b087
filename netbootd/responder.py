"""Answers for every protocol, each from the node's one BootPlan, and the boot timeline.

The endpoints (dhcp/, tftp/, web/) call in here with what they parsed; this module enriches
the identity with what was seen before (``Sightings``), calls the pure answer (answers.py)
and applies the effects it returns. It holds no protocol rules of its own. This module pipes
DHCP, iPXE and ``render``; TFTP names are piped by tftp_names.py, what booted nodes send back
by reports.py, the parts they share are in answer_base.py.

Client IP -> MAC: the proxy never assigns addresses, but a PXE client's DHCPREQUEST to the
site server carries option 50 (requested address, RFC 2131 section 4.3.2), and later requests
carry the MAC in their path or query; both teach us which MAC stands behind a TFTP or HTTP
source address, so loader and kernel downloads land in the right node's timeline. The pairs
expire like leases and the newest MAC at an address wins (core/ip_macs.py): a request that
cannot be tied to a node that way gets the default answer, never another node's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from netbootd.answers import (
    AnswerCache,
    DhcpAnswer,
    answer_dhcp,
    answer_ipxe,
    arch_name,
    node_files,
)
from netbootd.config import Config
from netbootd.core.bootfile import BootTarget
from netbootd.core.identity import ClientIdentity
from netbootd.core.intent import Intent
from netbootd.core.inventory import Inventory
from netbootd.core.ip_macs import IpMacs
from netbootd.core.plan import BootPlan, Decline
from netbootd.metrics import Counters
from netbootd.render.node_files import NodeRenderer, RenderedFile
from netbootd.render.urls import SiteUrls
from netbootd.reports import NodeReports
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from netbootd.state.sightings import Sightings
from netbootd.store.builds import HashCache
from netbootd.store.catalog import BuildCatalog
from netbootd.tftp_names import Rendered, StaticFile, TftpNames
from netbootd.world import World, WorldWatcher

log = logging.getLogger("netbootd.decision")

__all__ = ["Rendered", "Responder", "StaticFile"]


class Responder(TftpNames, NodeReports):
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
        self.answer_cache = AnswerCache(config.state.max_clients)
        self.clock = clock
        self._mac_by_ip = IpMacs(config.state.ip_mac_ttl, config.state.max_clients)
        # Told each plan a DHCP answer names (an edge prefetches its build's files).
        self.plan_observers: list[Callable[[BootPlan], None]] = []

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
        self.answer_cache.capacity = max(1, config.state.max_clients)
        self._mac_by_ip.ttl = config.state.ip_mac_ttl
        self._mac_by_ip.capacity = config.state.max_clients

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
        answer = answer_dhcp(w, self.sightings.enrich(ident), is_ipxe=is_ipxe,
                             http_boot=http_boot, kind=message)
        self.apply(answer.events)
        plan, target = answer.plan, answer.target
        if target is None:
            log.info("decline mac=%s guid=%s arch=%s: %s", ident.mac, ident.guid,
                     arch_name(ident.arch), answer.reason)
            return None
        assert isinstance(plan, BootPlan)  # a target is only chosen for a plan
        for observe in self.plan_observers:
            observe(plan)
        log.info("%s mac=%s guid=%s arch=%s node=%s group=%s build=%s mode=%s bootfile=%s",
                 message, ident.mac, ident.guid, arch_name(ident.arch), plan.node, plan.group,
                 plan.build.ref if plan.build else None, plan.mode, target.bootfile)
        return target

    def ipxe_script(self, ident: ClientIdentity) -> str:
        if ident.mac:
            self.observe_dhcp(ident)  # what iPXE tells us of itself, as in a DHCP packet
        w = self.refresh()
        text, events = answer_ipxe(w, self.sightings.enrich(ident), self.clock(),
                                   self.answer_cache)
        self.apply(events)
        return text

    def http_sent(self, path: str, client_ip: str | None, status: int) -> None:
        mac = self.mac_for_ip(client_ip) if client_ip else None
        self._event(mac, "http-sent", path=path, status=status)

    def render_dhcp(self, ident: ClientIdentity, *, is_ipxe: bool,
                    http_boot: bool) -> DhcpAnswer:
        """For ``netbootd render``: the DHCP answer a server that saw ``ident`` gives, by the
        same function; its events are the caller's to drop."""
        w = self.refresh()
        self.sightings.saw(ident)
        return answer_dhcp(w, self.sightings.enrich(ident), is_ipxe=is_ipxe,
                           http_boot=http_boot, kind="offer")

    def render_plan(self, ident: ClientIdentity) -> BootPlan | Decline:
        """For ``netbootd render``: the plan, exactly as a server that saw ``ident`` decides."""
        w = self.refresh()
        self.sightings.saw(ident)
        return self._plan(w, ident)

    def render_files(self, plan: BootPlan, target: BootTarget | None) -> list[RenderedFile]:
        """Every dynamic file the node of ``plan`` fetches after DHCP answered ``target``."""
        return node_files(self.refresh(), plan, target, self.clock())
