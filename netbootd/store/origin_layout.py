"""Where an edge keeps what it pulled from its origin, inside its own store directory.

::

    <store>/.origin/builds/<name>/<version>/manifest.json   manifests, verified against the
                                                            origin's index (the edge's catalog)
    <store>/.origin/blobs/sha256/ab/abcd...                 blobs, each verified before it is
                                                            renamed here (the cache)
    <store>/.origin/.staging/                               downloads in progress

The directory starts with a dot, so the store's own tools (``image gc``, imports) never look
in it; a file under ``blobs/`` is complete and verified by construction (it is renamed there
only after its sha256 matched), which is why presence alone makes a file servable.
"""

from __future__ import annotations

from pathlib import Path

from netbootd.core.model import Build
from netbootd.store.layout import BLOB_DIR, blob_path, build_dir

EDGE_DIR = ".origin"


def edge_root(store: Path) -> Path:
    return store / EDGE_DIR


def edge_manifests(store: Path) -> Path:
    return edge_root(store) / "builds"


def edge_manifest(store: Path, name: str, version: str) -> Path:
    """``name``/``version`` must already match NAME_RE (callers take them from a parsed
    manifest or index entry): no client text reaches here unchecked."""
    return edge_manifests(store) / name / version / "manifest.json"


def edge_blob(store: Path, sha256: str) -> Path:
    return blob_path(edge_root(store), sha256)


def edge_blob_dir(store: Path) -> Path:
    return edge_root(store) / BLOB_DIR


def is_edge_blob(path: Path) -> bool:
    """Whether ``path`` names a blob of an edge's cache (``.origin/blobs/sha256/ab/<hash>``)."""
    p = path.parents
    return len(p) >= 4 and p[3].name == EDGE_DIR and p[2].name == "blobs"


def edge_staging(store: Path) -> Path:
    return edge_root(store) / ".staging"


def manifest_path(store: Path, build: Build) -> Path:
    """The manifest file a catalog build was read from: the store's own, else the edge's."""
    own = build_dir(store, build.name, build.version) / "manifest.json"
    return own if own.is_file() else edge_manifest(store, build.name, build.version)
