"""ESXi from its installer ISO to per-node boot files (issue 3 acceptance): an ISO laid out
like an ESXi 8 installer is imported with `netbootd image import --kind esxi`, and the files a
node gets are compared with golden copies: boot.cfg with prefix= the build's URL and the
node's kernelopt (ks= its kickstart), a pxelinux config running mboot.c32 -c .../boot.cfg, and
an iPXE script for UEFI chaining mboot.efi. Regenerate with NETBOOTD_UPDATE_GOLDEN=1.
The first-boot key and the time are fixed, so the kickstart token is the same on every run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from esxi_iso_maker import MODULES, make_esxi8_iso
from helpers import TEST_NOW_ISO, write_key
from netbootd.cli import main
from netbootd.lab.demo import toml_dump

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
ESX9 = "52:54:00:00:e5:09"
CASES = {
    "esxi-iso-bios": ["--arch", "bios"],
    "esxi-iso-uefi-ipxe": ["--arch", "efi64", "--ipxe"],
}


def config(tmp: Path) -> Path:
    data = {"server": {"address": "10.77.0.1", "state_dir": str(tmp / "state"),
                       "store_dir": str(tmp / "store")},
            "groups": {"default": {"default": True, "channel": "esxi-stable"}},
            "nodes": {"esx9": {"mac": ESX9, "hostname": "esx9.lab",
                               "cmdline": "systemMediaSize=min",
                               "vars": {"root_password_hash": "$6$salt$hash"}}}}
    path = tmp / "netbootd.toml"
    path.write_text(toml_dump(data))
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("esxi")
    cfg = config(tmp)
    write_key(tmp / "state" / "firstboot.key")
    iso = tmp / "VMware-VMvisor-Installer-8.0U3.x86_64.iso"
    make_esxi8_iso(iso, with_mboot_efi=True)
    assert main(["image", "import", "--config", str(cfg), "--kind", "esxi", "--name", "esxi",
                 "--version", "8.0u3", str(iso)]) == 0
    assert main(["channel", "set", "--config", str(cfg), "esxi-stable", "esxi/8.0u3"]) == 0
    return cfg


def render(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["render", "--config", str(cfg), "--at", TEST_NOW_ISO, "--mac", ESX9,
                 *args]) == 0
    return capsys.readouterr().out


def test_the_import_keeps_what_boot_cfg_needs(imported: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["image", "show", "--config", str(imported), "--json", "esxi/8.0u3"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["kind"] == "esxi"
    assert b["esxi"]["kernel"] == "b.b00" and tuple(b["esxi"]["modules"]) == MODULES
    assert b["esxi"]["kernelopt"] == "runweasel cdromBoot"
    assert sorted(b["files"]) == sorted(["b.b00", *MODULES, "mboot.c32", "mboot.efi",
                                         "efi/boot/bootx64.efi", "boot.cfg"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_per_node_files_match_golden(case: str, imported: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = render(imported, capsys, *CASES[case])
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("NETBOOTD_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()


def test_the_files_say_what_vmware_documents(imported: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    key = ESX9.replace(":", "-")
    base = "http://10.77.0.1:8080"
    bios = render(imported, capsys, "--arch", "bios")
    cfg_url = f"{base}/esxi/{key}/esxi/8.0u3/boot.cfg"
    assert f"  KERNEL {base}/builds/esxi/8.0u3/mboot.c32\n  APPEND -c {cfg_url}\n" in bios
    assert f"prefix={base}/builds/esxi/8.0u3/\n" in bios
    # ks= carries the node's first-boot token (docs/security.md): <issued>.<expires>.<sig>
    assert re.search(rf"^kernelopt=runweasel cdromBoot systemMediaSize=min "
                     rf"ks={base}/ks/{key}/esxi/8\.0u3/\d+\.\d+\.[\w-]+/ks\.cfg$", bios, re.M)
    assert "kernel=b.b00\n" in bios and f"modules={' --- '.join(MODULES)}\n" in bios
    uefi = render(imported, capsys, "--arch", "efi64", "--ipxe")
    assert f"chain {base}/builds/esxi/8.0u3/mboot.efi -c {cfg_url}\n" in uefi
