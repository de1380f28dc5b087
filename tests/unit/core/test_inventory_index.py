"""The MAC-prefix index of ``Inventory`` picks exactly the group a walk over every selector picks.

The index is a performance measure (bench ``decide.p99``); this checks it never changes a
decision: for many random groups (prefixes of every length and case, mixed with other
selector keys) and random clients, ``Inventory.match`` equals the reference: the first group,
in (most keys, name) order, whose selector matches.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from netbootd.config import BootSettings, GroupSpec, Selector
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.inventory import Inventory, selector_matches

HEX = "0123456789abcdefABCDEF"


def _mac(rng: random.Random) -> str:
    return ":".join(f"{rng.choice([0x02, 0x52, 0xaa]) if i == 0 else rng.randrange(4):02x}"
                    for i in range(6))


def _group(rng: random.Random, i: int) -> GroupSpec:
    prefixes: tuple[str, ...] = ()
    if rng.random() < 0.8:
        prefixes = tuple(_mac(rng)[: rng.choice([2, 5, 8, 11])] for _ in range(rng.randint(1, 2)))
        prefixes = tuple(p.upper() if rng.random() < 0.3 else p for p in prefixes)
    arch = ("bios",) if rng.random() < 0.3 else ()
    vendor = ("PXEClient",) if rng.random() < 0.2 else ()
    sel = Selector(arch=arch, mac_prefix=prefixes, vendor_class=vendor)
    return GroupSpec(name=f"g{i:03d}", settings=BootSettings(), match=sel)


def _reference(groups: list[GroupSpec], ident: ClientIdentity) -> str:
    ordered = sorted((g for g in groups if g.match and g.match.specificity),
                     key=lambda g: (-(g.match.specificity if g.match else 0), g.name))
    for g in ordered:
        assert g.match is not None
        if selector_matches(g.match, ident):
            return g.name
    return "default"


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_index_decides_like_a_walk_over_every_selector(seed: int) -> None:
    rng = random.Random(seed)
    groups = [_group(rng, i) for i in range(rng.randint(0, 40))]
    default = GroupSpec(name="default", settings=BootSettings(), default=True)
    inventory = Inventory([*groups, default], [])
    for _ in range(40):
        ident = ClientIdentity(mac=_mac(rng) if rng.random() < 0.95 else None,
                               arch=rng.choice([Arch(0), Arch(7), None]),
                               vendor_class=rng.choice(["PXEClient:Arch:00000", None]))
        m = inventory.match(ident)
        assert m is not None
        assert m.group.name == _reference(groups, ident)
