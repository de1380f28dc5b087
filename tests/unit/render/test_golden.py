"""Golden rendered files: `netbootd render` output for representative nodes.

Regenerate after an intended template change with NETBOOTD_UPDATE_GOLDEN=1, and review the diff.
The first-boot key and the time are fixed (TEST_KEY, ``--at TEST_NOW_ISO``), so the tokens in
first-boot URLs are the same on every run.
"""

import json
import os
from pathlib import Path

import pytest

from helpers import BASE_CONFIG, TEST_NOW_ISO, make_store, write_key
from netbootd.cli import main
from netbootd.lab.demo import toml_dump

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
CASES = {
    "web1-bios-by-guid": ["--mac", "52:54:00:00:00:01", "--uuid",
                          "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a", "--arch", "bios"],
    "db1-pinned-uefi-ipxe": ["--mac", "52:54:00:00:00:02", "--arch", "efi64", "--ipxe"],
    "esx1-bios": ["--mac", "52:54:00:00:00:03", "--arch", "bios"],
    "esx1-uefi": ["--mac", "52:54:00:00:00:03", "--arch", "7"],
    "kiosk-menu-bios": ["--mac", "52:54:00:00:00:04", "--arch", "bios"],
    "kiosk-menu-uefi-ipxe": ["--mac", "52:54:00:00:00:04", "--arch", "efi64", "--ipxe"],
    "lab1-local-bios": ["--mac", "52:54:00:00:00:05", "--arch", "bios"],
    "lab1-local-uefi-ipxe": ["--mac", "52:54:00:00:00:05", "--arch", "efi64", "--ipxe"],
    "unknown-bios": ["--mac", "52:54:00:aa:bb:cc", "--arch", "0"],
    "unknown-uefi": ["--mac", "52:54:00:aa:bb:cd", "--arch", "efi64"],
    "grub1-bios": ["--mac", "52:54:00:00:00:06", "--arch", "bios"],
    "grub1-uefi": ["--mac", "52:54:00:00:00:06", "--arch", "efi64"],
    "grub-menu-bios": ["--mac", "52:54:00:00:00:08", "--arch", "bios"],
    "grub-local-uefi": ["--mac", "52:54:00:00:00:09", "--arch", "efi64"],
    "sb1-uefi": ["--mac", "52:54:00:00:00:07", "--arch", "efi64"],
    "sb1-bios": ["--mac", "52:54:00:00:00:07", "--arch", "bios"],
}
# GRUB nodes (loader = "grub", and a Secure Boot group) added to the shared config here.
GRUB_GROUPS = {"sb": {"build": "demo/1.0", "secure_boot": True}}
GRUB_NODES = {
    "grub1": {"mac": "52:54:00:00:00:06", "loader": "grub", "cmdline": 'note="a b;c" x=$y'},
    "sb1": {"mac": "52:54:00:00:00:07", "group": "sb"},
    "grubmenu": {"mac": "52:54:00:00:00:08", "loader": "grub", "mode": "menu",
                 "build": "demo/2.0", "vars": {"menu_timeout": 25}},
    "grublocal": {"mac": "52:54:00:00:00:09", "loader": "grub", "mode": "local"},
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("golden")
    # Fixed paths in the output: the store location does not appear in rendered files.
    make_store(tmp / "store")
    write_key(tmp / "state" / "firstboot.key")
    data = json.loads(json.dumps(BASE_CONFIG))
    data["server"].update(state_dir=str(tmp / "state"), store_dir=str(tmp / "store"))
    data["groups"].update(GRUB_GROUPS)
    data["nodes"].update(GRUB_NODES)
    path = tmp / "netbootd.toml"
    path.write_text(toml_dump(data))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden(case: str, config_file: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--config", str(config_file), "--at", TEST_NOW_ISO,
                 *CASES[case]]) == 0
    out = capsys.readouterr().out
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("NETBOOTD_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out)
    assert out == golden.read_text()


def test_render_of_a_declined_node(config_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    text = config_file.read_text().replace('build = "demo/1.0"', 'build = "demo/7.7"', 1)
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["render", "--config", str(bad), "--mac", "52:54:00:12:12:12"]) == 2
    assert "decline: no build named demo/7.7 (known: demo/1.0, demo/2.0, esxi/8.0u3)" in \
        capsys.readouterr().out
