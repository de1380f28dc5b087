"""What ``decide()`` returns: a ``BootPlan`` for a node, or a ``Decline`` with its reason.

A plan is the single source every answer for a node is rendered from: the DHCP boot file,
the pxelinux config, the iPXE script, ESXi boot.cfg and the first-boot files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netbootd.core.identity import ClientIdentity
from netbootd.core.model import Build


@dataclass(frozen=True, slots=True)
class Reimage:
    """Mode ``reimage``: the installer (``BootPlan.build``) writes ``disk`` onto the node."""

    action_id: int
    disk: Build


@dataclass(frozen=True, slots=True)
class BootPlan:
    identity: ClientIdentity
    node: str | None  # inventory node name; None for a node only matched by group
    group: str
    mode: str  # appliance | local | menu | discover | reimage
    loader: str  # pxelinux | ipxe | grub
    build: Build | None  # None only in local mode; the installer in reimage mode
    hostname: str
    cmdline: str  # extra kernel arguments from group and node (the build's own come first)
    user_data: str | None  # template name for cloud-init user-data / ESXi kickstart
    vars: Mapping[str, Any] = field(default_factory=dict)
    channel: str | None = None  # the channel the build came from, if any
    reimage: Reimage | None = None
    secure_boot: bool = False  # UEFI: boot through shim -> signed GRUB -> signed kernel

    @property
    def node_key(self) -> str:
        """The node's key in URLs and TFTP paths: its MAC with dashes (as in ``01-<mac>``)."""
        assert self.identity.mac is not None  # decide() declines identities without a MAC
        return self.identity.mac.replace(":", "-")


@dataclass(frozen=True, slots=True)
class Decline:
    """Do not boot this client; ``reason`` is logged and recorded."""

    reason: str
