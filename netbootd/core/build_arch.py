"""Which builds a client can run: a build's CPU architecture against the client's option 93.

A build records the architecture of the machines it boots (``amd64`` or ``arm64``, from its
kernel at import). The firmware's arch code (RFC 4578 section 2.1 and IANA's registry) says
what the client is: BIOS and x86-64 UEFI (PXE codes 0, 7, 9; HTTP code 16) run ``amd64``
builds, ARM64 UEFI (PXE 11, HTTP 19) runs ``arm64`` builds. 32-bit UEFI (6, 15) and 32-bit ARM
(10, 18) run neither. A plan never hands a client a build of another arch: the planner declines
with the reason, and ``netbootd check`` reports groups whose arch selector no build can match.
"""

from __future__ import annotations

from collections.abc import Iterable

from netbootd.core.identity import Arch

# Arch family (identity.Arch.family) -> the build arch that family runs.
_FAMILY_BUILD_ARCH: dict[str, str] = {"bios": "amd64", "efi64": "amd64", "arm64": "arm64"}


def build_arch_for(arch: Arch) -> str | None:
    """The build arch a client of ``arch`` runs, or None (no supported build arch)."""
    return _FAMILY_BUILD_ARCH.get(arch.family)


def arch_mismatch(build_ref: str, build_arch: str, client: Arch | None) -> str | None:
    """Why a client of arch ``client`` cannot boot the build, or None when it can (or the
    client's arch is not known: a later request of a boot that DHCP already checked)."""
    if client is None:
        return None
    wanted = build_arch_for(client)
    if wanted == build_arch:
        return None
    what = f"an {wanted} machine" if wanted else f"a {client.family} machine (no build arch)"
    return (f"build {build_ref} is for {build_arch} machines, but this client is {what} "
            f"(option 93 = {int(client)}, {client.name.lower()}): give its group a build "
            f"of its arch, or add a group with match.arch = [\"{client.family}\"] that does")


def selector_build_arches(families: Iterable[str]) -> set[str]:
    """The build arches that clients matched by an arch selector (family names) can run."""
    return {a for f in families if (a := _FAMILY_BUILD_ARCH.get(f)) is not None}
