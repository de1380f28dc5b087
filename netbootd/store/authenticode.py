"""Is a kernel signed for UEFI Secure Boot, and by whom: a small pure PE/Authenticode reader.

Bytes in, facts out (no I/O). A PE image (an EFI-stub ``vmlinuz``, shim, GRUB) carries its
Authenticode signature in the optional header's security data directory (index 4, PE/COFF
specification section "The Attribute Certificate Table"): a file offset and size pointing at
``WIN_CERTIFICATE`` records (``dwLength``, ``wRevision``, ``wCertificateType`` 2 = PKCS#7
SignedData, then the DER blob). The signer is the certificate that the SignedData's
``SignerInfo`` names by issuer and serial number; its subject and issuer common names are what
an operator compares with the keys their firmware or shim trusts (Debian's kernels:
"Debian Secure Boot Signer ... - linux" issued by "Debian Secure Boot CA", trusted through
shim's vendor certificate).

What this does not do: verify the signature or the image hash (shim and the firmware do that
at boot). It answers "does this build have a chance under Secure Boot", which is what
``netbootd check`` warns about. ``strip_signature`` removes the table (as ``sbattach
--remove`` does), for tests and for re-signing with one's own key (docs/secure-boot.md).
"""

from __future__ import annotations

import struct

from netbootd.core.model import Signature

__all__ = ["NotPE", "Signature", "inspect_pe", "security_directory", "strip_signature"]

WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
_OID_CN = bytes.fromhex("550403")  # 2.5.4.3 commonName
_OID_O = bytes.fromhex("55040a")  # 2.5.4.10 organizationName


class NotPE(ValueError):
    """The bytes are not a PE image (or are truncated where a PE field should be)."""


def signature_from_json(data: object) -> Signature | None:
    """A Signature recorded in a manifest (``Signature.to_json``), or None if malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("signed"), bool):
        return None
    signer, issuer = data.get("signer"), data.get("issuer")
    return Signature(data["signed"], signer if isinstance(signer, str) else None,
                     issuer if isinstance(issuer, str) else None)


def security_directory(head: bytes) -> tuple[int, int, int]:
    """(offset of the directory entry in the file, certificate table offset, its size) from
    the first bytes of a PE image (the headers: 4 KiB are plenty)."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        raise NotPE("no MZ header")
    (pe,) = struct.unpack_from("<I", head, 0x3C)
    if pe + 24 > len(head) or head[pe:pe + 4] != b"PE\0\0":
        raise NotPE("no PE signature")
    opt = pe + 24
    if opt + 2 > len(head):
        raise NotPE("truncated optional header")
    (magic,) = struct.unpack_from("<H", head, opt)
    if magic == 0x10B:  # PE32
        count_at, dirs_at = opt + 92, opt + 96
    elif magic == 0x20B:  # PE32+
        count_at, dirs_at = opt + 108, opt + 112
    else:
        raise NotPE(f"unknown optional header magic {magic:#x}")
    if dirs_at + 5 * 8 > len(head):
        raise NotPE("truncated data directories")
    (count,) = struct.unpack_from("<I", head, count_at)
    entry = dirs_at + 4 * 8
    if count < 5:
        return entry, 0, 0
    offset, size = struct.unpack_from("<II", head, entry)
    return entry, offset, size


def inspect_pe(image: bytes) -> Signature:
    """The image's Authenticode signer, or ``Signature(signed=False)``; NotPE if not PE."""
    _, offset, size = security_directory(image[:4096])
    if offset == 0 or size < 8 or offset + size > len(image):
        return Signature(signed=False)
    return parse_certificate_table(image[offset:offset + size])


def parse_certificate_table(table: bytes) -> Signature:
    """The signer named by the first PKCS#7 ``WIN_CERTIFICATE`` in an attribute certificate
    table (the bytes the security directory points at)."""
    pos = 0
    while pos + 8 <= len(table):
        length, _rev, ctype = struct.unpack_from("<IHH", table, pos)
        if length < 8 or pos + length > len(table):
            break
        if ctype == WIN_CERT_TYPE_PKCS_SIGNED_DATA:
            signer, issuer = _pkcs7_signer(table[pos + 8:pos + length])
            return Signature(signed=True, signer=signer, issuer=issuer)
        pos += (length + 7) & ~7  # records are 8-byte aligned
    return Signature(signed=False)


def strip_signature(image: bytes) -> bytes:
    """The image without its certificate table (security directory zeroed, table cut off).
    The table is not part of the Authenticode hash, so the rest of the image is unchanged."""
    entry, offset, size = security_directory(image[:4096])
    if offset == 0:
        return image
    out = bytearray(image[:offset] if offset + size >= len(image) else image)
    if offset + size < len(image):  # table not at the end: blank it in place
        out[offset:offset + size] = bytes(size)
    struct.pack_into("<II", out, entry, 0, 0)
    return bytes(out)


# -- a minimal DER walk: enough of PKCS#7 SignedData and X.509 to name the signer -------------
def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise NotPE("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise NotPE("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise NotPE("DER element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each element in data[start:end]."""
    out = []
    pos = start
    while pos < end:
        tag, vs, ve = _tlv(data, pos)
        out.append((tag, pos, vs, ve))
        pos = ve
    return out


def _name(data: bytes, vs: int, ve: int) -> str | None:
    """CN (else O) of an X.501 Name."""
    found: dict[bytes, str] = {}
    for _, _, rs, re_ in _children(data, vs, ve):  # SET of AttributeTypeAndValue
        for _, _, as_, ae in _children(data, rs, re_):
            parts = _children(data, as_, ae)
            if len(parts) == 2 and parts[0][0] == 0x06:
                oid = data[parts[0][2]:parts[0][3]]
                found.setdefault(oid, data[parts[1][2]:parts[1][3]].decode("utf-8", "replace"))
    return found.get(_OID_CN) or found.get(_OID_O)


def _pkcs7_signer(der: bytes) -> tuple[str | None, str | None]:
    try:
        _, vs, ve = _tlv(der, 0)  # ContentInfo
        parts = _children(der, vs, ve)
        cs = parts[1][2]  # [0] EXPLICIT content
        _, sds, sde = _tlv(der, cs)  # SignedData
        sd = _children(der, sds, sde)
        certs = [c for c in sd if c[0] == 0xA0]
        infos = [c for c in sd if c[0] == 0x31][-1:]  # signerInfos is the last SET
        # Each certificate: (issuer DER, serial DER) -> (subject, issuer names)
        by_id: dict[tuple[bytes, bytes], tuple[str | None, str | None]] = {}
        first: tuple[str | None, str | None] | None = None
        for _, _, s, e in certs:
            for _, _, xs, xe in _children(der, s, e):  # Certificate
                _, _, ts, te = _children(der, xs, xe)[0]  # tbsCertificate
                tbs = _children(der, ts, te)
                i = 1 if tbs[0][0] == 0xA0 else 0  # optional [0] version
                serial, issuer, subject = tbs[i], tbs[i + 2], tbs[i + 4]
                names = (_name(der, subject[2], subject[3]), _name(der, issuer[2], issuer[3]))
                by_id[(der[issuer[1]:issuer[3]], der[serial[2]:serial[3]])] = names
                first = first or names
        for _, _, s, e in infos:
            for _, _, is_, ie in _children(der, s, e):  # SignerInfo
                sid = _children(der, is_, ie)[1]  # issuerAndSerialNumber
                iss, ser = _children(der, sid[2], sid[3])
                found = by_id.get((der[iss[1]:iss[3]], der[ser[2]:ser[3]]))
                if found is not None:
                    return found
        return first or (None, None)
    except (NotPE, IndexError, ValueError):
        return None, None  # signed (a PKCS#7 record is there) but not a shape we read
