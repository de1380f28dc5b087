#!/usr/bin/env bash
# The demo lab (root, Debian 12): installs what it needs, builds the KVM hypervisor appliance
# from Debian packages (first run: a few minutes; then cached), starts netbootd on an isolated
# virtual network (namespace + bridge, dnsmasq as a plain site DHCP server) and PXE-boots a
# real QEMU client through it. Prints the node's boot timeline and funnel and the seconds from
# power-on to `ready` (cloud-init done, reported to netbootd). --quick boots the busybox demo
# appliance instead (seconds); --firmware uefi uses OVMF.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
exec .venv/bin/python -m netbootd.lab.demo "$@"
