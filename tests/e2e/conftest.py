"""Fixtures of the QEMU e2e tests: the appliance builds, made once per session."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from netbootd.lab.demo import DEFAULT_CACHE, KVM_RECIPE, build_demo


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_demo(store, "1.0")
    build_demo(store, "2.0")
    return store


@pytest.fixture(scope="session")
def kvm_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding kvm-hypervisor/1.0; the recipe's artefact cache makes reruns cheap."""
    store = tmp_path_factory.mktemp("kvm-store")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(KVM_RECIPE), "--store", str(store),
                           "--version", "1.0", "--cache", str(DEFAULT_CACHE)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"kvm-hypervisor build: {time.monotonic() - t0:.1f} s")
    return store
