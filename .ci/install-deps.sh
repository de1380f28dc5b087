#!/usr/bin/env bash
# Installs everything netbootd's demo and test suite need on a fresh Debian 12 machine (root):
# Debian's bootloaders and QEMU firmware, the peers and clients the tests talk to, and a
# Python virtualenv (.venv) with netbootd installed in editable mode plus its test extras.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip            # the service itself
  pxelinux syslinux-common syslinux-efi ipxe  # bootloaders netbootd serves
  grub-common grub-pc-bin grub-efi-amd64-bin  # grub-mknetdir and GRUB's modules (no grub-install)
  fdisk dosfstools mtools                     # images/disk-efi: GPT + FAT ESP without mounting
  qemu-system-x86 ipxe-qemu ovmf              # real PXE clients (SeaBIOS+iPXE ROM, OVMF)
  qemu-system-arm qemu-efi-aarch64            # ARM64 UEFI clients (qemu-system-aarch64, AAVMF)
  dnsmasq-base                                # the site DHCP server in the test network
  iproute2 kmod cpio busybox-static xz-utils zstd  # namespaces; demo appliance recipe
  curl atftp tftp-hpa                         # independent TFTP clients for interop tests
  xorriso                                     # an independent ISO writer (ESXi ISO reader tests)
  systemd util-linux                          # systemd-analyze verify/security; setpriv
  tftpd-hpa nginx kea-admin wrk               # bench/ peers and clients (perfdhcp is in kea-admin)
  nftables                                    # random packet loss in test namespaces
  mmdebstrap squashfs-tools openssh-client    # KVM hypervisor appliance recipe; SSH into it
  # Debian's cloud-init is unpacked, never installed (tests/debian_cloudinit.py); what its
  # schema validator and network parsers import under the system python3:
  python3-yaml python3-jsonschema python3-jinja2 python3-configobj python3-jsonpatch
  python3-netifaces python3-requests
  isc-dhcp-client                             # an independent DHCP client for server mode
  postgresql                                  # [state] database tests (tests/pgserver.py)
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
# The arm64 demo build and arm64 GRUB come from Debian's arm64 packages, fetched with
# `apt-get download` and unpacked (never installed): apt needs the arm64 package lists.
arm64_lists=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  arm64_lists=1
fi
# The demo recipe fetches Debian's kernel with `apt-get download`, which needs package lists.
if [ ${#missing[@]} -gt 0 ] || [ -n "$arm64_lists" ] \
    || ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  # tftpd-hpa and nginx ship daemons: their postinst must not start them on host ports
  # (the bench runs them itself, in namespaces). Remove the policy only if we created it.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  # postgresql's postinst would create (and policy-rc.d aside, start) a 'main' cluster on
  # the host; the tests run their own server in a temp directory (tests/pgserver.py).
  mkdir -p /etc/postgresql-common/createcluster.d
  [ -e /etc/postgresql-common/createcluster.d/netbootd-no-main.conf ] \
    || echo "create_main_cluster = false" \
      > /etc/postgresql-common/createcluster.d/netbootd-no-main.conf
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# GRUB's network images (grub-mknetdir) plus Debian's signed shim and network GRUB, unpacked
# from their .debs (shim-signed's maintainer scripts would install a bootloader on the host).
.venv/bin/python -m netbootd loaders grub --dest /var/lib/netbootd/loaders/grub \
  --cache /var/cache/netbootd/debs --arm64
# atftpd conflicts with tftpd-hpa in Debian: the bench unpacks its package privately.
.venv/bin/python bench/run.py --install-only
