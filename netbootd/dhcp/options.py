"""DHCP option numbers and the option-area codec (pure: bytes in, bytes out).

Owns:

- ``DhcpOption``: option codes named as in RFC 2132, RFC 4578 (PXE options 93/94/97) and the
  other RFCs that define the options PXE clients send (RFC 3004 user class, RFC 3396 long
  options, RFC 4702 client FQDN...).
- ``MessageType``: values of option 53 (RFC 2132 section 9.6).
- ``PxeVendorOption``: sub-options of option 43 when option 60 is ``PXEClient`` (PXE spec 2.1,
  table 2-1).
- ``decode_options`` / ``encode_options``: the ``code, length, value`` option area
  (RFC 2132 section 2). Options are an ordered tuple of ``(code, raw bytes)``. Unknown options are
  kept raw, so re-encoding loses nothing a client said.

RFC 3396: an option longer than 255 bytes is sent as several consecutive instances of the same
code, and a receiver must concatenate every instance of a code, in order. Decoding therefore
yields one entry per code (at the position of its first instance) and encoding splits long values
into 255-byte chunks.
"""

from __future__ import annotations

import enum

from netbootd.errors import MalformedPacket

Options = tuple[tuple[int, bytes], ...]
"""An option area: ``(code, value)`` pairs in wire order, one entry per code."""

MAX_OPTION_CHUNK = 255


class DhcpOption(enum.IntEnum):
    """DHCP option codes (RFC 2132 unless noted)."""

    PAD = 0
    SUBNET_MASK = 1
    TIME_OFFSET = 2
    ROUTER = 3
    TIME_SERVER = 4
    NAME_SERVER = 5
    DOMAIN_NAME_SERVER = 6
    LOG_SERVER = 7
    HOST_NAME = 12
    BOOT_FILE_SIZE = 13
    DOMAIN_NAME = 15
    ROOT_PATH = 17
    EXTENSIONS_PATH = 18
    INTERFACE_MTU = 26
    BROADCAST_ADDRESS = 28
    STATIC_ROUTE = 33
    NTP_SERVERS = 42
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS_ID = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77  # RFC 3004
    CLIENT_FQDN = 81  # RFC 4702
    RELAY_AGENT_INFO = 82  # RFC 3046
    CLIENT_SYSTEM_ARCH = 93  # RFC 4578 section 2.1
    CLIENT_NDI = 94  # RFC 4578 section 2.2
    CLIENT_MACHINE_ID = 97  # RFC 4578 section 2.3
    DOMAIN_SEARCH = 119  # RFC 3397
    CLASSLESS_STATIC_ROUTE = 121  # RFC 3442
    IPXE_ENCAPSULATED = 175  # iPXE's private encapsulated options (sent by every iPXE build)
    END = 255


class MessageType(enum.IntEnum):
    """DHCP message types, the value of option 53 (RFC 2132 section 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class PxeVendorOption(enum.IntEnum):
    """Sub-options of option 43 for PXE clients (PXE spec 2.1, table 2-1)."""

    PXE_DISCOVERY_CONTROL = 6
    PXE_BOOT_SERVERS = 8
    PXE_BOOT_MENU = 9
    PXE_MENU_PROMPT = 10
    PXE_BOOT_ITEM = 71


class DiscoveryControl(enum.IntFlag):
    """Bits of PXE_DISCOVERY_CONTROL (PXE spec 2.1, table 2-1)."""

    DISABLE_BROADCAST = 1
    DISABLE_MULTICAST = 2
    ONLY_LISTED_SERVERS = 4
    # "If set, and a boot file name is present in the initial DHCP or ProxyDHCP offer packet,
    # download the boot file (do not prompt/menu/discover)."
    USE_OFFERED_BOOTFILE = 8


def decode_options(data: bytes, *, area: str = "options") -> tuple[Options, bool]:
    """Decode an option area; return ``(options, saw_end)``.

    PAD bytes are skipped; decoding stops at END (anything after END is padding and ignored).
    A missing END is tolerated, since many clients simply pad to the end of the buffer. Every
    instance of a code is concatenated into the first one (RFC 3396 section 5). An option whose
    length byte or value runs past the end of ``data`` raises ``MalformedPacket``.
    """
    order: list[int] = []
    values: dict[int, bytearray] = {}
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == DhcpOption.PAD:
            i += 1
            continue
        if code == DhcpOption.END:
            return _collect(order, values), True
        if i + 1 >= n:
            raise MalformedPacket("truncated-option", f"option {code} in {area} has no length byte")
        length = data[i + 1]
        end = i + 2 + length
        if end > n:
            raise MalformedPacket(
                "truncated-option",
                f"option {code} in {area} claims {length} bytes, {n - i - 2} left",
            )
        if code not in values:
            order.append(code)
            values[code] = bytearray()
        values[code] += data[i + 2:end]
        i = end
    return _collect(order, values), False


def _collect(order: list[int], values: dict[int, bytearray]) -> Options:
    return tuple((code, bytes(values[code])) for code in order)


def encode_options(options: Options) -> bytes:
    """Encode options (without END); values over 255 bytes become consecutive chunks (RFC 3396).

    Raises ``ValueError`` for PAD/END or a code outside 1..254: those are not options.
    """
    out = bytearray()
    for code, value in options:
        if not 1 <= code <= 254:
            raise ValueError(f"option code {code} cannot carry a value (use 1..254)")
        if not value:
            out += bytes((code, 0))
            continue
        for start in range(0, len(value), MAX_OPTION_CHUNK):
            chunk = value[start:start + MAX_OPTION_CHUNK]
            out += bytes((code, len(chunk)))
            out += chunk
    return bytes(out)


def find_option(options: Options, code: int) -> bytes | None:
    """The value of ``code`` in ``options``, or None when absent."""
    for c, value in options:
        if c == code:
            return value
    return None


# Option 43 is the same few bytes in every reply of a configuration: encoded once per distinct
# content (a handful), not per packet. Bounded, although its callers pass constants.
_VENDOR_OPTIONS: dict[Options, bytes] = {}
_VENDOR_OPTIONS_MAX = 64


def encode_pxe_vendor_options(suboptions: Options) -> bytes:
    """Option 43 content for a PXE client: sub-options then END (PXE spec 2.1 section 2.2.5)."""
    encoded = _VENDOR_OPTIONS.get(suboptions)
    if encoded is None:
        encoded = _encode_pxe_vendor_options(suboptions)
        if len(_VENDOR_OPTIONS) >= _VENDOR_OPTIONS_MAX:
            _VENDOR_OPTIONS.clear()
        _VENDOR_OPTIONS[suboptions] = encoded
    return encoded


def _encode_pxe_vendor_options(suboptions: Options) -> bytes:
    out = bytearray()
    for code, value in suboptions:
        if not 1 <= code <= 254 or len(value) > MAX_OPTION_CHUNK:
            raise ValueError(f"PXE sub-option {code} with {len(value)} bytes cannot be encoded")
        out += bytes((code, len(value))) + value
    out.append(DhcpOption.END)
    return bytes(out)
