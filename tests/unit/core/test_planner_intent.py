"""decide() with run-time intent: channels, overrides, reimage orders, GUIDs that identify
nobody (core/intent.py, core/planner.py)."""

import hashlib
from pathlib import Path

import pytest

from helpers import make_config, make_store, write_build
from netbootd.core.identity import ClientIdentity
from netbootd.core.intent import Intent, NodeOverride, ReimageOrder
from netbootd.core.inventory import Inventory, apply_bindings
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.core.rollout import RolloutPin
from netbootd.store.builds import load_store
from netbootd.store.catalog import BuildCatalog

WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
DB1 = "52:54:00:00:00:02"
OTHER = "52:54:00:aa:bb:cc"


@pytest.fixture
def world(tmp_path: Path) -> tuple[Inventory, BuildCatalog]:
    store = make_store(tmp_path / "store")
    raw = b"disk" * 1000
    write_build(store, "lab-disk", "1", {"disk.img": raw}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": len(raw),
                      "raw_sha256": hashlib.sha256(raw).hexdigest()})
    config = make_config(tmp_path, {"groups": {
        "default": {"default": True, "channel": "kvm-stable"},
        "pinned": {"match": {"mac_prefix": "52:54:00:aa"}, "build": "demo/1.0"},
    }, "nodes": {
        "web1": {"uuid": WEB1_GUID},
        "db1": {"mac": DB1, "channel": "kvm-canary"},
        "fixed": {"mac": OTHER, "build": "demo/2.0", "group": "default"},
    }})
    catalog, problems = load_store(config.server.store_dir)
    assert problems == []
    return Inventory(config.groups, config.nodes), catalog


def decide_with(world: tuple[Inventory, BuildCatalog], intent: Intent,
                **ident: str) -> BootPlan | Decline:
    return decide(ClientIdentity(**ident), *world, intent=intent)  # type: ignore[arg-type]


def test_a_group_follows_its_channel(world: tuple[Inventory, BuildCatalog]) -> None:
    p = decide_with(world, Intent(channels={"kvm-stable": "demo/1.0"}), mac="52:54:00:00:00:09")
    assert isinstance(p, BootPlan) and p.build is not None
    assert (p.build.ref, p.channel) == ("demo/1.0", "kvm-stable")
    p = decide_with(world, Intent(channels={"kvm-stable": "demo/2.0"}), mac="52:54:00:00:00:09")
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/2.0"


def test_an_unset_channel_declines_and_says_what_to_run(
        world: tuple[Inventory, BuildCatalog]) -> None:
    d = decide_with(world, Intent(), mac="52:54:00:00:00:09")
    assert isinstance(d, Decline)
    assert "netbootd channel set kvm-stable" in d.reason


def test_most_specific_level_wins_and_a_pin_beats_a_channel(
        world: tuple[Inventory, BuildCatalog]) -> None:
    chans = {"kvm-stable": "demo/1.0", "kvm-canary": "demo/2.0"}
    p = decide_with(world, Intent(channels=chans), mac=DB1)  # node channel over group channel
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/2.0"
    assert p.channel == "kvm-canary"
    p = decide_with(world, Intent(channels=chans), mac=OTHER)  # node pin over group channel
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/2.0"
    assert p.channel is None
    # a run-time override beats the config; clearing it restores the config's choice
    ov = Intent(channels=chans, overrides={"fixed": NodeOverride(channel="kvm-stable")})
    p = decide_with(world, ov, mac=OTHER)
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/1.0"
    ov = Intent(channels=chans, overrides={"fixed": NodeOverride(mode="local")})
    p = decide_with(world, ov, mac=OTHER)
    assert isinstance(p, BootPlan) and p.mode == "local" and p.build is None


def test_a_reimage_order_boots_the_installer_with_the_disk(
        world: tuple[Inventory, BuildCatalog]) -> None:
    order = {"fixed": ReimageOrder(7, "lab-disk/1")}
    p = decide_with(world, Intent(reimage=order, installer="demo/1.0",
                                  overrides={"fixed": NodeOverride(mode="local")}), mac=OTHER)
    assert isinstance(p, BootPlan) and p.mode == "reimage"
    assert p.build is not None and p.build.ref == "demo/1.0"
    assert p.reimage is not None and p.reimage.action_id == 7
    assert p.reimage.disk.ref == "lab-disk/1"
    # an installer named by channel
    p = decide_with(world, Intent(reimage=order, installer="inst",
                                  channels={"inst": "demo/2.0"}), mac=OTHER)
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/2.0"


@pytest.mark.parametrize(("intent", "reason"), [
    (Intent(reimage={"fixed": ReimageOrder(1, "lab-disk/1")}), "no installer configured"),
    (Intent(reimage={"fixed": ReimageOrder(1, "demo/2.0")}, installer="demo/1.0"),
     "not a disk image"),
    (Intent(reimage={"fixed": ReimageOrder(1, "lab-disk/1")}, installer="esxi/8.0u3"),
     "not a linux build"),
    (Intent(reimage={"fixed": ReimageOrder(1, "lab-disk/1")}, installer="nochan"),
     "points at no build"),
])
def test_a_reimage_that_cannot_run_declines_with_its_reason(
        world: tuple[Inventory, BuildCatalog], intent: Intent, reason: str) -> None:
    d = decide_with(world, intent, mac=OTHER)
    assert isinstance(d, Decline) and reason in d.reason


def test_a_disk_build_is_never_booted_directly(world: tuple[Inventory, BuildCatalog]) -> None:
    d = decide_with(world, Intent(channels={"kvm-stable": "lab-disk/1"}), mac="52:54:00:0:0:9")
    assert isinstance(d, Decline) and "node reimage" in d.reason


def test_a_guid_seen_on_several_machines_matches_nobody(
        world: tuple[Inventory, BuildCatalog]) -> None:
    chans = {"kvm-stable": "demo/1.0"}
    p = decide_with(world, Intent(channels=chans), mac="52:54:00:00:00:10", guid=WEB1_GUID)
    assert isinstance(p, BootPlan) and p.node == "web1"
    p = decide_with(world, Intent(channels=chans, ambiguous_guids=frozenset({WEB1_GUID})),
                    mac="52:54:00:00:00:10", guid=WEB1_GUID)
    assert isinstance(p, BootPlan) and p.node is None and p.identity.guid is None


def test_rebinding_moves_an_identity_between_nodes(
        world: tuple[Inventory, BuildCatalog]) -> None:
    inv, _ = world
    nodes = apply_bindings(inv.nodes.values(), {f"mac:{OTHER}": "db1"})
    by_name = {n.name: n for n in nodes}
    assert OTHER in by_name["db1"].macs and OTHER not in by_name["fixed"].macs
    # a binding to a node that no longer exists is ignored
    assert apply_bindings(inv.nodes.values(), {f"mac:{OTHER}": "gone"}) == \
        list(inv.nodes.values())


def test_a_rollout_pin_moves_a_channel_follower_and_nothing_more_specific(
        world: tuple[Inventory, BuildCatalog]) -> None:
    chans = {"kvm-stable": "demo/1.0", "kvm-canary": "demo/1.0"}
    pin = RolloutPin(rollout=7, channel="kvm-stable", build="demo/2.0", batch=1)
    rollout = {"web1": pin, "db1": pin, "fixed": pin}
    p = decide_with(world, Intent(channels=chans, rollout=rollout), mac="52:54:00:0:0:9",
                    guid=WEB1_GUID)
    assert isinstance(p, BootPlan) and p.build is not None
    assert (p.node, p.build.ref, p.channel) == ("web1", "demo/2.0", "kvm-stable")
    # db1 follows another channel than the rollout's; fixed is pinned: both keep theirs.
    p = decide_with(world, Intent(channels=chans, rollout=rollout), mac=DB1)
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/1.0"
    p = decide_with(world, Intent(channels=chans, rollout=rollout), mac=OTHER)
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/2.0"
    assert p.channel is None
    # A node without a pin follows the channel's own build.
    p = decide_with(world, Intent(channels=chans, rollout={"db1": pin}),
                    mac="52:54:00:0:0:9", guid=WEB1_GUID)
    assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/1.0"
    # Mode local wins over the rollout as over the channel.
    ov = Intent(channels=chans, rollout=rollout, overrides={"web1": NodeOverride(mode="local")})
    p = decide_with(world, ov, mac="52:54:00:0:0:9", guid=WEB1_GUID)
    assert isinstance(p, BootPlan) and p.mode == "local" and p.build is None
