"""`netbootd boot KERNEL INITRD…`: a one-off build and config, no config file."""

import argparse
from pathlib import Path

import pytest

from netbootd.cli import main, quick_config
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.errors import ConfigError
from netbootd.store.builds import quick_build
from netbootd.store.catalog import BuildCatalog


def args(**kw: object) -> argparse.Namespace:
    base = {"address": "10.1.2.3", "interface": None, "state_dir": "/tmp/x", "http_port": 8080,
            "tftp_port": 69}
    return argparse.Namespace(**{**base, **kw})


def test_quick_build_and_config_boot_every_client_through_ipxe(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(b"k")
    (tmp_path / "a.cpio").write_bytes(b"a")
    (tmp_path / "b.cpio").write_bytes(b"b")
    build = quick_build(tmp_path / "bzImage", [tmp_path / "a.cpio", tmp_path / "b.cpio"],
                        "console=ttyS0")
    assert build.manifest.kernel == "kernel" and build.manifest.initrds == ("initrd0", "initrd1")
    assert build.path_of("initrd1") == tmp_path / "b.cpio"
    config = quick_config(args(), build.ref)
    inv = Inventory(config.groups, config.nodes)
    for arch in (Arch.BIOS, Arch.EFI_BC):
        plan = decide(ClientIdentity(mac="52:54:00:01:02:03", arch=arch), inv,
                      BuildCatalog([build]))
        assert isinstance(plan, BootPlan) and plan.loader == "ipxe" and plan.build is build
    assert config.http_base == "http://10.1.2.3:8080"


def test_quick_mode_errors_say_what_to_do(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--address or --interface is required"):
        quick_config(args(address=None), "quick/1")
    with pytest.raises(ConfigError, match="not an IPv4 address"):
        quick_config(args(address="10.1.2"), "quick/1")
    assert main(["boot", str(tmp_path / "missing-kernel"), "--address", "10.0.0.1"]) == 2
    assert "missing-kernel: not a readable file" in capsys.readouterr().err
