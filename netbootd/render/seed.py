"""What a node's NoCloud seed says beyond its name: the pure rules behind the templates.

``seed_context`` turns a plan's vars and its build's manifest into the values the
``nocloud-*`` templates use: whether the build is a KVM hypervisor (``vars.role`` or the
manifest's ``extra.role`` is ``kvm-hypervisor``), the guest bridge (``vars.guest_bridge``),
the FQDN (``vars.domain``), SSH keys (``vars.ssh_authorized_keys``) and cloud-init's
``power_state`` mode. Bad values raise SeedError (a RenderError to the renderer's callers):
a seed cloud-init would reject is never served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from netbootd.core.plan import BootPlan
from netbootd.errors import NetbootdError
from netbootd.render.report_agent import REPORT_SCRIPT
from netbootd.store.catalog import Build

HYPERVISOR_ROLE = "kvm-hypervisor"
POWER_MODES = ("poweroff", "reboot", "halt")  # cloud-init's schema; "none": no power_state
_IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")  # Linux IFNAMSIZ is 16 with the NUL
_DOMAIN = re.compile(r"^(?=.{1,200}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


class SeedError(NetbootdError):
    """A var makes a seed cloud-init would reject (the message names the var)."""


def is_hypervisor(plan: BootPlan, build: Build) -> bool:
    return HYPERVISOR_ROLE in (plan.vars.get("role"), build.manifest.extra.get("role"))


def var_problems(v: Mapping[str, Any]) -> list[str]:
    """Every seed var in ``v`` that cloud-init would reject, each naming the var."""
    problems = []
    bridge = v.get("guest_bridge") or None
    if bridge is not None and not (isinstance(bridge, str) and _IFNAME.match(bridge)):
        problems.append(f"vars.guest_bridge {bridge!r} is not an interface name "
                        "(a letter, then up to 14 of A-Z a-z 0-9 _ . -)")
    domain = v.get("domain") or None
    if domain is not None and not (isinstance(domain, str) and _DOMAIN.match(domain)):
        problems.append(f"vars.domain {domain!r} is not a DNS domain")
    keys = v.get("ssh_authorized_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    if not (isinstance(keys, list) and all(isinstance(k, str) and k.strip() and "\n" not in k
                                           for k in keys)):
        problems.append("vars.ssh_authorized_keys must be a list of one-line public keys")
    power = v.get("power_state", "none")
    if power not in (*POWER_MODES, "none"):
        problems.append(f"vars.power_state {power!r} is not one of "
                        f"{', '.join(POWER_MODES)}, none")
    return problems


def seed_context(plan: BootPlan, build: Build) -> dict[str, Any]:
    v = plan.vars
    problems = var_problems(v)
    if problems:
        raise SeedError(f"node {plan.node or plan.node_key} (group {plan.group}): "
                        + "; ".join(problems))
    bridge = v.get("guest_bridge") or None
    domain = v.get("domain") or None
    keys = v.get("ssh_authorized_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    power = v.get("power_state", "none")
    mac = plan.identity.mac
    assert mac is not None  # a plan always has a MAC (BootPlan.node_key)
    return {
        "hypervisor": is_hypervisor(plan, build),
        "guest_bridge": bridge,
        "fqdn": f"{plan.hostname}.{domain}" if domain else None,
        "ssh_keys": [k.strip() for k in keys],
        "power_state": None if power == "none" else power,
        "mac": mac,
        "report_script": REPORT_SCRIPT,
    }
