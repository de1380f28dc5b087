"""The server's first-boot HMAC key on disk: created once, readable by the service user only.

``<state_dir>/firstboot.key`` is created at first start with mode 0600 (O_EXCL, so two starts
racing cannot both write one), 32 random bytes from the OS CSPRNG. A key file readable or
writable by group or others is refused rather than used: a key anyone on the host can read
signs tokens for every node (world-readable secrets: Warewulf #728). An operator-supplied
``firstboot.key_file`` is used as it is, never created.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from netbootd.errors import NetbootdError
from netbootd.render.tokens import MIN_KEY_BYTES


class KeyFileError(NetbootdError):
    """The first-boot key file cannot be created, read or trusted; the message says the fix."""


def create_key(path: Path) -> None:
    """Write a fresh key at ``path`` (0600), unless a file is already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise KeyFileError(f"cannot create the first-boot key {path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(MIN_KEY_BYTES))
        f.flush()
        os.fsync(f.fileno())


def read_key(path: Path) -> bytes:
    """The key in ``path``; KeyFileError if missing, too short or open to group/others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"no first-boot key at {path}: `netbootd serve` creates it at first "
                           "start, or set firstboot.key_file") from None
    except OSError as e:
        raise KeyFileError(f"cannot read the first-boot key {path}: {e.strerror} (run as the "
                           "netbootd service user or root)") from e
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"first-boot key {path} is accessible to group or others "
                               f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")
        key = f.read(4096)
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"first-boot key {path} holds {len(key)} bytes; it needs at least "
                           f"{MIN_KEY_BYTES} (e.g. head -c 32 /dev/urandom)")
    return key
