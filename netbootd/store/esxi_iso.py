"""Read an ESXi installer ISO with pycdlib: its boot.cfg and the files an ESXi build keeps.

An edge module (it reads a file). No loop mount, no root: pycdlib parses ISO9660, Joliet and
Rock Ridge itself (docs/design-choices.md, "pycdlib").

Names. An ESXi ISO records ISO9660 names in upper case with a version suffix (``/B.B00;1``,
``/EFI/BOOT/BOOTX64.EFI;1``), while its boot.cfg names files in lower case (``/b.b00``), as
Linux's isofs shows plain ISO9660 names (mount option map=normal). This module walks one
namespace, the richest the ISO has (Rock Ridge, then Joliet, then plain ISO9660), and maps every
file to a lower-case path without leading ``/`` and without ``;N`` (``b.b00``,
``efi/boot/bootx64.efi``): the names netbootd's store and manifests use.

Which boot.cfg. The one at the root (``/BOOT.CFG``): that is the file mboot.c32 reads when the
ISO boots in BIOS mode and the one VMware's PXE instructions tell you to copy and edit. ESXi 8
ISOs also carry ``/EFI/BOOT/BOOT.CFG`` for mboot.efi booting from the CD; it is used only when
the root one is missing (``EsxiIso.boot_cfg_name`` says which was used).

Everything read from the ISO is hostile input: a file that is not an ISO, a damaged ISO, a
boot.cfg naming files that are not there, or file data cut short all raise BuildError saying
what is wrong and what to do. File data is streamed in chunks, never loaded whole.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException
from pycdlib.pycdlibio import PyCdlibIO

from netbootd.errors import BuildError
from netbootd.store.esxi_bootcfg import MAX_BOOT_CFG_BYTES, parse_boot_cfg
from netbootd.store.manifest import EsxiBoot

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1024 * 1024
BOOT_CFG_NAMES = ("boot.cfg", "efi/boot/boot.cfg")
BIOS_LOADER = "mboot.c32"
# mboot.efi is what VMware's PXE instructions call the UEFI loader; installer ISOs ship it as
# efi/boot/bootx64.efi (the removable-media path, UEFI spec 3.5.1.1). Either is enough.
UEFI_LOADERS = ("mboot.efi", "efi/boot/bootx64.efi")
_VERSION_RE = re.compile(r";\d*$")


def store_name(iso_path: str) -> str:
    """``/EFI/BOOT/BOOTX64.EFI;1`` -> ``efi/boot/bootx64.efi`` (also ``/NAME.;1`` -> ``name``)."""
    parts = []
    for part in iso_path.strip("/").split("/"):
        part = _VERSION_RE.sub("", part)
        # ISO9660 writes a name without extension as "NAME." (ECMA-119 7.5.1: the dot is there).
        parts.append(part.removesuffix(".").lower())
    return "/".join(parts)


class EsxiIso:
    """An open ESXi installer ISO. Use as a context manager; the ISO is read, never changed.

    ``boot`` is the parsed boot.cfg, ``files()`` the names a build keeps, ``size()`` their
    sizes, ``open()`` / ``iter_chunks()`` their contents, streamed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._iso = pycdlib.PyCdlib()
        # pycdlib decodes the image's bytes; on a damaged or crafted image it fails with its own
        # exceptions or with whatever its decoding hits (fuzzing directory sectors found an
        # AttributeError on a mangled Rock Ridge entry). Any failure while it parses is the
        # image's fault: here and below, all are caught and reported as BuildError.
        try:
            self._iso.open(str(self.path))
        except OSError as e:
            raise BuildError(f"{self.path}: cannot read ({e.strerror or e}); "
                             "give the path of an ESXi installer ISO") from e
        except Exception as e:
            raise BuildError(f"{self.path}: not an ISO9660 image ({e}); give the path of an "
                             "ESXi installer ISO (VMware-VMvisor-Installer-*.iso)") from e
        try:
            self._check_not_truncated()
            self.namespace, self._index, self._clashes = self._build_index()
            self.boot_cfg_name = next((n for n in BOOT_CFG_NAMES if n in self._index), "")
            if not self.boot_cfg_name:
                raise BuildError(f"{self.path}: no /BOOT.CFG (nor /EFI/BOOT/BOOT.CFG) on the "
                                 "ISO; is it an ESXi installer ISO?")
            self.boot: EsxiBoot = parse_boot_cfg(self._read_boot_cfg(),
                                                 f"{self.path}:/{self.boot_cfg_name}")
            self._files = self._needed_files()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> EsxiIso:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        # Already closed, or never opened: nothing to release.
        with contextlib.suppress(PyCdlibException):
            self._iso.close()

    def _check_not_truncated(self) -> None:
        # pycdlib silently shortens a file whose data runs past the end of the image, so a cut
        # download would import short files. The primary volume descriptor records the volume's
        # size (ECMA-119 8.4.8, in logical blocks): an image shorter than that is truncated.
        pvd = self._iso.pvd
        claimed = pvd.space_size * pvd.log_block_size
        with self.path.open("rb") as f:
            actual = f.seek(0, io.SEEK_END)  # also right for a block device (/dev/sr0)
        if actual < claimed:
            raise BuildError(f"{self.path}: truncated: {actual} bytes, but its volume descriptor "
                             f"says {claimed}; download the ISO again and check its checksum")

    def _build_index(self) -> tuple[str, dict[str, tuple[str, str]], set[str]]:
        """(namespace, store name -> (pycdlib path keyword, path), ambiguous names)."""
        if self._iso.has_rock_ridge():
            namespace, key = "rock ridge", "rr_path"
        elif self._iso.has_joliet():
            namespace, key = "joliet", "joliet_path"
        else:
            namespace, key = "iso9660", "iso_path"
        index: dict[str, tuple[str, str]] = {}
        clashes: set[str] = set()
        try:
            for dirpath, _dirs, files in self._iso.walk(**{key: "/"}):
                for fname in files:
                    full = f"{dirpath.rstrip('/')}/{fname}"
                    name = store_name(full)
                    if name in index:
                        clashes.add(name)
                    index[name] = (key, full)
        except Exception as e:  # the image's fault: see __init__
            raise BuildError(f"{self.path}: damaged ISO directory tree ({e}); download the "
                             "installer ISO again and check its checksum") from e
        # Two names that differ only in case (Rock Ridge and Joliet keep case) make their
        # lower-case store name ambiguous: it is dropped, so reported missing if boot.cfg needs
        # it.
        for name in clashes:
            del index[name]
        return namespace, index, clashes

    def _open(self, name: str) -> PyCdlibIO:
        key, full = self._index[name]
        try:
            return self._iso.open_file_from_iso(**{key: full})
        except Exception as e:  # the image's fault (a directory or link posing as a file...)
            raise BuildError(f"{self.path}: cannot open {name} on the ISO ({e}); "
                             "download the ISO again") from e

    def _read_boot_cfg(self) -> str:
        if self.size(self.boot_cfg_name) > MAX_BOOT_CFG_BYTES:
            raise BuildError(f"{self.path}:/{self.boot_cfg_name}: larger than "
                             f"{MAX_BOOT_CFG_BYTES} bytes; not an ESXi boot.cfg")
        data = b"".join(self.iter_chunks(self.boot_cfg_name))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BuildError(f"{self.path}:/{self.boot_cfg_name}: not text ({e}); "
                             "not an ESXi boot.cfg") from e

    def _needed_files(self) -> list[str]:
        wanted = [self.boot.kernel, *self.boot.modules, BIOS_LOADER]
        names = list(dict.fromkeys(wanted))
        missing = [n for n in names if n not in self._index]
        efi = [n for n in UEFI_LOADERS if n in self._index]
        if not efi:
            missing.append(" or ".join(UEFI_LOADERS))
        if missing:
            ambiguous = sorted(set(missing) & self._clashes)
            note = (f" ({', '.join(ambiguous)} present in several letter cases)"
                    if ambiguous else "")
            raise BuildError(f"{self.path}: boot.cfg ({self.boot_cfg_name}) needs files the ISO "
                             f"does not have: {', '.join(missing)}{note}; the ISO is incomplete "
                             "or not an ESXi installer: download it again")
        return [*names, *efi, self.boot_cfg_name]

    def files(self) -> list[str]:
        """Store names a build keeps: kernel, modules, mboot.c32, the UEFI loader(s), boot.cfg."""
        return list(self._files)

    def _known(self, name: str) -> None:
        if name not in self._index:
            raise BuildError(f"{self.path}: no file {name!r} on the ISO; "
                             f"it has: {', '.join(sorted(self._index)[:20])}...")

    def size(self, name: str) -> int:
        """Size in bytes of file ``name`` (a store name, as in ``files()``)."""
        self._known(name)
        with self._open(name) as f:
            return int(f.length())

    def open(self, name: str) -> BinaryIO:
        """File ``name`` as a read-only binary file (close it, or use ``with``).

        Reads go through ``iter_chunks``, so a short read raises BuildError, not a silent EOF.
        """
        self._known(name)
        return io.BufferedReader(_ChunkReader(self._chunks(name, CHUNK)), CHUNK)

    def iter_chunks(self, name: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The contents of file ``name`` in pieces of at most ``chunk`` bytes.

        BuildError if the ISO ends before the file does (a truncated download).
        """
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        self._known(name)  # now, not at the first next()
        return self._chunks(name, chunk)

    def _chunks(self, name: str, chunk: int) -> Generator[bytes, None, None]:
        with self._open(name) as f:
            expected, got = int(f.length()), 0
            while got < expected:
                try:
                    data = f.read(min(chunk, expected - got))
                except Exception as e:  # the image's fault: see __init__
                    raise BuildError(f"{self.path}: cannot read {name} ({e}); "
                                     "download the ISO again") from e
                if not data:
                    break
                got += len(data)
                yield bytes(data)
        if got != expected:
            raise BuildError(f"{self.path}: {name} is cut short ({got} of {expected} bytes): "
                             "the ISO is truncated; download it again and check its checksum")


class _ChunkReader(io.RawIOBase):
    """A raw read-only file over a chunk generator: what ``EsxiIso.open`` buffers."""

    def __init__(self, chunks: Generator[bytes, None, None]) -> None:
        super().__init__()
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self._pos == len(self._chunk):
            self._chunk, self._pos = next(self._chunks, b""), 0
        with memoryview(buffer) as view:
            n = min(view.nbytes, len(self._chunk) - self._pos)
            view.cast("B")[:n] = self._chunk[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._chunks.close()  # closes the file inside pycdlib
        super().close()
