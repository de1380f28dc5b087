"""The command line: serve | check | render | boot, and image | channel | node (cli_admin).

Every command calls the same functions the server uses (``make_responder``, ``decide``, the
renderer), so ``render`` shows offline exactly what ``serve`` would answer.

The config check is in ``check``, quick mode in ``cli_quick``, exit codes in ``cli_errors``,
the admin commands in ``cli_admin`` (parser) and ``cli_admin_cmds`` (bodies).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import os
import sys
import time
from pathlib import Path
from typing import Any

import netbootd
from netbootd.cli_admin import add_admin_commands
from netbootd.cli_errors import parse, run
from netbootd.cli_quick import cmd_boot, interface_address, quick_config
from netbootd.cli_rollout import add_rollout_commands
from netbootd.config import (
    load_config,
)
from netbootd.core.identity import ClientIdentity, normalize_guid, normalize_mac, parse_arch
from netbootd.core.plan import Decline
from netbootd.logsetup import setup_logging
from netbootd.service import Service, firstboot_key, serve

__all__ = ["build_parser", "interface_address", "main", "quick_config"]

# Every command that reads the config: --config, else $NETBOOTD_CONFIG, else the packaged path.
CONFIG_ARG: dict[str, Any] = {
    "type": Path, "default": Path(os.environ.get("NETBOOTD_CONFIG",
                                                 "/etc/netbootd/netbootd.toml")),
    "help": "the config file (default: $NETBOOTD_CONFIG or /etc/netbootd/netbootd.toml)"}


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose)


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    service = Service(config, config_path=args.config)
    asyncio.run(serve(service))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from netbootd.check import run_check

    report = run_check(args.config)
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code


def cmd_render(args: argparse.Namespace) -> int:
    from netbootd.check import make_render_responder

    config = load_config(args.config)
    # render records nothing (check.make_render_responder: the server's state database read
    # only, the intent read); the first-boot key is the server's: created here as serve
    # creates it at first start when there is none yet, so the tokens shown are the ones
    # serve will accept.
    at = args.at if args.at is not None else time.time()
    key_file = config.firstboot_key_file
    created = config.firstboot.key_file is None and not key_file.exists()
    key = firstboot_key(config)
    if created:
        _give_to_state_owner(key_file)
        print(f"note: created the first-boot key {key_file} (0600), as `netbootd serve` "
              "does at first start; serve will sign tokens with it", file=sys.stderr)
    responder, problems = make_render_responder(config, key, clock=lambda: at)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    ident = ClientIdentity(
        mac=normalize_mac(args.mac),
        guid=normalize_guid(args.uuid) if args.uuid else None,
        arch=parse_arch(args.arch) if args.arch else None,
        vendor_class=args.vendor_class, user_class="iPXE" if args.ipxe else None)
    # The same answer the server gives (netbootd/answers.py); its events are dropped.
    answer = responder.render_dhcp(ident, is_ipxe=args.ipxe, http_boot=args.http_boot)
    plan, target = answer.plan, answer.target
    if isinstance(plan, Decline):
        print(f"decision: decline: {plan.reason}")
        return 2
    if target is not None:
        dhcp_line = (f"dhcp: bootfile={target.bootfile} next-server={target.server_ip}"
                     f" ({'http' if target.via_http else 'tftp'})")
    else:
        dhcp_line = f"dhcp: silent ({answer.reason})"
    files = responder.render_files(plan, target)
    if args.file is not None:
        for f in files:
            if f.name == args.file:
                sys.stdout.write(f.content)
                return 0
        print(f"no file {args.file!r} for this node; --list shows them", file=sys.stderr)
        return 1
    if args.list:
        for f in files:
            print(f"{f.channel} {f.name}")
        return 0
    print(f"decision: node={plan.node or '-'} group={plan.group} mode={plan.mode} "
          f"build={plan.build.ref if plan.build else '-'} loader={plan.loader} "
          f"hostname={plan.hostname}")
    print(dhcp_line)
    for f in files:
        print(f"\n==> {f.channel} {f.name} <==")
        sys.stdout.write(f.content)
    return 0


def _give_to_state_owner(path: Path) -> None:
    """Run as root, render made the key: hand it to the owner of the state directory, so a
    server running as that user can read it (systemd's DynamicUser= re-owns it at start)."""
    if os.geteuid() != 0:
        return
    owner = path.parent.stat()
    if (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(path, owner.st_uid, owner.st_gid)


def _timestamp(text: str) -> float:
    """``--at``: Unix seconds, or ISO 8601 (UTC when no zone is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Unix seconds or ISO 8601, e.g. "
                                         "2026-11-21T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def package_version() -> str:
    """The installed distribution's version (its metadata, which pyproject.toml derives from
    ``netbootd.__version__``); that attribute itself when run from a checkout not installed."""
    try:
        return importlib.metadata.version("netbootd")
    except importlib.metadata.PackageNotFoundError:
        return netbootd.__version__


DESCRIPTION = """netbootd network-boots machines: ProxyDHCP (or a DHCP server), TFTP and HTTP
from one service, builds imported into a store, channels with rollback, per-node overrides,
lab reimage and boot timelines. Every command but serve and boot reads --config."""

EPILOG = """examples:
  netbootd check --config /etc/netbootd/netbootd.toml
  netbootd image import --name kvm --version 2026.11 vmlinuz initrd.img
  netbootd channel set kvm-stable kvm/2026.11 --why 'new kernel'
  netbootd node list
  netbootd COMMAND --help        (each command's options and an example)

exit codes: 0 done, 1 problems found, 2 refused (nothing changed), 3 another DHCP server,
4 no permission / read-only / locked, 5 disk full, 130 interrupted, 141 output pipe closed
(docs/operations.md)."""


class _PrintMan(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from netbootd.manpage import man_page

        sys.stdout.write(man_page(build_parser(), package_version()))
        parser.exit()


class _PrintCompletion(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 *_: object) -> None:
        from netbootd.manpage import completion

        sys.stdout.write(completion(build_parser(), str(values)))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netbootd", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    p.add_argument("--version", action="version", version=f"netbootd {package_version()}",
                   help="print the installed version and exit")
    p.add_argument("--print-man", action=_PrintMan, nargs=0,
                   help="print the netbootd(8) man page (roff) and exit")
    p.add_argument("--print-completion", action=_PrintCompletion, choices=("bash", "zsh"),
                   help="print a shell completion script and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the ProxyDHCP, TFTP and HTTP servers",
                       description="Run the ProxyDHCP, TFTP, HTTP and admin API servers.",
                       epilog="example:\n  netbootd serve --config /etc/netbootd/netbootd.toml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", **CONFIG_ARG)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check", help="validate a config and everything it refers to, and "
                       "render every node (exit 0 ok, 1 problems, 2 invalid config)",
                       description="Validate a config, the store and the templates, and "
                       "render every node and group as serve would; every problem is listed "
                       "with its key and the fix.",
                       epilog="examples:\n  netbootd check --config /etc/netbootd/netbootd.toml"
                       "\n  netbootd check --json | jq .errors",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", **CONFIG_ARG)
    s.add_argument("--json", action="store_true", help="the report as JSON "
                   "(docs/configuration.md, \"Checking a config\")")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("render", help="show offline what one node would be served",
                       description="Show what serve would answer one client, without a "
                       "server and without recording anything.",
                       epilog="examples:\n  netbootd render --mac 52:54:00:12:34:56 --list\n"
                       "  netbootd render --mac 52:54:00:12:34:56 --arch bios "
                       "--file pxelinux.cfg/01-52-54-00-12-34-56",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", **CONFIG_ARG)
    s.add_argument("--mac", required=True, help="the client's MAC address (any common notation)")
    s.add_argument("--uuid", help="the client's SMBIOS UUID (DHCP option 97), if it sends one")
    s.add_argument("--arch", help="bios, efi64, arm64, or an option 93 number")
    s.add_argument("--ipxe", action="store_true", help="as a client that already runs iPXE")
    s.add_argument("--vendor-class", help="option 60 as the client sends it")
    s.add_argument("--http-boot", action="store_true", help="as a UEFI HTTP Boot client")
    s.add_argument("--list", action="store_true", help="only list the files' names")
    s.add_argument("--file", help="print one file exactly as served (a name from --list)")
    s.add_argument("--at", type=_timestamp, metavar="TIME",
                   help="answer as the server would at TIME (Unix seconds or ISO 8601; "
                        "default: now); first-boot tokens depend on it")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("boot", help="quick mode: serve one kernel to every PXE client",
                       description="Quick mode: every PXE client boots one kernel (no config).",
                       epilog="example:\n  netbootd boot vmlinuz initrd.img --interface eth1 "
                              "--cmdline console=ttyS0",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("kernel", help="the kernel every client boots")
    s.add_argument("initrd", nargs="*", help="initrds, in order")
    s.add_argument("--cmdline", default="", help="the kernel command line")
    s.add_argument("--interface", help="serve on this interface (its address is used)")
    s.add_argument("--address", help="the IPv4 address clients reach this host at")
    s.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    s.add_argument("--tftp-port", type=int, default=69, help="TFTP port (default 69)")
    s.add_argument("--state-dir", default="/var/lib/netbootd/quick",
                   help="where quick mode keeps its state (default /var/lib/netbootd/quick)")
    s.set_defaults(func=cmd_boot)

    s = sub.add_parser("loaders", help="prepare loader folders that are built, not packaged",
                       description="Prepare loader folders that are built, not packaged.",
                       epilog="example:\n  netbootd loaders grub --arm64",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("which", choices=["grub"], help="grub: GRUB network images (grub-mknetdir) "
                   "and Debian's signed shim and GRUB for Secure Boot")
    s.add_argument("--dest", type=Path, default=Path("/var/lib/netbootd/loaders/grub"),
                   help="where the loaders go (default /var/lib/netbootd/loaders/grub)")
    s.add_argument("--cache", type=Path, default=Path("/var/cache/netbootd/debs"),
                   help="where signed packages are downloaded and unpacked when not installed")
    s.add_argument("--no-signed", action="store_true", help="skip shim and signed GRUB")
    s.add_argument("--arm64", action="store_true",
                   help="add Debian's signed arm64 network GRUB as grubaa64.efi (needs "
                        "dpkg --add-architecture arm64; apt-get update)")
    s.set_defaults(func=cmd_loaders)

    add_admin_commands(sub, CONFIG_ARG)
    add_rollout_commands(sub, CONFIG_ARG)
    return p


def cmd_loaders(args: argparse.Namespace) -> int:
    from netbootd.loaders import prepare_grub

    names = prepare_grub(args.dest, args.cache, signed=not args.no_signed, arm64=args.arm64)
    print(f"{args.dest}: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    _setup_logging(args.verbose)
    return run(args.func, args)  # exit codes and messages: cli_errors, docs/operations.md


if __name__ == "__main__":
    sys.exit(main())
