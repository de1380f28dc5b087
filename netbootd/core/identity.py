"""Who a client is: MAC, GUID, architecture and the other facts a request carries.

Every request (DHCP packet, TFTP read, HTTP fetch) is turned into one ``ClientIdentity`` at the
edge; the core never sees option bytes. This module owns the normal forms:

- MAC: lower-case hex with colons (``52:54:00:12:34:56``).
- GUID: the canonical UUID string as dmidecode, SeaBIOS and iPXE's ``${uuid}`` print it. DHCP
  option 97 carries the raw SMBIOS bytes whose first three fields are little-endian, so the
  canonical form is ``uuid.UUID(bytes_le=raw)``; pxelinux and syslinux.efi instead print
  ``uuid.UUID(bytes=raw)`` and ask for ``pxelinux.cfg/<that>`` (observed with syslinux 6.04 on
  SeaBIOS and OVMF, see docs/firmware-notes.md). ``guid_candidates`` maps either spelling to both.
- GUIDs that identify nobody (all-zero, all-FF, and known shared GUIDs) are dropped.
- Arch: IANA "Processor Architecture Types" (option 93, RFC 4578 section 2.1 and its registry).
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, replace


class Arch(enum.IntEnum):
    """Client system architecture, as sent in DHCP option 93."""

    BIOS = 0
    EFI_IA32 = 6
    EFI_BC = 7  # "EFI BC": x86-64 firmware sends this
    EFI_X64 = 9  # some x86-64 firmware sends 9 instead of 7
    EFI_ARM32 = 10
    EFI_ARM64 = 11
    HTTP_X86 = 15
    HTTP_X64 = 16
    HTTP_ARM32 = 18
    HTTP_ARM64 = 19

    @property
    def family(self) -> str:
        """Loader family: ``bios``, ``efi64``, ``efi32``, ``arm64`` or ``arm32``."""
        return _FAMILY[self]

    @property
    def is_http_boot(self) -> bool:
        return self in (Arch.HTTP_X86, Arch.HTTP_X64, Arch.HTTP_ARM32, Arch.HTTP_ARM64)

    @property
    def is_efi(self) -> bool:
        return self is not Arch.BIOS


_FAMILY: dict[Arch, str] = {
    Arch.BIOS: "bios",
    Arch.EFI_IA32: "efi32",
    Arch.EFI_BC: "efi64",
    Arch.EFI_X64: "efi64",
    Arch.EFI_ARM32: "arm32",
    Arch.EFI_ARM64: "arm64",
    Arch.HTTP_X86: "efi32",
    Arch.HTTP_X64: "efi64",
    Arch.HTTP_ARM32: "arm32",
    Arch.HTTP_ARM64: "arm64",
}

# Names accepted on the command line, in config selectors and from iPXE variables.
_ARCH_NAMES: dict[str, Arch] = {
    "bios": Arch.BIOS,
    "pcbios": Arch.BIOS,
    "efi32": Arch.EFI_IA32,
    "efi-ia32": Arch.EFI_IA32,
    "efi64": Arch.EFI_BC,
    "efi-x64": Arch.EFI_BC,
    "uefi": Arch.EFI_BC,
    "x86_64-efi": Arch.EFI_BC,
    "arm32": Arch.EFI_ARM32,
    "arm64": Arch.EFI_ARM64,
    "efi-arm64": Arch.EFI_ARM64,
    "http-x64": Arch.HTTP_X64,
    "http-arm64": Arch.HTTP_ARM64,
}


def parse_arch(text: str) -> Arch:
    """Parse an arch given as a number (``7``) or a name (``bios``, ``efi64``, ``arm64``...)."""
    t = text.strip().lower()
    if t.isdigit():
        try:
            return Arch(int(t))
        except ValueError:
            pass
    elif t in _ARCH_NAMES:
        return _ARCH_NAMES[t]
    known = ", ".join(sorted(_ARCH_NAMES))
    raise ValueError(f"unknown arch {text!r}: use a number from option 93 or one of {known}")


def arch_from_ipxe(buildarch: str, platform: str) -> Arch | None:
    """Map iPXE's ``${buildarch}`` and ``${platform}`` to an Arch (None if unknown)."""
    b, p = buildarch.strip().lower(), platform.strip().lower()
    if p == "pcbios":
        return Arch.BIOS
    if p == "efi":
        return {"x86_64": Arch.EFI_BC, "i386": Arch.EFI_IA32, "arm64": Arch.EFI_ARM64,
                "arm32": Arch.EFI_ARM32}.get(b)
    return None


_MAC_RE = re.compile(r"^[0-9a-f]{12}$")


def normalize_mac(text: str) -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` for a MAC written with colons, dashes, dots or nothing."""
    hexdigits = re.sub(r"[:\-.]", "", text.strip().lower())
    if not _MAC_RE.match(hexdigits):
        raise ValueError(f"not a MAC address: {text!r} (expected six hex octets, e.g. "
                         "52:54:00:12:34:56)")
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2))


def mac_from_bytes(raw: bytes) -> str:
    if len(raw) != 6:
        raise ValueError(f"a MAC has 6 bytes, got {len(raw)}")
    return ":".join(f"{b:02x}" for b in raw)


# GUIDs that many boards share or report when unset; they identify nobody. Listed in both
# byte orders, since either spelling can reach us (option 97 vs a pxelinux file name).
_PLACEHOLDER_GUIDS = (
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    # "To Be Filled By O.E.M." boards (AMI default, reported widely on ASRock/Gigabyte)
    "03000200-0400-0500-0006-000700080009",
    "03020100-0504-0706-0809-0a0b0c0d0e0f",
)
_NON_IDENTIFYING_GUIDS = frozenset(
    spelling
    for g in _PLACEHOLDER_GUIDS
    for spelling in (g, str(uuid.UUID(bytes_le=uuid.UUID(g).bytes)))
)


def is_identifying_guid(canonical: str) -> bool:
    """True unless the GUID is all-zero, all-FF or a known shared placeholder."""
    return canonical.lower() not in _NON_IDENTIFYING_GUIDS


def normalize_guid(text: str) -> str:
    """Return the canonical lower-case UUID string for a GUID typed by a person or iPXE."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise ValueError(f"not a GUID: {text!r} (expected 8-4-4-4-12 hex digits)") from None


def guid_from_option97(raw: bytes) -> str | None:
    """Canonical GUID from DHCP option 97 (RFC 4578 section 2.3: type 0 then 16 bytes).

    Returns None when the option is not type 0 + 16 bytes or the GUID identifies nobody.
    """
    if len(raw) != 17 or raw[0] != 0:
        return None
    canonical = str(uuid.UUID(bytes_le=bytes(raw[1:])))
    return canonical if is_identifying_guid(canonical) else None


def pxelinux_guid_name(canonical: str) -> str:
    """The spelling pxelinux uses for ``pxelinux.cfg/<uuid>`` (raw bytes read big-endian)."""
    return str(uuid.UUID(bytes=uuid.UUID(canonical).bytes_le))


def guid_candidates(text: str) -> tuple[str, ...]:
    """Both canonical readings of a GUID string whose byte order is not known.

    A TFTP request for ``pxelinux.cfg/<x>`` from pxelinux has ``x`` in raw byte order; from a
    firmware that prints the canonical form it is already canonical. The first element is the
    reading that assumes pxelinux's spelling.
    """
    u = uuid.UUID(text.strip())
    swapped = str(uuid.UUID(bytes_le=u.bytes))
    same = str(u)
    out = [g for g in (swapped, same) if is_identifying_guid(g)]
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Everything known about the client behind one request; all fields optional.

    ``ip`` is the client's address when known (TFTP/HTTP source, DHCP ciaddr).
    """

    mac: str | None = None
    guid: str | None = None
    arch: Arch | None = None
    vendor_class: str | None = None
    user_class: str | None = None
    dhcp_hostname: str | None = None  # option 12 as the client sent it; untrusted text
    serial: str | None = None
    asset: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    ip: str | None = None

    def merged_with(self, other: ClientIdentity) -> ClientIdentity:
        """Fill the fields this identity lacks from ``other`` (this one wins on conflicts)."""
        updates = {
            f: getattr(other, f)
            for f in self.__slots__
            if getattr(self, f) is None and getattr(other, f) is not None
        }
        return replace(self, **updates) if updates else self
