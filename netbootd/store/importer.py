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
``esxi`` (files read out of a VMware installer ISO by ``store.esxi_iso``). Staging, publishing
and clean-up are ``store.staging``.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import gzip
import hashlib
import json
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from netbootd.errors import BuildError, PathRefused
from netbootd.paths import contain
from netbootd.store.builds import kernel_signature
from netbootd.store.kernel_arch import ARCHES, DEFAULT_ARCH, HEAD_BYTES, kernel_arch
from netbootd.store.manifest import (
    DiskImage,
    EsxiBoot,
    Manifest,
    parse_manifest,
    valid_file_name,
)
from netbootd.store.staging import (
    CHUNK,
    Progress,
    Source,
    Staging,
    StoreAccess,
    StoreFull,
    _no_progress,
    path_source,
    staging,
)

__all__ = ["CHUNK", "Progress", "Source", "Staging", "StoreAccess", "StoreFull", "build_arch",
           "import_disk", "import_esxi_iso", "import_kind", "import_linux", "import_tree",
           "path_source", "sniff_compression", "staging"]

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


def import_kind(store: Path, kind: str, *, name: str | None = None, version: str | None = None,
                 paths: list[Path], cmdline: str = "", rootfs: Path | None = None,
                 description: str = "", progress: Progress | None = None,
                 arch: str | None = None) -> Manifest:
    """``kind``: linux (paths = kernel, initrds...), tree (one directory or tarball),
    disk (one image), esxi (one installer ISO). ``arch`` (linux only): checked against
    the kernel's header, which decides when it says."""
    m: Manifest
    kw: dict[str, Any] = {"progress": progress} if progress else {}
    if kind == "tree":
        if len(paths) != 1:
            raise BuildError("a tree import takes one directory or tarball")
        return import_tree(store, paths[0], name=name, version=version, **kw)
    if not name or not version:
        raise BuildError(f"a {kind} import needs --name and --version")
    if kind == "linux":
        if not paths:
            raise BuildError("a linux import needs a kernel and usually an initrd")
        m = import_linux(store, name, version, paths[0], list(paths[1:]),
                                  rootfs=rootfs, cmdline=cmdline, description=description,
                                  arch=arch, **kw)
    elif kind in ("disk", "esxi"):
        if len(paths) != 1:
            raise BuildError(f"a {kind} import takes exactly one file")
        fn = import_disk if kind == "disk" else import_esxi_iso
        m = fn(store, name, version, paths[0], description=description, **kw)
    else:
        raise BuildError(f"unknown import kind {kind!r} (linux, tree, disk, esxi)")
    return m
