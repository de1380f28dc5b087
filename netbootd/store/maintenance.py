"""Store upkeep: re-hash builds (``image verify``), remove a build, collect garbage.

Removal here is mechanical; whether a build may be removed (no channel, pin or pending action
still needs it) is decided by ``netbootd.admin`` which knows the intent. A removed build is
first renamed out of ``builds/`` (one atomic step: the server stops offering it), then deleted;
files a client is downloading stay readable until it closes them (POSIX unlink semantics).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from netbootd.errors import NotFound
from netbootd.store.catalog import Build
from netbootd.store.importer import CHUNK
from netbootd.store.layout import (
    BLOB_DIR,
    build_dir,
    bump_generation,
    staging_root,
    store_lock,
)
from netbootd.store.origin_layout import is_edge_blob


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    build: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.build}: {self.file}: {self.problem}"


def verify_build(build: Build) -> list[VerifyProblem]:
    """Re-hash every file of ``build`` and compare with its manifest; [] when all is well.
    On an edge, the files of a pulled build that are not cached yet are skipped."""
    out: list[VerifyProblem] = []
    for name, info in sorted(build.manifest.files.items()):
        path = build.path_of(name)
        if is_edge_blob(path) and not path.exists():
            continue  # a pulled build's file an edge has not fetched yet: fetched on use
        try:
            h = hashlib.sha256()
            size = 0
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except OSError as e:
            out.append(VerifyProblem(build.ref, name, f"unreadable ({e.strerror})"))
            continue
        if size != info.size:
            out.append(VerifyProblem(build.ref, name, f"size {size}, manifest says {info.size}"))
        elif h.hexdigest() != info.sha256:
            out.append(VerifyProblem(build.ref, name,
                                     f"sha256 {h.hexdigest()}, manifest says {info.sha256}"))
    return out


def remove_build(store: Path, ref: str) -> None:
    name, _, version = ref.partition("/")
    target = build_dir(store, name, version)
    if not version or not (target / "manifest.json").is_file():
        raise NotFound(f"no build named {ref} in {store}")
    with store_lock(store):
        staging_root(store).mkdir(parents=True, exist_ok=True)
        doomed = staging_root(store) / f"removing-{name}-{version}.{uuid.uuid4().hex[:8]}"
        os.rename(target, doomed)
        bump_generation(store)
        shutil.rmtree(doomed)
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # the last version of this name: an empty directory


@dataclass(frozen=True, slots=True)
class GcResult:
    blobs_removed: int
    bytes_freed: int
    staging_removed: int


def gc(store: Path) -> GcResult:
    """Remove blobs no build links to and staging directories left by dead imports."""
    staged = 0
    blobs = 0
    freed = 0
    with store_lock(store):
        root = staging_root(store)
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if _abandoned(d):
                shutil.rmtree(d, ignore_errors=True)
                staged += 1
        # After the staging pass: a blob linked by a live import has a link count of 2.
        for blob in sorted((store / BLOB_DIR).glob("*/*")):
            st = blob.stat()
            if st.st_nlink == 1:
                blob.unlink()
                blobs += 1
                freed += st.st_size
    return GcResult(blobs, freed, staged)


def _abandoned(d: Path) -> bool:
    """A staging directory whose importer is gone: its owner lock is free (or never made)."""
    if not d.is_dir():
        return True
    try:
        # An import drops its owner file only under the store lock, just before it renames
        # the directory away; gc holds that lock, so a missing owner means a dead removal.
        fh = (d / ".owner").open("r")
    except FileNotFoundError:
        return True
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
