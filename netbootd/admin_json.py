"""The admin core's plain data: builds, node records and what still needs each build, as the
JSON the API answers (docs/admin-api.md) and the CLI prints; and the admin API's token file."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from netbootd.config import Config
from netbootd.core.funnel import BuildRoles
from netbootd.errors import ConfigError
from netbootd.state.events import NodeRecord
from netbootd.state.leases import LeaseDB
from netbootd.state.registry import Registry
from netbootd.store.catalog import Build
from netbootd.store.channels import rollback_stack

# How far back `channel rollback` is promised to work: the builds a channel had before its
# current one, this many deep, are kept (image remove refuses them). Older ones may go.
ROLLBACK_KEEP = 3


def build_users(config: Config, registry: Registry) -> dict[str, list[str]]:
    """What still needs each build: channels, their rollback history, pins, orders."""
    users: dict[str, list[str]] = {}

    def add(ref: str | None, why: str) -> None:
        if ref:
            users.setdefault(ref, []).append(why)

    for ch, ref in sorted(registry.channels().items()):
        add(ref, f"channel {ch}")
        kept = rollback_stack(registry.history(ch))[-ROLLBACK_KEEP:]
        for old in dict.fromkeys(reversed(kept)):
            add(old, f"channel {ch}'s rollback history (last {ROLLBACK_KEEP} builds)")
    for g in config.groups:
        add(g.settings.build, f"config groups.{g.name}.build")
    for n in config.nodes:
        add(n.settings.build, f"config nodes.{n.name}.build")
    for node, ov in sorted(registry.overrides().items()):
        add(ov.build, f"node {node} (node set --build)")
    for node, order in sorted(registry.open_orders().items()):
        add(order.image, f"node {node}'s open reimage order")
    inst = config.reimage.installer
    if inst and "/" in inst:
        add(inst, "config reimage.installer")
    return users


def load_or_create_token(path: Path) -> str:
    """The admin API's bearer token: read from ``path``, or made (0600) at first start.

    A token file that other users can read is refused: the token opens every change."""
    # With the state database on a server (PostgreSQL) nothing else may have made the state
    # directory yet; the token is the first file a fresh server writes there.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError([f"admin token file {path} is readable by other users: "
                               f"chmod 600 {path}"], "admin") from None
        token = path.read_text().strip()
        if len(token) < 16:
            raise ConfigError([f"admin token file {path} holds no token of 16+ characters; "
                               "delete it and netbootd makes a new one"], "admin") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def build_json(b: Build, users: list[str]) -> dict[str, Any]:
    return {"ref": b.ref, "name": b.name, "version": b.version, "kind": b.kind,
            "arch": b.arch, "description": b.manifest.description,
            "size": sum(i.size for i in b.manifest.files.values()),
            "used_by": users}


def build_roles(b: Build) -> BuildRoles:
    m = b.manifest
    rootfs = m.extra.get("rootfs")
    if m.esxi is not None:
        return BuildRoles(kernel=m.esxi.kernel, initrds=tuple(m.esxi.modules))
    return BuildRoles(kernel=m.kernel, initrds=m.initrds,
                      rootfs=rootfs if isinstance(rootfs, str) else None)


def record_json(r: NodeRecord) -> dict[str, Any]:
    return {"mac": r.mac, "guid": r.guid, "ip": r.ip, "arch": r.arch, "serial": r.serial,
            "vendor_class": r.vendor_class, "node": r.node, "hostname": r.hostname,
            "current_build": r.current_build, "boot_count": r.boot_count,
            "first_seen": r.first_seen, "last_seen": r.last_seen, "state": r.state,
            "dhcp_hostname": r.dhcp_hostname, "user_class": r.user_class}


def lease_json(db: LeaseDB | None, macs: tuple[str, ...], now: float) -> dict[str, Any] | None:
    """The node's DHCP lease in server mode: its bound address first, else its last
    record (offered, released); None in proxy mode or before its first exchange."""
    if db is None or not macs:
        return None
    records = db.for_macs(macs)
    if not records:
        return None
    best = next((x for x in records if x.state == "bound" and x.expires > now), records[0])
    return {"ip": best.ip, "mac": best.mac, "state": best.state, "expires": best.expires,
            "pool": best.pool, "active": best.state == "bound" and best.expires > now}
