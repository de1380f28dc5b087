"""Build architectures: read from the kernel at import, recorded in the manifest, and a plan
never hands a client a build of another arch (option 93 11/19 are arm64, 0/7/9/16 amd64)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from helpers import BASE_CONFIG, make_config, make_store, write_build
from netbootd.cli import main
from netbootd.config import BootSettings, GroupSpec, Selector
from netbootd.core.build_arch import arch_mismatch, build_arch_for, selector_build_arches
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.intent import Intent, ReimageOrder
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.errors import BuildError
from netbootd.lab.demo import toml_dump
from netbootd.store.builds import load_store
from netbootd.store.importer import import_linux, import_tree
from netbootd.store.kernel_arch import kernel_arch
from netbootd.store.manifest import manifest_to_json, parse_manifest


def arm64_image() -> bytes:
    """The head of an arm64 ``Image`` with an EFI stub (as Debian ships it): MZ, magic, PE."""
    head = bytearray(4096)
    head[0:2] = b"MZ"
    head[0x38:0x3C] = b"ARM\x64"
    struct.pack_into("<I", head, 0x3C, 0x40)
    head[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<H", head, 0x44, 0xAA64)
    return bytes(head)


def bzimage(version: int = 0x20F, xloadflags: int = 1, pe_machine: int | None = 0x8664) -> bytes:
    head = bytearray(4096)
    head[0:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x82)
    if pe_machine is not None:
        head[0x82:0x86] = b"PE\0\0"
        struct.pack_into("<H", head, 0x86, pe_machine)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, version)
    head[0x236] = xloadflags
    return bytes(head)


# --- reading the kernel ---------------------------------------------------------------------

def test_kernel_arch_from_headers() -> None:
    assert kernel_arch(arm64_image()) == "arm64"
    assert kernel_arch(bzimage()) == "amd64"
    # A 32-bit bzImage (XLF_KERNEL_64 clear) is no amd64 kernel.
    assert kernel_arch(bzimage(xloadflags=0)) is None
    # An old boot protocol says nothing; the PE header still does.
    assert kernel_arch(bzimage(version=0x20A)) == "amd64"
    assert kernel_arch(bzimage(version=0x20A, pe_machine=None)) is None
    pe_only = bytearray(arm64_image())
    pe_only[0x38:0x3C] = b"\0\0\0\0"
    assert kernel_arch(bytes(pe_only)) == "arm64"  # an arm64 EFI application
    assert kernel_arch(b"\x1f\x8b\x08" + bytes(100)) is None  # gzip: cannot tell
    assert kernel_arch(b"") is None and kernel_arch(b"MZ") is None


def test_kernel_arch_of_real_efi_binaries() -> None:
    """Debian's own x86-64 EFI binaries, when installed here (ipxe is a test dependency)."""
    snp = Path("/usr/lib/ipxe/snponly.efi")
    if not snp.is_file():
        pytest.skip("ipxe not installed")
    assert kernel_arch(snp.read_bytes()[:4096]) == "amd64"


# --- manifests and import -------------------------------------------------------------------

def minimal(**extra: object) -> dict[str, object]:
    return {"format": 1, "name": "a", "version": "1", "kind": "linux", "kernel": "k",
            "files": {"k": {"size": 1, "sha256": "0" * 64}}, **extra}


def test_manifest_arch_defaults_to_amd64_and_round_trips() -> None:
    old = parse_manifest(json.dumps(minimal()))
    assert old.arch == "amd64" and "arch" not in old.extra
    arm = parse_manifest(json.dumps(minimal(arch="arm64")))
    assert arm.arch == "arm64" and parse_manifest(manifest_to_json(arm)).arch == "arm64"
    with pytest.raises(BuildError, match="arch: 'riscv64' is not one of amd64, arm64"):
        parse_manifest(json.dumps(minimal(arch="riscv64")))


def test_import_reads_the_arch_from_the_kernel(tmp_path: Path) -> None:
    k = tmp_path / "vmlinuz"
    k.write_bytes(arm64_image())
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"initrd")
    store = tmp_path / "store"
    assert import_linux(store, "arm", "1", k, [initrd]).arch == "arm64"
    catalog, problems = load_store(store)
    assert problems == [] and catalog.get("arm/1").arch == "arm64"
    with pytest.raises(BuildError, match="vmlinuz is an arm64 kernel, but the build says "
                                         "arch amd64"):
        import_linux(store, "arm", "2", k, [initrd], arch="amd64")
    # A kernel that does not say takes the declared arch, or amd64.
    gz = tmp_path / "gz" / "vmlinuz"
    gz.parent.mkdir()
    gz.write_bytes(b"\x1f\x8b\x08" + bytes(64))
    assert import_linux(store, "gz", "1", gz, [], arch="arm64").arch == "arm64"
    assert import_linux(store, "gz", "2", gz, []).arch == "amd64"


def test_tree_import_detects_or_checks_the_arch(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    (src / "Image").write_bytes(arm64_image())
    (src / "manifest.json").write_text(json.dumps(
        {"name": "t", "version": "1", "kind": "linux", "kernel": "Image", "files": ["Image"]}))
    assert import_tree(tmp_path / "store", src).arch == "arm64"
    (src / "manifest.json").write_text(json.dumps(
        {"name": "t", "version": "2", "kind": "linux", "kernel": "Image", "files": ["Image"],
         "arch": "amd64"}))
    with pytest.raises(BuildError, match="arm64 kernel"):
        import_tree(tmp_path / "store", src)


# --- decisions ------------------------------------------------------------------------------

def test_client_arch_codes_map_to_build_arches() -> None:
    for code in (0, 7, 9, 16):
        assert build_arch_for(Arch(code)) == "amd64", code
    for code in (11, 19):
        assert build_arch_for(Arch(code)) == "arm64", code
    for code in (6, 10, 15, 18):  # 32-bit x86 and ARM UEFI run neither
        assert build_arch_for(Arch(code)) is None, code
    assert arch_mismatch("demo/1.0", "amd64", None) is None
    assert selector_build_arches(["bios", "arm32", "arm64"]) == {"amd64", "arm64"}


@pytest.fixture
def store_with_arm(tmp_path: Path) -> Path:
    store = make_store(tmp_path / "store")
    write_build(store, "armdemo", "1.0", {"vmlinuz": arm64_image(), "initrd.img": b"i"},
                kind="linux", kernel="vmlinuz", initrds=["initrd.img"], arch="arm64")
    return store


def world(store: Path, groups: list[GroupSpec]) -> tuple[Inventory, object]:
    catalog, problems = load_store(store)
    assert problems == []
    return Inventory(groups, []), catalog


@pytest.mark.parametrize("arch", [Arch.EFI_ARM64, Arch.HTTP_ARM64])
def test_arm64_client_in_an_amd64_group_is_declined(store_with_arm: Path, arch: Arch) -> None:
    inv, catalog = world(store_with_arm, [
        GroupSpec("default", BootSettings(build="demo/1.0"), default=True)])
    d = decide(ClientIdentity(mac="52:54:00:aa:00:01", arch=arch), inv, catalog)  # type: ignore[arg-type]
    assert isinstance(d, Decline)
    assert d.reason.startswith("build demo/1.0 is for amd64 machines, but this client is an "
                               f"arm64 machine (option 93 = {int(arch)}")
    # The amd64 client of the same group still boots it; so does one whose arch is unknown.
    for a in (Arch.BIOS, Arch.EFI_BC, Arch.HTTP_X64, None):
        p = decide(ClientIdentity(mac="52:54:00:aa:00:02", arch=a), inv, catalog)  # type: ignore[arg-type]
        assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == "demo/1.0"


def test_an_arch_group_picks_the_arm64_build(store_with_arm: Path) -> None:
    inv, catalog = world(store_with_arm, [
        GroupSpec("default", BootSettings(build="demo/1.0"), default=True),
        GroupSpec("arm", BootSettings(build="armdemo/1.0", loader="grub"),
                  match=Selector(arch=("arm64",)))])
    for arch, ref in ((Arch.EFI_ARM64, "armdemo/1.0"), (Arch.HTTP_ARM64, "armdemo/1.0"),
                      (Arch.EFI_BC, "demo/1.0"), (Arch.BIOS, "demo/1.0")):
        p = decide(ClientIdentity(mac="52:54:00:aa:00:03", arch=arch), inv, catalog)  # type: ignore[arg-type]
        assert isinstance(p, BootPlan) and p.build is not None and p.build.ref == ref, arch
    # An x86 client pinned to the arm64 build is declined, not handed a kernel it cannot run.
    d = decide(ClientIdentity(mac="52:54:00:aa:00:04", arch=Arch.EFI_BC), inv, catalog,  # type: ignore[arg-type]
               build_override="armdemo/1.0")
    assert isinstance(d, Decline) and "is for arm64 machines" in d.reason


def test_reimage_checks_the_installer_arch(store_with_arm: Path, tmp_path: Path) -> None:
    write_build(store_with_arm, "disk", "1", {"disk.img": b"d" * 512}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": 512,
                      "raw_sha256": "0" * 64})
    config = make_config(tmp_path, {"nodes": {"n1": {"mac": "52:54:00:aa:00:05"}}})
    catalog, _ = load_store(store_with_arm)
    intent = Intent(installer="demo/1.0", reimage={"n1": ReimageOrder(7, "disk/1")})
    inv = Inventory(config.groups, config.nodes)
    ok = decide(ClientIdentity(mac="52:54:00:aa:00:05", arch=Arch.EFI_BC), inv, catalog,
                intent=intent)
    assert isinstance(ok, BootPlan) and ok.mode == "reimage"
    d = decide(ClientIdentity(mac="52:54:00:aa:00:05", arch=Arch.EFI_ARM64), inv, catalog,
               intent=intent)
    assert isinstance(d, Decline) and d.reason.startswith("reimage: build demo/1.0 is for amd64")


# --- netbootd check -------------------------------------------------------------------------

def test_check_reports_a_group_whose_build_cannot_match_its_arch(
        store_with_arm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(json.dumps(BASE_CONFIG))
    data["server"].update(state_dir=str(tmp_path / "state"), store_dir=str(store_with_arm))
    data["groups"]["arm"] = {"match": {"arch": "arm64"}, "build": "demo/2.0"}
    data["groups"]["arm-ok"] = {"match": {"arch": ["arm64"], "mac_prefix": "aa"},
                                "build": "armdemo/1.0"}
    data["groups"]["uefi-ipxe"]["build"] = "armdemo/1.0"
    p = tmp_path / "netbootd.toml"
    p.write_text(toml_dump(data))
    assert main(["check", "--config", str(p)]) == 1
    out = capsys.readouterr().out
    assert "groups.arm: build demo/2.0 is for amd64 machines, but match.arch = ['arm64'] " \
           "matches none" in out
    assert "groups.uefi-ipxe: build armdemo/1.0 is for arm64 machines, but match.arch = " \
           "['efi64'] matches none" in out
    assert "groups.arm-ok" not in out


def test_arm64_clients_default_to_grub(store_with_arm: Path) -> None:
    """No loader set: pxelinux for x86, GRUB for ARM64 (no arm64 syslinux or iPXE)."""
    inv, catalog = world(store_with_arm, [
        GroupSpec("default", BootSettings(build="demo/1.0"), default=True),
        GroupSpec("arm", BootSettings(build="armdemo/1.0"), match=Selector(arch=("arm64",)))])
    for arch, loader in ((Arch.EFI_ARM64, "grub"), (Arch.HTTP_ARM64, "grub"),
                         (Arch.BIOS, "pxelinux"), (Arch.EFI_BC, "pxelinux")):
        p = decide(ClientIdentity(mac="52:54:00:aa:00:06", arch=arch), inv, catalog)  # type: ignore[arg-type]
        assert isinstance(p, BootPlan) and p.loader == loader, arch
