"""``netbootd check``: every reason a configured machine would not boot, in one report.

Beyond the schema (``parse_config``) it checks what the config refers to: builds, channels,
loaders, templates (``templates_dir`` and each ``user_data``), the interface, the first-boot
key, selector values no client can send, build files whose bytes are not what their role
needs (an ISO as a kernel: ``check_magic``), and an ESXi kickstart without a root password.
Then it renders, with the real renderer, every configured node and the plan of every group a
client can reach (as BIOS and UEFI clients, through the loaders the server would hand out):
any template error, undefined variable (``StrictUndefined``) or refused file is reported with
the key to change (``check_render``). A config ``check`` passes renders every node. The report
itself is ``check_findings``.

Every finding has a ``key`` (the config key or build file to change), a ``problem`` and a
``fix``; ``--json`` prints the ``Report`` as documented in docs/configuration.md ("Checking a
config"). Exit code: 0 no errors (warnings allowed), 1 errors, 2 the file is not valid TOML or
breaks the schema (those problems are listed the same way).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from netbootd.check_findings import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_SCHEMA,
    Finding,
    Report,
    finding_from_line,
)
from netbootd.check_magic import HEAD_BYTES, describe, initrd_verdict, kernel_verdict
from netbootd.check_render import make_render_responder, render_problems
from netbootd.config import BootSettings, Config, load_config
from netbootd.core.build_arch import selector_build_arches
from netbootd.errors import ConfigError
from netbootd.render.environment import TEMPLATE_NAMES, make_environment
from netbootd.render.seed import var_problems
from netbootd.state.keyfile import KeyFileError, read_key
from netbootd.state.registry import Registry
from netbootd.store.builds import load_store
from netbootd.store.catalog import Build, BuildCatalog

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_SCHEMA", "Finding", "Report", "make_render_responder",
           "render_problems", "run_check"]


def run_check(path: Path) -> Report:
    """Load ``path`` and check everything; never raises for a problem of the config."""
    report = Report(str(path))
    try:
        config = load_config(path)
    except ConfigError as e:
        report.schema_ok = False
        report.errors = [finding_from_line(p) for p in e.problems]
        return report
    report.groups, report.nodes = len(config.groups), len(config.nodes)
    catalog, store_problems = load_store(config.server.store_dir)
    channels: dict[str, str] = {}
    intent_db = config.intent_database
    if not isinstance(intent_db, Path) or intent_db.is_file():
        with Registry(intent_db) as registry:
            channels = registry.channels()
    report.errors += [finding_from_line(p)
                      for p in check_config(config, catalog, store_problems, channels)]
    report.errors += site_problems(config)
    report.errors += template_problems(config)
    report.errors += selector_problems(config)
    errors, warnings = build_file_problems(config, catalog, channels)
    report.errors += errors
    report.warnings += warnings
    report.warnings += [finding_from_line(w) for w in check_warnings(config, catalog, channels)]
    if not report.errors:  # rendering a config with a missing build says nothing new
        errors, warnings, count = render_problems(config)
        report.errors += errors
        report.warnings += warnings
        report.rendered_files = count
    return report


# -- references: builds, channels, key, loaders (the checks `check` always made) --------------
def check_config(config: Config, catalog: BuildCatalog, store_problems: list[str],
                 channels: Mapping[str, str]) -> list[str]:
    """Every reference that would stop a node from booting, as ``key: message`` lines."""
    problems = list(store_problems)
    if not config.server.store_dir.is_dir():
        problems.append(f"server.store_dir: {config.server.store_dir} does not exist; "
                        "build or import a build first")
    key_file = config.firstboot_key_file
    if config.firstboot.key_file is not None or key_file.exists():  # else made at first start
        try:
            read_key(key_file)
        except KeyFileError as e:
            problems.append(f"firstboot.key_file: {e}")
    for where, settings in _entries(config):
        if settings.build is not None and settings.build not in catalog:
            problems.append(f"{where}.build: no build named {settings.build} "
                            f"(known: {', '.join(catalog.refs()) or 'none'})")
        problems += [f"{where}.{p}" for p in var_problems(settings.vars)]
        if settings.channel is not None and settings.channel not in channels:
            problems.append(f"{where}.channel: channel {settings.channel} points at no build; "
                            f"run `netbootd channel set {settings.channel} NAME/VERSION`")
    problems += _arch_problems(config, catalog, channels)
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


def _entries(config: Config) -> list[tuple[str, BootSettings]]:
    return [*((f"groups.{g.name}", g.settings) for g in config.groups),
            *((f"nodes.{n.name}", n.settings) for n in config.nodes)]


def _arch_problems(config: Config, catalog: BuildCatalog,
                   channels: Mapping[str, str]) -> list[str]:
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
    if any(s.secure_boot for _, s in _entries(config)):
        used |= {"grub", "shim"}
    return used | {"ipxe"}  # ESXi on UEFI and HTTP Boot always use iPXE


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


# -- the host: interface and folders -----------------------------------------------------------
def site_problems(config: Config) -> list[Finding]:
    out = []
    iface = config.server.interface
    if iface is not None and not (Path("/sys/class/net") / iface).exists():
        have = sorted(p.name for p in Path("/sys/class/net").iterdir()) \
            if Path("/sys/class/net").is_dir() else []
        out.append(Finding("server.interface", f"no network interface {iface!r} on this host "
                           f"(have: {', '.join(have) or 'none'})",
                           "name the interface PXE clients are on (`ip -br link`)"))
    tdir = config.server.templates_dir
    if tdir is not None and not tdir.is_dir():
        out.append(Finding("server.templates_dir", f"{tdir} is not a directory",
                           "create it (templates there override the built-in ones of the same "
                           "name) or remove the key"))
    return out


# -- templates: every one loads, every user_data names one that exists --------------------------
def template_problems(config: Config) -> list[Finding]:
    out = []
    tdir = config.server.templates_dir
    env = make_environment(tdir if tdir is not None and tdir.is_dir() else None)
    for name in TEMPLATE_NAMES:
        try:
            env.get_template(name)
        except Exception as e:  # a template error of any kind is a problem to report
            out.append(Finding(f"templates: {name}", str(e), "fix the template's syntax"))
    searched = ", ".join(str(d) for d in ([tdir] if tdir else [])) or "no server.templates_dir"
    for where, s in _entries(config):
        if s.user_data is None:
            continue
        try:
            env.get_template(s.user_data)
        except Exception as e:  # jinja2.TemplateNotFound, or a syntax error in it
            missing = type(e).__name__ == "TemplateNotFound"
            out.append(Finding(
                f"{where}.user_data",
                f"template {s.user_data!r} " + (f"not found (searched {searched} and the "
                                                "built-in templates)" if missing else
                                                f"does not load: {e}"),
                "put the file in server.templates_dir, or fix its name" if missing else
                "fix the template's syntax"))
    return out


# -- selectors no client can satisfy -------------------------------------------------------------
def selector_problems(config: Config) -> list[Finding]:
    out = []
    for g in config.groups:
        if g.match is None:
            continue
        for p in g.match.mac_prefix:
            octets = p.replace("-", ":").split(":")
            if len(octets) > 6 or any(len(o) > 2 for o in octets) or \
                    (len(octets) > 1 and any(not o for o in octets)):
                out.append(Finding(f"groups.{g.name}.match.mac_prefix",
                                   f"{p!r} is no prefix of a MAC (six octets of two hex "
                                   "digits): the group never matches",
                                   "write up to six octets, e.g. \"52:54:00\""))
        if g.match.vendor_class and not any(v.startswith(("PXEClient", "HTTPClient"))
                                            or not v for v in g.match.vendor_class):
            out.append(Finding(
                f"groups.{g.name}.match.vendor_class",
                f"{list(g.match.vendor_class)}: PXE firmware sends option 60 starting with "
                "PXEClient (or HTTPClient for UEFI HTTP Boot), so these prefixes never match "
                "a network boot", "use a prefix such as \"PXEClient:Arch:00007\""))
    return out


# -- build files: bytes that fit their role ------------------------------------------------------
def _referenced(config: Config, catalog: BuildCatalog,
                channels: Mapping[str, str]) -> Iterator[tuple[str, Build]]:
    for where, s in _entries(config):
        ref = s.build or (channels.get(s.channel) if s.channel else None)
        if ref is not None and ref in catalog:
            yield where, catalog.get(ref)


def _head(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return None


def build_file_problems(config: Config, catalog: BuildCatalog, channels: Mapping[str, str]
                        ) -> tuple[list[Finding], list[Finding]]:
    errors: list[Finding] = []
    warnings: list[Finding] = []
    seen: set[str] = set()
    for where, b in _referenced(config, catalog, channels):
        if b.ref in seen or b.kind != "linux" or b.manifest.kernel is None:
            continue
        seen.add(b.ref)
        roles = [(b.manifest.kernel, "kernel"), *((i, "initrd") for i in b.manifest.initrds)]
        for name, role in roles:
            head = _head(b.path_of(name))
            if head is None:
                errors.append(Finding(f"store: {b.ref}/{name}", "cannot be read",
                                      f"re-import the build ({where} uses it)"))
                continue
            wrong, kind = (kernel_verdict if role == "kernel" else initrd_verdict)(head)
            key = f"store: {b.ref}/{name}"
            if wrong:
                errors.append(Finding(
                    key, f"the {role} of build {b.ref} ({where} boots it) is {describe(kind)}, "
                    f"not a Linux {role}: the loader refuses it and the node stops",
                    "import the kernel and initrd from inside the image (e.g. casper/vmlinuz "
                    "and casper/initrd of an ISO, mounted with `mount -o loop`), or import an "
                    "ESXi ISO with `netbootd image import --kind esxi`"
                    if kind == "iso9660" else f"import the real {role} of this build"))
    return errors, warnings


# -- the render pass: every node, every reachable group --------------------------------------
# Client archs a render pass tries: each a loader family a build of that CPU can boot.
