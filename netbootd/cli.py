"""The command line: serve | check | render | boot, and image | channel | node (cli_admin).

Every command calls the same functions the server uses (``make_responder``, ``decide``, the
renderer), so ``render`` shows offline exactly what ``serve`` would answer.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

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
from netbootd.render.environment import TEMPLATE_NAMES, make_environment
from netbootd.render.seed import var_problems
from netbootd.service import Service, make_responder, serve
from netbootd.state.events import StateDB
from netbootd.state.keyfile import KeyFileError, read_key
from netbootd.state.registry import Registry
from netbootd.store.builds import load_store, quick_build
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


def check_config(config: Config) -> list[str]:
    """Every problem that would stop a node from booting, beyond what parse_config checks."""
    catalog, problems = load_store(config.server.store_dir)
    intent_db = config.server.state_dir / "intent.sqlite3"
    channels: dict[str, str] = {}
    if intent_db.is_file():
        with Registry(intent_db) as registry:
            channels = registry.channels()
    if not config.server.store_dir.is_dir():
        problems.append(f"server.store_dir: {config.server.store_dir} does not exist; "
                        "build or import a build first")
    key_file = config.firstboot_key_file
    if config.firstboot.key_file is not None or key_file.exists():  # else made at first start
        try:
            read_key(key_file)
        except KeyFileError as e:
            problems.append(f"firstboot.key_file: {e}")
    for where, settings in [*((f"groups.{g.name}", g.settings) for g in config.groups),
                            *((f"nodes.{n.name}", n.settings) for n in config.nodes)]:
        if settings.build is not None and settings.build not in catalog:
            problems.append(f"{where}.build: no build named {settings.build} "
                            f"(known: {', '.join(catalog.refs()) or 'none'})")
        problems += [f"{where}.{p}" for p in var_problems(settings.vars)]
        if settings.channel is not None and settings.channel not in channels:
            problems.append(f"{where}.channel: channel {settings.channel} points at no build; "
                            f"run `netbootd channel set {settings.channel} NAME/VERSION`")
    env = make_environment(config.server.templates_dir)
    for name in TEMPLATE_NAMES:
        try:
            env.get_template(name)
        except Exception as e:  # a template error of any kind is a problem to report
            problems.append(f"templates: {name}: {e}")
    for loader, families in config.loaders.bootfiles.items():
        for family, path in families.items():
            prefix, _, rest = path.partition("/")
            dirs = config.loaders.dirs.get(prefix, ())
            if (family in ("bios", "efi64") and loader in _loaders_in_use(config)
                    and not any((d / rest).is_file() for d in dirs)):
                problems.append(f"loaders.bootfiles.{loader}.{family}: {path} not found in "
                                f"{', '.join(map(str, dirs)) or 'no directory'} (install "
                                f"Debian's pxelinux, syslinux-efi and ipxe packages)")
    return problems


def _loaders_in_use(config: Config) -> set[str]:
    used = {g.settings.loader or "pxelinux" for g in config.groups}
    used |= {n.settings.loader for n in config.nodes if n.settings.loader}
    return used | {"ipxe"}  # ESXi on UEFI and HTTP Boot always use iPXE


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problems = check_config(config)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"{args.config}: ok ({len(config.groups)} groups, {len(config.nodes)} nodes)")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # render records nothing: an in-memory state keeps the operator's database untouched;
    # the intent (channels, overrides, reimage orders) is read, so render shows what serve does;
    # the first-boot key is read, never created (that is the server's job, as its user).
    intent_db = config.server.state_dir / "intent.sqlite3"
    registry = Registry(intent_db) if intent_db.is_file() else None
    at = args.at if args.at is not None else time.time()
    responder, problems = make_responder(config, StateDB(Path(":memory:")), registry=registry,
                                         key=read_key(config.firstboot_key_file),
                                         clock=lambda: at)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netbootd", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the ProxyDHCP, TFTP and HTTP servers")
    s.add_argument("--config", **CONFIG_ARG)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check", help="validate a config and everything it refers to")
    s.add_argument("--config", **CONFIG_ARG)
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

    add_admin_commands(sub, CONFIG_ARG)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except (NetbootdError, ValueError) as e:
        print(f"netbootd: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
