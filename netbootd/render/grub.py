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
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def grub_quote(word: str) -> str:
    """One word for GRUB's parser, quoted only when it holds something GRUB would interpret."""
    if _SAFE_WORD.match(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def grub_args(cmdline: str) -> str:
    """A kernel command line as GRUB words: each argument quoted on its own, so GRUB hands
    the kernel exactly the line netbootd composed (``linux`` joins its words with spaces)."""
    return " ".join(grub_quote(w) for w in cmdline.split())


def grub_device_path(url: str, server_ip: str) -> str:
    """``http://host:port/p`` -> ``(http,host:port)/p``; anything GRUB cannot fetch over
    HTTP (https, a query) -> ``(tftp,server_ip)/p``, the same path served over TFTP."""
    u = urlsplit(url)
    path = u.path or "/"
    if u.scheme == "http" and u.hostname and not u.query:
        port = u.port or 80
        return f"(http,{u.hostname}:{port}){path}"
    return f"(tftp,{server_ip}){path}"
