from netbootd.core.identity import Arch, ClientIdentity
from netbootd.state.sightings import Sightings

MAC = "52:54:00:00:00:01"


def test_enrich_fills_in_what_dhcp_saw() -> None:
    s = Sightings()
    s.saw(ClientIdentity(mac=MAC, guid="8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a", arch=Arch.BIOS))
    e = s.enrich(ClientIdentity(mac=MAC, ip="10.0.0.9"))
    assert e.arch is Arch.BIOS and e.ip == "10.0.0.9" and e.guid is not None
    by_guid = s.enrich(ClientIdentity(guid="8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"))
    assert by_guid.mac == MAC


def test_a_mac_cycling_guids_keeps_one_pairing() -> None:
    s = Sightings()
    guids = [f"00000000-0000-4000-8000-{i:012x}" for i in range(1, 2001)]
    for g in guids:
        s.saw(ClientIdentity(mac=MAC, guid=g))
    assert s.by_guid(guids[-1]) is not None
    assert all(s.by_guid(g) is None for g in guids[:-1])
    assert len(s) == 1


def test_capacity_bounds_memory() -> None:
    s = Sightings(capacity=100)
    for i in range(1000):
        mac = f"52:54:00:00:{i >> 8:02x}:{i & 0xFF:02x}"
        s.saw(ClientIdentity(mac=mac, guid=f"00000000-0000-4000-8000-{i + 1:012x}"))
    assert len(s) == 100
    assert s.by_guid("00000000-0000-4000-8000-000000000001") is None
