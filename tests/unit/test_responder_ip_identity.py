"""Requests that name no MAC are tied to a node only by a fresh IP -> MAC pair (responder,
fake clock, no sockets): never another node's config, token or timeline."""

from pathlib import Path

import pytest

from helpers import make_config, make_store, site_urls
from netbootd.core.identity import ClientIdentity, pxelinux_guid_name
from netbootd.errors import NotFound
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.responder import Rendered, Responder
from netbootd.state.events import StateDB
from netbootd.store.builds import load_store

DB1 = "52:54:00:00:00:02"  # db1: "role=db", by MAC
KIOSK = "52:54:00:00:00:04"
WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"  # web1: configured by GUID only
IP = "10.77.0.50"
TTL = 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def responder(tmp_path: Path, clock: Clock) -> Responder:
    make_store(tmp_path / "store")
    config = make_config(tmp_path, {"state": {"ip_mac_ttl": TTL}})
    catalog, _ = load_store(config.server.store_dir)
    renderer = NodeRenderer(make_environment(), site_urls("http://10.77.0.1:8080", "10.77.0.1"),
                            catalog)
    return Responder(config, catalog, StateDB(Path(":memory:")), renderer, clock)


def default_cfg(r: Responder) -> str:
    found = r.tftp_lookup("bios/pxelinux.cfg/default", IP)
    assert isinstance(found, Rendered)
    return found.text


def test_default_is_the_nodes_only_while_the_pair_is_fresh(responder: Responder,
                                                           clock: Clock) -> None:
    responder.tftp_lookup("bios/pxelinux.cfg/01-52-54-00-00-00-02", IP)  # learns IP -> db1
    assert "role=db" in default_cfg(responder)
    clock.now += TTL - 1
    assert "role=db" in default_cfg(responder)
    clock.now += 1  # the pair expired: whoever asks now is nobody we know
    cfg = default_cfg(responder)
    assert "role=db" not in cfg and "52-54-00-00-00-02" not in cfg and "LOCALBOOT 0" in cfg


def test_a_new_mac_at_the_address_gets_its_own_config(responder: Responder,
                                                      clock: Clock) -> None:
    responder.tftp_lookup("bios/pxelinux.cfg/01-52-54-00-00-00-02", IP)
    clock.now += 5
    responder.observe_dhcp(ClientIdentity(mac=KIOSK, ip=IP))  # option 50 from the kiosk
    cfg = default_cfg(responder)
    assert "role=db" not in cfg and "52-54-00-00-00-02" not in cfg
    assert "52-54-00-00-00-04" in cfg


def test_downloads_land_in_the_timeline_of_the_mac_at_the_address_now(
        responder: Responder, clock: Clock) -> None:
    responder.tftp_lookup("bios/pxelinux.cfg/01-52-54-00-00-00-02", IP)
    responder.tftp_done("bios/ldlinux.c32", IP, "completed", 100)
    clock.now += TTL
    responder.tftp_done("bios/ldlinux.c32", IP, "completed", 100)  # someone, after expiry
    responder.http_sent("/builds/demo/2.0/vmlinuz", IP, 200)
    sent = [e for e in responder.state.timeline(DB1) if e.kind in ("tftp-sent", "http-sent")]
    assert len(sent) == 1 and sent[0].ts == clock.now - TTL


def test_a_guid_name_never_borrows_another_nodes_mac(responder: Responder) -> None:
    # db1 was last seen at this address; web1 (known by GUID only, not seen in DHCP) asks its
    # GUID file from the same address. Its config would carry db1's MAC and token, so there is
    # none: "not found" sends pxelinux on to its 01-<mac> name, which names the machine.
    responder.learn_ip(IP, DB1)
    with pytest.raises(NotFound):
        responder.tftp_lookup(f"bios/pxelinux.cfg/{pxelinux_guid_name(WEB1_GUID)}", IP)
    # The same GUID file once the MAC that sent the GUID is known: web1's own config.
    responder.observe_dhcp(ClientIdentity(mac="52:54:00:00:00:01", guid=WEB1_GUID, ip=IP))
    found = responder.tftp_lookup(f"bios/pxelinux.cfg/{pxelinux_guid_name(WEB1_GUID)}", IP)
    assert isinstance(found, Rendered)
    assert "web1 boots" in found.text and "52-54-00-00-00-02" not in found.text
    assert "/nocloud/52-54-00-00-00-01/" in found.text
