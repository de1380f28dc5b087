"""Debian 12's own cloud-init, unpacked (never installed) for checking what netbootd serves.

``apt-get download cloud-init`` + ``dpkg-deb -x`` into the recipe cache (images/.cache, shared
with the image recipes), then its ``cloudinit`` package runs under the system ``python3`` with
Debian's python3 libraries that it imports (.ci/install-deps.sh installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "images"))
from recipe_common import download_deb, prepare_cache, unpack_deb  # noqa: E402

CACHE = REPO / "images" / ".cache"
SYSTEM_PYTHON = "/usr/bin/python3"
# What cloudinit.cmd.main's schema command and the network parsers import (Depends: of the
# Debian package, less what they do not touch).
PY_DEPS = ("yaml", "jsonschema", "jinja2", "configobj", "jsonpatch", "netifaces", "requests")


def cloudinit_path() -> Path:
    """The unpacked ``dist-packages`` holding Debian's ``cloudinit``; skips without the tools."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get and dpkg-deb are needed to fetch Debian's cloud-init")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import " + ", ".join(PY_DEPS)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"Debian's cloud-init needs python3 modules {PY_DEPS}: {probe.stderr}")
    prepare_cache(CACHE)
    root = unpack_deb(CACHE, download_deb(CACHE, "cloud-init"))
    found = root / "usr" / "lib" / "python3" / "dist-packages"
    assert (found / "cloudinit").is_dir(), f"no cloudinit package in {root}"
    return found


def version(path: Path) -> str:
    return run_python(path, "from cloudinit import version; "
                            "print(version.version_string())").stdout.strip()


def run_python(path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120)


def schema_check(path: Path, user_data: Path) -> subprocess.CompletedProcess[str]:
    """``cloud-init schema -c FILE``: cloud-init's own validator, as on the node."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([SYSTEM_PYTHON, "-m", "cloudinit.cmd.main", "schema", "-c",
                           str(user_data)], capture_output=True, text=True, env=env,
                          timeout=120)


def load_yaml(text: str) -> Any:
    """``text`` as parsed by the system's PyYAML, cloud-init's own YAML loader (the venv has
    no YAML library)."""
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import json, sys, yaml; "
                           "print(json.dumps(yaml.safe_load(sys.stdin.read())))"],
                          input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
