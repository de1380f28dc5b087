"""The domain records the pure core decides on: inventory entries, builds and their catalog.

``config`` parses ``[groups.*]``/``[nodes.*]`` into ``GroupSpec``/``NodeSpec``; ``store`` reads
manifests into ``Manifest`` and fills a ``BuildCatalog``. Both produce these values and keep
re-exporting the names, but the records live here so that ``core`` depends on nothing outside
it (no config parser, no store reader): the edges hand the core values, never loaders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from netbootd.errors import NotFound

SELECTOR_KEYS = ("arch", "mac_prefix", "vendor_class", "user_class", "manufacturer", "product",
                 "serial")
ARCHES: Final = ("amd64", "arm64")
DEFAULT_ARCH: Final = "amd64"  # builds from before the manifest recorded one were all x86-64


# --- inventory ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Selector:
    """Facts a group matches on; every field set must match (AND), lists mean any-of."""

    arch: tuple[str, ...] = ()  # arch family names: bios, efi64, arm64...
    mac_prefix: tuple[str, ...] = ()
    vendor_class: tuple[str, ...] = ()  # prefixes of option 60
    user_class: tuple[str, ...] = ()
    manufacturer: tuple[str, ...] = ()
    product: tuple[str, ...] = ()
    serial: tuple[str, ...] = ()

    @property
    def specificity(self) -> int:
        return sum(1 for k in SELECTOR_KEYS if getattr(self, k))


@dataclass(frozen=True, slots=True)
class BootSettings:
    """Settings a group gives its members and a node may override; None means 'inherit'."""

    build: str | None = None  # an exact NAME/VERSION (a pin)
    channel: str | None = None  # follow a channel (see `netbootd channel`)
    mode: str | None = None
    loader: str | None = None
    # Boot UEFI members through the signed chain shim -> GRUB -> kernel (DHCP cannot tell
    # whether Secure Boot is on, so the group says so).
    secure_boot: bool | None = None
    cmdline: str | None = None
    user_data: str | None = None  # template name for cloud-init user-data / kickstart
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupSpec:
    name: str
    settings: BootSettings
    match: Selector | None = None
    default: bool = False


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    settings: BootSettings
    macs: tuple[str, ...] = ()
    guids: tuple[str, ...] = ()
    serials: tuple[str, ...] = ()
    group: str | None = None
    hostname: str | None = None
    ip: str | None = None  # server mode: the address reserved for this node's MACs


# --- builds ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FileInfo:
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class EsxiBoot:
    """The parts of an ESXi installer's ``boot.cfg`` that a per-node boot.cfg is made from."""

    kernel: str
    modules: tuple[str, ...]
    kernelopt: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class DiskImage:
    """A disk image build's payload: the file served, its compression, the raw image's facts."""

    file: str
    compression: str
    raw_size: int
    raw_sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    kind: str
    files: dict[str, FileInfo]
    kernel: str | None = None
    initrds: tuple[str, ...] = ()
    cmdline: str = ""
    description: str = ""
    esxi: EsxiBoot | None = None
    disk: DiskImage | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    arch: str = DEFAULT_ARCH

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True, slots=True)
class Signature:
    signed: bool
    signer: str | None = None  # subject CN (or O) of the signing certificate
    issuer: str | None = None  # its issuer's CN (or O)

    def describe(self) -> str:
        if not self.signed:
            return "unsigned"
        return f"signed by {self.signer or '?'} (issuer {self.issuer or '?'})"

    def to_json(self) -> dict[str, object]:
        return {"signed": self.signed, "signer": self.signer, "issuer": self.issuer}


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
