"""A client-supplied path's components, validated: the pure half of paths.py.

Parsing a TFTP or HTTP file name needs no disk, so the pure answers (answers_tftp.py) split
names here; resolving one on disk, symlinks and all, stays in paths.py (``contain``).
"""

from __future__ import annotations

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
