"""Power actions on named nodes: one (``node power``, the admin API) or a batch with one
result per node (``node reimage --now`` of several, rollouts that power-cycle a batch).

``PowerControl`` reads the credentials file when an action needs it (so a fixed file is
picked up without a restart), looks up each node's spec, runs its driver, and turns what
happened into a ``PowerResult``. ``run`` raises for a single node (the CLI maps the error to
an exit code); ``batch`` never raises for one node's failure: every node gets its result,
and the batch drives at most ``[power] parallel`` nodes at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from netbootd.errors import BuildError, NetbootdError, NotFound
from netbootd.power.credentials import Secret, load_credentials, secret_for
from netbootd.power.driver import ACTIONS, PowerDriver, PowerResult
from netbootd.power.ipmi import IpmiDriver
from netbootd.power.spec import PowerConfig, PowerSpec
from netbootd.power.wol import WolDriver

Recorder = Callable[[PowerResult], None]


def driver_for(spec: PowerSpec, timeout: float) -> PowerDriver:
    if spec.driver == "ipmi":
        return IpmiDriver(spec, timeout=timeout)
    return WolDriver(spec)


class PowerControl:
    """Power actions for the nodes of one ``[power]`` config.

    ``record`` (optional) is told every result, failed ones included: the admin core writes
    it to the node's timeline as a ``power`` event (without secrets, which results never
    hold). ``drivers`` replaces ``driver_for`` (tests hand in a driver that counts calls)."""

    def __init__(self, power: PowerConfig, *, record: Recorder | None = None,
                 drivers: Callable[[PowerSpec, float], PowerDriver] = driver_for,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.power = power
        self._record = record
        self._drivers = drivers
        self._clock = clock

    def spec(self, node: str) -> PowerSpec:
        spec = self.power.nodes.get(node)
        if spec is None:
            have = ", ".join(sorted(self.power.nodes)) or "none"
            raise BuildError(f"node {node!r} has no power control: give it power = "
                             f"{{ driver = \"ipmi\", address = ..., user = ... }} (or driver = "
                             f"\"wol\") in the config (nodes with power: {have})")
        return spec

    def _credentials(self) -> Mapping[str, Secret]:
        path: Path | None = self.power.credentials
        return load_credentials(path) if path is not None else {}

    def _secret(self, node: str, spec: PowerSpec,
                creds: Mapping[str, Secret] | None) -> str | None:
        if spec.driver != "ipmi":
            return None
        if creds is None:
            creds = self._credentials()
        s = secret_for(creds, node, spec.credential)
        if s is None:
            name = spec.credential or node
            raise BuildError(f"node {node!r}: the credentials file {self.power.credentials} "
                             f"has no [{name}] (nor [default]) with its BMC password")
        return s.value

    def run(self, node: str, action: str, *,
            creds: Mapping[str, Secret] | None = None) -> PowerResult:
        """Do ``action`` on ``node``; raises NetbootdError (after recording the failure)."""
        if action not in ACTIONS:
            raise BuildError(f"power action {action!r} is not one of {', '.join(ACTIONS)}")
        spec = self.spec(node)
        t0 = self._clock()
        try:
            state = self._drivers(spec, self.power.timeout).run(
                action, self._secret(node, spec, creds))
        except NetbootdError as e:
            self._tell(PowerResult(node, action, spec.driver, False, "unknown", str(e),
                                   self._clock() - t0))
            raise
        result = PowerResult(node, action, spec.driver, True, state,
                             _done(action, state, spec.driver), self._clock() - t0)
        self._tell(result)
        return result

    def batch(self, nodes: Sequence[str], action: str = "cycle") -> list[PowerResult]:
        """``action`` on every node, in the order given; failures are results, not raised."""
        try:
            creds = self._credentials() if any(
                (s := self.power.nodes.get(n)) is not None and s.driver == "ipmi"
                for n in nodes) else {}
        except NetbootdError as e:
            return [PowerResult(n, action, self._driver_name(n), False, "unknown", str(e), 0.0)
                    for n in nodes]

        def one(node: str) -> PowerResult:
            t0 = self._clock()
            try:
                return self.run(node, action, creds=creds)
            except NetbootdError as e:
                return PowerResult(node, action, self._driver_name(node), False, "unknown",
                                   str(e), self._clock() - t0)

        if not nodes:
            return []
        with ThreadPoolExecutor(max_workers=min(self.power.parallel, len(nodes)),
                                thread_name_prefix="power") as pool:
            return list(pool.map(one, nodes))

    def _driver_name(self, node: str) -> str:
        spec = self.power.nodes.get(node)
        return spec.driver if spec else "none"

    def _tell(self, result: PowerResult) -> None:
        if self._record is not None:
            self._record(result)


def _done(action: str, state: str, driver: str) -> str:
    if driver == "wol":
        return "Wake-on-LAN packet sent; the node's next boot event shows it woke"
    if action == "status":
        return f"power is {state}"
    return f"power {action} done; power is {state}"


def unknown_nodes(nodes: Sequence[str], known: Sequence[str]) -> None:
    """Raise NotFound naming the nodes of ``nodes`` that are not in ``known``."""
    missing = [n for n in nodes if n not in known]
    if missing:
        raise NotFound(f"no node {', '.join(map(repr, missing))} (nodes: "
                       f"{', '.join(sorted(known)) or 'none'})")
