"""What the busybox-initramfs recipes under ``images/`` share (demo appliance, installer).

Owns: fetching Debian's kernel and busybox-static into the recipe cache (``apt-get download``,
``dpkg-deb -x``; nothing is installed), resolving kernel modules and their dependencies from
``modules.dep``, writing a reproducible gzip'd cpio (newc) initramfs, the shell fragments every
``/init`` starts with (mounts, module loading, first ethernet interface, DHCP with udhcpc), and
publishing a kind ``linux`` build atomically into ``<store>/builds/<name>/<version>/``.

Builds are made for one CPU architecture (``RECIPE_ARCHES``: ``amd64``, the default, or
``arm64``); an arm64 build takes Debian's arm64 packages (``apt-get download PKG:arm64`` after
``dpkg --add-architecture arm64; apt-get update``; still nothing is installed) and records
``arch`` in its manifest.

A recipe imports it after putting ``images/`` on ``sys.path`` (the recipes run as scripts).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / "images" / ".cache"
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# Loaded in this order (each with its dependencies first). af_packet (CONFIG_PACKET) is what
# udhcpc needs; it is built into Debian's kernel, in which case it is skipped.
NIC_MODULES: tuple[str, ...] = ("af_packet", "virtio_pci", "virtio_net", "e1000")
CMDLINE = "console=ttyS0 panic=-1"
# Debian's arm64 kernel builds virtio_pci as a module (amd64 has it built in), and virtio_net
# needs net_failover: loaded in this order (each with its dependencies first).
ARM64_NIC_MODULES: tuple[str, ...] = (
    "af_packet", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "failover",
    "net_failover", "virtio_net",
)


@dataclass(frozen=True)
class RecipeArch:
    """What differs between the architectures a recipe can build for."""

    name: str  # Debian's architecture name, also the build's manifest ``arch``
    kernel_meta_package: str
    nic_modules: tuple[str, ...]
    cmdline: str  # the build's default kernel command line (serial console, panic -> exit)


RECIPE_ARCHES: dict[str, RecipeArch] = {
    "amd64": RecipeArch("amd64", KERNEL_META_PACKAGE, NIC_MODULES, CMDLINE),
    # QEMU's virt machine has a PL011 UART: ttyAMA0.
    "arm64": RecipeArch("arm64", "linux-image-arm64", ARM64_NIC_MODULES,
                        "console=ttyAMA0 panic=-1"),
}
MANIFEST_FORMAT = 1
# as netbootd.store.manifest accepts them
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class RecipeError(Exception):
    """The recipe cannot go on; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Shell fragments of /init (plain busybox sh). The script that includes them defines
# ``say MESSAGE`` (prints its console marker) and ``fail REASON`` (reports, powers off) first.
# --------------------------------------------------------------------------------------------

SH_BOOT = r"""
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
exec </dev/console >/dev/console 2>&1

BUILD=$(cat /etc/netbootd-build 2>/dev/null)
[ -n "$BUILD" ] || fail "no /etc/netbootd-build in the initramfs"
say "starting, build $BUILD, kernel $(uname -r)"

# --- kernel modules (/etc/modules.order), in dependency order -----------------------------
while read -r mod; do
    [ -n "$mod" ] || continue
    if insmod "/lib/modules/$mod.ko" 2>/tmp/insmod.err; then
        say "loaded module $mod"
    elif grep -q "File exists" /tmp/insmod.err; then
        :
    else
        say "module $mod not loaded: $(cat /tmp/insmod.err)"
    fi
done </etc/modules.order
"""

SH_NETWORK = r"""
ip link set lo up

# --- first ethernet interface --------------------------------------------------------------
IFACE=""
n=0
while [ $n -lt 100 ]; do
    for dev in /sys/class/net/*; do
        name=${dev##*/}
        [ "$name" = lo ] && continue
        [ "$(cat "$dev/type" 2>/dev/null)" = 1 ] || continue
        IFACE=$name
        break
    done
    [ -n "$IFACE" ] && break
    n=$((n + 1))
    sleep 0.1
done
[ -n "$IFACE" ] || fail "no ethernet interface appeared (NIC driver missing?)"
MAC=$(cat "/sys/class/net/$IFACE/address")
say "interface $IFACE mac $MAC"
ip link set "$IFACE" up || fail "cannot bring up $IFACE"
# wait for the link (e1000 needs a moment) so that udhcpc's first DISCOVER is not lost
n=0
while [ "$(cat "/sys/class/net/$IFACE/carrier" 2>/dev/null)" != 1 ] && [ $n -lt 100 ]; do
    n=$((n + 1))
    sleep 0.1
done
say "link on $IFACE $( [ $n -lt 100 ] && echo up || echo 'still down, trying anyway')"

# --- DHCP ----------------------------------------------------------------------------------
say "dhcp on $IFACE"
# udhcpc -n gives up after three unanswered REQUESTs (busybox's fixed count), so one lossy
# link (three ACKs lost in a row) would end the boot: start it over a few times first.
tries=0
until udhcpc -i "$IFACE" -n -q -t 10 -s /etc/udhcpc.script -x "hostname:$(cat /etc/hostname)"
do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || fail "no DHCP lease on $IFACE after 5 tries"
    say "dhcp on $IFACE: no lease yet, trying again ($tries)"
done
[ -f /run/lease ] && . /run/lease
say "address ${LEASE_IP:-?}/${LEASE_MASK:-?} router ${LEASE_ROUTER:-none}"
"""

# form-encode a value (RFC 3986 unreserved plus "/" and ":" stay as they are)
SH_URLENCODE = r"""
urlencode() {
    printf '%s' "$1" | awk '
        BEGIN { for (i = 1; i < 256; i++) ord[sprintf("%c", i)] = i }
        {
            if (NR > 1) printf "%%0A"
            n = length($0)
            for (i = 1; i <= n; i++) {
                c = substr($0, i, 1)
                if (c ~ /[A-Za-z0-9._~\/:-]/) printf "%s", c
                else printf "%%%02X", ord[c]
            }
        }'
}
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc hook: apply the lease (address, route) and record it in /run/lease.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        ip route del default 2>/dev/null
        for r in $router; do
            ip route add default via "$r" dev "$interface"
            break
        done
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        {
            echo "LEASE_IP='$ip'"
            echo "LEASE_MASK='${mask:-24}'"
            echo "LEASE_ROUTER='${router%% *}'"
            echo "LEASE_SERVER='$serverid'"
        } >/run/lease
        ;;
esac
exit 0
"""


# --------------------------------------------------------------------------------------------
# Debian packages and the cache
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"build: {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], *, cwd: Path | None = None) -> str:
    """Run a command, return its stdout; raise RecipeError with its stderr on failure."""
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, check=False, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise RecipeError(f"{cmd[0]} not found: install it (apt-get install -y ...)") from exc
    if proc.returncode != 0:
        raise RecipeError(
            f"{' '.join(cmd)} failed with status {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def kernel_package(arch: str = "amd64") -> str:
    """Name of the versioned kernel package that ``linux-image-<arch>`` depends on."""
    meta = RECIPE_ARCHES[arch].kernel_meta_package
    out = run(["apt-cache", "depends", f"{meta}:{arch}"])
    for line in out.splitlines():
        m = re.match(r"^\s*\|?Depends:\s*(linux-image-[^\s:]+)", line)
        if m and not m.group(1).startswith("<"):
            return m.group(1)
    hint = (f"dpkg --add-architecture {arch}; apt-get update" if arch != "amd64"
            else "apt-get update")
    raise RecipeError(
        f"apt-cache depends {meta}:{arch} names no linux-image-* package; "
        f"run {hint} or pass --kernel-package"
    )


def cached_deb(cache: Path, package: str, arch: str = "amd64") -> Path | None:
    """A previously downloaded ``.deb`` of ``package`` for ``arch`` (or ``all``: packages
    without machine code, e.g. cloud-init) in the cache, if any."""
    found = sorted([*cache.glob(f"{package}_*_{arch}.deb"), *cache.glob(f"{package}_*_all.deb")])
    return found[-1] if found else None


def download_deb(cache: Path, package: str, arch: str = "amd64") -> Path:
    """The ``.deb`` of ``package`` in the cache, downloaded with ``apt-get download`` if absent."""
    deb = cached_deb(cache, package, arch)
    if deb is not None:
        log(f"reusing {deb.name}")
        return deb
    log(f"apt-get download {package}:{arch}")
    run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", f"{package}:{arch}"],
        cwd=cache)
    deb = cached_deb(cache, package, arch)
    if deb is None:
        raise RecipeError(f"apt-get download {package}:{arch} left no .deb in {cache}"
                          + ("" if arch == "amd64" else
                             f" (did you run dpkg --add-architecture {arch}; apt-get update?)"))
    return deb


def unpack_deb(cache: Path, deb: Path) -> Path:
    """Unpack ``deb`` once into ``<cache>/unpacked/<deb stem>/`` (atomically) and return it."""
    dest = cache / "unpacked" / deb.stem
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{deb.stem}-{secrets.token_hex(4)}"
    log(f"unpacking {deb.name}")
    try:
        run(["dpkg-deb", "-x", str(deb), str(tmp)])
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def prepare_cache(cache: Path) -> None:
    """Create the cache directory, with a ``.gitignore`` that keeps it out of git."""
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# build cache of the images/ recipes\n*\n")


# --------------------------------------------------------------------------------------------
# Kernel and modules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: the image and the module tree of one kernel release."""

    root: Path
    release: str
    package_file: str

    @property
    def vmlinuz(self) -> Path:
        """The kernel image."""
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def moddir(self) -> Path:
        """``lib/modules/<release>`` inside the unpacked tree."""
        return self.root / "lib" / "modules" / self.release


def find_kernel(root: Path, package_file: str) -> Kernel:
    """Locate the kernel release in an unpacked kernel package; generate modules.dep if needed."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise RecipeError(f"expected one boot/vmlinuz-* in {root}, found {len(images)}")
    release = images[0].name.removeprefix("vmlinuz-")
    kernel = Kernel(root=root, release=release, package_file=package_file)
    if not kernel.moddir.is_dir():
        raise RecipeError(f"{kernel.moddir} missing: not a kernel image package?")
    if not (kernel.moddir / "modules.dep").exists():
        # Debian generates modules.dep at install time (postinst); do it here, into the cache.
        log(f"depmod -b {root} {release}")
        run(["depmod", "-b", str(root), release])
    return kernel


def module_name(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko[.xz]`` -> ``virtio_net`` (dashes as underscores)."""
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def read_modules_dep(moddir: Path) -> dict[str, tuple[str, list[str]]]:
    """Map module name -> (its path, the paths it depends on) from ``modules.dep``."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[module_name(path)] = (path, rest.split())
    return deps


def builtin_modules(moddir: Path) -> set[str]:
    """Names of modules compiled into the kernel (``modules.builtin``)."""
    f = moddir / "modules.builtin"
    if not f.exists():
        return set()
    return {module_name(line.strip()) for line in f.read_text().splitlines() if line.strip()}


def resolve_modules(kernel: Kernel, wanted: Iterable[str]) -> list[str]:
    """Module paths (relative to moddir) for ``wanted`` and their dependencies, in load order."""
    deps = read_modules_dep(kernel.moddir)
    builtin = builtin_modules(kernel.moddir)
    order: list[str] = []

    def visit(path: str, stack: tuple[str, ...]) -> None:
        if path in order:
            return
        if path in stack:
            raise RecipeError(f"module dependency loop: {' -> '.join((*stack, path))}")
        name = module_name(path)
        entry = deps.get(name)
        if entry is None:
            raise RecipeError(f"{path} is listed in modules.dep but has no entry of its own")
        # modules.dep lists the full transitive closure, deepest last; visit in reverse.
        for dep in reversed(entry[1]):
            visit(dep, (*stack, path))
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin:
            log(f"module {name} is built into {kernel.release}")
            continue
        if key not in deps:
            raise RecipeError(f"module {name} not found in {kernel.release} (modules.dep)")
        visit(deps[key][0], ())
    return order


def module_bytes(path: Path) -> bytes:
    """A module's contents, decompressed when the package ships ``.ko.xz``/``.gz``/``.zst``."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


# --------------------------------------------------------------------------------------------
# Initramfs: a reproducible cpio "newc" archive, gzip'd
# --------------------------------------------------------------------------------------------


class Cpio:
    """Writer of a cpio newc archive with fixed owners and timestamps (reproducible)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._names: set[str] = set()

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
        nlink: int = 1,
    ) -> None:
        if name in self._names:
            raise RecipeError(f"initramfs: duplicate entry {name}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,
            0,
            nlink,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
        self._buf.write(header + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str, mode: int = 0o755) -> None:
        """Add a directory."""
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file."""
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node."""
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        """Close the archive with its trailer and return the bytes."""
        self._entry("TRAILER!!!", 0, nlink=1)
        return self._buf.getvalue()


def build_initramfs(
    kernel: Kernel,
    modules: list[str],
    busybox: Path,
    ident: str,
    init: str,
    hostname: str,
) -> bytes:
    """The gzip'd initramfs: busybox, the modules, /dev/console, ``init`` and its identity."""
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "run", "sbin", "sys", "tmp"):
        cpio.directory(d, 0o1777 if d == "tmp" else 0o755)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", init.encode(), 0o755)
    cpio.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    cpio.file("etc/netbootd-build", f"{ident}\n".encode())
    cpio.file("etc/hostname", f"{hostname}\n".encode())
    names: list[str] = []
    for rel in modules:
        name = module_name(rel)
        names.append(name)
        cpio.file(f"lib/modules/{name}.ko", module_bytes(kernel.moddir / rel))
    cpio.file("etc/modules.order", "".join(f"{n}\n" for n in names).encode())
    raw = cpio.finish()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(raw)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


def file_entry(path: Path) -> dict[str, int | str]:
    """``{"size": N, "sha256": hex}`` of a file."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def write_file(path: Path, data: bytes) -> None:
    """Write and fsync a file."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: Path) -> object:
    """Parsed ``manifest.json``, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def publish(
    store: Path, name: str, version: str, files: dict[str, bytes], manifest: dict[str, object]
) -> tuple[Path, bool]:
    """Write the build aside, verify it, rename it into place; return (path, newly created)."""
    builds = store / "builds"
    target = builds / name / version
    builds.mkdir(parents=True, exist_ok=True)
    tmp = builds / f".tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        for fname, data in files.items():
            write_file(tmp / fname, data)
        write_file(tmp / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        # verify what landed on disk against the manifest before publishing it
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise RecipeError("manifest 'files' is not a table of name -> {size, sha256}")
        for fname, entry in listed.items():
            if file_entry(tmp / fname) != entry:
                raise RecipeError(f"{tmp / fname} does not match its manifest entry")
        if target.exists():
            return target, _same_or_refuse(target, manifest)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists():  # lost a race with another build of the same version
                return target, _same_or_refuse(target, manifest)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _same_or_refuse(target: Path, manifest: dict[str, object]) -> bool:
    existing = read_manifest(target / "manifest.json")
    if existing == manifest:
        return False
    raise RecipeError(
        f"{target} already exists with a different manifest; builds are immutable: "
        "choose a new --version (or remove that build)"
    )


# --------------------------------------------------------------------------------------------
# A whole recipe: Debian parts in, published build out
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianParts:
    """The unpacked kernel and busybox a build is made of, with the package file names."""

    kernel: Kernel
    kernel_deb: Path
    busybox: Path
    busybox_deb: Path


def fetch_parts(cache: Path, kernel_pkg: str | None = None, arch: str = "amd64") -> DebianParts:
    """Download (once) and unpack Debian's kernel and busybox-static for ``arch`` into ``cache``."""
    prepare_cache(cache)
    pkg = kernel_pkg or kernel_package(arch)
    kdeb = download_deb(cache, pkg, arch)
    kernel = find_kernel(unpack_deb(cache, kdeb), kdeb.name)
    bdeb = download_deb(cache, BUSYBOX_PACKAGE, arch)
    busybox = unpack_deb(cache, bdeb) / "bin" / "busybox"
    if not busybox.is_file():
        raise RecipeError(f"{bdeb.name} has no bin/busybox")
    return DebianParts(kernel, kdeb, busybox, bdeb)


def check_name_version(name: str, version: str) -> None:
    """Refuse names the store would refuse."""
    if not NAME_RE.match(name):
        raise RecipeError(f"bad --name {name!r}: use [A-Za-z0-9][A-Za-z0-9._+-]*")
    if not NAME_RE.match(version):
        raise RecipeError(f"bad --version {version!r}: use [A-Za-z0-9][A-Za-z0-9._+-]*")


def build_linux(
    store: Path,
    name: str,
    version: str,
    cache: Path,
    kernel_pkg: str | None,
    *,
    modules: Sequence[str],
    init: str,
    hostname: str,
    description: str,
    arch: str = "amd64",
) -> tuple[Path, bool]:
    """Make the initramfs around ``init`` and publish kernel + initrd as a ``linux`` build.

    Debian's kernel (``kernel_pkg``, default: what linux-image-<arch> depends on) and
    busybox-static of ``arch`` come from ``cache``. ``description`` may use ``{release}``,
    ``{kernel_pkg}`` and ``{busybox_pkg}``. Returns (build directory, newly created).
    """
    check_name_version(name, version)
    if arch not in RECIPE_ARCHES:
        raise RecipeError(f"bad --arch {arch!r}: one of {', '.join(RECIPE_ARCHES)}")
    parts = fetch_parts(cache, kernel_pkg, arch)
    kernel = parts.kernel
    resolved = resolve_modules(kernel, modules)
    log(f"kernel {kernel.release}; modules: {', '.join(module_name(m) for m in resolved)}")
    ident = f"{name}/{version}"
    initrd = build_initramfs(kernel, resolved, parts.busybox, ident, init, hostname)
    vmlinuz = kernel.vmlinuz.read_bytes()
    log(f"initrd.img {len(initrd)} bytes, vmlinuz {len(vmlinuz)} bytes")
    files = {"vmlinuz": vmlinuz, "initrd.img": initrd}
    manifest: dict[str, object] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "kind": "linux",
        "arch": arch,
        "kernel": "vmlinuz",
        "initrds": ["initrd.img"],
        "cmdline": RECIPE_ARCHES[arch].cmdline,
        "description": description.format(
            release=kernel.release,
            kernel_pkg=unquote(parts.kernel_deb.stem),
            busybox_pkg=unquote(parts.busybox_deb.stem),
        ),
        "files": {
            fname: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for fname, data in files.items()
        },
    }
    return publish(store, name, version, files, manifest)


BuildFn = Callable[..., tuple[Path, bool]]


def recipe_main(
    argv: Sequence[str] | None,
    description: str | None,
    default_name: str | None,
    build: BuildFn,
    arches: Sequence[str] = ("amd64",),
) -> int:
    """The command line every linux recipe shares: --store --name --version --cache ...

    A recipe that can build for several ``arches`` gets ``--arch`` (default amd64), passed to
    ``build`` as ``arch=``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--store", type=Path, required=True, help="image store root")
    if default_name is None:
        ap.add_argument("--name", required=True, help="build name")
    else:
        ap.add_argument(
            "--name", default=default_name, help=f"build name (default: {default_name})"
        )
    ap.add_argument("--version", required=True, help="build version, e.g. 1.0")
    ap.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"download/unpack cache (default: {DEFAULT_CACHE})",
    )
    ap.add_argument(
        "--kernel-package",
        default=None,
        help="kernel package (default: what linux-image-<arch> depends on)",
    )
    if len(arches) > 1:
        ap.add_argument("--arch", choices=arches, default="amd64",
                        help="CPU architecture of the machines the build boots")
    args = ap.parse_args(argv)
    extra = {"arch": args.arch} if len(arches) > 1 else {}
    try:
        path, created = build(
            args.store.resolve(),
            args.name,
            args.version,
            args.cache.resolve(),
            args.kernel_package,
            **extra,
        )
    except RecipeError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    log(f"{'published' if created else 'already present, identical'}: {path}")
    print(path)
    return 0
