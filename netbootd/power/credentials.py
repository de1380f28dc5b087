"""The power credentials file: BMC passwords, kept out of the config, the logs and the API.

A TOML file (``[power] credentials``) readable by its owner only (0600 or stricter): group or
world access is refused with the ``chmod`` that fixes it. Each table is one credential, named
after a node or after a spec's ``credential``; ``[default]`` serves nodes without their own::

    [default]
    password = "..."
    [web1]
    password = "..."

A ``Secret`` never shows its value in ``repr``/``str``, so it cannot leak into a log line or a
traceback by accident; only the driver reads ``.value``.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from netbootd.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Secret:
    value: str

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


class CredentialsUnreadable(ConfigError):
    """The file exists but this user may not read it: exit code 4, like other permissions."""

    exit_code = 4


def permission_problem(path: Path, st: os.stat_result) -> str | None:
    """Why a credentials file's mode is refused, with the fix; None when it is private."""
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); it "
                f"holds BMC passwords: run `chmod 600 {path}`")
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    return None


def load_credentials(path: Path) -> Mapping[str, Secret]:
    """Credential name -> password; ConfigError listing every problem of the file."""
    where = f"power credentials {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except PermissionError:
        raise CredentialsUnreadable(["permission denied: run it as the user netbootd runs as "
                                     "(the file's owner, or root)"], where) from None
    except OSError as e:
        raise ConfigError([f"cannot open it: {e.strerror} (create it with mode 0600: "
                           f"`install -m 600 /dev/null {path}`)"], where) from None
    try:
        if (msg := permission_problem(path, os.fstat(fd))) is not None:
            raise ConfigError([msg], where)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read()
    finally:
        os.close(fd)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        # The decoder's message quotes no values, only positions; still, say only where.
        line = getattr(e, "lineno", None)
        raise ConfigError([f"not valid TOML{f' (line {line})' if line else ''}"],
                          where) from None
    problems: list[str] = []
    out: dict[str, Secret] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            problems.append(f"{name}: expected a table [{name}] with password = \"...\"")
            continue
        for k in sorted(set(table) - {"password"}):
            problems.append(f"{name}.{k}: unknown key (known: password)")
        pw = table.get("password")
        if not isinstance(pw, str) or not pw:
            problems.append(f"{name}.password: required, a non-empty string")
            continue
        if len(pw.encode()) > 20:
            # IPMI 2.0 passwords are at most 20 bytes (IPMI v2.0 section 13.31).
            problems.append(f"{name}.password: longer than 20 bytes, which IPMI cannot send")
            continue
        out[name] = Secret(pw)
    if problems:
        raise ConfigError(problems, where)
    return out


def secret_for(creds: Mapping[str, Secret], node: str, credential: str) -> Secret | None:
    """The node's password: its spec's ``credential``, else its own name, else ``default``."""
    if credential:
        return creds.get(credential)
    return creds.get(node) or creds.get("default")
