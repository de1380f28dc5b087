"""The one containment function: every client-supplied path is resolved here, never by hand.

A TFTP file name or an HTTP path is hostile input. ``contain`` turns it into a path that is
guaranteed to lie inside ``root`` after symlinks are resolved, or raises ``PathRefused``.
"""

from __future__ import annotations

import os
from pathlib import Path

from netbootd.core.client_path import MAX_CLIENT_PATH, split_client_path
from netbootd.errors import PathRefused

__all__ = ["MAX_CLIENT_PATH", "contain", "split_client_path"]

def contain(root: Path, client_path: str) -> Path:
    """Return the real path of ``client_path`` inside ``root``; refuse anything that leaves it.

    The result is resolved (symlinks followed) and must still be below ``root``'s real path, so
    a symlink inside the tree that points outside is refused too.
    """
    parts = split_client_path(client_path)
    real_root = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(real_root.joinpath(*parts)))
    if candidate != real_root and real_root not in candidate.parents:
        raise PathRefused(f"{client_path!r} resolves outside its root")
    return candidate
