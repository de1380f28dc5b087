"""The render pass of ``netbootd check`` (and the responder ``netbootd render`` uses): every
configured node and the plan of every group a client can reach, rendered as BIOS, UEFI and
ARM64 clients with the server's own renderer and DHCP answer; any template error, undefined
variable or refused file becomes a finding with the key to change."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from netbootd.check_findings import Finding
from netbootd.config import BootSettings, Config, GroupSpec
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.plan import BootPlan, Decline
from netbootd.errors import NetbootdError
from netbootd.render.node_files import INSECURE_ROOTPW_VAR, NoRootPassword, RenderedFile
from netbootd.state.events import StateDB
from netbootd.state.keyfile import KeyFileError, read_key
from netbootd.state.registry import Registry

if TYPE_CHECKING:
    from netbootd.responder import Responder


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

    intent_db = config.intent_database
    registry = (Registry(intent_db) if not isinstance(intent_db, Path) or intent_db.is_file()
                else None)
    state_db = config.events_database
    state = (StateDB(state_db, readonly=True)
             if not isinstance(state_db, Path) or state_db.is_file()
             else StateDB(Path(":memory:")))
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
