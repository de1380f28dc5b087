"""Quick mode, ``netbootd boot KERNEL [INITRD...]``: one default group that boots one kernel
through iPXE, with no config file and no store (a test bench, a one-off rescue boot)."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import ipaddress
import logging
import socket
import struct
from pathlib import Path

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
)
from netbootd.errors import ConfigError
from netbootd.service import Service, serve
from netbootd.store.builds import quick_build
from netbootd.store.catalog import BuildCatalog


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
