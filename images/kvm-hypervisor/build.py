#!/usr/bin/env python3
"""Build the stateless Debian 12 KVM hypervisor appliance and publish it into an image store.

Run as root (mmdebstrap needs it, as does a chroot)::

    .venv/bin/python images/kvm-hypervisor/build.py --store DIR --name kvm-hypervisor \\
        --version 1.0 [--cache DIR]

What it makes, from Debian's own packages only (``mmdebstrap``, the mirror apt on this machine
uses):

* a root file system with ``linux-image-amd64``, ``live-boot``, Debian's ``cloud-init``,
  ``systemd``, ``openssh-server``, ``qemu-system-x86`` and ``libvirt-daemon-system``, no
  Recommends, no documentation, packed as ``filesystem.squashfs`` (zstd). live-boot fetches it
  over HTTP into RAM and puts a writable tmpfs overlay on top: nothing on the node's disks is
  touched, every boot is a first boot;
* ``vmlinuz`` and ``initrd.img``: Debian's kernel and the initramfs made in the chroot by
  initramfs-tools with live-boot's hooks (``MODULES=netboot``: NIC drivers, no storage stack).

The build's kernel command line is ``boot=live fetch=${rootfs_url} ...``; netbootd substitutes
the squashfs's URL for ``${rootfs_url}`` and appends the NoCloud seed (``ds=...;s=<url>/``),
from which cloud-init sets the hostname, SSH keys and network and reports back.

Caching: the three artefacts are kept in ``<cache>/kvm-hypervisor/<key>/``, where the key hashes
this recipe's source, the package list, the suite and mirror, and the candidate version of every
package the list pulls in (``apt-cache depends --recurse`` + ``apt-cache policy`` on the host's
package lists: a Debian point release or security update makes a new key). A second build with
the same inputs only imports. Publishing goes through netbootd's importer (one writer under the
store lock, deduplicated blobs, generation marker); publishing the same artefacts again under the
same name/version is a no-op, different ones are refused (builds are immutable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # netbootd's importer, when run from a checkout

from netbootd.errors import BuildError  # noqa: E402
from netbootd.store.importer import import_linux  # noqa: E402
from netbootd.store.layout import build_dir  # noqa: E402

DEFAULT_CACHE = REPO_ROOT / "images" / ".cache"
SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "initramfs-tools",
    "live-boot",  # boot=live fetch=URL: the squashfs over HTTP into RAM, tmpfs overlay
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",  # Debian's 22.4: NoCloud seed over HTTP
    "openssh-server",
    "sudo",  # cloud-init's default user gets sudo rights
    "iproute2",
    # cloud-init 22.4 renders bridges only for ifupdown (its networkd renderer knows ethernets
    # alone); bridge-utils makes ifupdown understand bridge_ports.
    "ifupdown",
    "bridge-utils",
    "qemu-system-x86",
    "libvirt-daemon-system",
    "zstd",
)
# Kernel module trees a headless hypervisor never loads (about 120 MB of 400 MB uncompressed):
# graphics, sound, cameras/TV, Wi-Fi and Bluetooth, sensors, staging drivers.
DROP_MODULES: tuple[str, ...] = (
    "kernel/sound",
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/staging",
    "kernel/drivers/net/wireless",
    "kernel/drivers/bluetooth",
    "kernel/drivers/iio",
    "kernel/net/bluetooth",
    "kernel/net/wireless",
    "kernel/net/mac80211",
)
# live-boot: fetch= downloads the squashfs (busybox wget in the initramfs) into RAM;
# nonetworking keeps it from writing /etc/network/interfaces (cloud-init owns the network and
# would otherwise find the boot NIC configured twice). Serial console for the lab's QEMU
# clients (and any server's SOL); panic=-1 reboots a dead node.
CMDLINE = "boot=live fetch=${rootfs_url} nonetworking console=ttyS0 panic=-1"
ROOTFS = "filesystem.squashfs"
ARTEFACTS = ("vmlinuz", "initrd.img", ROOTFS, "packages.txt", "build-info.json")

# initramfs-tools settings, written before the kernel is installed so that the one initramfs
# the kernel's postinst makes is already the lean one.
INITRAMFS_CONF = "MODULES=netboot\nCOMPRESS=zstd\n"

# Run by mmdebstrap inside its mounts (/proc, /sys, /dev) once all packages are installed.
CUSTOMIZE = r"""
set -eu
R=$1
# Stateless: systemd and cloud-init see a first boot every time; host keys are made per node
# (cloud-init's ssh module), so no two nodes share one.
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R/etc/hostname" "$R"/etc/ssh/ssh_host_*
# Only the NoCloud seed netbootd hands out on the kernel command line: no probing of cloud
# metadata addresses on a boot network.
printf 'datasource_list: [ NoCloud, None ]\n' >"$R/etc/cloud/cloud.cfg.d/90_dpkg.cfg"
# C.UTF-8 is built into glibc: cloud-init's default (en_US.UTF-8) would need locale data
# generated on every boot, and its locale module fails on this lean root without it. The root
# is an overlay in RAM: nothing to grow or resize.
printf 'locale: C.UTF-8\nresize_rootfs: false\ngrowpart:\n  mode: "off"\n' \
    >"$R/etc/cloud/cloud.cfg.d/91_netbootd.cfg"
printf 'LANG=C.UTF-8\n' >"$R/etc/default/locale"
# Host keys are made on the node. cloud-init's ssh module does it before ssh starts; should
# the seed be unreachable, sshd still comes up with keys of its own.
mkdir -p "$R/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=%s\nExecStartPre=%s\n' \
    '/usr/bin/ssh-keygen -A' '/usr/sbin/sshd -t' \
    >"$R/etc/systemd/system/ssh.service.d/netbootd-hostkeys.conf"
# live-boot's initramfs leaves its DHCP address on the boot NIC. cloud-init renames (for a
# guest bridge) only NICs without an IPv4 address, and configures the network itself: drop
# the address before it starts (the root is in RAM by then).
cat >"$R/etc/systemd/system/netbootd-initramfs-address.service" <<'UNIT'
[Unit]
Description=Drop the initramfs's boot address (cloud-init configures the network)
DefaultDependencies=no
Before=cloud-init-local.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
# once per boot: started again later (a target pulled in anew), it would drop the address
# the node's own DHCP client got
RemainAfterExit=yes
ExecStart=/usr/sbin/ip -4 addr flush scope global

[Install]
WantedBy=sysinit.target
UNIT
chroot "$R" systemctl enable netbootd-initramfs-address.service
# No floppy drive on a hypervisor; QEMU's emulated one costs cloud-init's probe for a local
# seed about half a minute of I/O errors under TCG.
printf 'blacklist floppy\n' >"$R/etc/modprobe.d/netbootd-no-floppy.conf"
# The kernel and initramfs leave as build files; the modules stay, minus what a headless
# hypervisor never loads.
for rel in @DROP_MODULES@; do
    rm -rf "$R"/lib/modules/*/"$rel"
done
for kdir in "$R"/lib/modules/*; do
    chroot "$R" depmod "${kdir##*/}"
done
# again, without the dropped modules (the kms hook had copied the graphics drivers)
chroot "$R" update-initramfs -u -k all
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
    "$R"/var/log/*.log "$R"/var/log/apt/*
"""


class RecipeError(Exception):
    """The recipe cannot go on; the message says why and what to do."""


def log(msg: str) -> None:
    print(f"build: {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], *, cwd: Path | None = None, quiet: bool = True) -> str:
    """Run a command, return its stdout; RecipeError with the tail of its output on failure."""
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, check=False, text=True,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if quiet else None)
    except FileNotFoundError as exc:
        raise RecipeError(f"{cmd[0]} not found: install it (apt-get install -y "
                          "mmdebstrap squashfs-tools)") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-3000:].strip()
        raise RecipeError(f"{' '.join(cmd[:3])} ... failed with status {proc.returncode}: "
                          f"{tail}")
    return proc.stdout


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        try:
            text = src.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            m = re.match(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?(?:\s|$)", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def package_versions() -> list[str]:
    """``name=version`` of every package the list pulls in, from the host's package lists."""
    out = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
               "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *PACKAGES])
    names = sorted({line.strip() for line in out.splitlines()
                    if line and not line.startswith(" ") and not line.startswith("<")})
    policy = run(["apt-cache", "policy", *names])
    versions: list[str] = []
    current = ""
    for line in policy.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
        elif line.strip().startswith("Candidate:") and current:
            versions.append(f"{current}={line.split(':', 1)[1].strip()}")
    if not versions:
        raise RecipeError("apt-cache knows none of the packages: run apt-get update")
    return versions


def cache_key(mirror: str, versions: list[str]) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(json.dumps({"suite": SUITE, "mirror": mirror, "packages": PACKAGES,
                         "drop": DROP_MODULES, "versions": versions}).encode())
    return h.hexdigest()[:16]


def make_artefacts(out: Path, mirror: str, work: Path) -> None:
    """mmdebstrap the root, take kernel and initrd out of it, squash the rest into ``out``."""
    root = work / "root"
    hook = work / "customize.sh"
    hook.write_text(CUSTOMIZE.replace("@DROP_MODULES@", " ".join(DROP_MODULES)))
    essential = ('mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "'
                 + INITRAMFS_CONF.replace("\n", "\\n")
                 + '" >"$1/etc/initramfs-tools/conf.d/netbootd.conf"')
    t0 = time.monotonic()
    log(f"mmdebstrap {SUITE} from {mirror} ({len(PACKAGES)} packages and their dependencies)")
    run(["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory",
         "--include=" + ",".join(PACKAGES),
         "--aptopt=APT::Install-Recommends \"false\"",
         "--aptopt=Acquire::Retries \"3\"",
         "--dpkgopt=path-exclude=/usr/share/doc/*",
         "--dpkgopt=path-include=/usr/share/doc/*/copyright",
         "--dpkgopt=path-exclude=/usr/share/man/*",
         "--dpkgopt=path-exclude=/usr/share/info/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*",
         "--dpkgopt=path-include=/usr/share/locale/locale.alias",
         f"--essential-hook={essential}",
         f'--customize-hook=sh {hook} "$1"',
         SUITE, str(root), mirror])
    log(f"root file system in {time.monotonic() - t0:.0f} s")
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RecipeError(f"expected one /boot/vmlinuz-* in the root, found {len(kernels)}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise RecipeError(f"no {initrd.name}: initramfs-tools did not run in the chroot")
    shutil.copyfile(kernels[0], out / "vmlinuz")
    shutil.copyfile(initrd, out / "initrd.img")
    packages = run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}=${Version}\\n"])
    (out / "packages.txt").write_text(packages)
    cloud_init = next((p.split("=", 1)[1] for p in packages.splitlines()
                       if p.startswith("cloud-init=")), "?")
    for f in (root / "boot").iterdir():
        f.unlink()
    t1 = time.monotonic()
    # zstd: fast to decompress in the guest; level 15 is within a few % of 19 at half the time.
    run(["mksquashfs", str(root), str(out / ROOTFS), "-noappend", "-comp", "zstd",
         "-Xcompression-level", "15", "-b", "1M", "-no-progress", "-quiet",
         "-wildcards", "-e", "proc/*", "sys/*", "dev/*", "run/*", "tmp/*"])
    log(f"mksquashfs in {time.monotonic() - t1:.0f} s")
    info = {"kernel_release": release, "cloud_init": cloud_init, "suite": SUITE,
            "mirror": mirror, "packages": len(packages.splitlines()),
            "build_seconds": round(time.monotonic() - t0, 1),
            "sizes": {f: (out / f).stat().st_size for f in ("vmlinuz", "initrd.img", ROOTFS)}}
    (out / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")


def artefacts(cache: Path, force: bool = False) -> Path:
    """The cached artefacts for today's inputs, built when absent."""
    if os.geteuid() != 0:
        raise RecipeError("run as root: mmdebstrap --mode=root and chroot need it")
    mirror = apt_mirror()
    key = cache_key(mirror, package_versions())
    base = cache / "kvm-hypervisor"
    done = base / key
    if done.is_dir() and not force and all((done / f).is_file() for f in ARTEFACTS):
        log(f"reusing cached artefacts {done}")
        return done
    base.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# build cache of the images/ recipes\n*\n")
    work = base / f".work-{secrets.token_hex(4)}"
    out = work / "out"
    out.mkdir(parents=True)
    try:
        make_artefacts(out, mirror, work)
        if done.exists():
            shutil.rmtree(done)
        os.rename(out, done)
    finally:
        remove_work_dir(work)
    return done


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mounts), deepest first."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_work_dir(work: Path) -> None:
    """Remove the build's work dir, but never through a mount: mmdebstrap mounts /proc, /sys
    and /dev entries in the chroot and normally unmounts them; if any is left (an interrupted
    build, a busy mount), deleting through it could delete host files. Unmount first; if that
    fails, leave the dir and say so."""
    for point in mounts_under(work):
        subprocess.run(["umount", point], check=False, capture_output=True)
    left = mounts_under(work)
    if left:
        log(f"not removing {work}: still mounted: {', '.join(left)} (umount them, then "
            f"remove it)")
        return
    shutil.rmtree(work, ignore_errors=True)


def publish(store: Path, name: str, version: str, art: Path) -> tuple[Path, bool]:
    """Import the artefacts as a ``linux`` build with a root file system; (path, created)."""
    info = json.loads((art / "build-info.json").read_text())
    description = (f"stateless Debian 12 KVM hypervisor: kernel {info['kernel_release']}, "
                   f"live-boot, cloud-init {info['cloud_init']}, libvirt, QEMU "
                   f"({info['packages']} packages)")
    extra = {"role": "kvm-hypervisor", "cloud_init": info["cloud_init"]}
    target = build_dir(store, name, version)
    if target.exists():
        return target, not _same_or_refuse(target, art)
    import_linux(store, name, version, art / "vmlinuz", [art / "initrd.img"],
                 rootfs=art / ROOTFS, cmdline=CMDLINE, description=description, extra=extra)
    return target, True


def _same_or_refuse(target: Path, art: Path) -> bool:
    manifest = json.loads((target / "manifest.json").read_text())
    files = manifest.get("files", {})
    for fname in ("vmlinuz", "initrd.img", ROOTFS):
        want = hashlib.sha256()
        with (art / fname).open("rb") as f:
            while chunk := f.read(1 << 20):
                want.update(chunk)
        if files.get(fname, {}).get("sha256") != want.hexdigest():
            raise RecipeError(f"{target} already exists with a different {fname}; builds are "
                              "immutable: choose a new --version (or remove that build)")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="image store root")
    ap.add_argument("--name", default="kvm-hypervisor", help="build name")
    ap.add_argument("--version", required=True, help="build version, e.g. 1.0")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help=f"artefact cache (default: {DEFAULT_CACHE})")
    ap.add_argument("--rebuild", action="store_true", help="ignore cached artefacts")
    args = ap.parse_args(argv)
    try:
        art = artefacts(args.cache.resolve(), force=args.rebuild)
        path, created = publish(args.store.resolve(), args.name, args.version, art)
    except (RecipeError, BuildError) as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    log(f"{'published' if created else 'already present, identical'}: {path}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
