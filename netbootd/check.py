"""``netbootd check``: every reason a configured machine would not boot, in one report.

Beyond the schema (``parse_config``) it checks what the config refers to: builds, channels,
loaders, templates (``templates_dir`` and each ``user_data``), the interface, the first-boot
key, selector values no client can send, build files whose bytes are not what their role
needs (an ISO as a kernel: ``check_magic``), and an ESXi kickstart without a root password.
Then it renders, with the real renderer, every configured node and the plan of every group a
client can reach (as BIOS and UEFI clients, through the loaders the server would hand out):
any template error, undefined variable (``StrictUndefined``) or refused file is reported with
the key to change. A config ``check`` passes renders every node.

Every finding has a ``key`` (the config key or build file to change), a ``problem`` and a
``fix``; ``--json`` prints the ``Report`` as documented in docs/configuration.md ("Checking a
config"). Exit code: 0 no errors (warnings allowed), 1 errors, 2 the file is not valid TOML or
breaks the schema (those problems are listed the same way).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from netbootd.check_magic import HEAD_BYTES, describe, initrd_verdict, kernel_verdict
from netbootd.config import BootSettings, Config, GroupSpec, load_config
from netbootd.core.build_arch import selector_build_arches
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.plan import BootPlan, Decline
from netbootd.errors import ConfigError, NetbootdError
from netbootd.render.environment import TEMPLATE_NAMES, make_environment
from netbootd.render.node_files import INSECURE_ROOTPW_VAR, NoRootPassword, RenderedFile
from netbootd.render.seed import var_problems
from netbootd.state.events import StateDB
from netbootd.state.keyfile import KeyFileError, read_key
from netbootd.state.registry import Registry
from netbootd.store.builds import load_store
from netbootd.store.catalog import Build, BuildCatalog

if TYPE_CHECKING:
    from netbootd.responder import Responder

EXIT_OK, EXIT_PROBLEMS, EXIT_SCHEMA = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Finding:
    key: str  # the config key (groups.web.user_data) or store path to change
    problem: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.key}: {self.problem}" + (f" (fix: {self.fix})" if self.fix else "")


@dataclass(slots=True)
class Report:
    config: str
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    schema_ok: bool = True
    groups: int = 0
    nodes: int = 0
    rendered_files: int = 0  # files the render pass produced without error

    @property
    def exit_code(self) -> int:
        if not self.schema_ok:
            return EXIT_SCHEMA
        return EXIT_PROBLEMS if self.errors else EXIT_OK

    def to_json(self) -> str:
        return json.dumps({
            "config": self.config, "ok": not self.errors, "exit_code": self.exit_code,
            "schema_ok": self.schema_ok,
            "errors": [asdict(f) for f in self.errors],
            "warnings": [asdict(f) for f in self.warnings],
            "groups": self.groups, "nodes": self.nodes, "rendered_files": self.rendered_files,
        }, indent=2)

    def to_text(self) -> str:
        lines = [f"warning: {w.line()}" for w in self.warnings]
        if self.errors:
            lines.append(f"{self.config}: {len(self.errors)} problem(s):")
            lines += [f"  - {e.line()}" for e in self.errors]
        else:
            lines.append(f"{self.config}: ok ({self.groups} groups, {self.nodes} nodes, "
                         f"{self.rendered_files} files rendered)")
        return "\n".join(lines)


def _split(text: str) -> Finding:
    """A ``key: message`` line (parse_config, load_store) as a Finding."""
    key, sep, rest = text.partition(": ")
    if not sep or " " in key:
        return Finding("config", text)
    return Finding(key, rest)


def run_check(path: Path) -> Report:
    """Load ``path`` and check everything; never raises for a problem of the config."""
    report = Report(str(path))
    try:
        config = load_config(path)
    except ConfigError as e:
        report.schema_ok = False
        report.errors = [_split(p) for p in e.problems]
        return report
    report.groups, report.nodes = len(config.groups), len(config.nodes)
    catalog, store_problems = load_store(config.server.store_dir)
    channels: dict[str, str] = {}
    intent_db = config.server.state_dir / "intent.sqlite3"
    if intent_db.is_file():
        with Registry(intent_db) as registry:
            channels = registry.channels()
    report.errors += [_split(p) for p in check_config(config, catalog, store_problems, channels)]
    report.errors += site_problems(config)
    report.errors += template_problems(config)
    report.errors += selector_problems(config)
    errors, warnings = build_file_problems(config, catalog, channels)
    report.errors += errors
    report.warnings += warnings
    report.warnings += [_split(w) for w in check_warnings(config, catalog, channels)]
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
_TRY_ARCHES = {"amd64": (Arch.BIOS, Arch.EFI_BC), "arm64": (Arch.EFI_ARM64,)}
_FAMILY_ARCH = {"bios": Arch.BIOS, "efi64": Arch.EFI_BC, "efi32": Arch.EFI_IA32,
                "arm64": Arch.EFI_ARM64, "arm32": Arch.EFI_ARM32}


def make_render_responder(config: Config, key: bytes,
                          clock: Callable[[], float] = time.time
                          ) -> tuple[Responder, list[str]]:
    """The responder ``netbootd render`` and ``check`` answer with, as ``serve`` builds it
    (the one place outside the service that does). Nothing is recorded: the server's state
    database is opened read-only (so GUIDs it saw on several machines identify nobody here
    too), or an in-memory one before the first serve; the operator's intent database
    (channels, overrides, reimage orders) is read, so render shows what serve does."""
    from netbootd.service import make_responder  # the service imports the whole server

    intent_db = config.server.state_dir / "intent.sqlite3"
    registry = Registry(intent_db) if intent_db.is_file() else None
    state_db = config.server.state_dir / "state.sqlite3"
    state = StateDB(state_db, readonly=True) if state_db.is_file() else StateDB(Path(":memory:"))
    responder, problems = make_responder(config, state, registry=registry,
                                         key=key, clock=clock)
    return responder, problems


def _glob_sample(pattern: str) -> str:
    return pattern.replace("*", "x").replace("?", "x").replace("[", "").replace("]", "")


def _group_identity(g: GroupSpec, taken: set[str], arch: Arch | None) -> ClientIdentity:
    """A client that only this group's selectors (or the default) would claim."""
    sel = g.match
    mac_prefix = sel.mac_prefix[0].replace("-", ":") if sel and sel.mac_prefix else "02"
    octets = [o for o in mac_prefix.split(":") if o][:6]
    octets = [o.rjust(2, "0") for o in octets]
    free = 6 - len(octets)
    n = 0
    while True:  # a MAC of the prefix that no configured node has
        value = (0xFEEDFACE0000 + n) % (256 ** free) if free else 0
        tail = [f"{value:0{2 * free}x}"[i:i + 2] for i in range(0, 2 * free, 2)]
        mac = ":".join([*octets, *tail])
        if mac not in taken or not free:
            break
        n += 1
    s = _glob_sample
    return ClientIdentity(
        mac=mac, arch=arch,
        vendor_class=sel.vendor_class[0] if sel and sel.vendor_class else None,
        user_class=s(sel.user_class[0]) if sel and sel.user_class else None,
        manufacturer=s(sel.manufacturer[0]) if sel and sel.manufacturer else None,
        product=s(sel.product[0]) if sel and sel.product else None,
        serial=s(sel.serial[0]) if sel and sel.serial else None)


def _render_one(responder: Responder, ident: ClientIdentity
                ) -> tuple[BootPlan | Decline, list[RenderedFile]]:
    """The plan and every file the node fetches, by the server's own DHCP answer
    (netbootd/answers.py), as a PXE ROM and as iPXE."""
    files: list[RenderedFile] = []
    plan: BootPlan | Decline | None = None
    for is_ipxe in (False, True):
        answer = responder.render_dhcp(ident, is_ipxe=is_ipxe, http_boot=False)
        plan = answer.plan
        if isinstance(plan, Decline):
            return plan, []
        if answer.target is not None:  # None: no loader for this arch
            files += responder.render_files(plan, answer.target)
    assert plan is not None
    return plan, files


def render_problems(config: Config) -> tuple[list[Finding], list[Finding], int]:
    """Render every node and every reachable group as each client arch its build runs on."""
    errors: dict[str, Finding] = {}
    warnings: list[Finding] = []
    try:  # the real key when there is one, else a throwaway one: check shows no tokens
        key = read_key(config.firstboot_key_file)
    except KeyFileError:
        key = secrets.token_bytes(32)
    try:
        responder, _ = make_render_responder(config, key)
    except NetbootdError as e:
        return [Finding("server", f"cannot build the renderer: {e}")], [], 0
    count = 0
    taken = {m for n in config.nodes for m in n.macs}
    cases: list[tuple[str, ClientIdentity | None, GroupSpec | None]] = []
    for n in config.nodes:
        mac = n.macs[0] if n.macs else None
        cases.append((f"nodes.{n.name}", ClientIdentity(
            mac=mac, guid=n.guids[0] if n.guids else None,
            serial=n.serials[0] if n.serials else None), None))
    for g in config.groups:
        if g.default or (g.match is not None and g.match.specificity):
            cases.append((f"groups.{g.name}", None, g))
    for where, base, group in cases:
        arches: tuple[Arch | None, ...]
        if group is not None and group.match is not None and group.match.arch:
            arches = tuple(_FAMILY_ARCH[f] for f in group.match.arch if f in _FAMILY_ARCH)
        else:
            arches = (Arch.BIOS, Arch.EFI_BC, Arch.EFI_ARM64)
        for arch in arches:
            if group is not None:
                ident = _group_identity(group, taken, arch)
            else:
                assert base is not None
                ident = ClientIdentity(mac=base.mac or _group_identity(
                    GroupSpec("", BootSettings()), taken, None).mac, guid=base.guid,
                    serial=base.serial, arch=arch)
            try:
                plan, files = _render_one(responder, ident)
            except NoRootPassword as e:
                errors.setdefault(where, Finding(
                    f"{where}.vars.root_password_hash", str(e).split(": set ")[0],
                    "set vars.root_password_hash = \"$6$...\" (openssl passwd -6), or "
                    f"vars.{INSECURE_ROOTPW_VAR} = true to install with no root password"))
                continue
            except NetbootdError as e:
                as_arch = arch.name if arch is not None else "any"
                errors.setdefault(where, Finding(where, f"does not render for a {as_arch} "
                                                 f"client: {e}",
                                                 "fix the template, var or setting it names"))
                continue
            if isinstance(plan, Decline):
                continue
            if group is not None and plan.group != group.name:
                continue  # a more specific group or a node claims this sample client
            if group is not None and plan.node is not None:
                continue
            build = plan.build
            if build is not None and arch is not None and \
                    arch not in _TRY_ARCHES.get(build.arch, ()):
                continue  # this build boots other machines: the planner declines
            count += len(files)
    return list(errors.values()), warnings, count
