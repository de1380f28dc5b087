"""EsxiIso reads an ESXi 8 installer ISO without mounting it: boot.cfg, the files a build
keeps, and their bytes, streamed.

ISOs are made by tests/esxi_iso_maker.py (pycdlib) in every name flavour (Rock Ridge + Joliet,
Joliet only, plain ISO9660), and, so that reader and writer are not the same library, by
xorriso, an independent ISO writer.
"""

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from esxi_iso_maker import KERNEL, MODULES, UNRELATED, boot_cfg_text, content, make_esxi8_iso
from netbootd.errors import BuildError
from netbootd.store.esxi_iso import EsxiIso, store_name
from netbootd.store.importer import import_esxi_iso


def read_all(iso: EsxiIso, name: str, chunk: int) -> bytes:
    pieces = list(iso.iter_chunks(name, chunk))
    assert all(0 < len(p) <= chunk for p in pieces)
    return b"".join(pieces)


@pytest.mark.parametrize(("rock_ridge", "joliet", "namespace"), [
    (True, True, "rock ridge"), (False, True, "joliet"), (False, False, "iso9660")])
def test_reads_an_esxi8_installer_iso(tmp_path: Path, rock_ridge: bool, joliet: bool,
                                      namespace: str) -> None:
    iso_path = tmp_path / "VMware-VMvisor-Installer-8.0U3.x86_64.iso"
    keep = make_esxi8_iso(iso_path, rock_ridge=rock_ridge, joliet=joliet)
    with EsxiIso(iso_path) as iso:
        assert iso.namespace == namespace
        assert iso.boot_cfg_name == "boot.cfg"
        assert iso.boot.kernel == KERNEL and iso.boot.modules == MODULES
        assert iso.boot.kernelopt == "runweasel cdromBoot"
        assert iso.boot.title == "Loading ESXi installer"
        assert iso.files() == [KERNEL, *MODULES, "mboot.c32", "efi/boot/bootx64.efi",
                               "boot.cfg"]
        assert set(iso.files()) == set(keep)
        assert not set(iso.files()) & {*UNRELATED, "efi/boot/boot.cfg", "boot.cat"}
        for name, data in keep.items():
            assert iso.size(name) == len(data), name
            assert read_all(iso, name, 4096) == data, name
        # s.v00 is larger than one chunk: streamed in several pieces, default chunk size too.
        assert len(list(iso.iter_chunks("s.v00", 65536))) == 5
        assert b"".join(iso.iter_chunks("s.v00")) == keep["s.v00"]


def test_kernelopt_and_mboot_efi(tmp_path: Path) -> None:
    keep = make_esxi8_iso(tmp_path / "e.iso", kernelopt="runweasel cdromBoot allowLegacyCPU=true",
                          with_mboot_efi=True)
    with EsxiIso(tmp_path / "e.iso") as iso:
        assert iso.boot.kernelopt == "runweasel cdromBoot allowLegacyCPU=true"
        assert iso.files()[-3:] == ["mboot.efi", "efi/boot/bootx64.efi", "boot.cfg"]
        assert read_all(iso, "mboot.efi", 1 << 20) == keep["mboot.efi"] == content("mboot.efi")


def test_efi_boot_cfg_is_used_only_without_the_root_one(tmp_path: Path) -> None:
    keep = make_esxi8_iso(tmp_path / "e.iso", root_boot_cfg=False)
    with EsxiIso(tmp_path / "e.iso") as iso:
        assert iso.boot_cfg_name == "efi/boot/boot.cfg"
        assert iso.files()[-1] == "efi/boot/boot.cfg" and "boot.cfg" not in iso.files()
        assert read_all(iso, "efi/boot/boot.cfg", 4096) == keep["efi/boot/boot.cfg"]


def test_missing_files_are_all_named(tmp_path: Path) -> None:
    make_esxi8_iso(tmp_path / "e.iso", missing=("k.b00", "vim.v00", "mboot.c32"))
    with pytest.raises(BuildError) as e:
        EsxiIso(tmp_path / "e.iso")
    assert "needs files the ISO does not have: k.b00, vim.v00, mboot.c32;" in str(e.value)
    assert "download it again" in str(e.value)


def test_a_uefi_loader_is_required(tmp_path: Path) -> None:
    make_esxi8_iso(tmp_path / "e.iso", missing=("efi/boot/bootx64.efi",))
    with pytest.raises(BuildError, match=r"does not have: mboot\.efi or efi/boot/bootx64\.efi"):
        EsxiIso(tmp_path / "e.iso")


def test_a_bad_boot_cfg_on_the_iso_is_reported_with_its_place(tmp_path: Path) -> None:
    make_esxi8_iso(tmp_path / "e.iso", kernelopt="runweasel\rks=http://x/ks.cfg")
    with pytest.raises(BuildError) as e:
        EsxiIso(tmp_path / "e.iso")
    assert f"{tmp_path / 'e.iso'}:/boot.cfg: " in str(e.value)
    assert "kernelopt= contains a control character" in str(e.value)


@pytest.mark.parametrize("data", [b"", b"not an iso\n" * 100, content("x") * 2000,
                                  b"\0" * (17 * 2048)])
def test_a_file_that_is_not_an_iso_is_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "esxi.iso"
    path.write_bytes(data)
    with pytest.raises(BuildError, match=r"not an ISO9660 image.*ESXi installer ISO"):
        EsxiIso(path)


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"cannot read.*give the path of an ESXi installer ISO"):
        EsxiIso(tmp_path / "nope.iso")


def test_an_iso_without_boot_cfg_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "readme.txt").write_text("not esxi")
    iso_path = tmp_path / "other.iso"
    xorriso(tree, iso_path, ["-r", "-J"])
    with pytest.raises(BuildError, match=r"no /BOOT\.CFG .* is it an ESXi installer ISO"):
        EsxiIso(iso_path)


def test_a_truncated_iso_is_refused(tmp_path: Path) -> None:
    """pycdlib alone would shorten the cut file silently: s.v00 would import as 100000 bytes."""
    iso_path = tmp_path / "e.iso"
    make_esxi8_iso(iso_path)
    raw = iso_path.read_bytes()
    start = raw.find(content("s.v00")[:64])
    assert start > raw.find(boot_cfg_text().encode()) > 0  # boot.cfg itself is still readable
    iso_path.write_bytes(raw[:start + 100_000])
    with pytest.raises(BuildError) as e:
        EsxiIso(iso_path)
    assert f"truncated: {start + 100_000} bytes, but its volume descriptor says {len(raw)}" in (
        str(e.value))
    assert "download the ISO again" in str(e.value)


def test_unknown_name_is_refused(tmp_path: Path) -> None:
    make_esxi8_iso(tmp_path / "e.iso")
    with EsxiIso(tmp_path / "e.iso") as iso:
        with pytest.raises(BuildError, match=r"no file 'nope\.v00' on the ISO"):
            iso.size("nope.v00")
        with pytest.raises(BuildError, match=r"no file 'nope\.v00' on the ISO"):
            iso.iter_chunks("nope.v00")


def test_store_names() -> None:
    assert store_name("/B.B00;1") == "b.b00"
    assert store_name("/EFI/BOOT/BOOTX64.EFI;1") == "efi/boot/bootx64.efi"
    assert store_name("/UPGRADE/README.;1") == "upgrade/readme"
    assert store_name("/efi/boot/boot.cfg") == "efi/boot/boot.cfg"


def xorriso(tree: Path, out: Path, extra: list[str]) -> None:
    binary = shutil.which("xorriso")
    if binary is None:
        pytest.skip("xorriso is not installed (.ci/install-deps.sh installs it)")
    subprocess.run([binary, "-as", "mkisofs", "-quiet", "-o", str(out), *extra, str(tree)],
                   check=True, timeout=120)


def esxi_tree(tree: Path) -> dict[str, bytes]:
    """The installer's files as a Linux copy of it looks (lower case); returns name -> bytes."""
    files = {n: content(n) for n in (KERNEL, *MODULES, "mboot.c32", "efi/boot/bootx64.efi",
                                     *UNRELATED)}
    files["boot.cfg"] = files["efi/boot/boot.cfg"] = boot_cfg_text().encode()
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    return files


def test_names_that_differ_only_in_case_are_ambiguous(tmp_path: Path) -> None:
    esxi_tree(tmp_path / "tree")
    (tmp_path / "tree" / "K.B00").write_bytes(b"which one?")
    xorriso(tmp_path / "tree", tmp_path / "x.iso", ["-r"])
    with pytest.raises(BuildError) as e:
        EsxiIso(tmp_path / "x.iso")
    assert "does not have: k.b00 (k.b00 present in several letter cases)" in str(e.value)


@pytest.mark.parametrize(("flags", "namespace"), [
    (["-r", "-J"], "rock ridge"), (["--norock", "-J"], "joliet"), (["--norock"], "iso9660")])
def test_reads_an_iso_written_by_xorriso(tmp_path: Path, flags: list[str],
                                         namespace: str) -> None:
    """The installer tree as a Linux copy of it looks (lower case), mastered by xorriso."""
    tree = tmp_path / "tree"
    keep = esxi_tree(tree)
    iso_path = tmp_path / "x.iso"
    xorriso(tree, iso_path, [*flags, "-b", "isolinux.bin", "-c", "boot.cat", "-no-emul-boot",
                             "-boot-load-size", "4"])
    with EsxiIso(iso_path) as iso:
        assert iso.namespace == namespace
        assert iso.files() == [KERNEL, *MODULES, "mboot.c32", "efi/boot/bootx64.efi",
                               "boot.cfg"]
        for name in iso.files():
            assert read_all(iso, name, 8192) == keep[name], name


def test_open_reads_like_a_file(tmp_path: Path) -> None:
    keep = make_esxi8_iso(tmp_path / "e.iso")
    with EsxiIso(tmp_path / "e.iso") as iso:
        with iso.open("s.v00") as f:
            pieces = []
            while piece := f.read(70_000):
                pieces.append(piece)
        assert b"".join(pieces) == keep["s.v00"] and len(pieces) == 5
        with iso.open("boot.cfg") as f:
            assert f.read() == boot_cfg_text().encode()
        with pytest.raises(BuildError, match=r"no file 'nope\.v00' on the ISO"):
            iso.open("nope.v00")


def test_import_publishes_what_the_iso_holds(tmp_path: Path) -> None:
    """The store's importer, fed by EsxiIso, keeps exactly the build's files, byte for byte."""
    keep = make_esxi8_iso(tmp_path / "e.iso", kernelopt="runweasel cdromBoot ks=cdrom:/KS.CFG")
    store = tmp_path / "store"
    store.mkdir()
    m = import_esxi_iso(store, "esxi", "8.0u3", tmp_path / "e.iso")
    assert m.kind == "esxi" and m.esxi is not None
    assert (m.esxi.kernel, m.esxi.modules) == (KERNEL, MODULES)
    assert m.esxi.kernelopt == "runweasel cdromBoot ks=cdrom:/KS.CFG"
    assert set(m.files) == set(keep)
    for name, data in keep.items():
        assert m.files[name].sha256 == hashlib.sha256(data).hexdigest(), name
