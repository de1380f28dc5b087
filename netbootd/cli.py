"""The command line: serve | check | render | boot, and image | channel | node (cli_admin).

Every command calls the same functions the server uses (``make_responder``, ``decide``, the
renderer), so ``render`` shows offline exactly what ``serve`` would answer.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fcntl
import importlib.metadata
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import netbootd
from netbootd.cli_admin import add_admin_commands
from netbootd.config import (
    DEFAULT_BOOTFILES,
    DEFAULT_LOADER_DIRS,
    BootSettings,
    Config,
    DhcpConfig,
    GroupSpec,
    HttpConfig,
    LoaderConfig,
    ServerConfig,
    TftpConfig,
    load_config,
)
from netbootd.core.bootfile import BootTarget, NoLoader, choose_bootfile
from netbootd.core.identity import ClientIdentity, normalize_guid, normalize_mac, parse_arch
from netbootd.core.plan import Decline
from netbootd.errors import ConfigError, NetbootdError
from netbootd.service import Service, firstboot_key, serve
from netbootd.store.builds import quick_build
from netbootd.store.catalog import BuildCatalog

# Every command that reads the config: --config, else $NETBOOTD_CONFIG, else the packaged path.
CONFIG_ARG: dict[str, Any] = {
    "type": Path, "default": Path(os.environ.get("NETBOOTD_CONFIG",
                                                 "/etc/netbootd/netbootd.toml")),
    "help": "the config file (default: $NETBOOTD_CONFIG or /etc/netbootd/netbootd.toml)"}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    plan = responder.render_plan(ident)
    if isinstance(plan, Decline):
        print(f"decision: decline: {plan.reason}")
        return 2
    target: BootTarget | None
    try:
        target = choose_bootfile(plan, ident.arch, is_ipxe=args.ipxe, http_boot=args.http_boot,
                                 bootfiles=config.loaders.bootfiles,
                                 http_base=responder.urls.http_base)
        dhcp_line = (f"dhcp: bootfile={target.bootfile} next-server={config.server.address}"
                     f" ({'http' if target.via_http else 'tftp'})")
    except NoLoader as e:
        target, dhcp_line = None, f"dhcp: silent ({e})"
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


def interface_address(interface: str) -> str:
    """The IPv4 address of a network interface (SIOCGIFADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15]))
    return socket.inet_ntoa(packed[20:24])


def quick_config(args: argparse.Namespace, build_ref: str) -> Config:
    """The config of quick mode: one default group booting ``build_ref`` through iPXE."""
    address = args.address
    if address is None:
        if args.interface is None:
            raise ConfigError(["--address or --interface is required: the address PXE clients "
                               "reach this host at"], "netbootd boot")
        try:
            address = interface_address(args.interface)
        except OSError as e:
            raise ConfigError([f"--interface {args.interface}: no IPv4 address ({e})"],
                              "netbootd boot") from e
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise ConfigError([f"--address {address!r} is not an IPv4 address"],
                          "netbootd boot") from None
    state_dir = Path(args.state_dir)
    return Config(
        server=ServerConfig(address=address, interface=args.interface, state_dir=state_dir,
                            store_dir=state_dir / "store"),
        dhcp=DhcpConfig(),
        tftp=TftpConfig(port=args.tftp_port),
        http=HttpConfig(port=args.http_port),
        loaders=LoaderConfig(dirs={k: tuple(Path(p) for p in v)
                                   for k, v in DEFAULT_LOADER_DIRS.items()},
                             bootfiles={k: dict(v) for k, v in DEFAULT_BOOTFILES.items()}),
        groups=(GroupSpec(name="quick", default=True,
                          settings=BootSettings(build=build_ref, loader="ipxe")),),
        nodes=(), source="netbootd boot")


def cmd_boot(args: argparse.Namespace) -> int:
    build = quick_build(Path(args.kernel), [Path(p) for p in args.initrd], args.cmdline)
    config = quick_config(args, build.ref)
    service = Service(config, catalog=BuildCatalog([build]))
    logging.getLogger("netbootd").info("quick mode: every PXE client boots %s (%s)",
                                       args.kernel, build.ref)
    asyncio.run(serve(service))
    return 0


def package_version() -> str:
    """The installed distribution's version (its metadata, which pyproject.toml derives from
    ``netbootd.__version__``); that attribute itself when run from a checkout not installed."""
    try:
        return importlib.metadata.version("netbootd")
    except importlib.metadata.PackageNotFoundError:
        return netbootd.__version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netbootd", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"netbootd {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the ProxyDHCP, TFTP and HTTP servers")
    s.add_argument("--config", **CONFIG_ARG)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check", help="validate a config and everything it refers to, and "
                       "render every node (exit 0 ok, 1 problems, 2 invalid config)")
    s.add_argument("--config", **CONFIG_ARG)
    s.add_argument("--json", action="store_true", help="the report as JSON "
                   "(docs/configuration.md, \"Checking a config\")")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("render", help="show offline what one node would be served")
    s.add_argument("--config", **CONFIG_ARG)
    s.add_argument("--mac", required=True)
    s.add_argument("--uuid")
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

    s = sub.add_parser("boot", help="quick mode: serve one kernel to every PXE client")
    s.add_argument("kernel")
    s.add_argument("initrd", nargs="*")
    s.add_argument("--cmdline", default="")
    s.add_argument("--interface")
    s.add_argument("--address")
    s.add_argument("--http-port", type=int, default=8080)
    s.add_argument("--tftp-port", type=int, default=69)
    s.add_argument("--state-dir", default="/var/lib/netbootd/quick")
    s.set_defaults(func=cmd_boot)

    s = sub.add_parser("loaders", help="prepare loader folders that are built, not packaged")
    s.add_argument("which", choices=["grub"], help="grub: GRUB network images (grub-mknetdir) "
                   "and Debian's signed shim and GRUB for Secure Boot")
    s.add_argument("--dest", type=Path, default=Path("/var/lib/netbootd/loaders/grub"))
    s.add_argument("--cache", type=Path, default=Path("/var/cache/netbootd/debs"),
                   help="where signed packages are downloaded and unpacked when not installed")
    s.add_argument("--no-signed", action="store_true", help="skip shim and signed GRUB")
    s.add_argument("--arm64", action="store_true",
                   help="add Debian's signed arm64 network GRUB as grubaa64.efi (needs "
                        "dpkg --add-architecture arm64; apt-get update)")
    s.set_defaults(func=cmd_loaders)

    add_admin_commands(sub, CONFIG_ARG)
    return p


def cmd_loaders(args: argparse.Namespace) -> int:
    from netbootd.loaders import prepare_grub

    names = prepare_grub(args.dest, args.cache, signed=not args.no_signed, arm64=args.arm64)
    print(f"{args.dest}: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except (NetbootdError, ValueError) as e:
        print(f"netbootd: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    sys.exit(main())
