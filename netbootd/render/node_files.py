"""Render the files one node receives, all from its single BootPlan.

``NodeRenderer`` owns the composition rules: the kernel command line (the build's own
arguments, then group and node extras, then the first-boot datasource), the ESXi
``kernelopt`` (the build's, plus ``ks=`` the node's kickstart URL), and which template answers
which file. ``files_for`` lists, for ``netbootd render``, every dynamic file a node would get,
under the exact name the servers answer to.
"""

from __future__ import annotations

import base64
import copy
import gzip
import re
from dataclasses import dataclass
from typing import Any

import jinja2

from netbootd.core.identity import pxelinux_guid_name
from netbootd.core.plan import BootPlan
from netbootd.errors import NetbootdError, NotFound
from netbootd.render.grub import GRUB_HTTP_ARCHES, grub_args, grub_device_path, grub_quote
from netbootd.render.seed import SeedError, seed_context
from netbootd.render.urls import SiteUrls, tftp_esxi_boot_cfg
from netbootd.store.catalog import Build, BuildCatalog


def network_config_arg(text: str) -> str:
    """cloud-init's ``network-config=`` kernel argument: the YAML gzip'd (mtime 0, so the
    same config gives the same line) and base64'd, as ``cloudinit.net.cmdline`` decodes it."""
    return "network-config=" + base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


class RenderError(NetbootdError):
    """A template failed to render or produced something unsafe (e.g. a newline in cmdline)."""


class NoSuchFile(RenderError, NotFound):
    """The node has no such file: its build is of another kind (error_map.py: a 404)."""


class NoRootPassword(RenderError):
    """An ESXi kickstart whose ``rootpw --iscrypted`` has no hash: refused, not served."""


# The var that lets a kickstart go out without a root password hash (docs/configuration.md).
INSECURE_ROOTPW_VAR = "insecure_no_root_password"
# ``rootpw --iscrypted *`` (or nothing): ESXi installs with a root account no password opens,
# onto a disk ``--overwritevmfs`` wipes; never served unless the operator opted in.
_EMPTY_ROOTPW = re.compile(r"^[ \t]*rootpw[ \t]+--iscrypted(?:[ \t]+\*)?[ \t]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RenderedFile:
    channel: str  # "tftp" or "http"
    name: str  # TFTP path (e.g. bios/pxelinux.cfg/01-...) or URL
    content: str


class NodeRenderer:
    def __init__(self, env: jinja2.Environment, urls: SiteUrls, catalog: BuildCatalog,
                 reimage_target: str | None = None) -> None:
        self.env = env
        self.reimage_target = reimage_target
        self.urls = urls
        self.catalog = catalog
        self.builds = catalog.all()  # the catalog is immutable; menus list these

    def at(self, now: float) -> NodeRenderer:
        """This renderer answering at ``now``: first-boot tokens in its URLs are issued then."""
        stamped = copy.copy(self)
        stamped.urls = self.urls.at(now)
        return stamped

    # -- composition rules -------------------------------------------------------------------
    def kernel_cmdline(self, plan: BootPlan, build: Build) -> str:
        own = build.manifest.cmdline
        rootfs = build.manifest.extra.get("rootfs")
        if isinstance(rootfs, str) and rootfs in build.manifest.files:
            own = own.replace("${rootfs_url}", self.urls.build_file(build, rootfs))
        parts = [own, plan.cmdline]
        if plan.reimage is not None and build == plan.build:
            parts += self.installer_args(plan)
        elif build.kind == "linux":
            # cloud-init NoCloud datasource over HTTP; the URL must end with '/'.
            parts.append(self.urls.nocloud_kernel_arg(plan.node_key, build))
            try:
                seed: dict[str, Any] | None = self._seed(plan, build)
            except RenderError:
                seed = None  # a bad seed var: the seed files answer why; the boot goes on
            if seed is not None and seed["guest_bridge"]:
                # cloud-init 22.4 fetches no network-config from an HTTP seed, but reads one
                # from the command line before any datasource (docs/boot-flows.md).
                parts.append(network_config_arg(self._network_config(plan, build)))
        line = " ".join(p for p in parts if p)
        if "\n" in line or "\r" in line:
            raise RenderError(f"kernel command line for {plan.hostname} contains a newline")
        return line

    def installer_args(self, plan: BootPlan) -> list[str]:
        """The installer's contract (images/README.md): what to write, where, how to check it
        and where to report."""
        assert plan.reimage is not None
        d = plan.reimage.disk
        assert d.manifest.disk is not None
        info = d.manifest.disk
        args = [f"netbootd.disk_url={self.urls.build_file(d, info.file)}",
                f"netbootd.disk_compression={info.compression}",
                f"netbootd.disk_size={info.raw_size}", f"netbootd.disk_sha256={info.raw_sha256}",
                "netbootd.report="
                + self.urls.reimage_report(plan.node_key, plan.reimage.action_id)]
        target = plan.vars.get("install_disk") or self.reimage_target
        if isinstance(target, str) and target:
            args.append(f"netbootd.target={target}")
        return args

    def esxi_kernelopt(self, plan: BootPlan, build: Build) -> str:
        assert build.manifest.esxi is not None
        parts = [build.manifest.esxi.kernelopt, plan.cmdline,
                 f"ks={self.urls.kickstart(plan.node_key, build)}"]
        return " ".join(p for p in parts if p)

    def _render(self, template: str, plan: BootPlan | None, **extra: Any) -> str:
        ctx: dict[str, Any] = {"urls": self.urls, "builds": self.builds, **extra}
        if plan is not None:
            ctx.update(plan=plan, build=plan.build, key=plan.node_key, hostname=plan.hostname,
                       vars=plan.vars, cmdline=lambda b: self.kernel_cmdline(plan, b))
        try:
            return self.env.get_template(template).render(ctx)
        except jinja2.TemplateError as e:
            raise RenderError(f"template {template}: {e}") from e

    # -- one method per file kind --------------------------------------------------------------
    def pxelinux_config(self, plan: BootPlan) -> str:
        return self._render("pxelinux.cfg.j2", plan)

    def grub_config(self, plan: BootPlan) -> str:
        return self._render("grub-node.cfg.j2", plan, **self._grub_helpers(plan))

    def grub_decline(self, reason: str) -> str:
        return self._render("grub-decline.cfg.j2", None, reason=reason, grub_quote=grub_quote)

    def grub_dispatch(self) -> str:
        return self._render("grub-dispatch.cfg.j2", None)

    def _grub_helpers(self, plan: BootPlan | None) -> dict[str, Any]:
        def grub_file(b: Build, name: str) -> str:
            # The build's arch says which GRUB boots it (render/grub.py: no HTTP on arm64).
            return grub_device_path(self.urls.build_file(b, name), self.urls.server_ip,
                                    http=b.arch in GRUB_HTTP_ARCHES)

        def grub_tftp_file(b: Build, name: str) -> str:
            return f"(tftp,{self.urls.server_ip})/builds/{b.name}/{b.version}/{name}"

        helpers: dict[str, Any] = {"grub_file": grub_file, "grub_tftp_file": grub_tftp_file,
                                   "grub_quote": grub_quote}
        if plan is not None:
            helpers["grub_cmdline"] = lambda b: grub_args(self.kernel_cmdline(plan, b))
        return helpers

    def pxelinux_decline(self, reason: str) -> str:
        return self._render("pxelinux-decline.cfg.j2", None, reason=reason)

    def ipxe_stage1(self) -> str:
        return self._render("ipxe-boot.ipxe.j2", None)

    def ipxe_script(self, plan: BootPlan) -> str:
        return self._render("ipxe-node.ipxe.j2", plan)

    def esxi_boot_cfg(self, plan: BootPlan) -> str:
        b = self._need_build(plan, "esxi")
        return self._render("esxi-boot.cfg.j2", plan,
                            esxi_kernelopt=self.esxi_kernelopt(plan, b))

    def meta_data(self, plan: BootPlan) -> str:
        b = self._need_build(plan, "linux")
        return self._render("nocloud-meta-data.j2", plan, **self._seed(plan, b))

    def user_data(self, plan: BootPlan) -> str:
        b = self._need_build(plan, "linux")
        return self._render(plan.user_data or "nocloud-user-data.j2", plan,
                            **self._seed(plan, b))

    def network_config(self, plan: BootPlan) -> str:
        return self._network_config(plan, self._need_build(plan, "linux"))

    def _network_config(self, plan: BootPlan, build: Build) -> str:
        return self._render("nocloud-network-config.j2", plan, **self._seed(plan, build))

    def kickstart(self, plan: BootPlan) -> str:
        self._need_build(plan, "esxi")
        text = self._render(plan.user_data or "esxi-ks.cfg.j2", plan)
        if _EMPTY_ROOTPW.search(text) and plan.vars.get(INSECURE_ROOTPW_VAR) is not True:
            raise NoRootPassword(
                f"kickstart for {plan.node or plan.node_key} (group {plan.group}) has no root "
                "password hash (rootpw --iscrypted *): set vars.root_password_hash (e.g. from "
                "`openssl passwd -6`), or vars.insecure_no_root_password = true to serve it so")
        return text

    @staticmethod
    def _seed(plan: BootPlan, build: Build) -> dict[str, Any]:
        try:
            return seed_context(plan, build)
        except SeedError as e:
            raise RenderError(str(e)) from e

    def _need_build(self, plan: BootPlan, kind: str) -> Build:
        if plan.build is None or plan.build.kind != kind:
            have = plan.build.ref if plan.build else "no build"
            raise NoSuchFile(f"{plan.hostname} boots {have} in mode {plan.mode}: it has no "
                              f"{kind} first-boot files")
        return plan.build

    # -- everything a node receives, for `netbootd render` --------------------------------------
    def files_for(self, plan: BootPlan, pxelinux_prefixes: tuple[str, ...],
                  include_ipxe: bool, config_by_guid: bool,
                  grub_prefix: str | None = None) -> list[RenderedFile]:
        """The dynamic files of one node: its pxelinux config under each of
        ``pxelinux_prefixes`` (named by GUID in pxelinux's spelling when ``config_by_guid``,
        since pxelinux asks for that name first; else ``01-<mac>``), its iPXE script if it runs
        iPXE, its GRUB config under ``grub_prefix`` (``grub.cfg-01-<mac>``, and the
        ``grub.cfg`` that sends signed GRUB there), and its ESXi or NoCloud first-boot files."""
        out: list[RenderedFile] = []
        if grub_prefix is not None:
            out.append(RenderedFile("tftp", f"{grub_prefix}/grub.cfg", self.grub_dispatch()))
            out.append(RenderedFile("tftp", f"{grub_prefix}/grub.cfg-01-{plan.node_key}",
                                    self.grub_config(plan)))
        if pxelinux_prefixes:
            cfg = self.pxelinux_config(plan)
            guid = plan.identity.guid
            name = pxelinux_guid_name(guid) if config_by_guid and guid else \
                f"01-{plan.node_key}"
            out += [RenderedFile("tftp", f"{p}/pxelinux.cfg/{name}", cfg)
                    for p in pxelinux_prefixes]
        if include_ipxe:
            out.append(RenderedFile("http", self.ipxe_node_url(plan), self.ipxe_script(plan)))
        b = plan.build
        if b is not None and plan.mode != "local" and b.kind == "esxi":
            text = self.esxi_boot_cfg(plan)
            out.append(RenderedFile("tftp", tftp_esxi_boot_cfg(plan.node_key, b), text))
            out.append(RenderedFile("http", self.urls.esxi_boot_cfg(plan.node_key, b), text))
            out.append(RenderedFile("http", self.urls.kickstart(plan.node_key, b),
                                    self.kickstart(plan)))
        elif b is not None and plan.mode not in ("local", "reimage") and b.kind == "linux":
            base = self.urls.nocloud(plan.node_key, b)
            out.append(RenderedFile("http", base + "meta-data", self.meta_data(plan)))
            out.append(RenderedFile("http", base + "user-data", self.user_data(plan)))
            out.append(RenderedFile("http", base + "network-config",
                                    self.network_config(plan)))
        return out

    def ipxe_node_url(self, plan: BootPlan) -> str:
        """The URL (with the query the stage-1 script builds) for this identity."""
        i = plan.identity
        q = [f"mac={plan.node_key}"]
        if i.guid:
            q.append(f"uuid={i.guid}")
        if i.arch is not None:
            q.append(f"arch={int(i.arch)}")
        return f"{self.urls.ipxe_node()}?{'&'.join(q)}"
