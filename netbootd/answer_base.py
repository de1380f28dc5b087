"""What every answer shares: the World to answer from, the plan, the client facts, events.

``AnswerBase`` holds what is learnt about clients as they ask (``Sightings``, the IP -> MAC
pairs of core/ip_macs.py) and the ``WorldWatcher``; each request takes one World from it
(``refresh``) and decides from that. The answers themselves are in responder.py (DHCP, iPXE,
render), tftp_names.py (TFTP file names) and reports.py (first boot, phone-home, reports).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from netbootd.answers import AnswerCache, Count, Effect, LearnIp, SawNode, plan_of
from netbootd.core.identity import ClientIdentity, normalize_mac
from netbootd.core.ip_macs import IpMacs
from netbootd.core.plan import BootPlan, Decline
from netbootd.errors import NotFound
from netbootd.metrics import Counters
from netbootd.render.node_files import NodeRenderer
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from netbootd.state.sightings import Sightings
from netbootd.store.catalog import Build
from netbootd.world import World, WorldWatcher


class AnswerBase:
    """The Responder's shared part; its attributes are set by ``Responder.__init__``."""

    state: StateDB
    registry: Registry | None
    watcher: WorldWatcher
    sightings: Sightings
    counters: Counters
    clock: Callable[[], float]  # the time answers are given at (tests and render pin it)
    _mac_by_ip: IpMacs
    answer_cache: AnswerCache

    def refresh(self) -> World:
        """The World to answer the request that is starting from (the watcher looks)."""
        return self.watcher.current()

    def build(self, ref: str) -> Build:
        """A build by NAME/VERSION, from the store as it is now (NotFound lists the known)."""
        return self.refresh().catalog.get(ref)

    def learn_ip(self, ip: str, mac: str) -> None:
        self._mac_by_ip.learn(ip, mac, self.clock())

    def mac_for_ip(self, ip: str) -> str | None:
        """The MAC last learnt at ``ip``, if learnt within ``state.ip_mac_ttl`` seconds."""
        return self._mac_by_ip.mac_for(ip, self.clock())

    def _renderer(self, w: World) -> NodeRenderer:
        """The renderer for an answer given now (first-boot tokens are issued per answer)."""
        return w.renderer.at(self.clock())

    def _text(self, w: World, kind: str, plan: BootPlan,
              render: Callable[[NodeRenderer, BootPlan], str]) -> str:
        """A node's rendered config, from the answer cache when this World already made it
        in this token bucket (netbootd/answers.py)."""
        return self.answer_cache.text(w, kind, plan, self.clock(), render)

    def plan_for(self, ident: ClientIdentity,
                 build_override: str | None = None) -> BootPlan | Decline:
        return self._plan(self.refresh(), ident, build_override)

    def _plan(self, w: World, ident: ClientIdentity,
              build_override: str | None = None) -> BootPlan | Decline:
        return plan_of(w, self.sightings.enrich(ident), build_override)

    def apply(self, effects: Iterable[Effect]) -> None:
        """Do what an answer asked (netbootd/answers.py), in order: events to the state
        database at the time the answer was given, counters, IP -> MAC pairs learnt."""
        now = self.clock()
        for e in effects:
            if isinstance(e, SawNode):
                self.state.saw(e.identity, now, node=e.node)
            elif isinstance(e, Count):
                self.counters.inc(e.name, 1, **e.labels)
            elif isinstance(e, LearnIp):
                self._mac_by_ip.learn(e.ip, e.mac, now)
            else:
                self.state.record(e.mac, e.kind, now, **e.detail)

    def _event(self, mac: str | None, kind: str, **detail: object) -> None:
        if mac is not None:
            self.state.record(mac, kind, self.clock(), **detail)

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
