"""Nodes and groups: which inventory entry and which group a ClientIdentity belongs to.

Matching rules (pure, deterministic):
- a node matches by GUID, then serial, then MAC (a GUID names the machine; a MAC can move with a
  USB dongle or a dock, so it is the weakest identifier);
- a node's group is the one it names; otherwise the group whose selectors match with the most
  selector keys (most specific wins), ties broken by group name; otherwise the default group.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netbootd.config import GroupSpec, NodeSpec, Selector
from netbootd.core.identity import ClientIdentity, is_identifying_guid


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
        for g in self._selective:
            assert g.match is not None
            if selector_matches(g.match, ident):
                return Match(node, g)
        return Match(node, self.default_group) if self.default_group else None


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
