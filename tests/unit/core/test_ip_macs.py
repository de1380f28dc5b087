"""IP -> MAC pairs learnt from requests: the newest MAC at an address wins, pairs expire."""

from netbootd.core.ip_macs import IpMacs

A, B = "52:54:00:00:00:0a", "52:54:00:00:00:0b"


def test_a_pair_is_trusted_for_ttl_seconds_after_it_was_learnt() -> None:
    m = IpMacs(ttl=60, capacity=10)
    m.learn("10.0.0.5", A, now=1000.0)
    assert m.mac_for("10.0.0.5", now=1000.0) == A
    assert m.mac_for("10.0.0.5", now=1059.9) == A
    assert m.mac_for("10.0.0.5", now=1060.0) is None
    assert len(m) == 0  # forgotten, not kept around


def test_using_an_address_does_not_renew_it_learning_does() -> None:
    m = IpMacs(ttl=60, capacity=10)
    m.learn("10.0.0.5", A, now=0.0)
    for t in range(0, 60, 10):  # requests that name no MAC, all within the ttl
        assert m.mac_for("10.0.0.5", now=float(t)) == A
    assert m.mac_for("10.0.0.5", now=61.0) is None
    m.learn("10.0.0.5", A, now=100.0)
    m.learn("10.0.0.5", A, now=150.0)  # a request naming the MAC renews the pair
    assert m.mac_for("10.0.0.5", now=200.0) == A


def test_another_mac_at_the_address_replaces_the_pair() -> None:
    m = IpMacs(ttl=3600, capacity=10)
    m.learn("10.0.0.5", A, now=0.0)
    m.learn("10.0.0.5", B, now=5.0)
    assert m.mac_for("10.0.0.5", now=6.0) == B
    m.learn("10.0.0.6", A, now=7.0)  # A moved to another address: both pairs stand
    assert m.mac_for("10.0.0.6", now=8.0) == A and m.mac_for("10.0.0.5", now=8.0) == B


def test_unknown_addresses_and_macs_are_not_learnt() -> None:
    m = IpMacs(ttl=60, capacity=10)
    for ip, mac in [("0.0.0.0", A), ("", A), (None, A), ("10.0.0.5", ""), ("10.0.0.5", None)]:
        m.learn(ip, mac, now=0.0)
    assert len(m) == 0
    assert m.mac_for(None, now=0.0) is None and m.mac_for("0.0.0.0", now=0.0) is None


def test_bounded_least_recently_learnt_forgotten_first() -> None:
    m = IpMacs(ttl=3600, capacity=2)
    m.learn("10.0.0.1", A, now=0.0)
    m.learn("10.0.0.2", B, now=1.0)
    m.learn("10.0.0.1", A, now=2.0)  # renewed: now the most recent
    m.learn("10.0.0.3", B, now=3.0)
    assert len(m) == 2
    assert m.mac_for("10.0.0.2", now=4.0) is None
    assert m.mac_for("10.0.0.1", now=4.0) == A and m.mac_for("10.0.0.3", now=4.0) == B


def test_a_clock_stepped_far_back_forgets_the_pair() -> None:
    m = IpMacs(ttl=60, capacity=10)
    m.learn("10.0.0.5", A, now=10_000.0)
    assert m.mac_for("10.0.0.5", now=9_990.0) == A  # a small step back is tolerated
    assert m.mac_for("10.0.0.5", now=100.0) is None
