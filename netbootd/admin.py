"""The admin core: every change an admin can make, and every view, for the CLI and the API.

``netbootd image|channel|node ...`` and ``/api/v1`` call these same methods, so the two cannot
disagree. Each method validates its input against the store and the intent as they are now,
raises a NetbootdError whose message says what to do, and returns plain JSON-ready data. The
running server notices changes by itself (``Responder.refresh``); nothing here signals it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.admin_json import (
    ROLLBACK_KEEP,
    build_json,
    build_roles,
    build_users,
    lease_json,
    load_or_create_token,
    record_json,
)
from netbootd.admin_next import next_boot
from netbootd.config import BootSettings, Config, NodeSpec
from netbootd.core.funnel import BuildRoles, event_build, funnel
from netbootd.core.identity import (
    ClientIdentity,
    is_identifying_guid,
    normalize_guid,
    normalize_mac,
)
from netbootd.core.intent import NodeOverride, ReimageOrder
from netbootd.core.inventory import Inventory, apply_bindings, identity_key
from netbootd.errors import BuildError, Conflict, NotFound
from netbootd.state.events import BootEvent, NodeRecord, StateDB
from netbootd.state.leases import LeaseDB
from netbootd.state.registry import Registry, state_unavailable
from netbootd.store import importer, maintenance
from netbootd.store.builds import load_store
from netbootd.store.catalog import BuildCatalog
from netbootd.store.channels import CHANNEL_RE
from netbootd.store.importer import Progress
from netbootd.store.sniff import check_import

__all__ = ["MODES_SETTABLE", "ROLLBACK_KEEP", "Admin", "build_roles", "load_or_create_token"]

MODES_SETTABLE = ("appliance", "local", "menu", "discover")


@dataclass
class Admin:
    config: Config
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        state_dir = self.config.server.state_dir
        try:
            self.registry = Registry(self.config.intent_database)
        except (sqlite3.OperationalError, PermissionError) as e:
            raise state_unavailable(state_dir, e) from e
        try:
            self.state = StateDB(self.config.events_database)
        except (sqlite3.OperationalError, PermissionError) as e:
            self.registry.close()
            raise state_unavailable(state_dir, e) from e
        self._leases_path = state_dir / "leases.sqlite3"
        self._leases: LeaseDB | None = None

    def leases(self) -> LeaseDB | None:
        """Server mode's lease table (opened once it exists), or None."""
        if self._leases is None:
            self._leases = LeaseDB.open_readonly(self._leases_path)
        return self._leases

    def close(self) -> None:
        self.registry.close()
        self.state.close()
        if self._leases is not None:
            self._leases.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> Path:
        return self.config.server.store_dir

    def catalog(self) -> tuple[BuildCatalog, list[str]]:
        return load_store(self.store)

    def inventory(self) -> Inventory:
        bindings = {b.identity: b.node for b in self.registry.bindings()}
        nodes = apply_bindings([*self.config.nodes, *self.registry.adopted_nodes()], bindings)
        return Inventory(self.config.groups, nodes)

    # -- builds --------------------------------------------------------------------------------
    def builds(self) -> list[dict[str, Any]]:
        catalog, _ = self.catalog()
        users = self._build_users()
        return [build_json(b, users.get(b.ref, [])) for b in catalog.all()]

    def build(self, ref: str) -> dict[str, Any]:
        catalog, _ = self.catalog()
        b = catalog.get(ref)
        out = build_json(b, self._build_users().get(ref, []))
        out["files"] = {n: {"size": i.size, "sha256": i.sha256}
                        for n, i in sorted(b.manifest.files.items())}
        out["cmdline"] = b.manifest.cmdline
        if b.manifest.esxi is not None:
            e = b.manifest.esxi
            out["esxi"] = {"kernel": e.kernel, "modules": list(e.modules),
                           "kernelopt": e.kernelopt, "title": e.title}
        if b.manifest.disk is not None:
            d = b.manifest.disk
            out["disk"] = {"file": d.file, "compression": d.compression,
                           "raw_size": d.raw_size, "raw_sha256": d.raw_sha256}
        return out

    def import_build(self, kind: str, *, name: str | None = None, version: str | None = None,
                     paths: list[Path], cmdline: str = "", rootfs: Path | None = None,
                     description: str = "", progress: Progress | None = None,
                     arch: str | None = None) -> dict[str, Any]:
        """``kind``: linux (paths = kernel, initrds...), tree (one directory or tarball),
        disk (one image), esxi (one installer ISO); see ``importer.import_kind``."""
        check_import(kind, paths, rootfs)  # an ISO is not a kernel: say which --kind fits
        m = importer.import_kind(self.store, kind, name=name, version=version, paths=paths,
                                 cmdline=cmdline, rootfs=rootfs, description=description,
                                 progress=progress, arch=arch)
        return self.build(m.ref)

    def verify(self, ref: str | None = None) -> dict[str, Any]:
        catalog, problems = self.catalog()
        builds = [catalog.get(ref)] if ref else catalog.all()
        found = [str(p) for b in builds for p in maintenance.verify_build(b)]
        return {"verified": [b.ref for b in builds], "problems": found + problems,
                "ok": not found and not problems}

    def remove(self, ref: str) -> dict[str, Any]:
        catalog, _ = self.catalog()
        catalog.get(ref)
        users = self._build_users().get(ref, [])
        if users:
            raise Conflict(f"build {ref} is still needed by {'; '.join(users)}: move those "
                           "first (channel set, node set, config), then remove it")
        maintenance.remove_build(self.store, ref)
        return {"removed": ref}

    def gc(self) -> dict[str, Any]:
        r = maintenance.gc(self.store)
        return {"blobs_removed": r.blobs_removed, "bytes_freed": r.bytes_freed,
                "staging_removed": r.staging_removed}

    def _build_users(self) -> dict[str, list[str]]:
        return build_users(self.config, self.registry)

    # -- channels ------------------------------------------------------------------------------
    def channels(self) -> dict[str, str]:
        return dict(sorted(self.registry.channels().items()))

    def channel_set(self, channel: str, ref: str, *, who: str, why: str = "") -> dict[str, Any]:
        if not CHANNEL_RE.match(channel):
            raise BuildError(f"channel name {channel!r}: use 1-64 of letters, digits, '.', "
                             "'_', '-'")
        catalog, _ = self.catalog()
        catalog.get(ref)  # NotFound lists the builds there are
        return self.registry.set_channel(channel, ref, who=who, why=why,
                                         now=self.clock()).as_json()

    def channel_rollback(self, channel: str, *, to: str | None = None, who: str,
                         why: str = "", force: bool = False) -> dict[str, Any]:
        """Back to the previous build, or ``to`` one the channel had; ``force`` allows a
        ``to`` the channel never pointed at (which is a ``set`` in all but name)."""
        if channel not in self.registry.channels():
            raise NotFound(f"no channel {channel!r} (channels: "
                           f"{', '.join(sorted(self.registry.channels())) or 'none'})")
        if to is not None and not force:
            had = list(dict.fromkeys(b for e in self.registry.history(channel)
                                     for b in (e.to_build, e.from_build) if b))
            if to not in had:
                raise Conflict(f"channel {channel} never pointed at {to} (it had: "
                               f"{', '.join(had)}); roll back to one of those, or add "
                               f"--force (API: \"force\": true) to move it there anyway")
        target = self.registry.rollback_target(channel, to)
        catalog, _ = self.catalog()
        catalog.get(target)
        return self.registry.set_channel(channel, target, who=who, why=why, now=self.clock(),
                                         action="rollback").as_json()

    def channel_history(self, channel: str) -> list[dict[str, Any]]:
        hist = self.registry.history(channel)
        if not hist:
            raise NotFound(f"no channel {channel!r} (channels: "
                           f"{', '.join(sorted(self.registry.channels())) or 'none'})")
        return [e.as_json() for e in hist]

    # -- nodes ---------------------------------------------------------------------------------
    def nodes(self, discovered: bool = False) -> list[dict[str, Any]]:
        if discovered:
            return [record_json(r) for r in self.state.discovered()]
        inv = self.inventory()
        records = {r.node: r for r in self.state.nodes() if r.node}
        adopted = {n.name for n in self.registry.adopted_nodes()}
        overrides = self.registry.overrides()
        orders = self.registry.open_orders()
        nxt = self._next_boot(inv)
        return [self._view(n, records.get(name), name in adopted, overrides, orders, nxt)
                for name, n in sorted(inv.nodes.items())]

    def _next_boot(self, inv: Inventory) -> Callable[[NodeSpec, NodeRecord | None],
                                                    dict[str, Any]]:
        """The planner's answer for a node, over the store and intent as they are now."""
        catalog, _ = self.catalog()
        nodes = list(inv.nodes.values())
        ambiguous = frozenset(g for g, macs in self.state.shared_guids().items()
                              if not any(macs <= set(n.macs) for n in nodes))
        intent = self.registry.intent(self.config.reimage.installer, ambiguous)
        return lambda n, seen: next_boot(n, seen, inv, catalog, intent)

    def _view(self, n: NodeSpec, record: NodeRecord | None, adopted: bool,
              overrides: dict[str, NodeOverride], orders: dict[str, ReimageOrder],
              nxt: Callable[[NodeSpec, NodeRecord | None], dict[str, Any]]
              ) -> dict[str, Any]:
        ov = overrides.get(n.name)
        return {
            "next": nxt(n, record),
            "name": n.name, "source": "adopted" if adopted else "config",
            "macs": list(n.macs), "guids": list(n.guids), "serials": list(n.serials),
            "group": n.group, "hostname": n.hostname or n.name,
            "override": None if ov is None else
            {"build": ov.build, "channel": ov.channel, "mode": ov.mode},
            "reimage": None if n.name not in orders else
            self.registry.action(orders[n.name].action_id).as_json(),
            "seen": None if record is None else record_json(record),
            "lease": lease_json(self.leases(), n.macs, self.clock())}

    def node(self, name: str) -> dict[str, Any]:
        return self._detail(self._node(name))

    def _detail(self, n: NodeSpec) -> dict[str, Any]:
        """One node's view, its actions and recent events; reads only what concerns it."""
        record = self.state.node_named(n.name)
        view = self._view(n, record, self.registry.is_adopted(n.name),
                          self.registry.overrides(), self.registry.open_orders(),
                          self._next_boot(self.inventory()))
        view["actions"] = [a.as_json() for a in self.registry.actions(n.name)]
        mac = n.macs[0] if n.macs else (view["seen"] or {}).get("mac")
        view["timeline"] = [] if not mac else [
            {"id": e.id, "ts": e.ts, "kind": e.kind, "detail": e.detail}
            for e in self.state.timeline(mac)[-200:]]
        return view

    def _node(self, name: str) -> NodeSpec:
        inv = self.inventory()
        if name not in inv.nodes:
            raise NotFound(f"no node {name!r} (nodes: {', '.join(sorted(inv.nodes)) or 'none'};"
                           " unknown machines that booted: `netbootd node list --discovered`)")
        return inv.nodes[name]

    def adopt(self, mac: str, name: str, *, group: str | None = None,
              hostname: str | None = None, who: str) -> dict[str, Any]:
        """Turn a discovered machine into an inventory node (with the GUID and serial it
        was seen with, when they identify it)."""
        mac = _mac(mac)
        if not CHANNEL_RE.match(name):
            raise BuildError(f"node name {name!r}: use 1-64 of letters, digits, '.', '_', '-'")
        inv = self.inventory()
        if name in inv.nodes:
            raise Conflict(f"a node named {name!r} exists already; pick another name")
        if (other := inv.find_node(ClientIdentity(mac=mac))) is not None:
            raise Conflict(f"{mac} already belongs to node {other.name!r}; use "
                           f"`netbootd node rebind` to move it")
        if group is not None and group not in inv.groups:
            raise NotFound(f"no group {group!r} (groups: {', '.join(sorted(inv.groups))})")
        rec = self.state.node(mac)
        if rec is None:
            raise NotFound(f"{mac} has never booted here; adopt a machine after it PXE-booted "
                           "(see `netbootd node list --discovered`), or add it to the config")
        shared = self.state.shared_guids()
        guids = (rec.guid,) if rec.guid and is_identifying_guid(rec.guid) and \
            rec.guid not in shared and inv.find_node(ClientIdentity(guid=rec.guid)) is None \
            else ()
        spec = NodeSpec(name=name, settings=BootSettings(), macs=(mac,), guids=guids,
                        serials=(rec.serial,) if rec.serial else (), group=group,
                        hostname=hostname)
        self.registry.adopt(spec, who=who, now=self.clock())
        self.state.saw(ClientIdentity(mac=mac), self.clock(), node=name)
        return self._detail(spec)

    def rebind(self, name: str, *, mac: str | None = None, guid: str | None = None,
               serial: str | None = None, who: str) -> dict[str, Any]:
        """Move an identity (a new NIC, a new dock's MAC) to an existing node."""
        self._node(name)
        given = [(k, v) for k, v in (("mac", mac), ("guid", guid), ("serial", serial)) if v]
        if len(given) != 1:
            raise BuildError("rebind takes exactly one of --mac, --uuid, --serial")
        kind, value = given[0]
        if kind == "mac":
            value = _mac(value)
        elif kind == "guid":
            try:
                value = normalize_guid(value)
            except ValueError as e:
                raise BuildError(f"--uuid: {e}") from None
            if not is_identifying_guid(value):
                raise BuildError(f"{value} is a placeholder GUID that identifies nobody")
        self.registry.bind(identity_key(kind, value), name, who=who, now=self.clock())
        if kind == "mac":
            self.state.saw(ClientIdentity(mac=value), self.clock(), node=name)
        return self.node(name)

    def reimage(self, name: str, image: str, *, who: str) -> dict[str, Any]:
        self._node(name)
        catalog, _ = self.catalog()
        b = catalog.get(image)
        if b.kind != "disk":
            raise BuildError(f"{image} is a {b.kind} build; reimage writes a disk image "
                             "(`netbootd image import --kind disk`)")
        inst = self.config.reimage.installer
        if inst is None:
            raise BuildError("no installer configured: set [reimage] installer = NAME/VERSION "
                             "(build it with images/installer/build.py)")
        ref = inst if "/" in inst else self.registry.channels().get(inst)
        if ref is None or ref not in catalog:
            raise NotFound(f"the installer {inst} is not in the store (known: "
                           f"{', '.join(catalog.refs()) or 'none'})")
        return self.registry.order_reimage(name, image, who=who, now=self.clock()).as_json()

    def cancel_reimage(self, name: str, *, who: str) -> dict[str, Any]:
        """Withdraw the node's open reimage order; the answer is the cancelled action."""
        self._node(name)
        return self.registry.cancel_reimage(name, who=who, now=self.clock()).as_json()

    def set_node(self, name: str, *, build: str | None = None, channel: str | None = None,
                 mode: str | None = None, clear: bool = False) -> dict[str, Any]:
        """Run-time override of a node's build (pin), channel or mode; ``clear`` drops it."""
        self._node(name)
        if clear:
            self.registry.set_override(name, NodeOverride(), now=self.clock())
            return self.node(name)
        if build and channel:
            raise BuildError("set a build (pin) or a channel (follow), not both")
        if build:
            catalog, _ = self.catalog()
            catalog.get(build)
        if channel and not CHANNEL_RE.match(channel):
            raise BuildError(f"channel name {channel!r} is not valid")
        if mode is not None and mode not in MODES_SETTABLE:
            raise BuildError(f"mode {mode!r} is not one of {', '.join(MODES_SETTABLE)}")
        old = self.registry.overrides().get(name, NodeOverride())
        new = NodeOverride(build=build if build or channel else old.build,
                           channel=channel if build or channel else old.channel,
                           mode=mode if mode is not None else old.mode)
        self.registry.set_override(name, new, now=self.clock())
        return self.node(name)

    def timeline(self, who: str) -> dict[str, Any]:
        """Boot events of a node (by name) or of a MAC."""
        try:
            mac = normalize_mac(who)
        except ValueError:
            n = self._node(who)
            seen = self.state.node_named(n.name)  # a node known by GUID or serial only
            if not n.macs and seen is None:
                raise NotFound(f"node {who!r} has no MAC to look up its events by, and has "
                               "not booted yet") from None
            mac = n.macs[0] if n.macs else seen.mac if seen else ""
        events = self.state.timeline(mac)
        return {"mac": mac, "events": [{"id": e.id, "ts": e.ts, "kind": e.kind,
                                        "detail": e.detail} for e in events],
                "funnel": funnel(events, self._roles(events)).as_json()}

    def _roles(self, events: list[BootEvent]) -> dict[str, BuildRoles]:
        """Kernel, initrd and root file system of each build the events name (from the
        builds' manifests; a build since removed has none, so its files count as loader)."""
        refs = {b for e in events if (b := event_build(e))}
        if not refs:
            return {}
        catalog, _ = self.catalog()
        out = {}
        for ref in refs:
            try:
                out[ref] = build_roles(catalog.get(ref))
            except NotFound:
                continue
        return out


def _mac(value: str) -> str:
    try:
        return normalize_mac(value)
    except ValueError as e:
        raise BuildError(f"{value!r}: {e}") from None
