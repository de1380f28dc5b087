#!/usr/bin/env bash
# The demo lab (root, Debian 12): installs what it needs, builds the demo appliance from Debian
# packages, starts netbootd on an isolated virtual network (namespace + bridge, dnsmasq as a
# plain site DHCP server) and PXE-boots a real QEMU client through it. Prints the node's boot
# timeline and the seconds from power-on to phone-home. Pass --firmware uefi for OVMF.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh
exec .venv/bin/python -m netbootd.lab.demo "$@"
