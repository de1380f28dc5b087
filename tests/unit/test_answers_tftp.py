"""The TFTP name answers (netbootd/answers_tftp.py) are pure: from a World built from the test
config, the parsed name, what is known of the asker (``Seen``) and ``now`` they give the reply
and the effects as values; no socket, no database, nothing changed."""

from dataclasses import replace
from pathlib import Path

import pytest

from helpers import TEST_KEY, make_config, make_store
from netbootd.answers import AnswerCache, Event, LearnIp, World, grub_prefixes, pxelinux_prefixes
from netbootd.answers_tftp import (
    BuildFile,
    EsxiBootCfg,
    GrubDispatch,
    LoaderName,
    NodeConfig,
    Rendered,
    Seen,
    StaticFile,
    answer_tftp_name,
    tftp_question,
)
from netbootd.core.identity import ClientIdentity, pxelinux_guid_name
from netbootd.core.intent import Intent, ReimageOrder
from netbootd.core.inventory import Inventory
from netbootd.errors import NotFound, PathRefused
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.render.tokens import FirstbootTokens
from netbootd.render.urls import SiteUrls
from netbootd.store.builds import load_store

NOW = 1_800_000_000.0
IP = "10.77.0.50"
DB1 = "52:54:00:00:00:02"  # db1: demo/2.0, "role=db"
WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"  # web1 is configured by GUID only
WEB1_MAC = "52:54:00:00:00:11"


def make_world(tmp_path: Path) -> World:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    urls = SiteUrls("http://10.77.0.1:8080", "10.77.0.1", FirstbootTokens(TEST_KEY, 7200))
    return World(1, config, catalog, Inventory(config.groups, config.nodes), Intent(),
                 NodeRenderer(make_environment(), urls, catalog),
                 pxelinux_prefixes(config), grub_prefixes(config))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def answer(world: World, name: str,
           seen: Seen | None = None) -> tuple[object, tuple[object, ...]]:
    return answer_tftp_name(world, tftp_question(world, name, IP), seen or Seen(), NOW)


def test_names_parse_into_questions(world: World) -> None:
    assert tftp_question(world, "bios/pxelinux.cfg/01-52-54-00-00-00-02", IP) == \
        NodeConfig("pxelinux", "pxelinux.cfg/01-52-54-00-00-00-02", IP, mac=DB1)
    assert tftp_question(world, "bios/pxelinux.cfg/default", IP) == \
        NodeConfig("pxelinux", "pxelinux.cfg/default", IP, ip=IP)
    assert tftp_question(world, "grub/grub.cfg-ip-10.77.0.9", IP).ips == ("10.77.0.9",)
    by_guid = tftp_question(world, f"bios/pxelinux.cfg/{pxelinux_guid_name(WEB1_GUID)}", IP)
    assert isinstance(by_guid, NodeConfig) and by_guid.guids == (WEB1_GUID,) \
        and by_guid.ips == (IP,)
    assert tftp_question(world, "grub/grub.cfg", IP) == GrubDispatch()
    assert isinstance(tftp_question(world, "builds/demo/2.0/vmlinuz", IP), BuildFile)
    assert tftp_question(world, "esxi/52-54-00-00-00-03/esxi/8.0u3/boot.cfg", IP) == \
        EsxiBootCfg("52:54:00:00:00:03", "esxi/8.0u3", IP)
    assert tftp_question(world, "bios/ldlinux.c32", IP) == LoaderName("bios/ldlinux.c32")
    for bad, refusal in [("bios/pxelinux.cfg/0A4D4D32", NotFound),
                         ("bios/pxelinux.cfg/01-zz", NotFound),
                         ("grub/grub.cfg-0A4D4D32", NotFound),
                         ("builds/nope/1/vmlinuz", NotFound),
                         ("bios/../etc/passwd", PathRefused)]:
        with pytest.raises(refusal):
            tftp_question(world, bad, IP)


def test_a_mac_name_renders_the_nodes_config_and_learns_the_address(world: World) -> None:
    reply, effects = answer(world, "bios/pxelinux.cfg/01-52-54-00-00-00-02")
    assert isinstance(reply, Rendered) and "role=db" in reply.text
    assert effects == (LearnIp(IP, DB1),)
    # Pure: the same question at the same time, the same answer; with a cache, too.
    assert answer(world, "bios/pxelinux.cfg/01-52-54-00-00-00-02") == (reply, effects)
    cache = AnswerCache(8)
    q = tftp_question(world, "bios/pxelinux.cfg/01-52-54-00-00-00-02", IP)
    assert answer_tftp_name(world, q, Seen(), NOW, cache) == (reply, effects)
    assert answer_tftp_name(world, q, Seen(), NOW, cache) == (reply, effects)
    assert cache.hits == 1


def test_default_is_the_node_at_the_address_or_a_decline(world: World) -> None:
    reply, effects = answer(world, "bios/pxelinux.cfg/default", Seen(mac_at={IP: DB1}))
    assert isinstance(reply, Rendered) and "role=db" in reply.text and effects == ()
    reply, _ = answer(world, "bios/pxelinux.cfg/default")
    assert isinstance(reply, Rendered) and "client not identified" in reply.text


def test_a_grub_decline_is_an_event(world: World) -> None:
    reply, effects = answer(world, "grub/grub.cfg-01-52-54-00-00-00-05")  # lab1: mode local
    assert isinstance(reply, Rendered)
    reply, effects = answer(world, "grub/grub.cfg-ip-10.77.0.9",
                            Seen(mac_at={"10.77.0.9": "52:54:00:00:00:99"}))
    # An unknown MAC gets the default group's plan; an unknown address a decline.
    assert isinstance(reply, Rendered)
    reply, effects = answer(world, "grub/grub.cfg-ip-10.77.0.9")
    assert isinstance(reply, Rendered) and effects == ()  # no MAC: nobody's timeline
    world_declining = make_world_with_order(world)
    q = NodeConfig("grub", "grub.cfg-01-52-54-00-00-00-02", IP, mac=DB1)
    _, effects = answer_tftp_name(world_declining, q, Seen(), NOW)
    assert len(effects) == 2 and effects[0] == LearnIp(IP, DB1)
    assert isinstance(effects[1], Event) and effects[1].mac == DB1 \
        and effects[1].kind == "grub-decline" and "reimage" in str(effects[1].detail["reason"])


def make_world_with_order(world: World) -> World:
    """db1 with an open reimage order but no installer: its plan is declined."""
    return replace(world, intent=Intent(reimage={"db1": ReimageOrder(7, "demo/2.0")}))


def test_a_guid_name_uses_the_mac_that_showed_it_then_the_stored_one(world: World) -> None:
    name = f"bios/pxelinux.cfg/{pxelinux_guid_name(WEB1_GUID)}"
    sighting = ClientIdentity(mac=WEB1_MAC, guid=WEB1_GUID)
    for seen in (Seen(by_guid={WEB1_GUID: sighting}), Seen(stored={WEB1_GUID: WEB1_MAC}),
                 Seen(mac_at={IP: WEB1_MAC})):
        reply, effects = answer(world, name, seen)
        assert isinstance(reply, Rendered) and "web1" in reply.text
        assert effects == (LearnIp(IP, WEB1_MAC),)
    # The MAC at the address is db1's: never used to make web1's plan (its tokens), so
    # with no other MAC known web1 has none, and the loader goes on to its per-MAC name.
    with pytest.raises(NotFound, match="no node with this GUID"):
        answer(world, name, Seen(mac_at={IP: DB1}))
    # A GUID that identifies nobody (seen on several machines) is not found.
    shared = replace(world, intent=Intent(ambiguous_guids=frozenset({WEB1_GUID})))
    with pytest.raises(NotFound, match="no node with this GUID"):
        answer(shared, name, Seen(by_guid={WEB1_GUID: sighting}))


def test_files_answer_their_path_and_esxi_its_boot_cfg(world: World) -> None:
    reply, effects = answer(world, "builds/demo/2.0/vmlinuz")
    assert isinstance(reply, StaticFile) and reply.kind == "build" \
        and reply.path.read_bytes() == b"kernel 2.0" and effects == ()
    assert answer(world, "bios/ldlinux.c32") == (LoaderName("bios/ldlinux.c32"), ())
    reply, effects = answer(world, "esxi/52-54-00-00-00-03/esxi/8.0u3/boot.cfg")
    assert isinstance(reply, Rendered) and "kernel=" in reply.text
    assert effects == (LearnIp(IP, "52:54:00:00:00:03"),)
    with pytest.raises(NotFound):  # db1 is a Linux node: no boot.cfg
        answer(world, "esxi/52-54-00-00-00-02/demo/2.0/boot.cfg")
