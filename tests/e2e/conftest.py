"""Fixtures of the QEMU e2e tests: the demo appliance builds, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from netbootd.lab.demo import build_demo


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_demo(store, "1.0")
    build_demo(store, "2.0")
    return store
