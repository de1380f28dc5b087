"""The build catalog: which immutable builds exist and where each file of each build lives.

Pure data (no I/O): ``store.builds`` fills it from disk. A build's files are served by name only
if the manifest lists them (an allow-list: no client path is ever joined onto a directory).
``Build.path_of`` is the single place that maps a build file to its path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from netbootd.errors import NotFound
from netbootd.store.authenticode import Signature
from netbootd.store.manifest import Manifest


@dataclass(frozen=True, slots=True)
class Build:
    """One immutable build: its manifest and where its files are on disk."""

    manifest: Manifest
    paths: Mapping[str, Path]
    # A linux build's kernel: its Authenticode signer (None: not a PE image, or not linux).
    # Recorded at import; read from the kernel when the store is loaded for older builds.
    kernel_signature: Signature | None = None

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def arch(self) -> str:
        """CPU architecture of the machines this build boots: ``amd64`` or ``arm64``."""
        return self.manifest.arch

    def path_of(self, file_name: str) -> Path:
        try:
            return self.paths[file_name]
        except KeyError:
            raise NotFound(f"build {self.ref} has no file {file_name!r}") from None


class BuildCatalog:
    """All builds known to the server, by ``name/version``; immutable once made."""

    def __init__(self, builds: Iterable[Build]) -> None:
        self._builds: dict[str, Build] = {b.ref: b for b in builds}

    def __contains__(self, ref: str) -> bool:
        return ref in self._builds

    def __len__(self) -> int:
        return len(self._builds)

    def all(self) -> list[Build]:
        return [self._builds[k] for k in sorted(self._builds)]

    def refs(self) -> list[str]:
        return sorted(self._builds)

    def get(self, ref: str) -> Build:
        try:
            return self._builds[ref]
        except KeyError:
            known = ", ".join(self.refs()) or "none"
            raise NotFound(f"no build named {ref} (known: {known})") from None
