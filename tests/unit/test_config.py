import pytest

from netbootd.config import parse_config
from netbootd.errors import ConfigError


def test_every_problem_is_listed_with_its_key() -> None:
    bad = {
        "server": {"address": "not-an-ip", "colour": "blue"},
        "tftp": {"port": 70000, "max_blksize": "big"},
        "groups": {"a": {"build": "nodash", "mode": "sometimes"},
                   "b": {"loader": "lilo", "cmdline": "a\nb"}},
        "nodes": {"n1": {"mac": "zz", "group": "missing"}, "n2": {}},
    }
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    text = "\n".join(e.value.problems)
    for key in ["server.address", "server.colour", "tftp.port", "tftp.max_blksize",
                "groups.a.build", "groups.a.mode", "groups.b.loader", "groups.b.cmdline",
                "exactly one group needs default", "nodes.n1.mac", "nodes.n1.group",
                "nodes.n2: needs at least one of mac, uuid, serial"]:
        assert key in text, key
    assert len(e.value.problems) >= 12


def test_duplicate_identity_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"also claimed by nodes\.a"):
        parse_config({"server": {"address": "10.0.0.1"},
                      "groups": {"d": {"default": True, "build": "x/1"}},
                      "nodes": {"a": {"mac": "52:54:00:00:00:01"},
                                "b": {"mac": "52-54-00-00-00-01"}}})


def test_minimal_config_has_sane_defaults() -> None:
    c = parse_config({"server": {"address": "10.0.0.1"},
                      "groups": {"d": {"default": True, "build": "x/1"}}})
    assert c.tftp.port == 69 and c.dhcp.proxy_port == 4011 and c.tftp.max_blksize == 1468
    assert c.http_base == "http://10.0.0.1:8080"
    assert c.loaders.bootfiles["pxelinux"]["bios"] == "bios/lpxelinux.0"


def test_ip_mac_ttl_defaults_to_an_hour_and_is_bounded() -> None:
    base = {"server": {"address": "10.0.0.1"}, "groups": {"d": {"default": True, "build": "x/1"}}}
    assert parse_config(base).state.ip_mac_ttl == 3600.0
    assert parse_config({**base, "state": {"ip_mac_ttl": 90}}).state.ip_mac_ttl == 90.0
    for bad in (0, -5, "long", 31 * 86400):
        with pytest.raises(ConfigError, match=r"state\.ip_mac_ttl"):
            parse_config({**base, "state": {"ip_mac_ttl": bad}})
