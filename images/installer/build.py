#!/usr/bin/env python3
"""Build the netbootd reimage installer: Debian's kernel plus a busybox disk writer.

Run as::

    python3 images/installer/build.py --store DIR --name NAME --version V [--cache DIR]

The build is a kind ``linux`` build published like the demo appliance's (same Debian kernel and
busybox-static, same cache, same atomic publish; see ``images/recipe_common.py``). Its
initramfs ``/init`` streams a disk image over HTTP onto the node's local disk, checks it and
reports; netbootd puts these parameters on its kernel command line (the reimage contract)::

    netbootd.disk_url=URL              HTTP URL of the disk image file (maybe compressed)
    netbootd.disk_compression=C        none | gzip | xz   (zstd: not supported, see below)
    netbootd.disk_size=N               size in bytes of the raw (uncompressed) image
    netbootd.disk_sha256=HEX           sha256 of the raw image
    netbootd.target=DEV                optional; default: first of /dev/vda /dev/sda /dev/nvme0n1
    netbootd.report=URL                where the result is POSTed (form-encoded):
                                       status=done|failed, reason=..., sha256=..., bytes=...

Steps, each printed on the console as ``netbootd-installer: ...``: mount, load the NIC and disk
drivers (virtio_blk, nvme, ahci, ata_piix, sd_mod are modules in Debian's kernel), read the
command line, wait for the target disk, DHCP with udhcpc, ``wget -O -`` the image through the
decompressor (busybox ``gunzip -c`` / ``xzcat``) onto the disk, sync, drop the page cache,
re-read the first ``disk_size`` bytes and compare their sha256, POST the report, power off
(``poweroff -f``). Debian 12's busybox-static has no zstd decompressor, so
``disk_compression=zstd`` is reported as failed ("not supported") before anything is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # images/: the shared recipe code
from recipe_common import (
    NIC_MODULES,
    SH_BOOT,
    SH_NETWORK,
    SH_URLENCODE,
    RecipeError,
    build_linux,
    recipe_main,
)

__all__ = ["INIT_SCRIPT", "RecipeError", "build", "main"]

# Block drivers for the default targets: virtio_blk -> /dev/vda; nvme -> /dev/nvme0n1;
# ahci (SATA) and ata_piix (QEMU's i440fx IDE) with sd_mod -> /dev/sda. All are modules in
# Debian's kernel (CONFIG_VIRTIO_BLK=m, CONFIG_BLK_DEV_NVME=m, ...); built-in ones are skipped.
DISK_MODULES: tuple[str, ...] = ("virtio_blk", "nvme", "ahci", "ata_piix", "sd_mod")
# Decompressors present in Debian 12's busybox-static (busybox --list: gunzip, xzcat; no zstd).
COMPRESSIONS: tuple[str, ...] = ("none", "gzip", "xz")
# Upper bound on the whole download; a stalled server must not keep the node forever.
DOWNLOAD_TIMEOUT_S = 3600

# --------------------------------------------------------------------------------------------
# The installer (/init). Plain busybox sh; every step prints a "netbootd-installer:" marker;
# any failure is reported (once the network is up) and powers the node off.
# --------------------------------------------------------------------------------------------

INIT_HEAD = r"""#!/bin/sh
# netbootd reimage installer (PID 1 of the installer initramfs): writes a disk image to disk.
export PATH=/bin:/sbin

REPORT=""
NET_UP=""
MEASURED=""
WRITTEN=0

say() { echo "netbootd-installer: $*"; }

# report STATUS [REASON]: POST the result to netbootd.report, ten tries
report() {
    if [ -z "$REPORT" ]; then
        say "no netbootd.report= on the command line: not reporting"
        return 1
    fi
    if [ -z "$NET_UP" ]; then
        say "network is not up: cannot report to $REPORT"
        return 1
    fi
    body="status=$(urlencode "$1")&sha256=$(urlencode "$MEASURED")&bytes=$WRITTEN"
    [ -n "$2" ] && body="$body&reason=$(urlencode "$2")"
    say "report $1 to $REPORT"
    i=0
    while [ $i -lt 10 ]; do
        if timeout 10 wget -q -O /run/report.reply --post-data "$body" "$REPORT" \
                2>/tmp/report.err; then
            say "report sent"
            return 0
        fi
        i=$((i + 1))
        sleep 2
    done
    say "report to $REPORT failed after 10 tries: $(cat /tmp/report.err 2>/dev/null)"
    return 1
}

poweroff_now() {
    say "powering off"
    sync
    poweroff -f
    sleep 5
    exit 1
}

fail() {
    say "FAILED: $*"
    report failed "$*"
    poweroff_now
}
"""

INIT_BODY = r"""
# --- the reimage parameters from the kernel command line -----------------------------------
DISK_URL=""
COMPRESSION="none"
DISK_SIZE=""
DISK_SHA=""
TARGET_ARG=""
set -f  # URLs may hold "?" and "*": no globbing of the command line's words
for word in $(cat /proc/cmdline); do
    case "$word" in
        netbootd.disk_url=*) DISK_URL=${word#*=} ;;
        netbootd.disk_compression=*) COMPRESSION=${word#*=} ;;
        netbootd.disk_size=*) DISK_SIZE=${word#*=} ;;
        netbootd.disk_sha256=*) DISK_SHA=$(echo "${word#*=}" | tr 'A-F' 'a-f') ;;
        netbootd.target=*) TARGET_ARG=${word#*=} ;;
        netbootd.report=*) REPORT=${word#*=} ;;
    esac
done
set +f
say "image ${DISK_URL:-?} compression $COMPRESSION size ${DISK_SIZE:-?} sha256 ${DISK_SHA:-?}"
say "report to ${REPORT:-nowhere}"

# Every problem is collected; they are reported together once the network is up.
PROBLEMS=""
problem() { PROBLEMS="${PROBLEMS:+$PROBLEMS; }$*"; }
case "$DISK_URL" in
    http://?*|https://?*) ;;
    "") problem "netbootd.disk_url= missing" ;;
    *) problem "netbootd.disk_url=$DISK_URL is not an http:// URL" ;;
esac
case "$COMPRESSION" in
    none) DECOMPRESS="cat" ;;
    gzip) DECOMPRESS="gunzip -c" ;;
    xz) DECOMPRESS="xzcat" ;;
    zstd) problem "netbootd.disk_compression=zstd is not supported by this installer" \
        "(busybox has no zstd decompressor): publish the image as none, gzip or xz" ;;
    *) problem "netbootd.disk_compression=$COMPRESSION unknown: use none, gzip or xz" ;;
esac
case "$DISK_SIZE" in
    ''|*[!0-9]*|0) problem "netbootd.disk_size=${DISK_SIZE} is not a positive number of bytes" ;;
esac
case "$DISK_SHA" in
    *[!0-9a-f]*|'') problem "netbootd.disk_sha256=${DISK_SHA} is not a sha256 (64 hex digits)" ;;
    *) [ ${#DISK_SHA} -eq 64 ] \
        || problem "netbootd.disk_sha256=${DISK_SHA} is not a sha256 (64 hex digits)" ;;
esac

# --- the target disk (drivers probe asynchronously: wait up to 10 s) -------------------------
TARGET=""
n=0
while [ $n -lt 100 ]; do
    if [ -n "$TARGET_ARG" ]; then
        [ -b "$TARGET_ARG" ] && TARGET=$TARGET_ARG
    else
        for dev in /dev/vda /dev/sda /dev/nvme0n1; do
            if [ -b "$dev" ]; then
                TARGET=$dev
                break
            fi
        done
    fi
    [ -n "$TARGET" ] && break
    n=$((n + 1))
    sleep 0.1
done
if [ -z "$TARGET" ]; then
    if [ -n "$TARGET_ARG" ]; then
        problem "no target disk: netbootd.target=$TARGET_ARG is not a block device"
    else
        problem "no target disk: none of /dev/vda /dev/sda /dev/nvme0n1 exists"
    fi
else
    TARGET_SIZE=$(blockdev --getsize64 "$TARGET" 2>/dev/null)
    say "target disk $TARGET, ${TARGET_SIZE:-?} bytes"
    case "$DISK_SIZE" in
        ''|*[!0-9]*) ;;
        *) [ -n "$TARGET_SIZE" ] && [ "$TARGET_SIZE" -lt "$DISK_SIZE" ] && problem \
            "target disk too small: $TARGET has $TARGET_SIZE bytes, the image $DISK_SIZE" ;;
    esac
fi
"""

INIT_WRITE = r"""
NET_UP=1
[ -z "$PROBLEMS" ] || fail "$PROBLEMS"

# --- stream the image onto the disk ---------------------------------------------------------
# Each stage records its own exit status (busybox sh has no PIPESTATUS). head -c SIZE+1 stops
# an oversized image one byte past the end, so "too large" is told apart from "exact".
say "writing $DISK_URL ($COMPRESSION) to $TARGET"
rm -f /tmp/wget.rc /tmp/decompress.rc /tmp/write.rc /tmp/count
mkfifo /tmp/count.fifo
wc -c </tmp/count.fifo >/tmp/count &
COUNTER=$!
{ timeout @DOWNLOAD_TIMEOUT@ wget -q -O - "$DISK_URL" 2>/tmp/wget.err; echo $? >/tmp/wget.rc; } \
    | { $DECOMPRESS 2>/tmp/decompress.err; echo $? >/tmp/decompress.rc; } \
    | { head -c $((DISK_SIZE + 1)) | tee /tmp/count.fifo >"$TARGET" 2>/tmp/write.err;
        echo $? >/tmp/write.rc; }
wait $COUNTER
WRITTEN=$(tr -dc 0-9 </tmp/count)
WRITTEN=${WRITTEN:-0}
say "wrote $WRITTEN bytes to $TARGET"
if [ "$WRITTEN" -gt "$DISK_SIZE" ]; then
    fail "size mismatch: the image is larger than netbootd.disk_size=$DISK_SIZE bytes"
fi
[ "$(cat /tmp/wget.rc)" = 0 ] \
    || fail "download error: $DISK_URL: $(tail -n 1 /tmp/wget.err 2>/dev/null)" \
        "(wget status $(cat /tmp/wget.rc))"
[ "$(cat /tmp/decompress.rc)" = 0 ] \
    || fail "decompression error ($COMPRESSION): $(tail -n 1 /tmp/decompress.err 2>/dev/null)"
[ "$(cat /tmp/write.rc)" = 0 ] \
    || fail "write error on $TARGET: $(tail -n 1 /tmp/write.err 2>/dev/null)"
[ "$WRITTEN" -eq "$DISK_SIZE" ] \
    || fail "size mismatch: got $WRITTEN bytes, netbootd.disk_size=$DISK_SIZE"

# --- verify what is on the disk, not what went through the pipe ----------------------------
sync
blockdev --flushbufs "$TARGET" 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
say "verifying the first $DISK_SIZE bytes of $TARGET"
MEASURED=$(head -c "$DISK_SIZE" "$TARGET" | sha256sum | cut -d ' ' -f 1)
say "sha256 $MEASURED"
[ "$MEASURED" = "$DISK_SHA" ] \
    || fail "sha256 mismatch: $TARGET holds $MEASURED, netbootd.disk_sha256=$DISK_SHA"

say "done: $TARGET holds the image ($WRITTEN bytes, sha256 $MEASURED)"
report done ""
poweroff_now
"""

INIT_SCRIPT = (
    INIT_HEAD
    + SH_URLENCODE
    + SH_BOOT
    + INIT_BODY
    + SH_NETWORK
    + INIT_WRITE.replace("@DOWNLOAD_TIMEOUT@", str(DOWNLOAD_TIMEOUT_S))
)
DESCRIPTION = (
    "netbootd reimage installer: Debian kernel {release} ({kernel_pkg}) with a busybox disk "
    "writer (HTTP, none/gzip/xz, sha256 check, report) from {busybox_pkg}"
)


def build(
    store: Path, name: str, version: str, cache: Path, kernel_pkg: str | None = None
) -> tuple[Path, bool]:
    """Build the installer into ``store``; return (build directory, newly created)."""
    return build_linux(
        store,
        name,
        version,
        cache,
        kernel_pkg,
        modules=(*NIC_MODULES, *DISK_MODULES),
        init=INIT_SCRIPT,
        hostname="netbootd-installer",
        description=DESCRIPTION,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    description = __doc__.splitlines()[0] if __doc__ else None
    return recipe_main(argv, description, None, build)


if __name__ == "__main__":
    sys.exit(main())
