"""How a command ends: one exit code per kind of outcome, and every user error as a short
message that says what to do, never a traceback (the table is in docs/operations.md).

``run`` calls a command and maps what it raises: netbootd's own errors (bad input, unknown
names, refusals), a closed pipe (``| head``), no permission or a read-only state or store
directory, a locked or read-only sqlite database, a full disk, Ctrl-C. ``confirm`` asks
before a destructive command, or refuses when no one can answer and ``--yes`` is missing.
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from collections.abc import Callable

from netbootd.errors import NetbootdError

EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command ran and found problems (check, image verify)
EXIT_REFUSED = 2  # bad input, an unknown name, a refused change, a missing --yes
EXIT_OTHER_DHCP = 3  # serve in server mode: another DHCP server answers on the link
EXIT_ACCESS = 4  # no permission, read-only file system, or a locked database
EXIT_NO_SPACE = 5  # the disk (or quota) is full
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # the reader went away (128 + SIGPIPE), e.g. `| head`


class Refused(NetbootdError):
    """A destructive command run without confirmation."""


def confirm(args: argparse.Namespace, what: str) -> None:
    """Ask ``what? [y/N]`` on a terminal; without one, refuse unless ``--yes`` was given."""
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise Refused(f"{what}: refused without confirmation; add --yes to run it "
                      "non-interactively")
    try:
        answer = input(f"{what}? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused(f"{what}: not confirmed; nothing was changed")


def _say(message: str) -> None:
    sys.stderr.write(f"netbootd: {message}\n")
    sys.stderr.flush()


def _os_error(e: OSError) -> int:
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        _say(f"no space left on the device{where}: free some space (`netbootd image gc` "
             "removes unused files) and run it again")
        return EXIT_NO_SPACE
    if e.errno == errno.EROFS:
        _say(f"read-only file system{where}: the state and store directories must be "
             "writable for this command; remount them read-write or run it on the server")
        return EXIT_ACCESS
    if e.errno in (errno.EACCES, errno.EPERM):
        _say(f"permission denied{where}: run it as the user netbootd runs as (or root)")
        return EXIT_ACCESS
    _say(f"{e.strerror or e}{where}")
    return EXIT_REFUSED


def _sqlite_error(e: sqlite3.Error) -> int:
    text = str(e)
    if "locked" in text or "busy" in text:
        _say(f"the state database is locked by another process ({text}); try again in a "
             "moment")
        return EXIT_ACCESS
    if "full" in text:
        _say(f"the state database cannot grow ({text}): free some space and try again")
        return EXIT_NO_SPACE
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        _say(f"cannot write the state database ({text}): the state directory must be "
             "writable; run it as the user netbootd runs as (or root)")
        return EXIT_ACCESS
    _say(f"the state database failed: {text}")
    return EXIT_ACCESS


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so that the interpreter's last flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with ``--help | head`` (and ``--print-man | head``) quiet."""
    try:
        try:
            return parser.parse_args(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        raise SystemExit(EXIT_BROKEN_PIPE) from None


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``func(args)``'s exit code, or the code (and one message) of what it raised."""
    try:
        code = int(func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _say("interrupted; an unfinished import or change was undone")
        return EXIT_INTERRUPTED
    except NetbootdError as e:
        _say(str(e))
        return int(getattr(e, "exit_code", EXIT_REFUSED))
    except sqlite3.Error as e:
        return _sqlite_error(e)
    except OSError as e:
        return _os_error(e)
    except ValueError as e:
        _say(str(e))
        return EXIT_REFUSED
    except Exception as e:
        # PostgreSQL refused a statement (a missing privilege...); unreachable is
        # StateUnavailable above. psycopg is imported only when [state] database names it.
        if type(e).__module__.split(".")[0] != "psycopg":
            raise
        _say(f"the state database refused the command: {str(e).strip()}")
        return EXIT_ACCESS
