"""The KVM hypervisor recipe removes its work dir only once nothing is mounted in it.

mmdebstrap mounts /proc, /sys and /dev entries inside the chroot; a build interrupted (or a
mount held busy) could leave one behind, and deleting the work dir through it would delete
the host's files. A bind mount of a directory standing in for the host's shows it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "images" / "kvm-hypervisor" / "build.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")


def load_recipe() -> ModuleType:
    sys.path.insert(0, str(RECIPE.parents[1]))  # the recipes import recipe_common
    spec = importlib.util.spec_from_file_location("kvm_recipe", RECIPE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_work_dir_is_unmounted_before_it_is_removed(tmp_path: Path) -> None:
    recipe = load_recipe()
    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "sentinel").write_text("a host file")
    work = tmp_path / ".work-x"
    (work / "root" / "dev").mkdir(parents=True)
    (work / "out" / "vmlinuz").parent.mkdir()
    (work / "out" / "vmlinuz").write_text("k")
    subprocess.run(["mount", "--bind", str(host), str(work / "root" / "dev")], check=True)
    try:
        assert recipe.mounts_under(work) == [str((work / "root" / "dev").resolve())]
        recipe.remove_work_dir(work)
        assert not work.exists()
        assert (host / "sentinel").read_text() == "a host file"
    finally:
        subprocess.run(["umount", str(work / "root" / "dev")], check=False,
                       capture_output=True)
