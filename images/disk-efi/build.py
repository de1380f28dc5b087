#!/usr/bin/env python3
"""Build a small GPT disk image that boots under UEFI Secure Boot and prints a marker.

Run as::

    python3 images/disk-efi/build.py --out FILE --marker TEXT [--size-mib N]
        [--compression C] [--cache DIR]

The UEFI counterpart of ``images/disk/build.py`` (whose MBR boot code no UEFI firmware runs):
what a lab's reimage writes onto a laptop that ships with Secure Boot on.

* A GPT (``sfdisk``) with one EFI System Partition from sector 2048 to the end, FAT
  (``mkfs.fat --invariant``), holding the removable-media boot path
  ``EFI/BOOT/BOOTX64.EFI`` = Debian's ``shimx64.efi.signed`` (signed by Microsoft's UEFI CA,
  which OVMF's ``OVMF_VARS_4M.ms.fd`` and real machines trust), ``EFI/BOOT/grubx64.efi`` =
  ``grubx64.efi.signed`` (``grub-efi-amd64-signed``, signed by Debian, trusted by shim), and
  ``EFI/BOOT/grub.cfg``, which that GRUB reads from its own folder (``$cmdpath``): it prints
  the marker on the console (OVMF mirrors it to the serial port) and powers off (``halt``).
  Every stage is verified by the one before it; nothing unsigned runs.
* The signed binaries come from the installed packages or are unpacked from their .debs into
  ``--cache`` (``apt-get download`` + ``dpkg-deb -x``; never installed: shim-signed's
  maintainer scripts would change the host's bootloader).

Tools: ``sfdisk`` (util-linux), ``mkfs.fat`` (dosfstools), ``mmd``/``mcopy`` (mtools). Output:
the raw image or its gzip/xz stream, and one JSON line as ``images/disk/build.py`` prints
(``raw_size``, ``raw_sha256``, ``file``, ``file_size``, ``file_sha256``, ``compression``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # images/: the shared recipe code
from recipe_common import RecipeError, download_deb, file_entry, unpack_deb

MIB = 1 << 20
ESP_START = 2048  # sectors
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
DISK_GUID = "6e657462-6f6f-4464-9973-6b2d65666931"  # fixed GUIDs: images differ only in times
PART_GUID = "6e657462-6f6f-4464-9973-6b2d65737031"
SIGNED = (  # (package, file inside it, name on the ESP)
    ("shim-signed", "usr/lib/shim/shimx64.efi.signed", "BOOTX64.EFI"),
    ("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
     "grubx64.efi"),
)
COMPRESSIONS = ("none", "gzip", "xz")
EPOCH = 1_700_000_000  # file times on the ESP


class DiskError(Exception):
    """Bad arguments or a missing tool; the message says what to change."""


def run(cmd: Sequence[str], stdin: str | None = None, cwd: Path | None = None) -> None:
    if shutil.which(cmd[0]) is None:
        pkg = {"sfdisk": "fdisk", "mkfs.fat": "dosfstools", "mmd": "mtools",
               "mcopy": "mtools"}.get(cmd[0], cmd[0])
        raise DiskError(f"{cmd[0]} not found: apt-get install {pkg}")
    r = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, cwd=cwd,
                       check=False, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    if r.returncode != 0:
        raise DiskError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()[-400:]}")


def signed_file(package: str, member: str, cache: Path) -> Path:
    """``member`` of ``package``: from the host if installed, else from the package's .deb,
    downloaded and unpacked into ``cache`` by the recipes' shared helpers (never installed)."""
    host = Path("/") / member
    if host.is_file():
        return host
    cache.mkdir(parents=True, exist_ok=True)
    try:
        unpacked = unpack_deb(cache, download_deb(cache, package))
    except RecipeError as exc:
        raise DiskError(str(exc)) from None
    if not (unpacked / member).is_file():
        raise DiskError(f"{package} has no {member}")
    return unpacked / member


def grub_cfg(marker: str) -> str:
    return ("# netbootd disk image: prove the disk booted, then power off\n"
            f"echo '{marker}'\n"
            "sleep 1\n"
            "halt\n")


def raw_image(path: Path, marker: str, size_mib: int, cache: Path) -> None:
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
    # The ESP fills the disk but its last MiB (where the backup GPT lives), 1 MiB aligned.
    sectors = size_mib * MIB // 512 - 2 * ESP_START
    run(["sfdisk", "--no-reread", "--no-tell-kernel", str(path)], stdin=(
        f"label: gpt\nlabel-id: {DISK_GUID}\nfirst-lba: {ESP_START}\n"
        f"start={ESP_START}, size={sectors}, type={ESP_TYPE}, uuid={PART_GUID}, "
        "name=\"EFI System\"\n"))
    esp_kib = sectors * 512 // 1024
    run(["mkfs.fat", "--invariant", "-i", "4e425444", "-n", "ESP",
         f"--offset={ESP_START}", str(path), str(esp_kib)])
    img = f"{path}@@{ESP_START * 512}"
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for package, member, name in SIGNED:
            dst = Path(tmp) / name
            shutil.copyfile(signed_file(package, member, cache), dst)
            files.append(dst)
        cfg = Path(tmp) / "grub.cfg"
        cfg.write_text(grub_cfg(marker))
        files.append(cfg)
        for p in files:
            os.utime(p, (EPOCH, EPOCH))
        run(["mmd", "-i", img, "::/EFI", "::/EFI/BOOT"])
        run(["mcopy", "-m", "-i", img, *map(str, files), "::/EFI/BOOT/"])


def build(out: Path, marker: str, size_mib: int, compression: str,
          cache: Path) -> dict[str, object]:
    problems = []
    if not marker or len(marker) > 200 or not all(0x20 <= ord(c) < 0x7F and c != "'"
                                                  for c in marker):
        problems.append("--marker must be 1..200 printable ASCII characters, no quote")
    if not 4 <= size_mib <= 65536:
        problems.append("--size-mib must be between 4 and 65536 (FAT needs room)")
    if compression not in COMPRESSIONS:
        problems.append(f"--compression must be one of {', '.join(COMPRESSIONS)}")
    if problems:
        raise DiskError("; ".join(problems))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    raw = out.with_name(f".{out.name}.raw-{os.getpid()}")
    try:
        raw_image(raw, marker, size_mib, cache)
        raw_info = file_entry(raw)
        with raw.open("rb") as src, tmp.open("wb") as f:
            if compression == "gzip":
                with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0,
                                   filename="") as z:
                    shutil.copyfileobj(src, z)
            elif compression == "xz":
                with lzma.LZMAFile(f, mode="wb", format=lzma.FORMAT_XZ,
                                   check=lzma.CHECK_CRC32) as z:
                    shutil.copyfileobj(src, z)
            else:
                shutil.copyfileobj(src, f)
            f.flush()
            os.fsync(f.fileno())
        written = file_entry(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
    return {"raw_size": raw_info["size"], "raw_sha256": raw_info["sha256"], "file": str(out),
            "file_size": written["size"], "file_sha256": written["sha256"],
            "compression": compression}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True, help="image file to write")
    ap.add_argument("--marker", required=True, help="text GRUB prints when the disk boots")
    ap.add_argument("--size-mib", type=int, default=16, help="raw image size (default 16)")
    ap.add_argument("--compression", default="none", choices=COMPRESSIONS)
    ap.add_argument("--cache", type=Path,
                    default=Path(__file__).resolve().parents[1] / ".cache",
                    help="where signed packages are downloaded and unpacked")
    args = ap.parse_args(argv)
    try:
        info = build(args.out.resolve(), args.marker, args.size_mib, args.compression,
                     args.cache.resolve())
    except (DiskError, OSError) as exc:
        print(f"disk-efi: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
