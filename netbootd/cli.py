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
from collections.abc import Mapping
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
from netbootd.core.build_arch import selector_build_arches
from netbootd.core.identity import ClientIdentity, normalize_guid, normalize_mac, parse_arch
from netbootd.core.plan import Decline
from netbootd.errors import ConfigError, NetbootdError
from netbootd.logsetup import setup_logging
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
    setup_logging(verbose)


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
    problems += _arch_problems(config, catalog, channels)
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
                                f"{', '.join(map(str, dirs)) or 'no directory'} ("
                                + ("run `netbootd loaders grub`" if loader in ("grub", "shim")
                                   else "install Debian's pxelinux, syslinux-efi and ipxe "
                                        "packages") + ")")
    return problems


def _arch_problems(config: Config, catalog: BuildCatalog,
                   channels: dict[str, str]) -> list[str]:
    """Groups with an arch selector whose build (pinned or via its channel) no client they
    match can run: every such client would be declined."""
    problems = []
    for g in config.groups:
        s = g.settings
        ref = s.build or (channels.get(s.channel) if s.channel else None)
        if g.match is None or not g.match.arch or ref is None or ref not in catalog:
            continue
        arch = catalog.get(ref).arch
        if arch not in selector_build_arches(g.match.arch):
            problems.append(f"groups.{g.name}: build {ref} is for {arch} machines, but "
                            f"match.arch = {list(g.match.arch)} matches none; give the "
                            f"group a build of its arch")
    return problems


def _loaders_in_use(config: Config) -> set[str]:
    used = {g.settings.loader or ("grub" if g.settings.secure_boot else "pxelinux")
            for g in config.groups}
    used |= {n.settings.loader for n in config.nodes if n.settings.loader}
    if any(s.secure_boot for s in _all_settings(config)):
        used |= {"grub", "shim"}
    return used | {"ipxe"}  # ESXi on UEFI and HTTP Boot always use iPXE


def _all_settings(config: Config) -> list[BootSettings]:
    return [*(g.settings for g in config.groups), *(n.settings for n in config.nodes)]


_TRUSTED_ISSUERS = ("Debian Secure Boot CA", "Microsoft")  # shim's vendor key; firmware db


def check_warnings(config: Config, catalog: BuildCatalog,
                   channels: Mapping[str, str]) -> list[str]:
    """What boots, but likely not as meant: a Secure Boot group on a build whose kernel shim
    will refuse, and GRUB behind a proxy whose site DHCP does not point at netbootd."""
    warnings: list[str] = []
    groups = {g.name: g for g in config.groups}
    entries = [*((f"groups.{g.name}", g.settings, None) for g in config.groups),
               *((f"nodes.{n.name}", n.settings, n.group) for n in config.nodes)]
    def ref_of(st: BootSettings | None) -> str | None:
        if st is None:
            return None
        return st.build or (channels.get(st.channel) if st.channel else None)

    for where, s, group in entries:
        gs = groups[group].settings if group in groups else None
        if gs is not None and s.secure_boot is None and not (s.build or s.channel):
            continue  # inherits both from its group: the group's line says it
        secure = s.secure_boot if s.secure_boot is not None else bool(gs and gs.secure_boot)
        ref = ref_of(s) if (s.build or s.channel) else ref_of(gs)
        if not secure or ref is None or ref not in catalog:
            continue
        b = catalog.get(ref)
        sig = b.kernel_signature
        if b.kind != "linux" or sig is None:
            continue
        kernel = b.manifest.kernel
        if not sig.signed:
            warnings.append(
                f"{where}.secure_boot: build {ref}'s kernel {kernel} is unsigned: under "
                "Secure Boot shim refuses it (\"bad shim signature\") and the node stops in "
                "GRUB. Boot a build with a signed kernel (Debian's linux-image-amd64 is), sign "
                "this one with a key enrolled as a MOK (sbsign; mokutil --import), or set "
                "secure_boot = false (docs/secure-boot.md)")
        elif not any(t in (sig.issuer or "") or t in (sig.signer or "")
                     for t in _TRUSTED_ISSUERS):
            warnings.append(
                f"{where}.secure_boot: build {ref}'s kernel {kernel} is {sig.describe()}: "
                "shim boots it only if that certificate is enrolled as a MOK "
                "(mokutil --import) or in the firmware's db (docs/secure-boot.md)")
    grub_users = [w for w, s, group in entries
                  if (s.loader or (groups[group].settings.loader if group in groups else None)
                      or ("grub" if s.secure_boot else None)) == "grub"]
    dhcp_mode = config.dhcp.mode  # "server": netbootd hands out addresses, GRUB included
    if grub_users and dhcp_mode != "server" and \
            config.dhcp.site_next_server != config.server.address:
        addr = config.server.address
        warnings.append(
            f"{', '.join(grub_users)}: GRUB ignores ProxyDHCP and fetches its files from the "
            "site DHCP server's next-server (siaddr): point the site DHCP's next-server at "
            f"{addr} (dnsmasq: dhcp-boot=,,{addr}; ISC dhcpd: next-server {addr};) and set "
            f"dhcp.site_next_server = \"{addr}\" (docs/boot-flows.md)")
    return warnings


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problems = check_config(config)
    catalog, _ = load_store(config.server.store_dir)
    intent_db = config.server.state_dir / "intent.sqlite3"
    channels: dict[str, str] = {}
    if intent_db.is_file():
        with Registry(intent_db) as registry:
            channels = registry.channels()
    for w in check_warnings(config, catalog, channels):
        print(f"warning: {w}")
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
