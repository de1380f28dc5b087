"""Where things live in the image store, and the store's change marker.

::

    <store>/builds/<name>/<version>/   one immutable build: its files and manifest.json
    <store>/blobs/sha256/ab/abcd...     every distinct file once; build files are hard links
    <store>/.staging/<tmp>/             imports in progress (never read by the server)
    <store>/.generation                 replaced on every publish and removal
    <store>/.lock                       serialises publish, remove and gc

Identical files shared by several builds are stored once: a build's file and its blob are two
names of one inode, so ``gc`` can tell an unused blob by its link count (1) without reading any
manifest. A running server stats ``.generation`` (about a microsecond) before it decides, and
re-reads the store only when it changed, so an import or removal is seen at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

BLOB_DIR = "blobs/sha256"
STAGING_DIR = ".staging"
GENERATION_FILE = ".generation"
LOCK_FILE = ".lock"


def builds_dir(store: Path) -> Path:
    return store / "builds"


def build_dir(store: Path, name: str, version: str) -> Path:
    return store / "builds" / name / version


def blob_path(store: Path, sha256: str) -> Path:
    return store / BLOB_DIR / sha256[:2] / sha256


def staging_root(store: Path) -> Path:
    return store / STAGING_DIR


def _generation_at(marker: str) -> tuple[int, int]:
    """A value that changes whenever a build is published or removed ((0, 0) if never)."""
    try:
        st = os.stat(marker)
    except OSError:
        return (0, 0)
    return (st.st_ino, st.st_mtime_ns)


class GenerationWatch:
    """Tells whether the store changed since the last look; one stat(2) of a path string
    built once, because a running server looks before every decision (a per-packet path)."""

    def __init__(self, store: Path) -> None:
        self._marker = str(store / GENERATION_FILE)
        self._seen = _generation_at(self._marker)

    def changed(self) -> bool:
        """True once per change; the new value is taken before the caller reloads, so a
        change made during the reload shows at the next look."""
        now = _generation_at(self._marker)
        if now == self._seen:
            return False
        self._seen = now
        return True


def bump_generation(store: Path) -> None:
    """Replace the marker (a new inode each time, so even a same-nanosecond change shows)."""
    tmp = store / f"{GENERATION_FILE}.{uuid.uuid4().hex}"
    tmp.write_text(uuid.uuid4().hex + "\n")
    os.replace(tmp, store / GENERATION_FILE)


@contextlib.contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold the store's exclusive lock (publish, remove, gc); released on exit or crash."""
    store.mkdir(parents=True, exist_ok=True)
    with (store / LOCK_FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
