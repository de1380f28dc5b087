"""Builds on disk: read the store into a BuildCatalog, and make quick mode's one-off build.

Builds are read from ``<store>/builds/<name>/<version>/manifest.json``. Every file a manifest
lists is resolved through the containment function, so a symlink in a build directory that
points out of it makes the build unusable instead of serving a file from elsewhere. Quick mode
(``netbootd boot``) makes a ``Build`` straight from files on the command line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from netbootd.errors import BuildError, PathRefused
from netbootd.paths import contain
from netbootd.store.authenticode import (
    NotPE,
    Signature,
    parse_certificate_table,
    security_directory,
    signature_from_json,
)
from netbootd.store.catalog import Build, BuildCatalog
from netbootd.store.manifest import FileInfo, Manifest, parse_manifest
from netbootd.store.origin_layout import edge_blob, edge_manifests


class HashCache:
    """sha256 of files already checked, by (device, inode, mtime, size): with
    ``server.verify_builds`` a store reload re-hashes only files it has not seen."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int], str] = {}

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if key not in self._known:
            self._known[key] = sha256_file(path)
        return self._known[key]


def load_store(store_dir: Path,
               verify: HashCache | None = None) -> tuple[BuildCatalog, list[str]]:
    """Read every build under ``store_dir/builds``; return the catalog and the problems seen.

    A build whose manifest is broken is left out and reported, not fatal: one bad build must
    not stop the others from being served. Directories starting with ``.`` are imports in
    progress and are ignored. With ``verify``, a build with a file whose size or sha256 does
    not match its manifest is left out too.
    """
    builds: list[Build] = []
    problems: list[str] = []
    root = store_dir / "builds"
    if not root.is_dir():
        return BuildCatalog(pulled_builds(store_dir, set(), problems)), problems
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ver_dir in sorted(p for p in name_dir.iterdir()
                              if p.is_dir() and not p.name.startswith(".")):
            mf = ver_dir / "manifest.json"
            where = str(mf)
            try:
                m = parse_manifest(mf.read_text(encoding="utf-8"), where)
            except (OSError, UnicodeDecodeError) as e:
                problems.append(f"{where}: cannot read ({e})")
                continue
            except BuildError as e:
                problems.append(str(e))
                continue
            if (m.name, m.version) != (name_dir.name, ver_dir.name):
                problems.append(f"{where}: says {m.ref} but lives in "
                                f"{name_dir.name}/{ver_dir.name}; move it or fix the manifest")
                continue
            try:
                paths = {f: contain(ver_dir, f) for f in m.files}
            except PathRefused as e:
                problems.append(f"{where}: {e}: a build's files must lie inside its directory")
                continue
            missing = [f for f, p in paths.items() if not p.is_file()]
            if missing:
                problems.append(f"{where}: files missing on disk: {', '.join(missing)}")
                continue
            if verify is not None and (bad := _corrupt(m, paths, verify)):
                problems.append(f"{m.ref}: {', '.join(bad)} do(es) not match the manifest "
                                "(size or sha256): build left out; run `netbootd image verify`"
                                " and re-import it")
                continue
            sig = None
            if m.kind == "linux" and m.kernel in paths:
                sig = signature_from_json(m.extra.get("kernel_signature")) or \
                    kernel_signature(paths[m.kernel])
            builds.append(Build(m, paths, sig))
    builds += pulled_builds(store_dir, {b.ref for b in builds}, problems)
    return BuildCatalog(builds), problems


def pulled_builds(store_dir: Path, local: set[str], problems: list[str]) -> list[Build]:
    """Builds an edge learnt from its origin (store/origin_layout.py), whose files are blobs
    of the edge's cache: present once fetched and verified, fetched on first use. A build
    also in the store's own ``builds/`` is served from there (``local``)."""
    root = edge_manifests(store_dir)
    if not root.is_dir():
        return []
    out: list[Build] = []
    for mf in sorted(root.glob("*/*/manifest.json")):
        try:
            m = parse_manifest(mf.read_text(encoding="utf-8"), str(mf))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{mf}: cannot read ({e})")
            continue
        except BuildError as e:
            problems.append(str(e))
            continue
        if (m.name, m.version) != (mf.parent.parent.name, mf.parent.name) or m.ref in local:
            continue
        paths = {f: edge_blob(store_dir, info.sha256) for f, info in m.files.items()}
        out.append(Build(m, paths, signature_from_json(m.extra.get("kernel_signature"))))
    return out


def kernel_signature(path: Path) -> Signature | None:
    """The Authenticode signer of the PE image at ``path`` (None: not PE, unreadable). Reads
    the headers and the certificate table only, not the whole kernel."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
            _, offset, size = security_directory(head)
            if offset == 0 or size < 8 or size > 1 << 20:
                return Signature(signed=False)
            f.seek(offset)
            table = f.read(size)
    except (OSError, NotPE):
        return None
    if len(table) != size:
        return Signature(signed=False)
    return parse_certificate_table(table)


def _corrupt(m: Manifest, paths: dict[str, Path], verify: HashCache) -> list[str]:
    bad = []
    for name, info in sorted(m.files.items()):
        p = paths[name]
        try:
            if p.stat().st_size != info.size or verify.sha256(p) != info.sha256:
                bad.append(name)
        except OSError:
            bad.append(name)
    return bad


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def quick_build(kernel: Path, initrds: list[Path], cmdline: str) -> Build:
    """A one-off build made from files named on the command line (``netbootd boot``).

    Served under the names ``kernel`` and ``initrd0``, ``initrd1``... so that whatever the files
    are called on disk, URLs stay short and predictable. The version is a hash prefix of the
    contents, so a different kernel is a different build.
    """
    problems = [f"{p}: not a readable file" for p in [kernel, *initrds]
                if not (p.is_file() and os.access(p, os.R_OK))]
    if "\n" in cmdline:
        problems.append("--cmdline may not contain a newline")
    if problems:
        raise BuildError("; ".join(problems))
    names = {"kernel": kernel, **{f"initrd{i}": p for i, p in enumerate(initrds)}}
    infos = {n: FileInfo(p.stat().st_size, sha256_file(p)) for n, p in names.items()}
    version = hashlib.sha256("".join(i.sha256 for i in infos.values()).encode()).hexdigest()[:12]
    manifest = Manifest(name="quick", version=version, kind="linux", files=infos,
                        kernel="kernel", initrds=tuple(n for n in names if n != "kernel"),
                        cmdline=cmdline, description=f"netbootd boot {kernel.name}")
    return Build(manifest, names)
