"""Decision cost: ``decide()`` against a large inventory, and the cost of adding one node.

The inventory is the one :func:`bench.peers.netbootd_config` writes: N nodes (each pinned to a
group by MAC) and G groups, each with a two-key selector (``mac_prefix`` and ``arch``). The
identities asked about are a mix, a third each: a configured node, an unknown MAC that one
group's selector matches, and an unknown MAC no selector matches (the worst case: every
selector is tried before the default group answers).

Adding a node, two ways an operator does it:

- at run time, ``netbootd node adopt`` (the admin API's ``Admin.adopt``) of a machine that has
  PXE-booted: timed from the call to the running service's first decision that names the new
  node (the service notices the registry change and rebuilds its inventory);
- by editing the config: one more ``[nodes.x]`` in the TOML file and a reload, i.e.
  ``load_config`` of the whole file plus building the ``Inventory`` again.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.peers import Files, netbootd_config

if TYPE_CHECKING:
    from netbootd.config import Config


@dataclass
class DecisionCost:
    nodes: int
    groups: int
    p50_us: float
    p99_us: float
    max_us: float
    add_node_ms: float  # admin adopt -> first decision naming the node, median of the repeats
    reload_ms: float  # load_config + Inventory (config edit + SIGHUP), median of the repeats
    parse_ms: float
    index_ms: float


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))]


def measure(workdir: Path, files: Files, nodes: int, groups: int, samples: int,
            repeats: int = 3) -> DecisionCost:
    from netbootd.config import load_config
    from netbootd.core.identity import Arch, ClientIdentity
    from netbootd.core.inventory import Inventory
    from netbootd.core.planner import decide
    from netbootd.store.builds import load_store

    workdir.mkdir(parents=True, exist_ok=True)
    path = netbootd_config(workdir, files, extra_nodes=nodes, extra_groups=groups)
    config = load_config(path)
    inventory = Inventory(config.groups, config.nodes)
    catalog, _ = load_store(files.store)
    rng = random.Random(4)
    idents = []
    for i in range(samples):
        kind = i % 3
        if kind == 0:
            n = rng.randrange(nodes)
            mac = f"52:54:01:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
        elif kind == 1:
            g = rng.randrange(groups)
            mac = f"02:{g >> 8:02x}:{g & 255:02x}:00:00:{rng.randrange(256):02x}"
        else:
            mac = f"0a:00:00:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}"
        idents.append(ClientIdentity(mac=mac, arch=Arch(0), vendor_class="PXEClient"))
    for ident in idents[:200]:  # warm-up
        decide(ident, inventory, catalog)
    times = []
    clock = time.perf_counter_ns
    for ident in idents:
        t0 = clock()
        decide(ident, inventory, catalog)
        times.append((clock() - t0) / 1000)
    times.sort()

    adopt = [_adopt_ms(config, f"52:54:03:00:00:{i:02x}", f"adopted{i}") for i in range(repeats)]

    # One more node in the file, reloaded.
    with path.open("a") as f:
        f.write('\n[nodes.added]\nmac = "52:54:02:00:00:01"\n')
    parse, index, total = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        new = load_config(path)
        t1 = time.perf_counter()
        Inventory(new.groups, new.nodes)
        t2 = time.perf_counter()
        parse.append((t1 - t0) * 1000)
        index.append((t2 - t1) * 1000)
        total.append((t2 - t0) * 1000)
    return DecisionCost(nodes, groups, _pct(times, 50), _pct(times, 99), times[-1],
                        sorted(adopt)[len(adopt) // 2], sorted(total)[len(total) // 2],
                        sorted(parse)[len(parse) // 2], sorted(index)[len(index) // 2])


def _adopt_ms(config: Config, mac: str, name: str) -> float:
    """Admin.adopt of a machine that booted once, until the service's decision names it."""
    from netbootd.admin import Admin
    from netbootd.core.identity import Arch, ClientIdentity
    from netbootd.core.plan import BootPlan
    from netbootd.service import Service

    service = Service(config)
    try:
        ident = ClientIdentity(mac=mac, arch=Arch(0), vendor_class="PXEClient")
        service.responder.dhcp_boot_target(ident, is_ipxe=False, http_boot=False,
                                           message="offer")
        t0 = time.perf_counter()
        with Admin(config) as admin:
            admin.adopt(mac, name, who="bench")
        plan = service.responder.plan_for(ident)
        took = (time.perf_counter() - t0) * 1000
        if not isinstance(plan, BootPlan) or plan.node != name:
            raise RuntimeError(f"adopted {name} but the service decided {plan}")
        return took
    finally:
        asyncio.run(service.stop())
