"""The one containment function: every client-supplied path is resolved here, never by hand.

A TFTP file name or an HTTP path is hostile input. ``contain`` turns it into a path that is
guaranteed to lie inside ``root`` after symlinks are resolved, or raises ``PathRefused``.
"""

from __future__ import annotations

import os
from pathlib import Path

from netbootd.errors import PathRefused

MAX_CLIENT_PATH = 255  # longest TFTP/HTTP file path we accept; PXE ROMs send far shorter names


def split_client_path(client_path: str) -> list[str]:
    """Validate a client path and return its components; raises PathRefused.

    One leading ``/`` is tolerated because many ROMs ask for ``/pxelinux.0`` meaning the TFTP
    root (tftpd-hpa ``-s`` does the same). Backslashes, NUL, control characters, ``.`` and
    ``..`` components and empty components are refused rather than normalised: a client that
    sends them is confused or hostile, and guessing what it meant is how servers leak files.
    """
    if not client_path:
        raise PathRefused("empty path")
    if len(client_path) > MAX_CLIENT_PATH:
        raise PathRefused(f"path longer than {MAX_CLIENT_PATH} characters")
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in client_path):
        raise PathRefused("path contains a control character, NUL or backslash")
    path = client_path[1:] if client_path.startswith("/") else client_path
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathRefused("path has an empty, '.' or '..' component or is absolute")
    return parts


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
