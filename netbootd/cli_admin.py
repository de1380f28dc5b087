"""The admin commands' parser: ``netbootd image ...``, ``channel ...`` and ``node ...``,
each with help on every option and an example (the command bodies: ``cli_admin_cmds``)."""

from __future__ import annotations

import argparse
from typing import Any

from netbootd.cli_admin_cmds import (
    cmd_channel_history,
    cmd_channel_list,
    cmd_channel_rollback,
    cmd_channel_set,
    cmd_image_gc,
    cmd_image_import,
    cmd_image_list,
    cmd_image_remove,
    cmd_image_show,
    cmd_image_verify,
    cmd_node_adopt,
    cmd_node_list,
    cmd_node_rebind,
    cmd_node_reimage,
    cmd_node_set,
    cmd_node_show,
    cmd_node_timeline,
    funnel_lines,
)
from netbootd.power.cli_power import add_power_command
from netbootd.store.kernel_arch import ARCHES

__all__ = ["add_admin_commands", "funnel_lines"]

YES_HELP = "do not ask for confirmation (needed when stdin is not a terminal)"


def _example(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def add_admin_commands(sub: Any, config_arg: dict[str, Any]) -> None:
    """Add ``image``, ``channel`` and ``node`` to the top-level subparsers."""

    def cmd(parent: Any, name: str, func: Any, help: str, *example: str
            ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".",
            epilog=_example(*example), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", **config_arg)
        p.add_argument("--json", action="store_true",
                       help="print the admin API's JSON (docs/admin-api.md) instead of text")
        p.set_defaults(func=func)
        return p

    def group(name: str, help: str) -> Any:
        g = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        return g.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    isub = group("image", "builds in the store: import, list, show, verify, remove, gc")
    p = cmd(isub, "import", cmd_image_import, "import a build (atomic, verified, deduplicated)",
            "netbootd image import --name kvm --version 2026.11 vmlinuz initrd.img \\",
            "    --rootfs root.squashfs --cmdline 'console=ttyS0 fetch=${rootfs_url}'",
            "netbootd image import --kind disk --name lab-disk --version 7 lab.img.xz")
    p.add_argument("--kind", choices=("linux", "tree", "disk", "esxi"), default="linux",
                   help="linux: KERNEL [INITRD...]; tree: DIR|TARBALL with manifest.json; "
                        "disk: IMAGE (raw, .gz, .xz); esxi: INSTALLER.iso (default: linux)")
    p.add_argument("--name", help="the build's name, e.g. kvm (not for --kind tree)")
    p.add_argument("--version", help="the build's version, e.g. 2026.11; builds are "
                                     "immutable, so each import needs a new one")
    p.add_argument("--cmdline", default="", help="the build's default kernel command line")
    p.add_argument("--rootfs", help="squashfs root (its URL: ${rootfs_url} in --cmdline)")
    p.add_argument("--description", default="", help="free text shown by image list/show")
    p.add_argument("--arch", choices=ARCHES,
                   help="linux: the machines' CPU (default: read from the kernel, else amd64)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="linux: the kernel, then initrds; the others: one file or directory")
    cmd(isub, "list", cmd_image_list, "every build, its kind, size and what needs it",
        "netbootd image list")
    p = cmd(isub, "show", cmd_image_show, "one build's files, sizes, sha256 and command line",
            "netbootd image show kvm/2026.11")
    p.add_argument("build", metavar="NAME/VERSION", help="the build to show")
    p = cmd(isub, "verify", cmd_image_verify, "re-hash builds against their manifests",
            "netbootd image verify            # every build; exit 1 if a file is bad")
    p.add_argument("build", nargs="?", metavar="NAME/VERSION",
                   help="only this build (default: all)")
    p = cmd(isub, "remove", cmd_image_remove, "remove a build nothing needs any more",
            "netbootd image remove kvm/2026.10 --yes")
    p.add_argument("build", metavar="NAME/VERSION", help="the build to remove")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)
    p = cmd(isub, "gc", cmd_image_gc, "delete unused files and abandoned imports",
            "netbootd image gc --yes")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)

    csub = group("channel", "named pointers to builds, with history and rollback")
    p = cmd(csub, "set", cmd_channel_set, "point a channel at a build",
            "netbootd channel set kvm-stable kvm/2026.11 --why 'CVE-2026-1234 kernel'")
    p.add_argument("channel", help="the channel's name, e.g. kvm-stable")
    p.add_argument("build", metavar="NAME/VERSION", help="the build it points at from now on")
    p.add_argument("--why", default="", help="the reason, kept in the channel's history")
    p = cmd(csub, "rollback", cmd_channel_rollback,
            "point a channel back at a build it had before",
            "netbootd channel rollback kvm-stable --why 'NIC driver regression' --yes",
            "netbootd channel rollback kvm-stable --to kvm/2026.09 --yes")
    p.add_argument("channel", help="the channel to move back")
    p.add_argument("--to", metavar="NAME/VERSION",
                   help="go back to this build (one the channel had) instead of the previous")
    p.add_argument("--force", action="store_true",
                   help="allow a --to build the channel never pointed at")
    p.add_argument("--why", default="", help="the reason, kept in the channel's history")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)
    p = cmd(csub, "history", cmd_channel_history, "who moved a channel, when, from, to, why",
            "netbootd channel history kvm-stable")
    p.add_argument("channel", help="the channel whose history to print")
    cmd(csub, "list", cmd_channel_list, "every channel and its build", "netbootd channel list")

    nsub = group("node", "inventory, discovery, overrides, reimage and boot timelines")
    p = cmd(nsub, "list", cmd_node_list,
            "inventory nodes: group, next build and why, state, last seen",
            "netbootd node list", "netbootd node list --discovered")
    p.add_argument("--discovered", action="store_true",
                   help="list machines that booted but match no node instead")
    p = cmd(nsub, "show", cmd_node_show, "one node: identities, next boot, orders, events",
            "netbootd node show rack3-u12")
    p.add_argument("name", help="the node's name")
    p = cmd(nsub, "adopt", cmd_node_adopt, "make a discovered machine an inventory node",
            "netbootd node adopt 52:54:00:12:34:56 --name rack3-u12 --group kvm")
    p.add_argument("mac", help="the MAC it booted with (see node list --discovered)")
    p.add_argument("--name", required=True, help="the new node's name")
    p.add_argument("--group", help="its group (default: found by the groups' selectors)")
    p.add_argument("--hostname", help="its host name (default: the node's name)")
    p = cmd(nsub, "rebind", cmd_node_rebind, "move a MAC, GUID or serial to an existing node",
            "netbootd node rebind rack3-u12 --mac 52:54:00:ab:cd:ef")
    p.add_argument("name", help="the node that gets the identity")
    p.add_argument("--mac", help="a MAC address (a new NIC, a new dock)")
    p.add_argument("--uuid", help="an SMBIOS UUID / PXE GUID")
    p.add_argument("--serial", help="a system serial number")
    p = cmd(nsub, "reimage", cmd_node_reimage,
            "write a disk image at the node's next PXE boot (or --cancel the order)",
            "netbootd node reimage laptop-07 --image lab-disk/7 --yes",
            "netbootd node reimage laptop-07 --image lab-disk/7 --now --yes",
            "netbootd node reimage laptop-07 --cancel")
    p.add_argument("name", help="the node to reimage")
    p.add_argument("--image", metavar="NAME/VERSION", help="a disk build to write")
    p.add_argument("--cancel", action="store_true",
                   help="withdraw the node's open reimage order; its disk is not written")
    p.add_argument("--now", action="store_true",
                   help="and power-cycle the node (its power spec) so that it starts now")
    p.add_argument("--yes", "-y", action="store_true", help=YES_HELP)
    p = cmd(nsub, "set", cmd_node_set, "run-time override of a node's build, channel, mode",
            "netbootd node set rack3-u12 --build kvm/2026.10", "netbootd node set rack3-u12 "
            "--clear")
    p.add_argument("name", help="the node to change")
    p.add_argument("--build", metavar="NAME/VERSION", help="pin this build")
    p.add_argument("--channel", help="follow this channel")
    p.add_argument("--mode", help="appliance, local, menu or discover")
    p.add_argument("--clear", action="store_true",
                   help="drop the override (an open reimage order stays: reimage --cancel)")
    p = cmd(nsub, "timeline", cmd_node_timeline, "one node's boot events and funnel",
            "netbootd node timeline rack3-u12")
    p.add_argument("node", help="a node's name or a MAC address")
    add_power_command(nsub, cmd)
