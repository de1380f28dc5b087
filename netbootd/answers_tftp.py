"""Pure answers to TFTP file names: the node's rendered config, a build file, or a loader file.

The dynamic names (docs/boot-flows.md): ``<prefix>/pxelinux.cfg/{<uuid>,01-<mac>,default}``
in each folder holding a pxelinux binary, ``<prefix>/grub.cfg*`` where GRUB's images and shim
are, ``esxi/<mac>/<name>/<version>/boot.cfg``; build files by manifest only; everything else
from the loader folders.

Two steps, both pure. ``tftp_question`` parses a name into the question it asks (which MAC,
address or GUIDs name the node), from the World alone. The edge (tftp_names.py) then reads
what the World does not hold about those clients, because it changes with every packet: what
their packets showed (``Sightings``), the MAC learnt at an address (core/ip_macs.py), the MAC
the state database stored for a GUID (it survives a restart). It hands them over as one value,
``Seen``, and ``answer_tftp_name`` decides from the World, the question, ``Seen`` and ``now``,
returning the reply and the effects to apply (IP -> MAC pairs learnt, a ``grub-decline``
event). A loader file is looked up on disk by the edge (containment resolves symlinks,
paths.py), so its answer is the name to look up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from netbootd.answers import AnswerCache, Effect, LearnIp, World, event, plan_of
from netbootd.answers_reports import node_mac, plan_by_key
from netbootd.core.client_path import split_client_path
from netbootd.core.identity import ClientIdentity, guid_candidates, normalize_mac
from netbootd.core.plan import BootPlan, Decline
from netbootd.errors import NotFound
from netbootd.render.node_files import NodeRenderer, RenderError

_HEX_IP = re.compile(r"^[0-9A-F]{1,8}$")
_UNKNOWN = "client not identified (no MAC known for its address)"


# -- replies -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rendered:
    """A file rendered for this client from its plan."""

    text: str


@dataclass(frozen=True, slots=True)
class StaticFile:
    path: Path
    kind: str  # "loader" or "build"
    build: str | None = None


# -- questions ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A per-node config name (``pxelinux.cfg/*``, ``grub.cfg-*``) and what names the node:
    the MAC in it, the MAC learnt at an address (``default``, ``grub.cfg-ip-<a.b.c.d>``), or
    the GUIDs it can spell that a node is configured by (either byte order)."""

    kind: str  # "pxelinux" or "grub": what is rendered (and the answer cache's key)
    label: str  # the name, as refusals quote it
    client_ip: str
    mac: str | None = None
    ip: str | None = None
    by_guid: bool = False
    guids: tuple[str, ...] = ()  # of a name by GUID: those that configure a node

    @property
    def ips(self) -> tuple[str, ...]:
        """The addresses whose learnt MAC this answer may use."""
        return (self.ip,) if self.ip else (self.client_ip,) if self.by_guid else ()


@dataclass(frozen=True, slots=True)
class GrubDispatch:
    """``grub.cfg`` itself: the dispatcher that asks the per-MAC or per-IP name."""


@dataclass(frozen=True, slots=True)
class BuildFile:
    file: StaticFile


@dataclass(frozen=True, slots=True)
class EsxiBootCfg:
    mac: str
    build_ref: str
    client_ip: str


@dataclass(frozen=True, slots=True)
class LoaderName:
    """A file from the loader folders (``config.loaders.dirs``), looked up by the edge."""

    path: str


Question = NodeConfig | GrubDispatch | BuildFile | EsxiBootCfg | LoaderName


def tftp_question(world: World, filename: str, client_ip: str) -> Question:
    """What the TFTP name ``filename`` asks; NotFound or PathRefused for a name that asks
    nothing netbootd serves."""
    parts = split_client_path(filename)
    head = parts[0]
    if head in world.pxelinux_prefixes and len(parts) == 3 and parts[1] == "pxelinux.cfg":
        return _pxelinux_question(world, parts[2], client_ip)
    if head in world.grub_prefixes and len(parts) == 2 and parts[1].startswith("grub.cfg"):
        return _grub_question(world, parts[1], client_ip)
    if head == "builds" and len(parts) >= 4:
        build = world.catalog.get(f"{parts[1]}/{parts[2]}")
        return BuildFile(StaticFile(build.path_of("/".join(parts[3:])), "build", build.ref))
    if head == "esxi" and len(parts) == 5 and parts[4] == "boot.cfg":
        return EsxiBootCfg(node_mac(parts[1]), f"{parts[2]}/{parts[3]}", client_ip)
    return LoaderName(filename)


def _pxelinux_question(world: World, name: str, client_ip: str) -> Question:
    label = f"pxelinux.cfg/{name}"
    if name.startswith("01-"):
        try:
            mac = normalize_mac(name[3:])
        except ValueError:
            raise NotFound(f"{label}: not a MAC") from None
        return NodeConfig("pxelinux", label, client_ip, mac=mac)
    if len(name) == 36 and name.count("-") == 4:
        # pxelinux spells the GUID in raw byte order; firmware may use the canonical one.
        return NodeConfig("pxelinux", label, client_ip, by_guid=True,
                          guids=_configured(world, name))
    if name == "default":
        return NodeConfig("pxelinux", label, client_ip, ip=client_ip)
    if _HEX_IP.match(name):
        raise NotFound(f"{label}: configs are per GUID and MAC")
    raise NotFound(f"{label}: no such config")


def _grub_question(world: World, name: str, client_ip: str) -> Question:
    """GRUB's config names (docs/boot-flows.md): ``grub.cfg-<uuid>`` (asked first: only
    a node configured by that GUID answers), ``grub.cfg-01-<mac>`` (grub-mknetdir's
    images ask it next; the ``grub.cfg`` dispatcher asks it with colons, as GRUB spells
    ``$net_default_mac``), ``grub.cfg-ip-<a.b.c.d>`` (the dispatcher, when GRUB knows no
    MAC), hex-IP names (not found: configs are per MAC) and ``grub.cfg`` itself."""
    if name == "grub.cfg":
        return GrubDispatch()
    if name.startswith("grub.cfg-01-"):
        try:
            mac = normalize_mac(name[len("grub.cfg-01-"):])
        except ValueError:
            raise NotFound(f"{name}: not a MAC") from None
        return NodeConfig("grub", name, client_ip, mac=mac)
    if name.startswith("grub.cfg-ip-"):
        return NodeConfig("grub", name, client_ip, ip=name[len("grub.cfg-ip-"):])
    if len(name) == len("grub.cfg-") + 36 and name.count("-") == 5:
        # GRUB 2.06 (Debian) asks grub.cfg-<SMBIOS UUID> before the MAC name.
        return NodeConfig("grub", name, client_ip, by_guid=True,
                          guids=_configured(world, name[len("grub.cfg-"):]))
    if _HEX_IP.match(name[len("grub.cfg-"):]):
        raise NotFound(f"{name}: configs are per MAC")
    raise NotFound(f"{name}: no such config")


def _configured(world: World, name: str) -> tuple[str, ...]:
    """The GUIDs ``name`` can spell that configure a node. Only such a node answers a GUID
    name; anyone else gets "not found" and the loader goes on to its per-MAC name. So does a
    GUID seen on several machines: it identifies none of them."""
    try:
        candidates = guid_candidates(name)
    except ValueError:
        raise NotFound(f"{name}: not a GUID") from None
    return tuple(g for g in candidates if g not in world.intent.ambiguous_guids
                 and world.inventory.find_node(ClientIdentity(guid=g)) is not None)


# -- what the edge read about the clients a question names -----------------------------------
_NONE: Mapping[str, Any] = MappingProxyType({})


def _none() -> Mapping[str, Any]:
    return _NONE  # shared, and immutable: no dict made per request
@dataclass(frozen=True, slots=True)
class Seen:
    """Facts about the clients a question names, read by the edge before the call."""

    NOTHING: ClassVar[Seen]

    by_mac: Mapping[str, ClientIdentity] = field(default_factory=_none)  # Sightings.by_mac
    by_guid: Mapping[str, ClientIdentity] = field(default_factory=_none)  # Sightings.by_guid
    mac_at: Mapping[str, str] = field(default_factory=_none)  # IP -> MAC learnt there
    stored: Mapping[str, str] = field(default_factory=_none)  # GUID -> MAC in the state DB

    def enrich(self, ident: ClientIdentity) -> ClientIdentity:
        """``ident`` completed with what was seen before for its MAC or GUID (as
        ``Sightings.enrich``)."""
        seen = (self.by_mac.get(ident.mac) if ident.mac else None) or \
            (self.by_guid.get(ident.guid) if ident.guid else None)
        return ident.merged_with(seen) if seen is not None else ident


Seen.NOTHING = Seen()


# -- the answer --------------------------------------------------------------------------------
TftpReply = Rendered | StaticFile | LoaderName


def answer_tftp_name(world: World, question: Question, seen: Seen, now: float,
                     cache: AnswerCache | None = None) -> tuple[TftpReply, tuple[Effect, ...]]:
    """The reply to ``question`` (first-boot tokens in it issued at ``now``) and the effects
    to apply; NotFound when no node answers it."""
    if isinstance(question, NodeConfig):
        return _node_config(world, question, seen, now, cache)
    if isinstance(question, GrubDispatch):
        return Rendered(world.renderer.at(now).grub_dispatch()), ()
    if isinstance(question, BuildFile):
        return question.file, ()
    if isinstance(question, EsxiBootCfg):
        ident = seen.enrich(ClientIdentity(mac=question.mac, ip=question.client_ip))
        learnt: tuple[Effect, ...] = (LearnIp(question.client_ip, question.mac),) \
            if question.client_ip else ()
        plan = plan_by_key(world, ident, question.build_ref)
        try:
            return Rendered(world.renderer.at(now).esxi_boot_cfg(plan)), learnt
        except RenderError as e:  # e.g. the build named in the path is not an ESXi build
            raise NotFound(str(e)) from e
    return question, ()


_RENDER = {"pxelinux": NodeRenderer.pxelinux_config, "grub": NodeRenderer.grub_config}


def _text(world: World, kind: str, plan: BootPlan, now: float,
          cache: AnswerCache | None) -> Rendered:
    if cache is None:
        return Rendered(_RENDER[kind](world.renderer.at(now), plan))
    return Rendered(cache.text(world, kind, plan, now, _RENDER[kind]))


def _node_config(world: World, q: NodeConfig, seen: Seen, now: float,
                 cache: AnswerCache | None) -> tuple[TftpReply, tuple[Effect, ...]]:
    if q.by_guid:
        plan = _plan_by_guid(world, q, seen)
        if plan is None:
            raise NotFound(f"{q.label}: no node with this GUID")
        mac = plan.identity.mac
        return _text(world, q.kind, plan, now, cache), \
            ((LearnIp(q.client_ip, mac),) if mac else ())
    learnt: tuple[Effect, ...] = ()
    ident: ClientIdentity | None = None
    if q.mac is not None:
        learnt = (LearnIp(q.client_ip, q.mac),)
        ident = ClientIdentity(mac=q.mac, ip=q.client_ip)
    elif q.ip is not None and (known := seen.mac_at.get(q.ip)):
        ident = ClientIdentity(mac=known, ip=q.client_ip)
    decided = plan_of(world, seen.enrich(ident)) if ident is not None else Decline(_UNKNOWN)
    if isinstance(decided, BootPlan):
        return _text(world, q.kind, decided, now, cache), learnt
    renderer = world.renderer.at(now)
    if q.kind == "pxelinux":
        return Rendered(renderer.pxelinux_decline(decided.reason)), learnt
    return Rendered(renderer.grub_decline(decided.reason)), learnt + event(
        ident.mac if ident else None, "grub-decline", reason=decided.reason)


def _plan_by_guid(world: World, q: NodeConfig, seen: Seen) -> BootPlan | None:
    """The plan of the node configured by one of the question's GUIDs, or None: the loader
    then asks for its per-MAC name."""
    for guid in q.guids:
        # The MAC that sent this GUID in DHCP; after a restart, the stored one; as a last
        # resort, the MAC last seen at this address, if it is not another node's.
        ident = seen.enrich(ClientIdentity(guid=guid, ip=q.client_ip))
        if ident.mac is None:
            ident = replace(ident, mac=seen.stored.get(guid) or _ip_mac_of(world, guid, q, seen))
        plan = plan_of(world, seen.enrich(ident))
        if isinstance(plan, BootPlan):
            return plan
    return None


def _ip_mac_of(world: World, guid: str, q: NodeConfig, seen: Seen) -> str | None:
    """The MAC learnt at the asking address, only if it is not another node's: a plan (and
    the first-boot tokens in it) is never made with a MAC that names someone else."""
    mac = seen.mac_at.get(q.client_ip)
    if mac is None:
        return None
    node = world.inventory.find_node(ClientIdentity(guid=guid))
    owner = world.inventory.find_node(ClientIdentity(mac=mac))
    return mac if owner is None or node is None or owner.name == node.name else None
