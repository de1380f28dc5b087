"""The bench's medians leave out whole rounds taken under load, on both sides of a ratio."""

from __future__ import annotations

from bench.report import Row
from bench.sandbox import LoadProbe


def _probe(loaded: bool, round_loaded: bool) -> LoadProbe:
    p = LoadProbe()
    p.loaded, p.round_loaded = loaded, round_loaded
    return p


def test_a_round_with_one_loaded_sample_is_left_out_on_both_sides() -> None:
    row = Row("x", what="x", unit="s", target="-", kind="ratio", better="lower", bound=1.0,
              peer_name="peer")
    # round 1: netbootd's sample loaded, so the peer's quiet sample of that round goes too
    row.netbootd.add(50.0, _probe(True, True))
    row.peer.add(30.0, _probe(False, True))
    # rounds 2 and 3: clean
    for nb, peer in ((40.0, 44.0), (42.0, 46.0)):
        row.netbootd.add(nb, _probe(False, False))
        row.peer.add(peer, _probe(False, False))
    assert row.netbootd.used == [40.0, 42.0]
    assert row.peer.used == [44.0, 46.0]
    assert row.ratio == 41.0 / 45.0
    assert "[1/3 under load, left out]" in row.peer.text()
    assert row.peer.to_dict()["load"][0]["round_loaded"] is True


def test_every_round_loaded_uses_every_sample_and_says_so() -> None:
    row = Row("x", what="x", unit="s", target="-", kind="ratio", better="lower", bound=1.0,
              peer_name="peer")
    for nb, peer in ((50.0, 30.0), (40.0, 44.0)):
        row.netbootd.add(nb, _probe(True, True))
        row.peer.add(peer, _probe(False, True))
    assert row.netbootd.used == [50.0, 40.0] and row.peer.used == [30.0, 44.0]
    assert row.peer.text().endswith("[2/2 under load, all used]")
    assert "+" in row.peer.sample_text() and "*" in row.netbootd.sample_text()
