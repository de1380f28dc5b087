"""What every answer's edge shares: the World to answer from, the client facts, applying.

``AnswerBase`` holds what is learnt about clients as they ask (``Sightings``, the IP -> MAC
pairs of core/ip_macs.py) and the ``WorldWatcher``; each request takes one World from it
(``refresh``), the pure answer decides from that, and ``apply`` does what it returned. The
answers are pure functions in answers.py (DHCP, iPXE, render), answers_tftp.py (TFTP file
names) and answers_reports.py (first boot, phone-home, reports); their edges are
responder.py, tftp_names.py and reports.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from netbootd.answers import AnswerCache, Count, Effect, LearnIp, SawNode, plan_of
from netbootd.core.identity import ClientIdentity
from netbootd.core.ip_macs import IpMacs
from netbootd.core.plan import BootPlan, Decline
from netbootd.metrics import Counters
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
    # Told after a node's ready/failed report is recorded (the service ticks rollouts).
    on_report: Callable[[], None] | None = None

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
