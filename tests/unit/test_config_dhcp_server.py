"""[dhcp] mode = "server": pools and reservations validated, every problem listed at once."""

from __future__ import annotations

from typing import Any

import pytest

from netbootd.config import parse_config
from netbootd.errors import ConfigError

POOL = {"subnet": "10.77.0.0/24", "range": ["10.77.0.100", "10.77.0.200"],
        "router": "10.77.0.1", "dns": ["10.77.0.1"], "domain": "lab.test", "lease_time": 900}


def config(dhcp: dict[str, Any], nodes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"server": {"address": "10.77.0.1"}, "dhcp": dhcp,
            "groups": {"all": {"default": True, "build": "demo/1"}}, "nodes": nodes or {}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return e.value.problems


def test_defaults_are_proxy_mode() -> None:
    c = parse_config(config({}))
    assert c.dhcp.mode == "proxy" and c.dhcp.pools == () and c.dhcp.probe is True


def test_a_valid_server_config() -> None:
    c = parse_config(config({"mode": "server", "max_leases": 500, "offer_hold": 20,
                             "decline_hold": 60, "probe_timeout": 3, "pools": {"lab": POOL}},
                            {"n1": {"mac": "52:54:00:00:00:01", "ip": "10.77.0.10"}}))
    (pool,) = c.dhcp.pools
    assert (pool.name, pool.first, pool.last, pool.lease_time) == ("lab", "10.77.0.100",
                                                                   "10.77.0.200", 900)
    assert c.dhcp.max_leases == 500 and c.dhcp.probe_timeout == 3.0
    assert c.nodes[0].ip == "10.77.0.10"


def test_server_mode_needs_a_pool() -> None:
    assert any("server mode needs at least one" in p
               for p in problems(config({"mode": "server"})))


def test_every_pool_and_reservation_problem_is_listed() -> None:
    bad_pool = {"subnet": "10.77.0.0/33", "range": ["10.77.0.9"], "router": "nope",
                "dns": ["x"], "domain": "-bad-", "lease_time": 5, "colour": "red"}
    off_net = {"subnet": "10.78.0.0/24", "range": ["10.78.0.200", "10.78.1.10"],
               "router": "10.99.0.1"}
    overlap = {"subnet": "10.78.0.0/16", "range": ["10.78.2.1", "10.78.2.9"]}
    nodes = {"a": {"mac": "52:54:00:00:00:01", "ip": "10.77.0.10"},
             "b": {"mac": "52:54:00:00:00:02", "ip": "10.77.0.10"},
             "c": {"mac": "52:54:00:00:00:03", "ip": "192.168.1.1"},
             "d": {"uuid": "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a", "ip": "10.78.0.5"},
             "e": {"mac": "52:54:00:00:00:05", "ip": "10.77.0.300"}}
    found = problems(config({"mode": "bridge", "max_leases": 0,
                             "pools": {"bad": bad_pool, "off": off_net, "over": overlap,
                                       "lab": POOL}}, nodes))
    text = "\n".join(found)
    for expected in ("dhcp.mode: 'bridge' is not one of proxy, server",
                     "dhcp.max_leases: must be between 1 and",
                     "dhcp.pools.bad.subnet: '10.77.0.0/33' is not a CIDR network",
                     "dhcp.pools.bad.range: required, [first, last]",
                     "dhcp.pools.bad.router: must be an IPv4 address",
                     "dhcp.pools.bad.dns: 'x' is not an IPv4 address",
                     "dhcp.pools.bad.domain: '-bad-' is not a valid domain name",
                     "dhcp.pools.bad.lease_time: must be between 60",
                     "dhcp.pools.bad.colour: unknown key",
                     "dhcp.pools.off.range: 10.78.1.10 is not a host address of 10.78.0.0/24",
                     "dhcp.pools.off.router: 10.99.0.1 is not in 10.78.0.0/24",
                     "dhcp.pools.over.subnet: 10.78.0.0/16 overlaps dhcp.pools.off",
                     "nodes.b.ip: 10.77.0.10 is also reserved for nodes.a",
                     "nodes.d.ip: a reserved address needs the node's mac",
                     "nodes.e.ip: must be an IPv4 address"):
        assert expected in text, expected


def test_reservation_must_lie_in_a_pool_subnet_in_server_mode() -> None:
    found = problems(config({"mode": "server", "pools": {"lab": POOL}},
                            {"c": {"mac": "52:54:00:00:00:03", "ip": "192.168.1.1"}}))
    assert found == ["nodes.c.ip: 192.168.1.1 is not a host address of any dhcp pool subnet "
                     "(10.77.0.0/24)"]


def test_range_may_not_hold_the_servers_address() -> None:
    pool = dict(POOL, range=["10.77.0.1", "10.77.0.20"])
    assert problems(config({"mode": "server", "pools": {"lab": pool}})) == [
        "dhcp.pools.lab.range: holds server.address 10.77.0.1; the server's own address "
        "cannot be handed out"]


def test_a_bad_range_does_not_hide_a_reservation_problem() -> None:
    pool = dict(POOL, range=["10.77.0.100", "10.77.0.300"])
    found = problems(config({"mode": "server", "pools": {"lab": pool}},
                            {"c": {"mac": "52:54:00:00:00:03", "ip": "10.78.0.5"}}))
    assert found == ["dhcp.pools.lab.range: ['10.77.0.100', '10.77.0.300'] must be two IPv4 "
                     "addresses",
                     "nodes.c.ip: 10.78.0.5 is not a host address of any dhcp pool subnet "
                     "(10.77.0.0/24)"]
