"""TFTP file names -> the node's rendered file or a file on disk (and the transfer's event).

The dynamic names (docs/boot-flows.md): ``<prefix>/pxelinux.cfg/{<uuid>,01-<mac>,default}``
in each folder holding a pxelinux binary, ``<prefix>/grub.cfg*`` where GRUB's images and shim
are, ``esxi/<mac>/<name>/<version>/boot.cfg``; build files by manifest only; everything else
from the loader folders (containment in paths.py).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from netbootd.answer_base import AnswerBase
from netbootd.config import NodeSpec
from netbootd.core.identity import ClientIdentity, guid_candidates, normalize_mac
from netbootd.core.plan import BootPlan, Decline
from netbootd.errors import NotFound
from netbootd.paths import contain, split_client_path
from netbootd.render.node_files import NodeRenderer, RenderError
from netbootd.world import World

log = logging.getLogger("netbootd.decision")

_HEX_IP = re.compile(r"^[0-9A-F]{1,8}$")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A file rendered for this client from its plan."""

    text: str


@dataclass(frozen=True, slots=True)
class StaticFile:
    path: Path
    kind: str  # "loader" or "build"
    build: str | None = None


class TftpNames(AnswerBase):
    def tftp_lookup(self, filename: str, client_ip: str) -> Rendered | StaticFile:
        """Map a TFTP file name to a rendered file or a file on disk; NotFound/PathRefused."""
        w = self.refresh()
        parts = split_client_path(filename)
        head = parts[0]
        if head in w.pxelinux_prefixes and len(parts) == 3 and parts[1] == "pxelinux.cfg":
            return Rendered(self._pxelinux_cfg(w, parts[2], client_ip))
        if head in w.grub_prefixes and len(parts) == 2 and parts[1].startswith("grub.cfg"):
            return Rendered(self._grub_cfg(w, parts[1], client_ip))
        if head == "builds" and len(parts) >= 4:
            build = w.catalog.get(f"{parts[1]}/{parts[2]}")
            return StaticFile(build.path_of("/".join(parts[3:])), "build", build.ref)
        if head == "esxi" and len(parts) == 5 and parts[4] == "boot.cfg":
            return Rendered(self._esxi_boot_cfg(w, parts[1], f"{parts[2]}/{parts[3]}", client_ip))
        return StaticFile(self._loader_path(w, filename), "loader")

    def loader_path(self, client_path: str) -> Path:
        return self._loader_path(self.refresh(), client_path)

    def _loader_path(self, w: World, client_path: str) -> Path:
        parts = split_client_path(client_path)
        dirs = w.config.loaders.dirs.get(parts[0])
        if dirs is None or len(parts) < 2:
            raise NotFound(f"no such file: {client_path}")
        rest = "/".join(parts[1:])
        for d in dirs:
            p = contain(d, rest)
            if p.is_file():
                return p
        raise NotFound(f"no such file: {client_path}")

    def _pxelinux_cfg(self, w: World, name: str, client_ip: str) -> str:
        if name.startswith("01-"):
            try:
                mac = normalize_mac(name[3:])
            except ValueError:
                raise NotFound(f"pxelinux.cfg/{name}: not a MAC") from None
            self.learn_ip(client_ip, mac)
            plan = self._plan(w, ClientIdentity(mac=mac, ip=client_ip))
            if isinstance(plan, Decline):
                return self._renderer(w).pxelinux_decline(plan.reason)
            return self._text(w, "pxelinux", plan, NodeRenderer.pxelinux_config)
        if len(name) == 36 and name.count("-") == 4:
            # pxelinux spells the GUID in raw byte order; firmware may use the canonical one.
            by_guid = self._plan_by_guid_name(w, name, client_ip)
            if by_guid is None:
                raise NotFound(f"pxelinux.cfg/{name}: no node with this GUID")
            return self._text(w, "pxelinux", by_guid, NodeRenderer.pxelinux_config)
        if name == "default":
            known = self.mac_for_ip(client_ip)
            plan = self._plan(w, ClientIdentity(mac=known, ip=client_ip)) if known else \
                Decline("client not identified (no MAC known for its address)")
            if isinstance(plan, Decline):
                return self._renderer(w).pxelinux_decline(plan.reason)
            return self._text(w, "pxelinux", plan, NodeRenderer.pxelinux_config)
        if _HEX_IP.match(name):
            raise NotFound(f"pxelinux.cfg/{name}: configs are per GUID and MAC")
        raise NotFound(f"pxelinux.cfg/{name}: no such config")

    def _plan_by_guid_name(self, w: World, name: str, client_ip: str) -> BootPlan | None:
        """The plan of the node configured by the GUID ``name`` (either byte order), or None
        when no node is: the loader then asks for its per-MAC name."""
        try:
            candidates = guid_candidates(name)
        except ValueError:
            raise NotFound(f"{name}: not a GUID") from None
        for guid in candidates:
            # Only a node configured by this GUID answers here; anyone else gets "not
            # found" and the loader goes on to 01-<mac>. So does a GUID seen on several
            # machines: it identifies none of them.
            node = None if guid in w.intent.ambiguous_guids else \
                w.inventory.find_node(ClientIdentity(guid=guid))
            if node is None:
                continue
            # The MAC that sent this GUID in DHCP; after a restart, the stored one; as a
            # last resort, the MAC last seen at this address.
            ident = self.sightings.enrich(ClientIdentity(guid=guid, ip=client_ip))
            if ident.mac is None:
                ident = replace(ident, mac=self.state.mac_for_guid(guid) or
                                self._ip_mac_of(w, node, client_ip))
            plan = self._plan(w, ident)
            if isinstance(plan, BootPlan):
                self.learn_ip(client_ip, plan.identity.mac or "")
                return plan
        return None

    def _ip_mac_of(self, w: World, node: NodeSpec, client_ip: str) -> str | None:
        """The MAC learnt at ``client_ip``, only if it is not another node's: a plan (and the
        first-boot tokens in it) is never made with a MAC that names someone else."""
        mac = self.mac_for_ip(client_ip)
        if mac is None:
            return None
        owner = w.inventory.find_node(ClientIdentity(mac=mac))
        return mac if owner is None or owner.name == node.name else None

    def _grub_cfg(self, w: World, name: str, client_ip: str) -> str:
        """GRUB's config names (docs/boot-flows.md): ``grub.cfg-<uuid>`` (asked first: only
        a node configured by that GUID answers), ``grub.cfg-01-<mac>`` (grub-mknetdir's
        images ask it next; the ``grub.cfg`` dispatcher asks it with colons, as GRUB spells
        ``$net_default_mac``), ``grub.cfg-ip-<a.b.c.d>`` (the dispatcher, when GRUB knows no
        MAC), hex-IP names (not found: configs are per MAC) and ``grub.cfg`` itself."""
        if name == "grub.cfg":
            return self._renderer(w).grub_dispatch()
        ident: ClientIdentity | None = None
        if name.startswith("grub.cfg-01-"):
            try:
                mac = normalize_mac(name[len("grub.cfg-01-"):])
            except ValueError:
                raise NotFound(f"{name}: not a MAC") from None
            self.learn_ip(client_ip, mac)
            ident = ClientIdentity(mac=mac, ip=client_ip)
        elif name.startswith("grub.cfg-ip-"):
            known = self.mac_for_ip(name[len("grub.cfg-ip-"):])
            ident = ClientIdentity(mac=known, ip=client_ip) if known else None
        elif len(name) == len("grub.cfg-") + 36 and name.count("-") == 5:
            # GRUB 2.06 (Debian) asks grub.cfg-<SMBIOS UUID> before the MAC name.
            by_guid = self._plan_by_guid_name(w, name[len("grub.cfg-"):], client_ip)
            if by_guid is None:
                raise NotFound(f"{name}: no node with this GUID")
            return self._text(w, "grub", by_guid, NodeRenderer.grub_config)
        elif _HEX_IP.match(name[len("grub.cfg-"):]):
            raise NotFound(f"{name}: configs are per MAC")
        else:
            raise NotFound(f"{name}: no such config")
        plan = self._plan(w, ident) if ident is not None else \
            Decline("client not identified (no MAC known for its address)")
        if isinstance(plan, Decline):
            self._event(ident.mac if ident else None, "grub-decline", reason=plan.reason)
            return self._renderer(w).grub_decline(plan.reason)
        return self._text(w, "grub", plan, NodeRenderer.grub_config)

    def tftp_done(self, filename: str, client_ip: str, outcome: str, nbytes: int) -> None:
        mac = self.mac_for_ip(client_ip)
        kind = "tftp-sent" if outcome == "completed" else "tftp-ended"
        self._event(mac, kind, file=filename, bytes=nbytes, outcome=outcome, ip=client_ip)

    def esxi_boot_cfg(self, node_key: str, build_ref: str, client_ip: str) -> str:
        return self._esxi_boot_cfg(self.refresh(), node_key, build_ref, client_ip)

    def _esxi_boot_cfg(self, w: World, node_key: str, build_ref: str, client_ip: str) -> str:
        plan = self._plan_by_key(w, node_key, client_ip, build_ref)
        try:
            return self._renderer(w).esxi_boot_cfg(plan)
        except RenderError as e:  # e.g. the build named in the path is not an ESXi build
            raise NotFound(str(e)) from e
