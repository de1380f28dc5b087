"""The report answers (netbootd/answers_reports.py) are pure: from a World built from the test
config, the parsed request and ``now`` they give the reply and what to change as values; no
socket, no database, nothing changed."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import TEST_KEY, make_config, make_store
from netbootd.answers import Count, Event, LearnIp, World, grub_prefixes, pxelinux_prefixes
from netbootd.answers_reports import (
    FinishReimage,
    PhonedHome,
    Reported,
    answer_firstboot,
    answer_phone_home,
    answer_reimage_report,
    answer_report,
    node_mac,
)
from netbootd.core.identity import ClientIdentity
from netbootd.core.intent import Intent
from netbootd.core.inventory import Inventory
from netbootd.errors import NotFound
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.render.tokens import FirstbootTokens, TokenRefused
from netbootd.render.urls import SiteUrls
from netbootd.store.builds import load_store

NOW = 1_800_000_000.0
DB1 = "52:54:00:00:00:02"  # db1: demo/2.0, "role=db"
IP = "10.77.0.50"


@pytest.fixture
def world(tmp_path: Path) -> World:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    urls = SiteUrls("http://10.77.0.1:8080", "10.77.0.1", FirstbootTokens(TEST_KEY, 7200))
    intent = Intent()
    return World(3, config, catalog, Inventory(config.groups, config.nodes), intent,
                 NodeRenderer(make_environment(), urls, catalog),
                 pxelinux_prefixes(config), grub_prefixes(config))


def token(world: World, subject: str, now: float = NOW) -> str:
    return world.urls.tokens.issue(DB1, subject, now)


DB1_IDENT = ClientIdentity(mac=DB1, ip=IP)


def test_firstboot_renders_the_nodes_file_and_says_what_to_record(world: World) -> None:
    text, effects = answer_firstboot(world, DB1_IDENT, "demo/2.0", "meta-data",
                                     token(world, "demo/2.0"), NOW + 5)
    assert "instance-id" in text
    assert effects == (LearnIp(IP, DB1), Count("boots", {"build": "demo/2.0"}),
                       Event(DB1, "firstboot", {"file": "meta-data", "build": "demo/2.0"}))
    # The same question at the same time gives the same answer: nothing was changed.
    assert answer_firstboot(world, DB1_IDENT, "demo/2.0", "meta-data",
                            token(world, "demo/2.0"), NOW + 5) == (text, effects)


def test_firstboot_user_data_is_not_a_boot_and_vendor_data_is_empty(world: World) -> None:
    _, effects = answer_firstboot(world, DB1_IDENT, "demo/2.0", "user-data",
                                  token(world, "demo/2.0"), NOW)
    assert not any(isinstance(e, Count) for e in effects)
    assert answer_firstboot(world, DB1_IDENT, "demo/2.0", "vendor-data",
                            token(world, "demo/2.0"), NOW) == ("", ())


def test_firstboot_refuses_another_builds_token_an_expired_one_and_unknown_builds(
        world: World) -> None:
    with pytest.raises(TokenRefused):
        answer_firstboot(world, DB1_IDENT, "demo/2.0", "meta-data",
                         token(world, "demo/1.0"), NOW)
    with pytest.raises(TokenRefused):
        answer_firstboot(world, DB1_IDENT, "demo/2.0", "meta-data",
                         token(world, "demo/2.0"), NOW + 7200 + 61)
    with pytest.raises(NotFound, match=r"demo/2\.0"):  # the error lists the known builds
        answer_firstboot(world, DB1_IDENT, "nope/1", "meta-data", token(world, "nope/1"), NOW)
    with pytest.raises(NotFound):
        node_mac("not-a-mac")


def test_phone_home_returns_the_boot_to_record(world: World) -> None:
    fields = {"hostname": "db1", "instance_id": "i-1", "fqdn": "db1.example",
              "secure_boot": "on", "build": "claimed/9", "junk": "x"}
    effects = answer_phone_home(world, DB1_IDENT, "demo/2.0", token(world, "demo/2.0"),
                                fields, NOW)
    assert effects == (Count("phone_homes", {"build": "demo/2.0"}),
                       PhonedHome(DB1, "demo/2.0", "db1", IP, "db1", "claimed/9",
                                  {"instance_id": "i-1", "fqdn": "db1.example",
                                   "secure_boot": "on"}))
    with pytest.raises(TokenRefused):
        answer_phone_home(world, DB1_IDENT, "demo/2.0", "1.2.3", fields, NOW)


def test_report_says_ready_or_failed_and_the_state_to_set(world: World) -> None:
    state, effects = answer_report(world, DB1_IDENT, "demo/2.0", {"status": "done"})
    assert state == "ready"
    assert effects[0] == Count("boot_reports", {"state": "ready"})
    assert isinstance(effects[1], Reported) and effects[1].state == "ready" \
        and effects[1].node == "db1" and effects[1].build == "demo/2.0"
    state, effects = answer_report(world, DB1_IDENT, "demo/2.0",
                                   {"status": "error", "errors": '["disk full"]'})
    assert state == "failed" and isinstance(effects[1], Reported) and effects[1].errors == 1


@dataclass(frozen=True)
class Row:
    kind: str
    node: str
    image: str


def test_reimage_report_finishes_the_order_then_records_it(world: World) -> None:
    done = answer_reimage_report(world, DB1, 7, Row("reimage", "db1", "demo/2.0"),
                                 {"status": "done", "bytes": "100", "sha256": "ab"})
    reason = "wrote 100 bytes, sha256 ab"
    assert done == (FinishReimage(7, True, reason, "db1", "demo/2.0"),
                    Event(DB1, "reimage-done", {"node": "db1", "image": "demo/2.0",
                                                "action": 7, "reason": reason}))
    failed = answer_reimage_report(world, DB1, 7, Row("reimage", "db1", "demo/2.0"),
                                   {"status": "failed"})
    assert failed[0] == FinishReimage(7, False, "installer reported status 'failed'", "db1",
                                      "demo/2.0")
    assert isinstance(failed[1], Event) and failed[1].kind == "reimage-failed"


def test_reimage_report_for_another_node_is_refused(world: World) -> None:
    with pytest.raises(NotFound, match="not for"):
        answer_reimage_report(world, "52:54:00:00:00:04", 7,
                              Row("reimage", "db1", "demo/2.0"), {"status": "done"})
    with pytest.raises(NotFound, match="not for"):
        answer_reimage_report(world, "52:54:00:00:00:99", 7,
                              Row("reimage", "db1", "demo/2.0"), {"status": "done"})
