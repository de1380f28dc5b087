#!/usr/bin/env python3
"""Build the netbootd demo appliance: Debian's kernel plus a busybox first-boot agent.

Run as::

    python3 images/demo/build.py --store DIR --name demo --version 1.0 [--cache DIR]

What it does:

1. Finds Debian's kernel package (the ``linux-image-*`` that ``linux-image-amd64`` depends on),
   ``apt-get download``s it and ``busybox-static`` into the cache directory (default
   ``images/.cache``), and unpacks them there with ``dpkg-deb -x`` (nothing is installed). The
   unpacked trees are reused by later builds, whatever their name or version.
2. Takes ``/boot/vmlinuz-*`` and the NIC modules (virtio_pci, virtio_net, e1000, af_packet when
   modular) with their dependencies, resolved from ``modules.dep`` (generated with ``depmod -b``,
   because the package does not ship one).
3. Writes a gzip'd cpio (newc) initramfs, byte-for-byte reproducible, holding busybox, the
   modules, ``/dev/console``, ``/etc/netbootd-build`` (``NAME/VERSION``) and ``/init``: a busybox
   sh agent that brings up the network with DHCP, reads the NoCloud seed URL from the kernel
   command line (``ds=nocloud-net;s=<URL>/``), fetches ``meta-data`` and ``user-data``, sets
   the hostname, POSTs ``instance_id``, ``hostname`` and ``build`` to the cloud-config
   ``phone_home: url:``, sends netbootd's ready report (``status=done``) to the report URL its
   user-data's ``bootcmd`` carries, and then follows ``power_state: mode:`` (none, as in
   cloud-init, when absent: it stays up).
4. Publishes ``<store>/builds/<name>/<version>/`` (``vmlinuz``, ``initrd.img``, ``manifest.json``)
   atomically: written aside in ``<store>/builds/.tmp-*``, verified, then renamed. An existing
   build with an identical manifest is left alone; a different one is refused.
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

# --------------------------------------------------------------------------------------------
# The first-boot agent (/init). Plain busybox sh; every step prints a "netbootd-agent:" marker
# on the console and any failure powers the guest off. Boot, modules and DHCP are the shared
# fragments of recipe_common; what follows them is the agent's own.
# --------------------------------------------------------------------------------------------

INIT_HEAD = r"""#!/bin/sh
# netbootd first-boot agent (PID 1 of the demo appliance initramfs).
export PATH=/bin:/sbin

say() { echo "netbootd-agent: $*"; }
fail() {
    say "FAILED: $*"
    say "powering off"
    sync
    poweroff -f
    sleep 5
    exit 1
}
"""

INIT_BODY = r"""
# --- NoCloud seed from the kernel command line ----------------------------------------------
SEED=""
CMD_HOST=""
CMD_IID=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        ds=nocloud*)
            rest=$(echo "${word#ds=}" | tr -d '\\')
            oldifs=$IFS
            IFS=';'
            for kv in $rest; do
                case "$kv" in
                    s=*) SEED=${kv#s=} ;;
                    seedfrom=*) SEED=${kv#seedfrom=} ;;
                    h=*) CMD_HOST=${kv#h=} ;;
                    local-hostname=*) CMD_HOST=${kv#local-hostname=} ;;
                    i=*) CMD_IID=${kv#i=} ;;
                    instance-id=*) CMD_IID=${kv#instance-id=} ;;
                esac
            done
            IFS=$oldifs
            ;;
    esac
done
[ -n "$SEED" ] || fail "no ds=nocloud-net;s=<url>/ on the kernel command line"
case "$SEED" in
    */) ;;
    *) SEED="$SEED/" ;;
esac
say "seed $SEED"

# fetch URL FILE: busybox wget (its -T segfaults on Debian 12, so wrap it in timeout), retried.
fetch() {
    i=0
    while [ $i -lt 5 ]; do
        if timeout 10 wget -q -O "$2.part" "$1" 2>/tmp/wget.err; then
            mv "$2.part" "$2"
            return 0
        fi
        i=$((i + 1))
        sleep 2
    done
    say "fetch $1 failed: $(cat /tmp/wget.err 2>/dev/null)"
    return 1
}

fetch "${SEED}meta-data" /run/meta-data || fail "cannot fetch ${SEED}meta-data"
say "fetched meta-data"
fetch "${SEED}user-data" /run/user-data || fail "cannot fetch ${SEED}user-data"
say "fetched user-data"

# top-level "key: value" of a YAML file, quotes stripped
yaml_top() {
    sed -n "s/^$1:[[:space:]]*//p" "$2" | head -n 1 | sed -e 's/[[:space:]]*$//' \
        -e "s/^\"\(.*\)\"\$/\1/" -e "s/^'\(.*\)'\$/\1/"
}
# "key: value" inside the indented block under a top-level "block:", quotes stripped
yaml_sub() {
    awk -v blk="$1" -v key="$2" '
        /^[^[:space:]#]/ { inblk = ($0 ~ ("^" blk ":[[:space:]]*$")); next }
        inblk && $0 ~ ("^[[:space:]]+" key ":") {
            sub("^[[:space:]]+" key ":[[:space:]]*", "")
            sub("[[:space:]]+$", "")
            if ($0 ~ /^".*"$/ || $0 ~ /^'"'"'.*'"'"'$/) $0 = substr($0, 2, length($0) - 2)
            print
            exit
        }' "$3"
}

IID=$(yaml_top instance-id /run/meta-data)
HOST=$(yaml_top local-hostname /run/meta-data)
[ -n "$IID" ] || IID=$CMD_IID
[ -n "$HOST" ] || HOST=$CMD_HOST
[ -n "$IID" ] || IID="iid-$(echo "$MAC" | tr -d ':')"
[ -n "$HOST" ] || HOST="demo-$(echo "$MAC" | tr -d ':')"
hostname "$HOST" || fail "cannot set hostname $HOST"
echo "$HOST" >/etc/hostname
say "instance-id $IID hostname $(hostname)"

head -n 1 /run/user-data | grep -q '^#cloud-config' \
    || say "user-data is not #cloud-config; ignoring it"

PH_URL=$(yaml_sub phone_home url /run/user-data)
PH_TRIES=$(yaml_sub phone_home tries /run/user-data)
PS_MODE=$(yaml_sub power_state mode /run/user-data)
case "$PH_TRIES" in ''|*[!0-9]*) PH_TRIES=10 ;; esac

if [ -n "$PH_URL" ]; then
    PH_URL=$(echo "$PH_URL" | sed "s|\\\$INSTANCE_ID|$IID|g; s|\\\${INSTANCE_ID}|$IID|g")
    BODY="instance_id=$(urlencode "$IID")&hostname=$(urlencode "$HOST")&build=$(urlencode "$BUILD")"
    say "phone-home to $PH_URL ($BODY)"
    i=0
    ok=""
    while [ $i -lt "$PH_TRIES" ]; do
        if timeout 10 wget -q -O /run/phone-home.reply --post-data "$BODY" "$PH_URL" \
                2>/tmp/wget.err; then
            ok=1
            break
        fi
        i=$((i + 1))
        sleep 2
    done
    [ -n "$ok" ] || fail "phone-home to $PH_URL failed after $PH_TRIES tries: $(cat /tmp/wget.err)"
    say "phone-home ok"
    # The ready report netbootd's user-data has real cloud-init images send (its bootcmd
    # carries the URL) once cloud-init has finished: this agent is done at this point.
    RP_URL=$(sed -n 's|^[[:space:]]*- "\(https*://[^"]*/report/[^"]*\)"$|\1|p' /run/user-data \
        | head -n 1)
    if [ -n "$RP_URL" ]; then
        RP_BODY="status=done&errors=%5B%5D&hostname=$(urlencode "$HOST")"
        if timeout 10 wget -q -O /run/report.reply --post-data "$RP_BODY" "$RP_URL" \
                2>/tmp/wget.err; then
            say "ready report ok"
        else
            say "ready report to $RP_URL failed: $(cat /tmp/wget.err)"
        fi
    fi
else
    say "no phone_home url in user-data; not phoning home"
fi

case "${PS_MODE:-none}" in
    none)
        say "done; power_state mode none: staying up"
        while true; do
            setsid cttyhack sh -l 2>/dev/null || sleep 3600
        done
        ;;
    reboot)
        say "done; rebooting"
        sync
        reboot -f
        ;;
    halt)
        say "done; halting"
        sync
        halt -f
        ;;
    *)
        say "done; powering off"
        sync
        poweroff -f
        ;;
esac
sleep 5
exit 0
"""

INIT_SCRIPT = INIT_HEAD + SH_BOOT + SH_NETWORK + SH_URLENCODE + INIT_BODY
DESCRIPTION = (
    "netbootd demo appliance: Debian kernel {release} ({kernel_pkg}) with a busybox first-boot "
    "agent (NoCloud seed, phone-home) from {busybox_pkg}"
)


def build(
    store: Path, name: str, version: str, cache: Path, kernel_pkg: str | None = None
) -> tuple[Path, bool]:
    """Build the demo appliance into ``store``; return (build directory, newly created)."""
    return build_linux(
        store,
        name,
        version,
        cache,
        kernel_pkg,
        modules=NIC_MODULES,
        init=INIT_SCRIPT,
        hostname="netbootd-demo",
        description=DESCRIPTION,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    description = __doc__.splitlines()[0] if __doc__ else None
    return recipe_main(argv, description, "demo", build)


if __name__ == "__main__":
    sys.exit(main())
