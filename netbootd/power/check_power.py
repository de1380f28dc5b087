"""``netbootd check``'s power findings: what the schema cannot see.

The credentials file exists, is private (0600) and parses; every ipmi node has a password
in it; ipmitool is installed when a node needs it; a Wake-on-LAN interface exists. No
finding ever quotes a password: they name the file, the table and the key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from netbootd.check_findings import Finding
from netbootd.config import Config
from netbootd.errors import ConfigError
from netbootd.power.credentials import load_credentials, secret_for
from netbootd.power.ipmi import IPMITOOL


def power_problems(config: Config) -> list[Finding]:
    power = config.power
    ipmi = {n: s for n, s in power.nodes.items() if s.driver == "ipmi"}
    out: list[Finding] = []
    if ipmi and shutil.which(IPMITOOL) is None:
        out.append(Finding("power", f"ipmitool is not installed; {len(ipmi)} node(s) use "
                           "driver = \"ipmi\"", "apt install ipmitool"))
    if power.credentials is not None:
        try:
            creds = load_credentials(power.credentials)
        except ConfigError as e:
            out += [Finding("power.credentials", p, _fix(p, power.credentials))
                    for p in e.problems]
        else:
            for name, spec in sorted(ipmi.items()):
                if secret_for(creds, name, spec.credential) is None:
                    table = spec.credential or name
                    out.append(Finding(f"nodes.{name}.power", f"the credentials file "
                                       f"{power.credentials} has no [{table}] (nor [default])",
                                       f"add [{table}] with password = \"...\" to it"))
    for name, spec in sorted(power.nodes.items()):
        if spec.driver == "wol" and spec.interface and \
                not (Path("/sys/class/net") / spec.interface).exists():
            out.append(Finding(f"nodes.{name}.power.interface", f"no network interface "
                               f"{spec.interface!r} on this host",
                               "name the interface on the node's segment (`ip -br link`)"))
    return out


def _fix(problem: str, path: Path) -> str:
    if "chmod" in problem:
        return ""  # the problem says the fix
    if "cannot open" in problem:
        return f"create it: install -m 600 /dev/null {path}, then add the passwords"
    return "see docs/configuration.md, section power"
