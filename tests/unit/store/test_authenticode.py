"""The PE/Authenticode reader: who signed a kernel, and removing a signature."""

from pathlib import Path

import pytest
from pe_maker import make_pe

from netbootd.store.authenticode import NotPE, Signature, inspect_pe, strip_signature
from netbootd.store.builds import kernel_signature

SIGNER = "Debian Secure Boot Signer 2022 - linux"
ISSUER = "Debian Secure Boot CA"


@pytest.mark.parametrize("pe32plus", [True, False])
def test_signer_is_the_certificate_the_signer_info_names(pe32plus: bool) -> None:
    sig = inspect_pe(make_pe(SIGNER, ISSUER, pe32plus=pe32plus))
    # The CA's certificate comes first in the blob; the SignerInfo points at the leaf.
    assert sig == Signature(True, SIGNER, ISSUER)
    assert sig.describe() == f"signed by {SIGNER} (issuer {ISSUER})"


def test_unsigned_and_stripped_images() -> None:
    assert inspect_pe(make_pe()) == Signature(False)
    signed = make_pe(SIGNER, ISSUER)
    stripped = strip_signature(signed)
    assert inspect_pe(stripped) == Signature(False)
    assert stripped == make_pe()  # exactly the image before the table was appended
    assert strip_signature(stripped) == stripped


@pytest.mark.parametrize("data", [b"", b"MZ" + b"\0" * 100, b"\x7fELF" + b"\0" * 200,
                                  make_pe()[:0x90]])
def test_not_pe(data: bytes) -> None:
    with pytest.raises(NotPE):
        inspect_pe(data)


def test_hostile_tables_do_not_raise() -> None:
    signed = bytearray(make_pe(SIGNER, ISSUER))
    table_at = len(make_pe())
    for cut in (1, 9, 40, 100):  # the DER runs out in the middle
        broken = bytes(signed[:table_at + 8]) + bytes(signed[table_at + 8 + cut:])
        assert isinstance(inspect_pe(broken).signed, bool)
    signed[table_at:table_at + 4] = (3).to_bytes(4, "little")  # dwLength below its header
    assert inspect_pe(bytes(signed)) == Signature(False)


def test_kernel_signature_reads_headers_and_table(tmp_path: Path) -> None:
    (tmp_path / "signed").write_bytes(make_pe(SIGNER, ISSUER, body=b"\0" * 100000))
    (tmp_path / "plain").write_bytes(make_pe())
    (tmp_path / "text").write_bytes(b"kernel 1.0")
    assert kernel_signature(tmp_path / "signed") == Signature(True, SIGNER, ISSUER)
    assert kernel_signature(tmp_path / "plain") == Signature(False)
    assert kernel_signature(tmp_path / "text") is None
    assert kernel_signature(tmp_path / "missing") is None


SIGNED_BINARIES = [
    (Path("/var/lib/netbootd/loaders/grub/shimx64.efi"), "Microsoft Windows UEFI Driver "
     "Publisher", "Microsoft Corporation UEFI CA 2011"),
    (Path("/var/lib/netbootd/loaders/grub/grubx64.efi"), "Debian Secure Boot Signer 2022 - "
     "grub2", "Debian Secure Boot CA"),
]


@pytest.mark.parametrize(("path", "signer", "issuer"), SIGNED_BINARIES)
def test_debians_signed_binaries(path: Path, signer: str, issuer: str) -> None:
    # Prepared by `netbootd loaders grub` (.ci/install-deps.sh runs it).
    if not path.is_file():
        pytest.skip(f"{path} absent: run `netbootd loaders grub`")
    data = path.read_bytes()
    assert inspect_pe(data) == Signature(True, signer, issuer)
    assert inspect_pe(strip_signature(data)) == Signature(False)
