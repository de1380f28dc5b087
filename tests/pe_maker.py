"""Small PE images for tests: headers laid out as the PE/COFF specification says, optionally
an attribute certificate table holding a PKCS#7 SignedData whose SignerInfo names a
certificate by issuer and serial (DER built here by hand, no crypto: nothing verifies it)."""

from __future__ import annotations

import struct

OID_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")
OID_CN = bytes.fromhex("550403")


def der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def seq(*items: bytes) -> bytes:
    return der(0x30, b"".join(items))


def name(cn: str) -> bytes:
    return seq(der(0x31, seq(der(0x06, OID_CN), der(0x0C, cn.encode()))))


def certificate(subject: str, issuer: str, serial: int) -> bytes:
    alg = seq(der(0x06, bytes.fromhex("2a864886f70d01010b")), b"\x05\x00")
    tbs = seq(der(0xA0, der(0x02, b"\x02")), der(0x02, serial.to_bytes(4, "big")), alg,
              name(issuer), seq(b""), name(subject), seq(b""))
    return seq(tbs, alg, der(0x03, b"\x00sig"))


def signed_data(signer: str, issuer: str, decoy: bool = True) -> bytes:
    """SignedData with two certificates (the CA first, as real signatures often carry a
    chain) and one SignerInfo naming the signer's certificate."""
    certs = [certificate(signer, issuer, 7)]
    if decoy:
        certs.insert(0, certificate(issuer, issuer, 1))
    signer_info = seq(der(0x02, b"\x01"), seq(name(issuer), der(0x02, (7).to_bytes(4, "big"))))
    sd = seq(der(0x02, b"\x01"), der(0x31, b""), seq(der(0x06, b"\x2b\x06\x01")),
             der(0xA0, b"".join(certs)), der(0x31, signer_info))
    return seq(der(0x06, OID_SIGNED_DATA), der(0xA0, sd))


def make_pe(signer: str | None = None, issuer: str = "Test CA", pe32plus: bool = True,
            body: bytes = b"\x90" * 512) -> bytes:
    """A PE image (headers + ``body``), with a certificate table at its end when ``signer``."""
    e_lfanew = 0x80
    opt_size = 240 if pe32plus else 224
    head = bytearray(0x400)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, e_lfanew)
    head[e_lfanew:e_lfanew + 4] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", head, e_lfanew + 4, 0x8664, 0, 0, 0, 0, opt_size, 0x22)
    opt = e_lfanew + 24
    struct.pack_into("<H", head, opt, 0x20B if pe32plus else 0x10B)
    count_at, dirs_at = (opt + 108, opt + 112) if pe32plus else (opt + 92, opt + 96)
    struct.pack_into("<I", head, count_at, 16)
    image = bytes(head) + body
    if signer is None:
        return image
    blob = signed_data(signer, issuer)
    record = struct.pack("<IHH", 8 + len(blob), 0x0200, 0x0002) + blob
    record += b"\0" * (-len(record) % 8)
    out = bytearray(image)
    struct.pack_into("<II", out, dirs_at + 4 * 8, len(image), len(record))
    return bytes(out) + record
