"""One TOML file -> frozen, typed ``Config``; every problem reported at once with its key.

Pure: ``parse_config(dict)`` does the validation; ``load_config(path)`` only reads the file.
Each subsystem receives only its own section (``config.tftp`` for the TFTP server...). The
inventory sections (``[groups.*]``, ``[nodes.*]``) become ``GroupSpec``/``NodeSpec`` records
that ``core.inventory`` turns into the matching index (the records themselves live in
``core/model.py``). Example: docs/configuration.md.

Why one module of this size: a config is checked as a whole, so that ``netbootd check`` and a
refused reload list every problem at once, with keys that refer to each other across sections
(a node's group, a reservation inside a pool, a bootfile table per loader). The section types
and their reader stay together so each key's default, type and bounds are written once, next
to the dataclass field they fill.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from netbootd.core.identity import normalize_guid, normalize_mac, parse_arch

# The inventory records live in the core (core/model.py); imported here under their old names.
from netbootd.core.model import SELECTOR_KEYS as SELECTOR_KEYS
from netbootd.core.model import BootSettings as BootSettings
from netbootd.core.model import GroupSpec as GroupSpec
from netbootd.core.model import NodeSpec as NodeSpec
from netbootd.core.model import Selector as Selector
from netbootd.errors import ConfigError
from netbootd.store.channels import CHANNEL_RE

MODES = ("appliance", "local", "menu", "discover")
DHCP_MODES = ("proxy", "server")
LOADERS = ("pxelinux", "ipxe", "grub")
# [loaders.bootfiles.*] tables: one per loader, plus the Secure Boot first stage (shim).
BOOTFILE_TABLES = (*LOADERS, "shim")

# Where Debian's packages put the bootloaders (pxelinux, syslinux-common, syslinux-efi, ipxe).
# Each TFTP/HTTP prefix is an overlay of directories, searched in order.
DEFAULT_LOADER_DIRS: dict[str, tuple[str, ...]] = {
    "bios": ("/usr/lib/PXELINUX", "/usr/lib/syslinux/modules/bios"),
    "efi64": ("/usr/lib/SYSLINUX.EFI/efi64", "/usr/lib/syslinux/modules/efi64"),
    "ipxe": ("/usr/lib/ipxe",),
    # GRUB's network images are built, not packaged: `netbootd-grub-loaders` (install-deps)
    # runs grub-mknetdir here and adds Debian's signed shim and network GRUB (Secure Boot).
    "grub": ("/var/lib/netbootd/loaders/grub",),
}
# The network boot program handed to firmware, per loader and arch family (TFTP paths).
DEFAULT_BOOTFILES: dict[str, dict[str, str]] = {
    "pxelinux": {"bios": "bios/lpxelinux.0", "efi64": "efi64/syslinux.efi"},
    "ipxe": {"bios": "ipxe/undionly.kpxe", "efi64": "ipxe/snponly.efi",
             "efi32": "ipxe/ipxe32.efi", "arm64": "ipxe/arm64/snponly.efi"},
    # grub-mknetdir --subdir=grub: the images' prefix is (tftp,<server>)/grub.
    "grub": {"bios": "grub/i386-pc/core.0", "efi64": "grub/x86_64-efi/core.efi",
             # Debian's signed grubnetaa64.efi (`netbootd loaders grub --arm64`)
             "arm64": "grub/grubaa64.efi"},
    # Secure Boot: shim loads grubx64.efi (Debian's signed network GRUB) from its own folder,
    # whose prefix is grub/ as well (docs/secure-boot.md).
    "shim": {"efi64": "grub/shimx64.efi"},
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    address: str
    interface: str | None = None
    state_dir: Path = Path("/var/lib/netbootd")
    store_dir: Path = Path("/var/lib/netbootd/store")
    templates_dir: Path | None = None
    # Re-hash every build file when the store is (re)loaded and leave out builds whose files
    # no longer match their manifest (bit rot, tampering). Costs one read of each new file.
    verify_builds: bool = False


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One subnet netbootd hands addresses out in (``[dhcp.pools.NAME]``, server mode).

    A client on the server's own link gets an address from the pool whose subnet holds
    ``server.address``; a relayed one from the pool whose subnet holds the relay's giaddr.
    """

    name: str
    subnet: str  # CIDR, e.g. "10.77.0.0/24"
    first: str  # the dynamic range, inclusive
    last: str
    router: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600


@dataclass(frozen=True, slots=True)
class DhcpConfig:
    enabled: bool = True
    listen: str = "0.0.0.0"
    port: int = 67
    proxy_port: int = 4011
    # True: boot file in the udp/67 offer with option 43 discovery control 8 (clients never
    # need udp/4011). False: bare offer, clients fetch the boot file with a 4011 request.
    offer_bootfile: bool = True
    relay_port: int = 67
    # What the site's DHCP server puts in siaddr (next-server), if the operator made it
    # netbootd: GRUB ignores ProxyDHCP and fetches from there (docs/boot-flows.md).
    site_next_server: str | None = None
    # "proxy": boot information only, a site DHCP server hands out addresses (the default).
    # "server": netbootd hands out addresses itself from ``pools`` (isolated networks).
    mode: str = "proxy"
    pools: tuple[PoolConfig, ...] = ()
    # Server mode: address records (offers and leases of unconfigured clients) kept at most;
    # beyond it new clients are not answered (dhcp_server_dropped{reason=lease-cap}).
    max_leases: int = 10_000
    offer_hold: int = 60  # seconds an OFFER keeps its address for the client's REQUEST
    decline_hold: int = 600  # seconds an address a client DECLINEd (in use) is not offered
    # Look for another DHCP server on the link before serving addresses; refuse if one answers.
    probe: bool = True
    probe_timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class TftpConfig:
    enabled: bool = True
    listen: str = "0.0.0.0"
    port: int = 69
    max_blksize: int = 1468
    max_windowsize: int = 16
    timeout: float = 1.0
    retries: int = 5
    max_sessions: int = 2000
    max_sessions_per_client: int = 32


@dataclass(frozen=True, slots=True)
class FirstbootConfig:
    """First-boot tokens (render/tokens.py): the HMAC key and how long a token stays valid."""

    key_file: Path | None = None  # None: <state_dir>/firstboot.key, created 0600 at first start
    # Long enough for an ESXi install to reboot into %firstboot and phone home.
    token_ttl: int = 7200


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "0.0.0.0"
    port: int = 8080
    public_url: str | None = None
    # Concurrent connections; one more is answered 503 and closed (counted as http_limited).
    max_connections: int = 1024


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Bounds on what the server remembers about clients, so spoofed MACs cannot fill it."""

    max_clients: int = 100_000  # identities and IP -> MAC pairs kept in memory (LRU)
    max_nodes: int = 50_000  # MACs the state database records; configured nodes always are
    max_events: int = 1_000_000  # boot events kept; the oldest are pruned beyond this
    # Seconds an IP -> MAC pair learnt from a request stays trusted (like a lease): after
    # that, requests from the address that name no MAC are no longer tied to that node.
    ip_mac_ttl: float = 3600.0
    # Where intent and boot events live: None for the sqlite files in state_dir, or a
    # postgresql:// URL shared by several servers (docs/configuration.md, [state]).
    database: str | None = None


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API's own listener: loopback TCP by default, or a unix socket."""

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = 8081
    socket: Path | None = None  # when set, the API listens here instead of TCP
    token_file: Path | None = None  # default: <state_dir>/admin.token, made at first start


@dataclass(frozen=True, slots=True)
class ReimageConfig:
    installer: str | None = None  # NAME/VERSION of the installer build, or a channel name
    target: str | None = None  # block device the installer writes; default: its first disk


@dataclass(frozen=True, slots=True)
class LoaderConfig:
    dirs: Mapping[str, tuple[Path, ...]]
    bootfiles: Mapping[str, Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    dhcp: DhcpConfig
    tftp: TftpConfig
    http: HttpConfig
    loaders: LoaderConfig
    groups: tuple[GroupSpec, ...]
    nodes: tuple[NodeSpec, ...]
    source: str = "config"
    admin: AdminConfig = AdminConfig()
    reimage: ReimageConfig = ReimageConfig()
    firstboot: FirstbootConfig = FirstbootConfig()
    state: StateConfig = StateConfig()

    @property
    def admin_token_file(self) -> Path:
        return self.admin.token_file or self.server.state_dir / "admin.token"

    @property
    def intent_database(self) -> Path | str:
        """The intent registry's database: a sqlite file, or the shared PostgreSQL URL."""
        return self.state.database or self.server.state_dir / "intent.sqlite3"

    @property
    def events_database(self) -> Path | str:
        """The boot-event database: a sqlite file, or the shared PostgreSQL URL."""
        return self.state.database or self.server.state_dir / "state.sqlite3"

    @property
    def firstboot_key_file(self) -> Path:
        return self.firstboot.key_file or self.server.state_dir / "firstboot.key"

    @property
    def http_base(self) -> str:
        """Base URL that clients use to reach the HTTP server (no trailing slash)."""
        if self.http.public_url:
            return self.http.public_url.rstrip("/")
        return f"http://{self.server.address}:{self.http.port}"


T = TypeVar("T")


class _Reader:
    """Collects problems while reading typed values out of nested TOML tables."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def table(self, data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        v = data.get(key, {})
        if not isinstance(v, dict):
            self.problems.append(f"{where}{key}: expected a table")
            return {}
        return v

    def value(self, data: Mapping[str, Any], key: str, where: str, kind: type[T],
              default: T, check: Callable[[T], str | None] | None = None) -> T:
        if key not in data:
            return default
        v = data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            self.problems.append(f"{where}{key}: expected {kind.__name__}, got {v!r}")
            return default
        if check is not None and (msg := check(v)) is not None:
            self.problems.append(f"{where}{key}: {msg}")
            return default
        return v

    def optional_str(self, data: Mapping[str, Any], key: str, where: str) -> str | None:
        v = data.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            self.problems.append(f"{where}{key}: expected a string, got {v!r}")
            return None
        return v

    def str_list(self, data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        v = data.get(key)
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        if isinstance(v, list) and all(isinstance(i, str) for i in v):
            return tuple(v)
        self.problems.append(f"{where}{key}: expected a string or a list of strings")
        return ()

    def unknown(self, data: Mapping[str, Any], known: set[str], where: str) -> None:
        for k in sorted(set(data) - known):
            self.problems.append(f"{where}{k}: unknown key (known: {', '.join(sorted(known))})")


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be 0..65535"


def _ip(v: str) -> str | None:
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return "must be an IPv4 address"
    return None


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}"


def _settings(r: _Reader, t: Mapping[str, Any], where: str) -> BootSettings:
    mode = r.optional_str(t, "mode", where)
    if mode is not None and mode not in MODES:
        r.problems.append(f"{where}mode: {mode!r} is not one of {', '.join(MODES)}")
    loader = r.optional_str(t, "loader", where)
    if loader is not None and loader not in LOADERS:
        r.problems.append(f"{where}loader: {loader!r} is not one of {', '.join(LOADERS)}")
    cmdline = r.optional_str(t, "cmdline", where)
    if cmdline is not None and ("\n" in cmdline or "\r" in cmdline):
        r.problems.append(f"{where}cmdline: a kernel command line may not contain a newline")
    build = r.optional_str(t, "build", where)
    if build is not None and build.count("/") != 1:
        r.problems.append(f"{where}build: {build!r} must name an exact build as NAME/VERSION")
    channel = r.optional_str(t, "channel", where)
    if channel is not None and not CHANNEL_RE.match(channel):
        r.problems.append(f"{where}channel: {channel!r} must be 1-64 of letters, digits, "
                          "'.', '_', '-'")
    if build is not None and channel is not None:
        r.problems.append(f"{where}: set build (pin) or channel (follow), not both")
    vars_ = r.table(t, "vars", where)
    secure_boot = t.get("secure_boot")
    if secure_boot is not None and not isinstance(secure_boot, bool):
        r.problems.append(f"{where}secure_boot: expected true or false")
        secure_boot = None
    if secure_boot and loader not in (None, "grub"):
        r.problems.append(f"{where}secure_boot: the signed chain is shim -> GRUB; loader "
                          f"{loader!r} cannot be used with secure_boot = true (set loader = "
                          "\"grub\" or leave it out)")
    return BootSettings(build=build, channel=channel, mode=mode, loader=loader, cmdline=cmdline,
                        user_data=r.optional_str(t, "user_data", where), vars=dict(vars_),
                        secure_boot=secure_boot)


_SETTING_KEYS = {"build", "channel", "mode", "loader", "secure_boot", "cmdline", "user_data",
                 "vars"}


def _selector(r: _Reader, t: Mapping[str, Any], where: str) -> Selector:
    r.unknown(t, set(SELECTOR_KEYS), where)
    arch = r.str_list(t, "arch", where)
    families: list[str] = []
    for a in arch:
        try:
            families.append(parse_arch(a).family)
        except ValueError as e:
            r.problems.append(f"{where}arch: {e}")
    prefixes: list[str] = []
    for p in r.str_list(t, "mac_prefix", where):
        hexpart = p.lower().replace("-", ":")
        if not all(c in "0123456789abcdef:" for c in hexpart):
            r.problems.append(f"{where}mac_prefix: {p!r} is not hex octets like 52:54:00")
        prefixes.append(hexpart)
    return Selector(arch=tuple(dict.fromkeys(families)), mac_prefix=tuple(prefixes),
                    **{k: r.str_list(t, k, where) for k in SELECTOR_KEYS[2:]})


def parse_config(data: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a decoded TOML document; raise ConfigError listing every problem."""
    r = _Reader()
    r.unknown(data, {"server", "dhcp", "tftp", "http", "state", "loaders", "groups", "nodes",
                     "admin", "reimage", "firstboot"}, "")

    s = r.table(data, "server", "")
    r.unknown(s, {"address", "interface", "state_dir", "store_dir", "templates_dir",
                  "verify_builds"}, "server.")
    address = r.value(s, "address", "server.", str, "", _ip)
    if "address" not in s:
        r.problems.append("server.address: required: the IPv4 address PXE clients reach "
                          "this server at (next-server and URLs use it)")
    state_dir = Path(r.value(s, "state_dir", "server.", str, "/var/lib/netbootd"))
    store = r.optional_str(s, "store_dir", "server.")
    templates = r.optional_str(s, "templates_dir", "server.")
    server = ServerConfig(address=address, interface=r.optional_str(s, "interface", "server."),
                          state_dir=state_dir,
                          store_dir=Path(store) if store else state_dir / "store",
                          templates_dir=Path(templates) if templates else None,
                          verify_builds=r.value(s, "verify_builds", "server.", bool, False))

    d = r.table(data, "dhcp", "")
    r.unknown(d, {"enabled", "listen", "port", "proxy_port", "offer_bootfile", "relay_port",
                  "site_next_server", "mode", "pools", "max_leases", "offer_hold",
                  "decline_hold", "probe", "probe_timeout"}, "dhcp.")
    site_next_server = r.optional_str(d, "site_next_server", "dhcp.")
    if site_next_server is not None and (err := _ip(site_next_server)):
        r.problems.append(f"dhcp.site_next_server: {err}")
    dhcp_mode = r.value(d, "mode", "dhcp.", str, "proxy",
                        lambda v: None if v in DHCP_MODES else
                        f"{v!r} is not one of {', '.join(DHCP_MODES)}")
    pools, subnets = _pools(r, r.table(d, "pools", "dhcp."), dhcp_mode, address)
    dhcp = DhcpConfig(
        mode=dhcp_mode, pools=pools,
        max_leases=r.value(d, "max_leases", "dhcp.", int, 10_000, _range(1, 10_000_000)),
        offer_hold=r.value(d, "offer_hold", "dhcp.", int, 60, _range(5, 3600)),
        decline_hold=r.value(d, "decline_hold", "dhcp.", int, 600, _range(0, 86400)),
        probe=r.value(d, "probe", "dhcp.", bool, True),
        probe_timeout=r.value(d, "probe_timeout", "dhcp.", float, 2.0, _range(0.1, 60)),
        enabled=r.value(d, "enabled", "dhcp.", bool, True),
        listen=r.value(d, "listen", "dhcp.", str, "0.0.0.0", _ip),
        port=r.value(d, "port", "dhcp.", int, 67, _port),
        proxy_port=r.value(d, "proxy_port", "dhcp.", int, 4011, _port),
        offer_bootfile=r.value(d, "offer_bootfile", "dhcp.", bool, True),
        relay_port=r.value(d, "relay_port", "dhcp.", int, 67, _port),
        site_next_server=site_next_server,
    )

    t = r.table(data, "tftp", "")
    r.unknown(t, {"enabled", "listen", "port", "max_blksize", "max_windowsize", "timeout",
                  "retries", "max_sessions", "max_sessions_per_client"}, "tftp.")
    tftp = TftpConfig(
        enabled=r.value(t, "enabled", "tftp.", bool, True),
        listen=r.value(t, "listen", "tftp.", str, "0.0.0.0", _ip),
        port=r.value(t, "port", "tftp.", int, 69, _port),
        # RFC 2348: blksize 8..65464
        max_blksize=r.value(t, "max_blksize", "tftp.", int, 1468, _range(512, 65464)),
        # RFC 7440 allows 1..65535; above 32768 a 16-bit ACK number is ambiguous in the window
        max_windowsize=r.value(t, "max_windowsize", "tftp.", int, 16, _range(1, 32768)),
        # RFC 2349: timeout 1..255 s
        timeout=r.value(t, "timeout", "tftp.", float, 1.0, _range(0.05, 255)),
        retries=r.value(t, "retries", "tftp.", int, 5, _range(1, 100)),
        max_sessions=r.value(t, "max_sessions", "tftp.", int, 2000, _range(1, 1_000_000)),
        max_sessions_per_client=r.value(t, "max_sessions_per_client", "tftp.", int, 32,
                                        _range(1, 100_000)),
    )

    h = r.table(data, "http", "")
    r.unknown(h, {"listen", "port", "public_url", "max_connections"}, "http.")
    public_url = r.optional_str(h, "public_url", "http.")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        r.problems.append("http.public_url: must start with http:// or https://")
    http = HttpConfig(listen=r.value(h, "listen", "http.", str, "0.0.0.0", _ip),
                      port=r.value(h, "port", "http.", int, 8080, _port),
                      public_url=public_url,
                      max_connections=r.value(h, "max_connections", "http.", int, 1024,
                                              _range(1, 1_000_000)))

    sd = r.table(data, "state", "")
    r.unknown(sd, {"max_clients", "max_nodes", "max_events", "ip_mac_ttl", "database"},
              "state.")
    database = r.optional_str(sd, "database", "state.")
    if database is not None and not database.startswith(("postgresql://", "postgres://")):
        r.problems.append("state.database: must be a postgresql:// URL (leave it out for the "
                          "sqlite files in server.state_dir)")
        database = None
    state = StateConfig(
        database=database,
        max_clients=r.value(sd, "max_clients", "state.", int, 100_000, _range(1, 10_000_000)),
        max_nodes=r.value(sd, "max_nodes", "state.", int, 50_000, _range(1, 10_000_000)),
        max_events=r.value(sd, "max_events", "state.", int, 1_000_000,
                           _range(1000, 1_000_000_000)),
        ip_mac_ttl=r.value(sd, "ip_mac_ttl", "state.", float, 3600.0, _range(1, 30 * 86400)),
    )

    a = r.table(data, "admin", "")
    r.unknown(a, {"enabled", "listen", "port", "socket", "token_file"}, "admin.")
    sock = r.optional_str(a, "socket", "admin.")
    token_file = r.optional_str(a, "token_file", "admin.")
    admin = AdminConfig(enabled=r.value(a, "enabled", "admin.", bool, True),
                        listen=r.value(a, "listen", "admin.", str, "127.0.0.1", _ip),
                        port=r.value(a, "port", "admin.", int, 8081, _port),
                        socket=Path(sock) if sock else None,
                        token_file=Path(token_file) if token_file else None)

    ri = r.table(data, "reimage", "")
    r.unknown(ri, {"installer", "target"}, "reimage.")
    installer = r.optional_str(ri, "installer", "reimage.")
    if installer is not None and installer.count("/") > 1:
        r.problems.append("reimage.installer: NAME/VERSION of a build, or a channel name")
    target = r.optional_str(ri, "target", "reimage.")
    if target is not None and not re.fullmatch(r"/dev/[A-Za-z0-9/_.-]{1,64}", target):
        r.problems.append(f"reimage.target: {target!r} is not a block device path like "
                          "/dev/sda")
    reimage = ReimageConfig(installer=installer, target=target)
    fb = r.table(data, "firstboot", "")
    r.unknown(fb, {"key_file", "token_ttl"}, "firstboot.")
    key_file = r.optional_str(fb, "key_file", "firstboot.")
    firstboot = FirstbootConfig(
        key_file=Path(key_file) if key_file else None,
        token_ttl=r.value(fb, "token_ttl", "firstboot.", int, 7200, _range(60, 30 * 86400)))

    lo = r.table(data, "loaders", "")
    r.unknown(lo, {"dirs", "bootfiles"}, "loaders.")
    dirs = {k: tuple(Path(p) for p in v) for k, v in DEFAULT_LOADER_DIRS.items()}
    for prefix, v in r.table(lo, "dirs", "loaders.").items():
        if prefix in ("builds", "esxi") or "/" in prefix or not prefix:
            r.problems.append(f"loaders.dirs.{prefix}: reserved or invalid prefix")
        dirs[prefix] = tuple(Path(p) for p in r.str_list({"x": v}, "x", f"loaders.dirs.{prefix}"))
    bootfiles = {k: dict(v) for k, v in DEFAULT_BOOTFILES.items()}
    for loader, v in r.table(lo, "bootfiles", "loaders.").items():
        if loader not in BOOTFILE_TABLES or not isinstance(v, dict):
            r.problems.append(f"loaders.bootfiles.{loader}: expected a table under one of "
                              f"{', '.join(BOOTFILE_TABLES)}")
            continue
        for family, path in v.items():
            if not isinstance(path, str):
                r.problems.append(f"loaders.bootfiles.{loader}.{family}: expected a string")
            else:
                bootfiles[loader][family] = path
    loaders = LoaderConfig(dirs=dirs, bootfiles=bootfiles)

    groups: list[GroupSpec] = []
    for name, g in r.table(data, "groups", "").items():
        where = f"groups.{name}."
        if not isinstance(g, dict):
            r.problems.append(f"groups.{name}: expected a table")
            continue
        r.unknown(g, _SETTING_KEYS | {"match", "default"}, where)
        match = _selector(r, g["match"], where + "match.") if isinstance(g.get("match"), dict) \
            else None
        if "match" in g and not isinstance(g["match"], dict):
            r.problems.append(f"{where}match: expected a table of selectors")
        groups.append(GroupSpec(name=name, settings=_settings(r, g, where), match=match,
                                default=r.value(g, "default", where, bool, False)))
    defaults = [g.name for g in groups if g.default]
    if groups and len(defaults) != 1:
        r.problems.append(f"groups: exactly one group needs default = true (found "
                          f"{len(defaults)}: {', '.join(defaults) or 'none'})")
    group_names = {g.name for g in groups}

    nodes: list[NodeSpec] = []
    seen: dict[str, str] = {}
    reserved: dict[str, str] = {}  # ip -> node name
    for name, n in r.table(data, "nodes", "").items():
        where = f"nodes.{name}."
        if not isinstance(n, dict):
            r.problems.append(f"nodes.{name}: expected a table")
            continue
        r.unknown(n, _SETTING_KEYS | {"mac", "uuid", "serial", "group", "hostname", "ip"}, where)
        macs, guids = [], []
        for m in r.str_list(n, "mac", where):
            try:
                macs.append(normalize_mac(m))
            except ValueError as e:
                r.problems.append(f"{where}mac: {e}")
        for u in r.str_list(n, "uuid", where):
            try:
                guids.append(normalize_guid(u))
            except ValueError as e:
                r.problems.append(f"{where}uuid: {e}")
        serials = r.str_list(n, "serial", where)
        if not (macs or guids or serials):
            r.problems.append(f"nodes.{name}: needs at least one of mac, uuid, serial")
        for ident in [*macs, *guids, *(f"serial:{s}" for s in serials)]:
            if ident in seen:
                r.problems.append(f"{where}: {ident} is also claimed by nodes.{seen[ident]}")
            seen[ident] = name
        group = r.optional_str(n, "group", where)
        if group is not None and group not in group_names:
            r.problems.append(f"{where}group: no group {group!r} (known: "
                              f"{', '.join(sorted(group_names)) or 'none'})")
        hostname = r.optional_str(n, "hostname", where)
        if hostname is not None and not _valid_hostname(hostname):
            r.problems.append(f"{where}hostname: {hostname!r} is not a valid host name")
        ip = r.value(n, "ip", where, str, "", _ip) or None
        if ip is not None:
            _check_reservation(r, where, name, ip, bool(macs), subnets, dhcp_mode, reserved)
        nodes.append(NodeSpec(name=name, settings=_settings(r, n, where), macs=tuple(macs),
                              guids=tuple(guids), serials=serials, group=group,
                              hostname=hostname, ip=ip))
    if nodes and not groups:
        r.problems.append("groups: nodes are configured but no group; add [groups.default] "
                          "with default = true and a build")

    if r.problems:
        raise ConfigError(r.problems, source)
    return Config(server=server, dhcp=dhcp, tftp=tftp, http=http, loaders=loaders,
                  groups=tuple(groups), nodes=tuple(nodes), source=source, admin=admin,
                  reimage=reimage, firstboot=firstboot, state=state)


def _pools(r: _Reader, table: Mapping[str, Any], mode: str, address: str
           ) -> tuple[tuple[PoolConfig, ...], tuple[ipaddress.IPv4Network, ...]]:
    """``[dhcp.pools.NAME]`` tables (in server mode at least one, no two overlapping) and the
    subnets that parsed, also of pools with other problems (reservations are checked
    against them, so every problem is listed at once)."""
    pools: list[PoolConfig] = []
    networks: list[tuple[str, ipaddress.IPv4Network]] = []
    for name, t in table.items():
        where = f"dhcp.pools.{name}."
        if not isinstance(t, dict):
            r.problems.append(f"dhcp.pools.{name}: expected a table")
            continue
        r.unknown(t, {"subnet", "range", "router", "dns", "domain", "lease_time"}, where)
        net: ipaddress.IPv4Network | None = None
        subnet = r.optional_str(t, "subnet", where)
        if subnet is None:
            r.problems.append(f"{where}subnet: required, a CIDR network like 10.77.0.0/24")
        else:
            try:
                net = ipaddress.IPv4Network(subnet, strict=True)
            except ValueError as e:
                r.problems.append(f"{where}subnet: {subnet!r} is not a CIDR network ({e})")
        if net is not None and net.prefixlen > 30:
            r.problems.append(f"{where}subnet: {subnet} has no room for clients (/30 at most)")
            net = None
        rng = r.str_list(t, "range", where)
        first = last = ""
        if len(rng) != 2:
            r.problems.append(f"{where}range: required, [first, last] addresses of the pool")
        elif any(_ip(a) for a in rng):
            r.problems.append(f"{where}range: {list(rng)!r} must be two IPv4 addresses")
        else:
            first, last = rng
            lo, hi = ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
            if lo > hi:
                r.problems.append(f"{where}range: {first} comes after {last}")
            if net is not None:
                for end in (lo, hi):
                    if end not in net or end in (net.network_address, net.broadcast_address):
                        r.problems.append(f"{where}range: {end} is not a host address of {net}")
        router = r.value(t, "router", where, str, "", _ip) or None
        if router is not None and net is not None and ipaddress.IPv4Address(router) not in net:
            r.problems.append(f"{where}router: {router} is not in {net}")
        dns = r.str_list(t, "dns", where)
        for a in dns:
            if _ip(a):
                r.problems.append(f"{where}dns: {a!r} is not an IPv4 address")
        domain = r.optional_str(t, "domain", where)
        if domain is not None and not _valid_hostname(domain):
            r.problems.append(f"{where}domain: {domain!r} is not a valid domain name")
        lease_time = r.value(t, "lease_time", where, int, 3600, _range(60, 365 * 86400))
        if net is not None:
            for other, onet in networks:
                if net.overlaps(onet):
                    r.problems.append(f"{where}subnet: {net} overlaps dhcp.pools.{other} "
                                      f"({onet})")
            networks.append((name, net))
        if net is not None and first:
            pools.append(PoolConfig(name=name, subnet=str(net), first=first, last=last,
                                    router=router, dns=dns, domain=domain,
                                    lease_time=lease_time))
    if mode == "server" and not table:
        r.problems.append("dhcp.pools: server mode needs at least one [dhcp.pools.NAME] "
                          "with subnet and range")
    if address and not _ip(address):
        for p in pools:
            if ipaddress.IPv4Address(p.first) <= ipaddress.IPv4Address(address) \
                    <= ipaddress.IPv4Address(p.last):
                r.problems.append(f"dhcp.pools.{p.name}.range: holds server.address {address}"
                                  "; the server's own address cannot be handed out")
    return tuple(pools), tuple(n for _, n in networks)


def _check_reservation(r: _Reader, where: str, name: str, ip: str, has_mac: bool,
                       nets: tuple[ipaddress.IPv4Network, ...], mode: str,
                       reserved: dict[str, str]) -> None:
    if not has_mac:
        r.problems.append(f"{where}ip: a reserved address needs the node's mac (DHCP "
                          "identifies the client by it)")
    if ip in reserved:
        r.problems.append(f"{where}ip: {ip} is also reserved for nodes.{reserved[ip]}")
    reserved.setdefault(ip, name)
    if mode == "server" and nets:
        addr = ipaddress.IPv4Address(ip)
        if not any(addr in n and addr not in (n.network_address, n.broadcast_address)
                   for n in nets):
            r.problems.append(f"{where}ip: {ip} is not a host address of any dhcp pool subnet "
                              f"({', '.join(map(str, nets))})")


def _valid_hostname(h: str) -> bool:
    labels = h.split(".")
    return 0 < len(h) <= 253 and all(
        0 < len(lbl) <= 63 and lbl[0] != "-" and lbl[-1] != "-"
        and all((c.isalnum() and c.isascii()) or c == "-" for c in lbl) for lbl in labels)


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file; ConfigError on any problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"cannot read the file: {e.strerror}"], str(path)) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError([f"not valid TOML: {e}"], str(path)) from e
    return parse_config(data, str(path))
