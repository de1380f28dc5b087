"""What admins decided at run time, beside the config file: channels, node overrides, reimage.

Pure data handed to ``decide()``. The registry (``state/registry.py``) fills it from its
database; the planner reads it. Precedence for a node's build, most specific first: a run-time
override (``node set``), the node's config (``build`` pins, ``channel`` follows), then its
group's. A pending reimage order puts the node in mode ``reimage`` whatever else is set.

Rollouts (``core/rollout.py``) refine the channel rule only: a node whose build comes from
channel C and that is in a started batch of a rollout of C (``rollout``) boots that
rollout's new build instead of C's; a pin (at any level), a channel other than C, mode
``local`` and a reimage order all win over it, as they win over C itself. A node whose
rollout stopped, or that failed, has no rollout pin and boots C's build again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from netbootd.core.rollout import RolloutPin


@dataclass(frozen=True, slots=True)
class NodeOverride:
    """Run-time settings for one inventory node (None: use the config's)."""

    build: str | None = None
    channel: str | None = None
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class ReimageOrder:
    """A pending one-shot reimage of a node with disk image build ``image``."""

    action_id: int
    image: str


@dataclass(frozen=True, slots=True)
class Intent:
    channels: Mapping[str, str] = field(default_factory=dict)  # channel -> build ref
    overrides: Mapping[str, NodeOverride] = field(default_factory=dict)  # node name -> ...
    reimage: Mapping[str, ReimageOrder] = field(default_factory=dict)  # node name -> order
    installer: str | None = None  # build ref (NAME/VERSION) or channel name of the installer
    # GUIDs seen on more than one MAC: they identify nobody (cloned SMBIOS, placeholder).
    ambiguous_guids: frozenset[str] = frozenset()
    # Nodes in a started batch of an active rollout -> the build they boot (core/rollout.py).
    rollout: Mapping[str, RolloutPin] = field(default_factory=dict)


EMPTY_INTENT = Intent()
