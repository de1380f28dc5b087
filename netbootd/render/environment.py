"""The jinja2 environment that renders every boot file.

Sandboxed (operators may point netbootd at their own template folder, and a template must not
reach Python internals: Cobbler CVE-2021-45082), ``StrictUndefined`` (a typo is an error, not
an empty kernel argument), no HTML autoescaping (these are boot scripts, not HTML). The
operator's folder is searched first, so a site overrides one template and keeps the rest.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

import netbootd

TEMPLATE_NAMES = (
    "pxelinux.cfg.j2", "pxelinux-decline.cfg.j2", "ipxe-boot.ipxe.j2", "ipxe-node.ipxe.j2",
    "ipxe-build.ipxe.j2", "esxi-boot.cfg.j2", "nocloud-meta-data.j2", "nocloud-user-data.j2",
    "nocloud-network-config.j2", "esxi-ks.cfg.j2",
)


def builtin_templates_dir() -> Path:
    """``pxelinux_templates/`` next to the package (source checkout or editable install)."""
    return Path(netbootd.__file__).resolve().parent.parent / "pxelinux_templates"


def make_environment(operator_dir: Path | None = None) -> jinja2.Environment:
    dirs = [str(operator_dir)] if operator_dir else []
    dirs.append(str(builtin_templates_dir()))
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(dirs),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
