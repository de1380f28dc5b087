"""How TFTP names map to a node's files (responder), without sockets."""

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

WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"


@pytest.fixture
def responder(tmp_path: Path) -> Responder:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    renderer = NodeRenderer(make_environment(), site_urls("http://10.77.0.1:8080", "10.77.0.1"),
                            catalog)
    return Responder(config, catalog, StateDB(Path(":memory:")), renderer)


def text(r: Responder, name: str, ip: str = "10.77.0.50") -> str:
    found = r.tftp_lookup(name, ip)
    assert isinstance(found, Rendered)
    return found.text


def test_guid_file_answers_only_for_a_node_configured_by_that_guid(responder: Responder) -> None:
    # db1 (known by MAC) was last seen at this address...
    responder.learn_ip("10.77.0.50", "52:54:00:00:00:02")
    # ...but a GUID nobody is configured with must not fall through to db1 by MAC.
    with pytest.raises(NotFound, match="no node with this GUID"):
        responder.tftp_lookup("bios/pxelinux.cfg/11111111-2222-4333-8444-555555555555",
                              "10.77.0.50")
    assert "db1 boots demo/2.0" in text(responder, "bios/pxelinux.cfg/01-52-54-00-00-00-02")


def test_guid_file_uses_the_mac_that_sent_the_guid(responder: Responder) -> None:
    responder.observe_dhcp(ClientIdentity(mac="52:54:00:00:00:01", guid=WEB1_GUID))
    cfg = text(responder, f"bios/pxelinux.cfg/{pxelinux_guid_name(WEB1_GUID)}")
    assert "web1 boots demo/1.0" in cfg and "/nocloud/52-54-00-00-00-01/" in cfg


def test_other_names(responder: Responder) -> None:
    assert "node-525400abcdef boots demo/1.0" in \
        text(responder, "efi64/pxelinux.cfg/01-52-54-00-ab-cd-ef")
    for missing in ["bios/pxelinux.cfg/0A4D4DFB", "bios/pxelinux.cfg/01-zz",
                    "bios/pxelinux.cfg/whatever", "nope/file", "builds/demo/9/vmlinuz"]:
        with pytest.raises(NotFound):
            responder.tftp_lookup(missing, "10.77.0.50")
    # `default` from an address we cannot tie to a MAC: a config that says why and boots
    # the local disk, instead of an error.
    assert "LOCALBOOT 0" in text(responder, "bios/pxelinux.cfg/default", "10.77.0.99")
