"""The World: one immutable value holding everything an answer is decided from, and its watcher.

A ``World`` is the config, the build catalog, the inventory (config nodes plus adopted ones,
rebound identities moved), the intent (channels, overrides, open reimage orders, the GUIDs
that identify nobody), the renderer and the TFTP folders that get dynamic config names. It
never changes: a change makes a new World with the next ``generation`` number, and the
``WorldWatcher`` swaps it in with one attribute assignment (``watcher.world``), so a request
answered from one World sees one consistent picture even when a flip lands mid-request.

When a new World is made:

- the store's generation marker moved (an import, a removal): the catalog is re-read;
- the intent database changed (``PRAGMA data_version``: another process, e.g. the CLI or
  the admin API, wrote): channels and orders are re-read;
- a GUID began or stopped being shared in a way that changes who it identifies (in-memory
  counter of the state database; a storm of clones of one GUID does not rebuild per packet);
- the service reloads its config (``reload``).

When the intent store cannot be read (its database is unreachable), ``current()`` goes on
answering from the last World: nodes boot as they did a moment before, a change of the store
or a reload still applies to the catalog and config (the inventory and intent stay as last
read), the outage is logged once (``DatabaseHealth``) and the store is asked again only at
the health's retry pace, not per packet. The first read that works again makes a new World at
once, so changes made elsewhere during the outage apply without a restart.

Staleness bound: the markers are looked at once per request, by the edge, before the request
is answered (one stat(2) and one in-memory SQLite pragma), so a change committed before a
request arrives is in the World that answers it: a channel flip applies at the very next
boot (tests/integration/test_channel_flip.py). Nothing is looked at again while answering.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from netbootd.answers import World, grub_prefixes, pxelinux_prefixes
from netbootd.config import Config
from netbootd.core.intent import Intent
from netbootd.core.inventory import Inventory, apply_bindings
from netbootd.core.model import BuildCatalog
from netbootd.render.node_files import NodeRenderer
from netbootd.state.events import StateDB
from netbootd.state.health import UNAVAILABLE, DatabaseHealth
from netbootd.state.registry import Registry
from netbootd.store.builds import HashCache, load_store
from netbootd.store.layout import GenerationWatch

log = logging.getLogger("netbootd.decision")

__all__ = ["World", "WorldWatcher", "make_world"]


def make_world(generation: int, config: Config, catalog: BuildCatalog, renderer: NodeRenderer,
               state: StateDB, registry: Registry | None) -> World:
    """Inventory = config nodes + adopted nodes, with rebound identities moved; intent =
    channels, overrides, open reimage orders and the GUIDs that identify nobody."""
    if registry is None:
        inventory = Inventory(config.groups, config.nodes)
        intent = Intent(installer=config.reimage.installer)
    else:
        bindings = {b.identity: b.node for b in registry.bindings()}
        nodes = apply_bindings([*config.nodes, *registry.adopted_nodes()], bindings)
        inventory = Inventory(config.groups, nodes)
        ambiguous = frozenset(
            g for g, macs in state.shared_guids().items()
            if not any(macs <= set(n.macs) for n in nodes))  # one machine's NICs are fine
        intent = registry.intent(config.reimage.installer, ambiguous)
    return World(generation, config, catalog, inventory, intent, renderer,
                 pxelinux_prefixes(config), grub_prefixes(config))


class WorldWatcher:
    """Makes a new World when the store, the intent or GUID sharing changed; the edges read
    ``current()`` once per request and answer from what it returns."""

    def __init__(self, config: Config, catalog: BuildCatalog, renderer: NodeRenderer,
                 state: StateDB, *, registry: Registry | None = None,
                 store_dir: Path | None = None, verify: HashCache | None = None,
                 health: DatabaseHealth | None = None) -> None:
        self.state = state
        self.health = health if health is not None else DatabaseHealth("the state directory")
        self.registry = registry
        self.store_dir = store_dir  # None in quick mode, whose catalog is fixed
        self.verify = verify  # server.verify_builds: re-hash new build files on each reload
        self._store_watch = GenerationWatch(store_dir) if store_dir is not None else None
        self._guid_epoch = state.guid_epoch
        state.take_guid_changes()
        if registry is not None:
            registry.changed()  # what is read below is the state seen
        self.world = make_world(0, config, catalog, renderer, state, registry)

    def current(self) -> World:
        w = self.world
        catalog, renderer = w.catalog, w.renderer
        if self._store_watch is not None and self.store_dir is not None \
                and self._store_watch.changed():
            catalog, problems = load_store(self.store_dir, self.verify)
            for p in problems:
                log.warning("store: %s", p)
            renderer = NodeRenderer(renderer.env, renderer.urls, catalog, renderer.reimage_target)
            log.info("store changed: builds=%s", ", ".join(catalog.refs()) or "none")
        intent_changed = False
        if self.registry is not None and self.health.may_try():
            try:
                intent_changed = self.registry.changed() or self._guids_changed(w.intent)
            except UNAVAILABLE as e:
                self.health.failed(e)
            else:
                # Back after an outage: read everything again (what changed meanwhile).
                intent_changed = self.health.ok() or intent_changed
        if catalog is not w.catalog or intent_changed:
            self._swap(w.config, catalog, renderer)
        return self.world

    def reload(self, config: Config, catalog: BuildCatalog, renderer: NodeRenderer) -> World:
        """A reloaded config and store: a new World at once."""
        return self._swap(config, catalog, renderer)

    def _swap(self, config: Config, catalog: BuildCatalog, renderer: NodeRenderer) -> World:
        self._guid_epoch = self.state.guid_epoch
        self.state.take_guid_changes()
        w = self.world
        if self.registry is not None and not self.health.may_try():
            self.world = self._last_intent(config, catalog, renderer)
            return self.world
        try:
            self.world = make_world(w.generation + 1, config, catalog, renderer, self.state,
                                    self.registry)
            if self.registry is not None:
                self.health.ok()
        except UNAVAILABLE as e:
            self.health.failed(e)
            self.world = self._last_intent(config, catalog, renderer)
        return self.world

    def _last_intent(self, config: Config, catalog: BuildCatalog,
                     renderer: NodeRenderer) -> World:
        """A World of the new config and catalog with the inventory and intent last read."""
        w = self.world
        intent = dataclasses.replace(w.intent, installer=config.reimage.installer)
        return World(w.generation + 1, config, catalog, w.inventory, intent, renderer,
                     pxelinux_prefixes(config), grub_prefixes(config))

    def _guids_changed(self, intent: Intent) -> bool:
        """Whether GUID sharing changed in a way that can change the intent.

        A GUID that already identifies nobody stays so when more MACs show it: a storm of
        machines with one cloned GUID must not rebuild the World per DHCP packet (bench
        dhcp.max-rate, docs/performance.md)."""
        if self.state.guid_epoch == self._guid_epoch:
            return False
        self._guid_epoch = self.state.guid_epoch
        joined, left = self.state.take_guid_changes()
        return bool(left) or any(g not in intent.ambiguous_guids for g in joined)
