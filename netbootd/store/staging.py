"""Staging one import: files streamed aside and hashed, linked to their blobs, re-read,
then published with one rename under the store lock, or thrown away with every blob it added.

A crash leaves at most a staging directory whose owner lock is free, which the server never
reads and ``image gc`` removes; an error or Ctrl-C (``KeyboardInterrupt``) removes it at once,
so a failed import leaves the store as it was. Disk full and a read-only or unwritable store
are told apart (``StoreFull``, ``StoreAccess``: their own exit codes, docs/operations.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from netbootd.errors import BuildError
from netbootd.store.layout import (
    blob_path,
    build_dir,
    bump_generation,
    fsync_dir,
    staging_root,
    store_lock,
)
from netbootd.store.manifest import (
    NAME_RE,
    FileInfo,
    Manifest,
    manifest_to_json,
    parse_manifest,
    valid_file_name,
)

CHUNK = 1 << 20
Progress = Callable[[str, int, int | None], None]  # (file name, bytes done, bytes total)


@dataclass(frozen=True, slots=True)
class Source:
    """One file to import: its name in the build and how to read it."""

    name: str
    open: Callable[[], contextlib.AbstractContextManager[IO[bytes]]]
    size: int | None = None
    expect_sha256: str | None = None


def path_source(name: str, path: Path, expect_sha256: str | None = None) -> Source:
    if not path.is_file() and not path.is_fifo():
        raise BuildError(f"{path}: not a readable file")
    size = path.stat().st_size if path.is_file() else None
    return Source(name, lambda: path.open("rb"), size, expect_sha256)


def _no_progress(name: str, done: int, total: int | None) -> None:
    return None


@dataclass
class Staging:
    """A build being written aside; ``publish`` makes it visible, ``abort`` throws it away."""

    store: Path
    label: str
    progress: Progress = _no_progress
    files: dict[str, FileInfo] = field(default_factory=dict)
    new_blobs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        root = staging_root(self.store)
        root.mkdir(parents=True, exist_ok=True)
        self.dir = root / f"{self.label}.{uuid.uuid4().hex[:12]}"
        self.dir.mkdir()
        # Held for the life of the import: `image gc` removes only staging directories whose
        # owner lock it can take, i.e. imports whose process is gone (killed, crashed).
        self._owner = (self.dir / ".owner").open("w")
        fcntl.flock(self._owner, fcntl.LOCK_EX)

    def add(self, src: Source) -> FileInfo:
        if not valid_file_name(src.name) or src.name == "manifest.json":
            raise BuildError(f"{src.name!r}: not an acceptable file name in a build")
        if src.name in self.files:
            raise BuildError(f"two files named {src.name!r} in one build; rename one")
        target = self.dir / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        done = 0
        with src.open() as fin, target.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
                h.update(chunk)
                done += len(chunk)
                self.progress(src.name, done, src.size)
            fout.flush()
            os.fsync(fout.fileno())
        digest = h.hexdigest()
        if src.expect_sha256 is not None and digest != src.expect_sha256:
            raise BuildError(f"{src.name}: sha256 is {digest}, the manifest says "
                             f"{src.expect_sha256}; the source is corrupt or the manifest is "
                             "stale")
        self._link_blob(target, digest, done)
        info = FileInfo(done, digest)
        self.files[src.name] = info
        return info

    def _link_blob(self, target: Path, digest: str, size: int) -> None:
        """Make ``target`` and the blob of ``digest`` one inode (dedupe across builds)."""
        os.chmod(target, 0o444)
        blob = blob_path(self.store, digest)
        blob.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                st = blob.stat()
            except FileNotFoundError:
                try:
                    os.link(target, blob)
                    self.new_blobs.append(blob)
                    return
                except FileExistsError:
                    continue  # another import linked it first: share theirs
            if st.st_size != size:
                raise BuildError(f"blob {blob} has the wrong size: run `netbootd image "
                                 "verify` and `netbootd image gc`")
            tmp = target.with_name(f".{target.name}.link")
            os.link(blob, tmp)
            os.replace(tmp, target)
            return
        raise BuildError(f"could not link {target.name} into {blob.parent}")

    def verify(self) -> None:
        """Re-read every staged file and compare with what was hashed while writing."""
        for name, info in self.files.items():
            p = self.dir / name
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            if p.stat().st_size != info.size or h.hexdigest() != info.sha256:
                raise BuildError(f"{name}: changed on disk while importing (sha256 "
                                 f"{h.hexdigest()}); check the disk and import again")

    def publish(self, manifest: Manifest) -> Manifest:
        text = manifest_to_json(manifest)
        parse_manifest(text, f"{manifest.ref} (import)")  # the result must load like any build
        mf = self.dir / "manifest.json"
        with mf.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(mf, 0o444)
        self.verify()
        for d in sorted({p.parent for p in self.dir.rglob("*")} | {self.dir}, reverse=True):
            fsync_dir(d)
        target = build_dir(self.store, manifest.name, manifest.version)
        with store_lock(self.store):
            if target.exists():
                raise BuildError(f"build {manifest.ref} exists already; builds are "
                                 "immutable: import it under a new version")
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.dir / ".owner").unlink()  # under the lock: gc cannot take it for dead
            os.rename(self.dir, target)
            fsync_dir(target.parent)
            bump_generation(self.store)
        self._owner.close()
        return manifest

    def abort(self) -> None:
        """Throw the staged build away, and the blobs it added that nothing else links to,
        so that a failed import leaves the store exactly as it was."""
        self._owner.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        for blob in self.new_blobs:
            with contextlib.suppress(OSError):
                if blob.stat().st_nlink == 1:
                    blob.unlink()
        # Blob directories this import made and left empty (others' files keep theirs).
        for d in {b.parent for b in self.new_blobs}:
            with contextlib.suppress(OSError):
                d.rmdir()


class StoreFull(BuildError):
    """The store's file system (or quota) filled up during an import; nothing was kept."""

    exit_code = 5  # docs/operations.md, exit codes


class StoreAccess(BuildError):
    """The store is read-only or not writable by this user; nothing was kept."""

    exit_code = 4  # docs/operations.md, exit codes


@contextlib.contextmanager
def staging(store: Path, name: str, version: str,
            progress: Progress = _no_progress) -> Iterator[Staging]:
    """A Staging that is thrown away on any error, with disk-full explained."""
    for key, value in (("name", name), ("version", version)):
        if not NAME_RE.match(value):
            raise BuildError(f"build {key} {value!r}: use 1-64 of letters, digits, '.', '_', "
                             "'+', '-', starting with a letter or digit")
    if build_dir(store, name, version).exists():
        raise BuildError(f"build {name}/{version} exists already; builds are immutable: "
                         "import it under a new version")
    st = Staging(store, f"{name}-{version}", progress)
    try:
        yield st
    except OSError as e:
        st.abort()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull(f"no space left in {store} while importing {name}/{version}: "
                             "free some space (`netbootd image gc` removes unused files) and "
                             "import again; the store is unchanged") from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StoreAccess(f"cannot write the store {store} ({e.strerror}): run the import "
                              "as the user netbootd runs as (or root), on a writable store; "
                              "the store is unchanged") from e
        raise BuildError(f"importing {name}/{version} failed: {e}; the store is "
                         "unchanged") from e
    except BaseException:
        st.abort()
        raise
