"""``netbootd loaders grub``: prepare the folder GRUB and the Secure Boot chain are served from.

Debian packages GRUB's network images as modules, not as ready network boot programs, and its
signed binaries live in packages whose maintainer scripts install a bootloader on the host.
So this step (run once at install time, and by ``.ci/install-deps.sh``):

1. runs ``grub-mknetdir --subdir=grub`` (grub-common, with grub-pc-bin and grub-efi-amd64-bin
   installed), which writes ``grub/i386-pc/core.0`` (BIOS) and ``grub/x86_64-efi/core.efi``
   (UEFI) with their modules; both images look for their config under the prefix
   ``(tftp,<server>)/grub``;
2. takes Debian's signed shim (``shim-signed``: ``shimx64.efi.signed``) and signed network GRUB
   (``grub-efi-amd64-signed``: ``grubnetx64.efi.signed``) as ``grub/shimx64.efi`` and
   ``grub/grubx64.efi``: shim loads ``grubx64.efi`` from its own folder, and that GRUB's prefix
   is the same ``grub/``. They come from the installed packages when present, else from
   ``apt-get download`` + ``dpkg-deb -x`` into ``--cache`` (nothing is installed, no
   maintainer script runs);
3. publishes the folder atomically (written aside, then renamed over the old one).

The result is what ``[loaders.dirs] grub`` points at (default /var/lib/netbootd/loaders/grub).
With ``arm64`` (``netbootd loaders grub --arm64``) Debian's signed arm64 network GRUB
(``grub-efi-arm64-signed``: ``grubnetaa64.efi.signed``) joins them as ``grub/grubaa64.efi``,
the NBP of ARM64 UEFI clients (there is no arm64 iPXE in Debian 12). Its prefix is the same
``grub/`` (it asks for ``/grub/arm64-efi/*.lst`` and ``/grub/grub.cfg``), so x86 and ARM
nodes share one ``grub.cfg`` dispatcher. Its package is of Debian's arm64 architecture: run
``dpkg --add-architecture arm64; apt-get update`` first (it is unpacked, never installed).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from netbootd.errors import NetbootdError

# (package, file inside it, name served)
SIGNED_X64 = (
    ("shim-signed", "usr/lib/shim/shimx64.efi.signed", "shimx64.efi"),
    ("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
     "grubx64.efi"),
)


# Debian's arm64 network GRUB, signed (package of architecture arm64; unpacked, not installed).
SIGNED_ARM64 = (
    ("grub-efi-arm64-signed", "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
     "grubaa64.efi"),
)


class LoaderPrepError(NetbootdError):
    """A tool or package needed to prepare the loaders is missing or failed."""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise LoaderPrepError(f"{cmd[0]} not found: apt-get install grub-common grub-pc-bin "
                              "grub-efi-amd64-bin") from None
    if r.returncode != 0:
        raise LoaderPrepError(f"{' '.join(cmd)} failed ({r.returncode}): "
                              f"{(r.stderr or r.stdout).strip()[-500:]}")


def signed_file(package: str, member: str, cache: Path) -> Path:
    """``member`` of ``package``: from the host if the package is installed, else unpacked
    from its .deb into ``cache`` (``apt-get download``; nothing is installed)."""
    host = Path("/") / member
    if host.is_file():
        return host
    unpacked = cache / "unpacked" / package
    if not (unpacked / member).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            _run(["apt-get", "download", package], cwd=cache)
            debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            raise LoaderPrepError(f"apt-get download {package} left no .deb in {cache}")
        unpacked.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)])
    if not (unpacked / member).is_file():
        raise LoaderPrepError(f"{package} has no {member}")
    return unpacked / member


def prepare_grub(dest: Path, cache: Path, signed: bool = True, arm64: bool = False) -> list[str]:
    """Build ``dest`` (the ``grub`` loader folder); the files served at its top level."""
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _run(["grub-mknetdir", f"--net-directory={tmp}", "--subdir=grub"])
        out = tmp / "grub"
        for platform, image in (("i386-pc", "core.0"), ("x86_64-efi", "core.efi")):
            if not (out / platform / image).is_file():
                pkg = "grub-pc-bin" if platform == "i386-pc" else "grub-efi-amd64-bin"
                raise LoaderPrepError(f"grub-mknetdir made no {platform}/{image}: apt-get "
                                      f"install {pkg}")
        if signed:
            for package, member, name in SIGNED_X64:
                shutil.copyfile(signed_file(package, member, cache), out / name)
        for package, member, name in SIGNED_ARM64 if arm64 else ():
            shutil.copyfile(signed_file(package, member, cache), out / name)
        out.chmod(0o755)
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            if old.exists():
                shutil.rmtree(old)
            dest.rename(old)
        out.rename(dest)
        if old.exists():
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p.name for p in dest.iterdir())
