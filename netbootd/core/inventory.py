"""Nodes and groups: which inventory entry and which group a ClientIdentity belongs to.

Matching rules (pure, deterministic):
- a node matches by GUID, then serial, then MAC (a GUID names the machine; a MAC can move with a
  USB dongle or a dock, so it is the weakest identifier);
- a node's group is the one it names; otherwise the group whose selectors match with the most
  selector keys (most specific wins), ties broken by group name; otherwise the default group.

Selectors are tried in that order, but not all of them: groups that select on ``mac_prefix``
are indexed by their prefixes, so a client is checked only against groups whose prefix its MAC
starts with, plus the groups without one. With 1 000 MAC-prefix groups this turns a walk over
every selector into a few dictionary lookups (bench/run.py ``decide.p99``); the winner is the
same, since a group left out could not have matched.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from netbootd.core.identity import ClientIdentity, is_identifying_guid
from netbootd.core.model import GroupSpec, NodeSpec, Selector


@dataclass(frozen=True, slots=True)
class Match:
    node: NodeSpec | None
    group: GroupSpec


class Inventory:
    """Index of nodes by GUID, serial and MAC, plus the groups; immutable once built."""

    def __init__(self, groups: Iterable[GroupSpec], nodes: Iterable[NodeSpec]) -> None:
        self.groups = {g.name: g for g in groups}
        self.nodes = {n.name: n for n in nodes}
        self._by_guid = {g: n for n in self.nodes.values() for g in n.guids
                         if is_identifying_guid(g)}
        self._by_serial = {s: n for n in self.nodes.values() for s in n.serials}
        self._by_mac = {m: n for n in self.nodes.values() for m in n.macs}
        defaults = [g for g in self.groups.values() if g.default]
        self.default_group = defaults[0] if defaults else None
        # Most specific first, then by name: the first selector that matches wins.
        self._selective = sorted(
            (g for g in self.groups.values() if g.match is not None and g.match.specificity),
            key=lambda g: (-(g.match.specificity if g.match else 0), g.name))
        # Position in that order, so candidates from the index are tried in the same order.
        self._rank = {g.name: i for i, g in enumerate(self._selective)}
        self._unprefixed: list[GroupSpec] = []
        self._by_prefix: dict[str, list[GroupSpec]] = {}
        for g in self._selective:
            assert g.match is not None
            if not g.match.mac_prefix:
                self._unprefixed.append(g)
            for p in {p.lower() for p in g.match.mac_prefix}:
                self._by_prefix.setdefault(p, []).append(g)
        self._prefix_lengths = sorted({len(p) for p in self._by_prefix})

    def find_node(self, ident: ClientIdentity) -> NodeSpec | None:
        if ident.guid and (n := self._by_guid.get(ident.guid)):
            return n
        if ident.serial and (n := self._by_serial.get(ident.serial)):
            return n
        if ident.mac and (n := self._by_mac.get(ident.mac)):
            return n
        return None

    def match(self, ident: ClientIdentity) -> Match | None:
        """The node (if any) and group for ``ident``; None when there is no group at all."""
        node = self.find_node(ident)
        if node is not None and node.group is not None:
            return Match(node, self.groups[node.group])
        for g in self._candidates(ident.mac):
            assert g.match is not None
            if selector_matches(g.match, ident):
                return Match(node, g)
        return Match(node, self.default_group) if self.default_group else None

    def _candidates(self, mac: str | None) -> list[GroupSpec]:
        """Groups that may match a client with this MAC, in selector order."""
        if not self._by_prefix:
            return self._unprefixed
        found: list[GroupSpec] = []
        if mac:
            mac = mac.lower()
            for n in self._prefix_lengths:
                if n > len(mac):
                    break
                found.extend(self._by_prefix.get(mac[:n], ()))
        if not found:
            return self._unprefixed
        return sorted({g.name: g for g in (*found, *self._unprefixed)}.values(),
                      key=lambda g: self._rank[g.name])


def _prefix_any(value: str | None, prefixes: tuple[str, ...]) -> bool:
    return value is not None and any(value.lower().startswith(p.lower()) for p in prefixes)


def _glob_any(value: str | None, patterns: tuple[str, ...]) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value.lower(), p.lower())
                                     for p in patterns)


def selector_matches(sel: Selector, ident: ClientIdentity) -> bool:
    """True when every selector key that is set matches the identity."""
    checks: tuple[tuple[tuple[str, ...], Callable[[], bool]], ...] = (
        (sel.arch, lambda: ident.arch is not None and ident.arch.family in sel.arch),
        (sel.mac_prefix, lambda: _prefix_any(ident.mac, sel.mac_prefix)),
        (sel.vendor_class, lambda: _prefix_any(ident.vendor_class, sel.vendor_class)),
        (sel.user_class, lambda: _glob_any(ident.user_class, sel.user_class)),
        (sel.manufacturer, lambda: _glob_any(ident.manufacturer, sel.manufacturer)),
        (sel.product, lambda: _glob_any(ident.product, sel.product)),
        (sel.serial, lambda: _glob_any(ident.serial, sel.serial)),
    )
    return all(check() for wanted, check in checks if wanted)


def identity_key(kind: str, value: str) -> str:
    """How a binding names an identity: ``mac:<mac>``, ``guid:<guid>``, ``serial:<serial>``."""
    return f"{kind}:{value}"


def apply_bindings(nodes: Iterable[NodeSpec], bindings: Mapping[str, str]) -> list[NodeSpec]:
    """Move each bound identity (``node rebind``: a new NIC, a new dock) to its node.

    The identity is taken from whichever node had it and given to the named one; bindings to
    nodes that do not exist are ignored (the node was removed from the config)."""
    out = {n.name: n for n in nodes}
    fields = {"mac": "macs", "guid": "guids", "serial": "serials"}
    for ident, target in sorted(bindings.items()):
        kind, _, value = ident.partition(":")
        attr = fields.get(kind)
        if attr is None or target not in out:
            continue
        for name, n in list(out.items()):
            have: tuple[str, ...] = getattr(n, attr)
            if value in have and name != target:
                out[name] = _with(n, attr, tuple(v for v in have if v != value))
        t = out[target]
        if value not in getattr(t, attr):
            out[target] = _with(t, attr, (*getattr(t, attr), value))
    return list(out.values())


def _with(n: NodeSpec, attr: str, values: tuple[str, ...]) -> NodeSpec:
    if attr == "macs":
        return replace(n, macs=values)
    if attr == "guids":
        return replace(n, guids=values)
    return replace(n, serials=values)
