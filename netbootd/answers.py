"""Pure answers: the World value, the effects answers return, DHCP, iPXE and ``render``.

TFTP names are answered in answers_tftp.py and what booted nodes send back in
answers_reports.py, the same way. Each ``answer_*`` function takes the World, the parsed
request (an identity already enriched with what earlier packets showed,
``state/sightings.py``) and, where tokens or times enter the reply, ``now``; it returns the
reply and the effects to apply (events, counters, IP -> MAC pairs), and changes nothing. The
edges are pipes around them: parse -> answer -> send -> apply the effects
(``AnswerBase.apply`` writes events to the state database). ``netbootd render`` calls the
same functions on the same kind of World and drops the events, so what it prints is what
the server serves, the boot file included.

This module is in the pure ring (tests/unit/test_purity.py): no clock, sockets, disk or
database; the World's parts are values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from netbootd.config import Config
from netbootd.core.bootfile import BootTarget, NoLoader, choose_bootfile
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.intent import Intent
from netbootd.core.inventory import Inventory
from netbootd.core.model import BuildCatalog
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.render.node_files import NodeRenderer, RenderedFile
from netbootd.render.tokens import BUCKET
from netbootd.render.urls import SiteUrls


@dataclass(frozen=True, slots=True)
class World:
    """Everything an answer is decided from; never changes (docs/architecture.md)."""

    generation: int
    config: Config
    catalog: BuildCatalog
    inventory: Inventory
    intent: Intent
    renderer: NodeRenderer
    # TFTP folders holding a pxelinux binary (each gets a dynamic pxelinux.cfg/), and those
    # GRUB's images and shim are served from (each gets the dynamic grub.cfg names).
    pxelinux_prefixes: tuple[str, ...]
    grub_prefixes: tuple[str, ...]

    @property
    def urls(self) -> SiteUrls:
        return self.renderer.urls


def pxelinux_prefixes(config: Config) -> tuple[str, ...]:
    return tuple(sorted({p.split("/", 1)[0]
                         for p in config.loaders.bootfiles["pxelinux"].values()}))


def grub_prefixes(config: Config) -> tuple[str, ...]:
    b = config.loaders.bootfiles
    return tuple(sorted({p.split("/", 1)[0] for t in ("grub", "shim")
                         for p in b.get(t, {}).values()}))


# -- events an answer asks to be recorded ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Event:
    """One line of a node's timeline (``StateDB.record``)."""

    mac: str
    kind: str
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SawNode:
    """The client was recognised as ``node`` (``StateDB.saw`` with the node's name)."""

    identity: ClientIdentity
    node: str


Recorded = Event | SawNode


@dataclass(frozen=True, slots=True)
class Count:
    """A counter to increment (``metrics.Counters.inc``)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LearnIp:
    """The request tied ``ip`` to ``mac`` (core/ip_macs.py): later requests from the address
    without a MAC in them land in that node's timeline."""

    ip: str
    mac: str


# What an answer asks the edge to do after replying, in order (``AnswerBase.apply``).
Effect = Event | SawNode | Count | LearnIp


def event(mac: str | None, kind: str, **detail: object) -> tuple[Recorded, ...]:
    """The event ``kind`` in ``mac``'s timeline (none when the client's MAC is unknown)."""
    return () if mac is None else (Event(mac, kind, detail),)


def saw(plan: BootPlan) -> tuple[Recorded, ...]:
    return () if plan.node is None else (SawNode(plan.identity, plan.node),)


def arch_name(arch: Arch | None) -> str | None:
    return None if arch is None else arch.name.lower()


def plan_of(world: World, ident: ClientIdentity,
            build_override: str | None = None) -> BootPlan | Decline:
    """The node's one plan in this World (``ident`` already enriched by sightings)."""
    return decide(ident, world.inventory, world.catalog, build_override, world.intent)


# -- rendered text, cached ---------------------------------------------------------------------
class AnswerCache:
    """Rendered text of a node's config (iPXE script, pxelinux cfg, GRUB cfg), bounded LRU.

    The text is a function of the question, the plan, the World and the first-boot tokens in
    it; the plan is a function of the World and the (enriched) identity, and a token of the
    node, the subject and the issue time rounded down to ``tokens.BUCKET``. So the key
    (question, the plan's identity, build and mode, World generation, token bucket) gives the
    very text a fresh render would: the node's own tokens, issued in the same bucket. Events
    are not cached: each request records its own."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._texts: OrderedDict[Hashable, str] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def text(self, world: World, kind: str, plan: BootPlan, now: float,
             render: Callable[[NodeRenderer, BootPlan], str]) -> str:
        key = (kind, plan.identity, plan.build.ref if plan.build else None, plan.mode,
               world.generation, int(now) // BUCKET)
        texts = self._texts
        found = texts.get(key)
        if found is not None:
            texts.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        made = render(world.renderer.at(now), plan)
        texts[key] = made
        if len(texts) > self.capacity:
            texts.popitem(last=False)
        return made


# -- DHCP ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DhcpAnswer:
    """What to boot (``target``), or silence with ``reason``; ``plan`` is what was decided
    (a Decline, or a plan for which no loader fits the arch)."""

    plan: BootPlan | Decline
    target: BootTarget | None
    reason: str | None
    events: tuple[Recorded, ...]


def answer_dhcp(world: World, ident: ClientIdentity, *, is_ipxe: bool, http_boot: bool,
                kind: str) -> DhcpAnswer:
    """A PXE client's DISCOVER/REQUEST (``kind`` is ``offer`` or ``ack``,
    ``PxeRequest.answer_kind``): what it should boot, or silence (a ``dhcp-decline`` event)."""
    plan = plan_of(world, ident)
    if isinstance(plan, Decline):
        return DhcpAnswer(plan, None, plan.reason,
                          event(ident.mac, "dhcp-decline", reason=plan.reason))
    try:
        target = choose_bootfile(plan, ident.arch, is_ipxe=is_ipxe, http_boot=http_boot,
                                 bootfiles=world.config.loaders.bootfiles,
                                 http_base=world.urls.http_base,
                                 server_ip=world.config.server.address)
    except NoLoader as e:
        return DhcpAnswer(plan, None, str(e), event(ident.mac, "dhcp-decline", reason=str(e)))
    events = saw(plan) + event(
        ident.mac, f"dhcp-{kind}", bootfile=target.bootfile, arch=arch_name(ident.arch),
        guid=ident.guid, ipxe=is_ipxe, http_boot=http_boot, node=plan.node, group=plan.group,
        build=plan.build.ref if plan.build else None, mode=plan.mode)
    return DhcpAnswer(plan, target, None, events)


# -- the iPXE script -----------------------------------------------------------------------
def answer_ipxe(world: World, ident: ClientIdentity, now: float,
                cache: AnswerCache | None = None) -> tuple[str, tuple[Recorded, ...]]:
    """The node's iPXE script (first-boot tokens issued at ``now``), or a script that says
    why it is not booted."""
    plan = plan_of(world, ident)
    if isinstance(plan, Decline):
        return (f"#!ipxe\necho netbootd: not booting this node: {plan.reason}\nexit 1\n",
                event(ident.mac, "ipxe-decline", reason=plan.reason))
    events = saw(plan) + event(ident.mac, "ipxe-script", node=plan.node, group=plan.group,
                                 build=plan.build.ref if plan.build else None, mode=plan.mode)
    if cache is None:
        return world.renderer.at(now).ipxe_script(plan), events
    return cache.text(world, "ipxe", plan, now, NodeRenderer.ipxe_script), events


# -- every file a node fetches (render) ------------------------------------------------------
def node_files(world: World, plan: BootPlan, target: BootTarget | None,
               now: float) -> list[RenderedFile]:
    """Every dynamic file the node of ``plan`` fetches after DHCP answered ``target``
    (None: no loader for its arch, it gets nothing)."""
    ident = plan.identity
    if target is None:
        prefixes: tuple[str, ...] = ()
    elif ident.arch is None:
        prefixes = world.pxelinux_prefixes
    elif not target.via_http and target.bootfile in \
            world.config.loaders.bootfiles["pxelinux"].values():
        prefixes = (target.bootfile.split("/", 1)[0],)
    else:
        prefixes = ()
    grub = None
    if target is not None and plan.loader == "grub":  # choose_bootfile named GRUB or shim
        grub = target.bootfile.split("/", 1)[0] if not target.via_http else \
            (world.grub_prefixes[0] if world.grub_prefixes else None)
        prefixes = ()
    runs_ipxe = target is not None and grub is None and (ident.arch is None or not prefixes)
    by_guid = ident.guid is not None and ident.guid not in world.intent.ambiguous_guids and \
        world.inventory.find_node(ClientIdentity(guid=ident.guid)) is not None
    return world.renderer.at(now).files_for(plan, prefixes, runs_ipxe, by_guid, grub)
