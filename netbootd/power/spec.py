"""The ``[power]`` table and each node's ``power = { driver = ... }`` spec, parsed and checked.

Pure (a decoded TOML value in, frozen dataclasses and problem lines out); ``config.py`` calls
``parse_power`` so that ``netbootd check`` and a refused reload list power problems with every
other one. Secrets are never here: a spec that holds a ``password`` is refused, and says where
the password goes instead (the credentials file, ``credentials``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DRIVERS = ("ipmi", "wol")
IPMI_INTERFACES = ("lanplus", "lan")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_SPEC_KEYS = {
    "ipmi": {"driver", "address", "port", "user", "interface", "credential", "cipher"},
    "wol": {"driver", "mac", "broadcast", "port", "interface"},
}
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


@dataclass(frozen=True, slots=True)
class PowerSpec:
    """How to reach one node's power: an IPMI BMC, or its NIC for a Wake-on-LAN packet."""

    driver: str
    address: str = ""  # ipmi: the BMC's host name or IP; wol: unused
    port: int = 623  # ipmi: RMCP port; wol: the UDP port of the magic packet (9)
    user: str = ""  # ipmi: the BMC user
    interface: str = ""  # ipmi: lanplus (IPMI 2.0) or lan (1.5); wol: the sending interface
    credential: str = ""  # ipmi: the entry of the credentials file (default: the node name)
    # ipmi lanplus: the RMCP+ cipher suite (IPMI v2.0 table 22-20). 3 (HMAC-SHA1, AES-128)
    # is the one every IPMI 2.0 BMC has; naming it skips ipmitool's cipher-suite query, which
    # BMCs that lack it (ipmi_sim among them) answer only after a 6 s timeout.
    cipher: int = 3
    mac: str = ""  # wol: the MAC to wake (default: the node's first MAC)
    broadcast: str = "255.255.255.255"  # wol: where the magic packet goes


@dataclass(frozen=True, slots=True)
class PowerConfig:
    """``[power]``: the credentials file, per-action timeout, batch width, and node specs."""

    credentials: Path | None = None
    timeout: float = 30.0  # seconds one action may take, retries included
    parallel: int = 8  # nodes a batch (rollout --reboot, reimage --now of many) drives at once
    nodes: Mapping[str, PowerSpec] = field(default_factory=dict)


def _problem(out: list[str], where: str, msg: str) -> None:
    out.append(f"{where}{msg}")


def parse_spec(value: Any, where: str, macs: tuple[str, ...],
               problems: list[str]) -> PowerSpec | None:
    """A node's ``power`` value (``where`` ends in ``power.``); None when it has problems."""
    if not isinstance(value, dict):
        _problem(problems, where[:-1], ": expected an inline table, e.g. power = { driver = "
                 "\"ipmi\", address = \"10.0.9.12\", user = \"admin\" }")
        return None
    before = len(problems)
    driver = value.get("driver")
    if driver not in DRIVERS:
        _problem(problems, where, f"driver: {driver!r} is not one of {', '.join(DRIVERS)}")
        return None
    if "password" in value:
        _problem(problems, where, "password: passwords do not go in the config; put it in the "
                 "credentials file ([power] credentials, mode 0600), in a table named "
                 "after the node (or after power.credential)")
    for k in sorted(set(value) - _SPEC_KEYS[driver] - {"password"}):
        _problem(problems, where, f"{k}: unknown key for driver {driver} (known: "
                 f"{', '.join(sorted(_SPEC_KEYS[driver]))})")

    def text(key: str, default: str = "") -> str:
        v = value.get(key, default)
        if not isinstance(v, str):
            _problem(problems, where, f"{key}: expected a string, got {v!r}")
            return default
        return v

    port = value.get("port", 623 if driver == "ipmi" else 9)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        _problem(problems, where, f"port: expected 1..65535, got {port!r}")
        port = 0
    if driver == "ipmi":
        address = text("address")
        if not address:
            _problem(problems, where, "address: required: the BMC's IP address or host name")
        elif not _HOST_RE.match(address):
            _problem(problems, where, f"address: {address!r} is not a host name or IP address")
        user = text("user")
        if not user:
            _problem(problems, where, "user: required: the BMC user netbootd logs in as")
        interface = text("interface", "lanplus")
        if interface not in IPMI_INTERFACES:
            _problem(problems, where, f"interface: {interface!r} is not one of "
                     f"{', '.join(IPMI_INTERFACES)}")
        credential = text("credential")
        cipher = value.get("cipher", 3)
        if isinstance(cipher, bool) or not isinstance(cipher, int) or not 0 <= cipher <= 17:
            _problem(problems, where, f"cipher: expected a cipher suite 0..17, got {cipher!r}")
            cipher = 3
        spec = PowerSpec(driver=driver, address=address, port=port, user=user,
                         interface=interface, credential=credential, cipher=cipher)
    else:
        mac = text("mac") or (macs[0] if macs else "")
        if not mac:
            _problem(problems, where, "mac: the node has no mac; give power.mac")
        elif not re.fullmatch(r"([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}", mac):
            _problem(problems, where, f"mac: {mac!r} is not a MAC address")
        broadcast = text("broadcast", "255.255.255.255")
        try:
            ipaddress.IPv4Address(broadcast)
        except ValueError:
            _problem(problems, where, f"broadcast: {broadcast!r} is not an IPv4 address")
        interface = text("interface")
        if interface and not _IFNAME_RE.match(interface):
            _problem(problems, where, f"interface: {interface!r} is not an interface name")
        spec = PowerSpec(driver=driver, port=port, interface=interface,
                         mac=mac.lower().replace("-", ":"), broadcast=broadcast)
    return spec if len(problems) == before else None


def parse_power(table: Any, node_specs: Mapping[str, tuple[Any, tuple[str, ...]]],
                problems: list[str]) -> PowerConfig:
    """``[power]`` and the nodes' specs (name -> (power value, the node's MACs))."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        problems.append("power: expected a table")
        table = {}
    for k in sorted(set(table) - {"credentials", "timeout", "parallel"}):
        problems.append(f"power.{k}: unknown key (known: credentials, parallel, timeout)")
    cred = table.get("credentials")
    if cred is not None and (not isinstance(cred, str) or not cred.startswith("/")):
        problems.append(f"power.credentials: expected an absolute path, got {cred!r}")
        cred = None
    timeout = table.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 1 <= timeout <= 600:
        problems.append(f"power.timeout: expected seconds between 1 and 600, got {timeout!r}")
        timeout = 30.0
    parallel = table.get("parallel", 8)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 256:
        problems.append(f"power.parallel: expected 1..256, got {parallel!r}")
        parallel = 8
    specs: dict[str, PowerSpec] = {}
    for name, (value, macs) in node_specs.items():
        spec = parse_spec(value, f"nodes.{name}.power.", macs, problems)
        if spec is not None:
            specs[name] = spec
    if cred is None and any(s.driver == "ipmi" for s in specs.values()):
        problems.append("power.credentials: required when a node has an ipmi power spec: the "
                        "path of a 0600 TOML file with the BMC passwords, e.g. "
                        "\"/etc/netbootd/power.toml\" (docs/configuration.md#power)")
    return PowerConfig(credentials=Path(cred) if cred else None, timeout=float(timeout),
                       parallel=parallel, nodes=specs)
