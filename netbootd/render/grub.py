"""GRUB's script syntax: quoting kernel arguments and naming files on GRUB's net devices.

Pure helpers for the ``grub-*.cfg.j2`` templates. GRUB's parser splits words like a shell and
treats ``;`` as a command separator, and ``$`` expands variables: a NoCloud argument such as
``ds=nocloud;s=http://.../`` must be quoted or GRUB runs ``s=http...`` as a second command.
Inside single quotes nothing is special; a single quote itself is written ``'\\''`` (as in sh).

GRUB fetches files from ``(tftp,SERVER)/path`` or, with its http module,
``(http,SERVER:PORT)/path`` (GRUB 2.06). GRUB's TFTP is lock-step at blksize 1024 (about
2 MB/s measured in QEMU), so kernels and initrds go over HTTP whenever the site's URL is plain
``http://``; an ``https://`` public URL (GRUB has no TLS) falls back to TFTP, which serves the
same ``builds/<name>/<version>/<file>`` paths.

Debian 12's signed arm64 network GRUB (``grubnetaa64.efi``) has no http module built in: asked
for ``(http,...)`` it looks for ``arm64-efi/http.mod`` under its prefix and fails ("disk
`http,...' not found", seen under AAVMF), and a signed GRUB must not load unsigned modules
anyway. So arm64 builds go over TFTP (``GRUB_HTTP_ARCHES``): the 33 MB arm64 kernel takes about
15 s there.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
# Build arches whose GRUB (Debian's network images) can fetch over HTTP.
GRUB_HTTP_ARCHES = frozenset({"amd64"})


def grub_quote(word: str) -> str:
    """One word for GRUB's parser, quoted only when it holds something GRUB would interpret."""
    if _SAFE_WORD.match(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def kernel_words(cmdline: str) -> list[str]:
    """A command line split as the kernel splits it (``next_arg``): at spaces outside double
    quotes, the double quotes removed (``a="b c"`` is the argument ``a=b c``)."""
    words: list[str] = []
    cur: list[str] = []
    quoted = seen = False
    for ch in cmdline:
        if ch == '"':
            quoted, seen = not quoted, True
        elif ch.isspace() and not quoted:
            if cur or seen:
                words.append("".join(cur))
            cur, seen = [], False
        else:
            cur.append(ch)
    if cur or seen:
        words.append("".join(cur))
    return words


def grub_args(cmdline: str) -> str:
    """A kernel command line as GRUB words, each quoted on its own for GRUB's parser.

    GRUB's ``linux`` joins its words with spaces and wraps a word holding a space in double
    quotes, which the kernel reads back as one argument: so each kernel argument becomes one
    GRUB word. GRUB also puts a backslash before any ``'``, ``"`` or ``\\`` inside a word,
    which the kernel does not remove: such characters do not survive a GRUB boot (nor do they
    in GRUB-generated menus)."""
    return " ".join(grub_quote(w) for w in kernel_words(cmdline))


def grub_device_path(url: str, server_ip: str, http: bool = True) -> str:
    """``http://host:port/p`` -> ``(http,host:port)/p``; anything GRUB cannot fetch over
    HTTP (https, a query, or ``http`` False: a GRUB without HTTP) -> ``(tftp,server_ip)/p``,
    the same path served over TFTP."""
    u = urlsplit(url)
    path = u.path or "/"
    if http and u.scheme == "http" and u.hostname and not u.query:
        port = u.port or 80
        return f"(http,{u.hostname}:{port}){path}"
    return f"(tftp,{server_ip}){path}"
