"""Build, with pycdlib, an ISO laid out like a VMware ESXi 8 installer, for import tests.

The layout follows the ESXi 8.0 installer ISO: at the root ``BOOT.CFG`` (``kernel=/b.b00`` and a
``modules=`` list), the kernel and modules as ISO9660 level-1 names (``B.B00;1``,
``JUMPSTRT.GZ;1``), ``MBOOT.C32``, ISOLINUX and an El Torito boot catalog; under ``EFI/BOOT/``
``BOOTX64.EFI`` (mboot.efi) and a copy of ``BOOT.CFG``; plus files an import must leave behind
(``UPGRADE/``, ``ISOLINUX.BIN``, ``EFIBOOT.IMG``...). Contents are small deterministic bytes,
different for every file, so a test can compare what was imported byte for byte.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pycdlib

KERNEL = "b.b00"
MODULES = ("jumpstrt.gz", "useropts.gz", "features.gz", "k.b00", "uc_intel.b00", "uc_amd.b00",
           "uc_hygon.b00", "procfs.b00", "vmx.v00", "vim.v00", "tpm.v00", "sb.v00", "s.v00",
           "atlantic.v00", "imgdb.tgz", "basemisc.tgz", "resvibs.tgz", "esxupdt.v00")
# On the ISO but not named by boot.cfg: an import must not keep these.
UNRELATED = ("isolinux.bin", "isolinux.cfg", "efiboot.img", "safeboot.c32", "menu.c32",
             "upgrade/precheck.py", "upgrade/metadata.zip", "efi/boot/crypto64.efi",
             "efi/boot/safeboot.efi")
DEFAULT_KERNELOPT = "runweasel cdromBoot"
# s.v00 (the base system VIB) is the largest module on a real ISO; here it spans several chunks.
LARGE = {"s.v00": 300_000}


def boot_cfg_text(kernelopt: str = DEFAULT_KERNELOPT) -> str:
    """An ESXi 8 installer's boot.cfg, as VMware ships it at the ISO's root."""
    modules = " --- ".join(f"/{m}" for m in MODULES)
    return ("bootstate=0\n"
            "title=Loading ESXi installer\n"
            "timeout=5\n"
            "prefix=\n"
            f"kernel=/{KERNEL}\n"
            f"kernelopt={kernelopt}\n"
            f"modules={modules}\n"
            "build=8.0.3-0.0.24022510\n"
            "updated=0\n")


def content(name: str) -> bytes:
    """Deterministic bytes for file ``name``, distinct per name."""
    size = LARGE.get(name, 200 + len(name) * 37)
    return hashlib.shake_256(f"esxi-test:{name}".encode()).digest(size)


def make_esxi8_iso(path: Path, *, kernelopt: str = DEFAULT_KERNELOPT,
                   with_mboot_efi: bool = False, missing: tuple[str, ...] = (),
                   rock_ridge: bool = True, joliet: bool = True,
                   root_boot_cfg: bool = True) -> dict[str, bytes]:
    """Write the ISO to ``path``; return store name -> bytes of every file an import keeps.

    ``missing``: store names boot.cfg names but the ISO leaves out. ``rock_ridge`` /
    ``joliet``: which name extensions the ISO carries besides plain ISO9660 (Rock Ridge names are
    lower case, Joliet names upper case, as Windows shows an ESXi ISO). ``root_boot_cfg=False``
    leaves only ``EFI/BOOT/BOOT.CFG``.
    """
    cfg = boot_cfg_text(kernelopt).encode()
    files: dict[str, bytes] = {m: content(m) for m in (KERNEL, *MODULES, "mboot.c32",
                                                        "efi/boot/bootx64.efi", *UNRELATED)}
    if with_mboot_efi:
        files["mboot.efi"] = content("mboot.efi")
    files["efi/boot/boot.cfg"] = cfg
    if root_boot_cfg:
        files["boot.cfg"] = cfg
    for name in missing:
        del files[name]

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident="ESXI-8.0U3",
            rock_ridge="1.09" if rock_ridge else None, joliet=3 if joliet else None)
    for d in ("EFI", "EFI/BOOT", "UPGRADE"):
        iso.add_directory(iso_path=f"/{d}", rr_name=d.split("/")[-1].lower() if rock_ridge
                          else None, joliet_path=f"/{d}" if joliet else None)
    for name, data in sorted(files.items()):
        iso.add_fp(io.BytesIO(data), len(data), iso_path=f"/{name.upper()};1",
                   rr_name=name.split("/")[-1] if rock_ridge else None,
                   joliet_path=f"/{name.upper()}" if joliet else None)
    # BIOS El Torito entry, as on the real ISO (ISOLINUX starts mboot.c32 from the CD).
    iso.add_eltorito("/ISOLINUX.BIN;1", bootcatfile="/BOOT.CAT;1",
                     rr_bootcatname="boot.cat" if rock_ridge else None,
                     joliet_bootcatfile="/BOOT.CAT" if joliet else None, boot_load_size=4)
    iso.write(str(path))
    iso.close()
    # The EFI copy of boot.cfg is kept only when it is the one the build is made from.
    leave = {*UNRELATED, "efi/boot/boot.cfg"} if root_boot_cfg else set(UNRELATED)
    return {n: b for n, b in files.items() if n not in leave}
