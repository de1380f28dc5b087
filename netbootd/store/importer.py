"""Import builds into the store: written aside, verified, then published with one rename.

An import streams every file into ``<store>/.staging/<tmp>/`` while hashing it, links each file
to its content-addressed blob (a file already in the store is not stored twice), writes the
manifest, re-reads every file to check its sha256, and only then renames the staging directory
to ``builds/<name>/<version>``. A crash at any point leaves at most a staging directory, which
the server never reads and ``image gc`` removes; a failure (disk full, a hash that does not
match) removes it at once. Builds are immutable: publishing onto an existing version is refused.

A Linux build's architecture (``arch`` in the manifest) is read from its kernel's header
(``store.kernel_arch``); an arch given by the operator that the kernel contradicts is refused,
and a kernel whose header does not say (a compressed image) takes the given arch or ``amd64``.

Kinds: ``linux`` (kernel, initrds, optional squashfs root, default command line), a directory
or tarball that carries a manifest, ``disk`` (raw, gzip or xz image for lab reimage) and
``esxi`` (files read out of a VMware installer ISO by ``store.esxi_iso``).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import functools
import gzip
import hashlib
import json
import lzma
import os
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from netbootd.errors import BuildError, PathRefused
from netbootd.paths import contain
from netbootd.store.builds import kernel_signature
from netbootd.store.kernel_arch import ARCHES, DEFAULT_ARCH, HEAD_BYTES, kernel_arch
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
    DiskImage,
    EsxiBoot,
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


# -- the kinds of import ---------------------------------------------------------------------
def build_arch(kernel: Path, declared: object) -> str:
    """The arch a build records: the kernel's own (checked against ``declared``), else
    ``declared``, else amd64."""
    if declared is not None and declared not in ARCHES:
        raise BuildError(f"arch {declared!r} is not one of {', '.join(ARCHES)}")
    with kernel.open("rb") as f:
        found = kernel_arch(f.read(HEAD_BYTES))
    if found is not None and declared is not None and found != declared:
        raise BuildError(f"{kernel.name} is an {found} kernel, but the build says arch "
                         f"{declared}; fix the arch (or drop it: it is read from the kernel)")
    arch = found or declared or DEFAULT_ARCH
    assert isinstance(arch, str)
    return arch


def import_linux(store: Path, name: str, version: str, kernel: Path, initrds: list[Path],
                 *, rootfs: Path | None = None, cmdline: str = "", description: str = "",
                 extra: dict[str, Any] | None = None, arch: str | None = None,
                 progress: Progress = _no_progress) -> Manifest:
    """A Linux/KVM build from a kernel, initrds and an optional squashfs root.

    Files keep their own names. The root file system's URL reaches the kernel command line
    through the ``${rootfs_url}`` placeholder (``root=live:${rootfs_url}`` for dracut,
    ``fetch=${rootfs_url}`` for live-boot), so no distribution's syntax is assumed.
    ``extra`` adds recipe facts to the manifest (e.g. ``role``); ``rootfs`` is set here.
    """
    if "\n" in cmdline or "\r" in cmdline:
        raise BuildError("--cmdline may not contain a newline")
    paths = [kernel, *initrds, *([rootfs] if rootfs else [])]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise BuildError(f"two files with one name among {', '.join(names)}; rename one")
    extra = {**(extra or {}), **({"rootfs": rootfs.name} if rootfs else {})}
    with staging(store, name, version, progress) as st:
        for p in paths:
            st.add(path_source(p.name, p))
        # Read from the staged copy (the source may be a pipe): a PE (EFI stub) kernel's
        # signer, for Secure Boot (docs/secure-boot.md).
        sig = kernel_signature(st.dir / kernel.name)
        if sig is not None:
            extra["kernel_signature"] = sig.to_json()
        return st.publish(Manifest(
            name=name, version=version, kind="linux", files=dict(st.files),
            kernel=kernel.name, initrds=tuple(p.name for p in initrds), cmdline=cmdline,
            description=description, extra=extra,
            arch=build_arch(st.dir / kernel.name, arch)))


MAGIC = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz"}
DISK_NAMES = {"none": "disk.img", "gzip": "disk.img.gz", "xz": "disk.img.xz"}


def sniff_compression(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(6)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise BuildError(f"{path}: zstd images are not supported (the installer's busybox "
                         "has no zstd); recompress with gzip or xz")
    return next((c for m, c in MAGIC.items() if head.startswith(m)), "none")


def import_disk(store: Path, name: str, version: str, image: Path, *, description: str = "",
                progress: Progress = _no_progress) -> Manifest:
    """A disk image for lab reimage: raw, gzip or xz; the raw size and sha256 are recorded
    (the installer checks them on the disk it wrote)."""
    comp = sniff_compression(image)
    fname = DISK_NAMES[comp]
    with staging(store, name, version, progress) as st:
        st.add(path_source(fname, image))
        raw_size, raw_sha = _raw_facts(st.dir / fname, comp)
        return st.publish(Manifest(
            name=name, version=version, kind="disk", files=dict(st.files),
            description=description or f"disk image {image.name}",
            disk=DiskImage(fname, comp, raw_size, raw_sha)))


def _raw_facts(path: Path, compression: str) -> tuple[int, str]:
    opener: Callable[[Path], IO[bytes]] = {
        "none": lambda p: p.open("rb"),
        "gzip": lambda p: gzip.open(p, "rb"),  # noqa: SIM115 (opened by the with below)
        "xz": lambda p: lzma.open(p, "rb"),  # noqa: SIM115
    }[compression]
    h, n = hashlib.sha256(), 0
    try:
        with opener(path) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
    except (OSError, EOFError, lzma.LZMAError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise BuildError(f"the disk image does not decompress as {compression}: {e}") from e
    if n == 0:
        raise BuildError("the disk image is empty")
    return n, h.hexdigest()


def import_tree(store: Path, source: Path, *, name: str | None = None,
                version: str | None = None, progress: Progress = _no_progress) -> Manifest:
    """A directory or tarball holding ``manifest.json`` and the files it lists.

    The manifest is netbootd's own format; ``files`` may give only names (a list, or objects
    without size/sha256) and sizes and hashes are computed; a sha256 that is given must match.
    ``name``/``version`` override the manifest's.
    """
    if source.is_dir():
        reader: _TreeReader = _DirReader(source)
    elif tarfile.is_tarfile(source):
        reader = _TarReader(source)
    else:
        raise BuildError(f"{source}: not a directory or a tar archive with a manifest.json")
    with reader:
        data = reader.manifest()
        if name:
            data["name"] = name
        if version:
            data["version"] = version
        files = data.get("files")
        if isinstance(files, list):
            files = {f: {} for f in files}
        if not isinstance(files, dict) or not files or not all(
                isinstance(f, str) and isinstance(v, dict) for f, v in files.items()):
            raise BuildError(f"{source}: manifest.json needs files: a list of names or an "
                             "object name -> {sha256}")
        problems = [f"files.{f}: not an acceptable file name" for f in files
                    if not valid_file_name(f)]
        problems += [f"files.{f}: not in {source}" for f in files
                     if valid_file_name(f) and not reader.has(f)]
        if problems:
            raise BuildError(f"{source}: " + "; ".join(problems))
        n, v = data.get("name"), data.get("version")
        if not isinstance(n, str) or not isinstance(v, str):
            raise BuildError(f"{source}: manifest.json needs name and version (or pass "
                             "--name and --version)")
        with staging(store, n, v, progress) as st:
            for f, info in files.items():
                sha = info.get("sha256")
                st.add(Source(f, functools.partial(reader.open, f), reader.size(f),
                              sha if isinstance(sha, str) else None))
            data["format"] = 1
            data["files"] = {f: {"size": i.size, "sha256": i.sha256}
                             for f, i in st.files.items()}
            kernel = data.get("kernel")
            if isinstance(kernel, str) and kernel in st.files:
                data["arch"] = build_arch(st.dir / kernel, data.get("arch"))
            m = parse_manifest(json.dumps(data), f"{source}/manifest.json")
            return st.publish(m)


class _TreeReader(abc.ABC):
    """The files of a directory or a tarball, by their names in the manifest."""

    def __enter__(self) -> _TreeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abc.abstractmethod
    def manifest(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def has(self, name: str) -> bool: ...

    @abc.abstractmethod
    def size(self, name: str) -> int | None: ...

    @abc.abstractmethod
    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    @staticmethod
    def _decode(raw: bytes, where: str) -> dict[str, Any]:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BuildError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise BuildError(f"{where}: expected a JSON object")
        return data


class _DirReader(_TreeReader):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return contain(self.root, name)  # a symlink out of the tree is refused

    def manifest(self) -> dict[str, Any]:
        mf = self.root / "manifest.json"
        if not mf.is_file():
            raise BuildError(f"{self.root}: no manifest.json")
        return self._decode(mf.read_bytes(), str(mf))

    def has(self, name: str) -> bool:
        try:
            return self._path(name).is_file()
        except PathRefused:
            return False

    def size(self, name: str) -> int | None:
        return self._path(name).stat().st_size

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self._path(name).open("rb")


class _TarReader(_TreeReader):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar = tarfile.open(path)  # noqa: SIM115 (closed by __exit__)
        # Regular files only, by normalised name; links and devices are never followed.
        self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers()
                        if m.isreg()}

    def __exit__(self, *exc: object) -> None:
        self.tar.close()

    def manifest(self) -> dict[str, Any]:
        m = self.members.get("manifest.json")
        if m is None:
            raise BuildError(f"{self.path}: no manifest.json at the top of the archive")
        f = self.tar.extractfile(m)
        assert f is not None
        return self._decode(f.read(), f"{self.path}:manifest.json")

    def has(self, name: str) -> bool:
        return name in self.members

    def size(self, name: str) -> int | None:
        return self.members[name].size

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        f = self.tar.extractfile(self.members[name])
        assert f is not None
        return f  # tarfile's ExFileObject is a BufferedReader: a context manager


def import_esxi_iso(store: Path, name: str, version: str, iso: Path, *,
                    description: str = "", progress: Progress = _no_progress) -> Manifest:
    """An ESXi build from VMware's installer ISO, read with pycdlib (no loop mount, no root):
    boot.cfg's kernel and modules, ``mboot.c32`` and the EFI loaders, recorded as kind esxi."""
    from netbootd.store.esxi_iso import EsxiIso

    with EsxiIso(iso) as img, staging(store, name, version, progress) as st:
        boot: EsxiBoot = img.boot
        for f in img.files():
            st.add(Source(f, functools.partial(img.open, f), img.size(f)))
        return st.publish(Manifest(
            name=name, version=version, kind="esxi", files=dict(st.files),
            description=description or boot.title or f"ESXi from {iso.name}",
            esxi=boot))
