import uuid

import pytest

from netbootd.core.identity import (
    Arch,
    ClientIdentity,
    arch_from_ipxe,
    guid_candidates,
    guid_from_option97,
    normalize_mac,
    parse_arch,
    pxelinux_guid_name,
)

CANONICAL = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"
# What QEMU -smbios type=1,uuid=CANONICAL puts in option 97 (pxe-facts.md)
WIRE = bytes.fromhex("00 4f 5a 1c 8e 7d 2b 39 4c 9a 60 0f 1e 2d 3c 4b 5a".replace(" ", ""))
PXELINUX_NAME = "4f5a1c8e-7d2b-394c-9a60-0f1e2d3c4b5a"


def test_option97_gives_the_canonical_guid() -> None:
    assert guid_from_option97(WIRE) == CANONICAL


def test_pxelinux_spelling_is_the_raw_bytes_big_endian() -> None:
    assert pxelinux_guid_name(CANONICAL) == PXELINUX_NAME
    assert str(uuid.UUID(bytes=WIRE[1:])) == PXELINUX_NAME


def test_both_spellings_map_back_to_the_canonical_guid() -> None:
    assert guid_candidates(PXELINUX_NAME)[0] == CANONICAL
    assert CANONICAL in guid_candidates(CANONICAL)


@pytest.mark.parametrize("raw", [b"\x00" + b"\x00" * 16, b"\x00" + b"\xff" * 16,
                                 b"\x01" + WIRE[1:], WIRE[:10], b""])
def test_guids_that_identify_nobody_are_dropped(raw: bytes) -> None:
    assert guid_from_option97(raw) is None


def test_all_zero_guid_is_never_a_candidate() -> None:
    assert guid_candidates("00000000-0000-0000-0000-000000000000") == ()


@pytest.mark.parametrize("text", ["52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "525400abcd01",
                                  "5254.00ab.cd01"])
def test_mac_normal_form(text: str) -> None:
    assert normalize_mac(text) == "52:54:00:ab:cd:01"


@pytest.mark.parametrize("text", ["", "52:54:00", "zz:54:00:ab:cd:01", "52:54:00:ab:cd:01:02"])
def test_bad_macs_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="52:54:00:12:34:56"):
        normalize_mac(text)


def test_arch_families() -> None:
    assert Arch.EFI_BC.family == Arch.EFI_X64.family == "efi64"
    assert Arch.HTTP_X64.is_http_boot and not Arch.EFI_BC.is_http_boot
    assert parse_arch("7") is Arch.EFI_BC and parse_arch("bios") is Arch.BIOS
    assert arch_from_ipxe("x86_64", "efi") is Arch.EFI_BC
    assert arch_from_ipxe("i386", "pcbios") is Arch.BIOS
    with pytest.raises(ValueError, match="unknown arch"):
        parse_arch("sparc")


def test_merge_keeps_own_fields() -> None:
    a = ClientIdentity(mac="52:54:00:00:00:01", ip="10.0.0.5")
    b = ClientIdentity(mac="52:54:00:00:00:09", guid=CANONICAL, arch=Arch.BIOS)
    m = a.merged_with(b)
    assert (m.mac, m.guid, m.arch, m.ip) == (a.mac, CANONICAL, Arch.BIOS, "10.0.0.5")


def test_placeholder_guids_identify_nobody_in_either_byte_order() -> None:
    for spelling in ("03020100-0504-0706-0809-0a0b0c0d0e0f",
                     "00010203-0405-0607-0809-0a0b0c0d0e0f",  # the same, pxelinux's order
                     "03000200-0400-0500-0006-000700080009",
                     "00020003-0004-0005-0006-000700080009"):
        assert guid_candidates(spelling) == (), spelling
