"""A GUID that turns up on several machines identifies none of them (cloned SMBIOS UUIDs),
while one machine's several NICs listed on one node keep matching (issue 3, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TEST_KEY, make_config, make_store
from netbootd.core.identity import ClientIdentity, pxelinux_guid_name
from netbootd.errors import NotFound
from netbootd.responder import Responder
from netbootd.service import make_responder
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from pgserver import Backend

WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"


def responder(tmp_path: Path, backend: Backend, **nodes: dict[str, object]) -> Responder:
    make_store(tmp_path / "store")
    config = make_config(tmp_path, {"nodes": nodes} if nodes else None)
    state = StateDB(backend.db("state.sqlite3"))
    r, problems = make_responder(config, state, registry=Registry(backend.db("i.sqlite3")),
                                 key=TEST_KEY)
    assert problems == []
    return r


def script(r: Responder, mac: str, guid: str) -> str:
    return r.ipxe_script(ClientIdentity(mac=mac, guid=guid, user_class="iPXE"))


def test_a_guid_seen_on_a_second_machine_stops_matching_at_once(tmp_path: Path,
                                                                backend: Backend) -> None:
    r = responder(tmp_path, backend)
    assert "(web1, group default" in script(r, "52:54:00:00:10:01", WEB1_GUID)
    cfg = f"bios/pxelinux.cfg/{pxelinux_guid_name(WEB1_GUID)}"
    assert "web1" in r.tftp_lookup(cfg, "10.0.0.5").text  # type: ignore[union-attr]
    # A clone with the same SMBIOS UUID boots: neither machine is web1 any more.
    assert "(unknown node, group default" in script(r, "52:54:00:00:10:02", WEB1_GUID)
    assert "(unknown node, group default" in script(r, "52:54:00:00:10:01", WEB1_GUID)
    with pytest.raises(NotFound, match="no node with this GUID"):
        r.tftp_lookup(cfg, "10.0.0.5")  # pxelinux goes on to 01-<mac>


def test_one_machines_nics_listed_on_one_node_keep_matching(tmp_path: Path,
                                                            backend: Backend) -> None:
    macs = ["52:54:00:00:20:01", "52:54:00:00:20:02"]
    r = responder(tmp_path, backend, web1={"uuid": WEB1_GUID, "mac": macs})
    for mac in macs:
        assert "(web1, group default" in script(r, mac, WEB1_GUID)
    assert "(web1, group default" in script(r, macs[0], WEB1_GUID)
