import json
import os
from pathlib import Path

import pytest

from helpers import make_store
from netbootd.errors import BuildError
from netbootd.store.builds import load_store
from netbootd.store.manifest import parse_manifest


def test_a_symlink_out_of_the_build_makes_the_build_unusable(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    secret = tmp_path / "secret"
    secret.write_text("kernel 2.0")  # same size: only containment can refuse it
    victim = store / "builds" / "demo" / "2.0" / "vmlinuz"
    victim.unlink()
    os.symlink(secret, victim)
    catalog, problems = load_store(store)
    assert "demo/2.0" not in catalog and "demo/1.0" in catalog
    assert any("outside its root" in p and "demo/2.0" in p for p in problems), problems


def test_manifest_problems_are_all_listed(tmp_path: Path) -> None:
    bad = {"format": 2, "name": "../x", "version": "1", "kind": "esxi",
           "files": {"b.b00": {"size": -1, "sha256": "zz"}, "/abs": {"size": 1, "sha256": "a"}},
           "esxi": {"kernel": "b.b00", "modules": ["k.b00"]}, "cmdline": "a\nb"}
    with pytest.raises(BuildError) as e:
        parse_manifest(json.dumps(bad))
    text = str(e.value)
    for part in ["format: expected 1", "name: '../x'", "files.b.b00", "files./abs",
                 "esxi: files missing from the build: b.b00, k.b00, mboot.c32",
                 "cmdline: may not contain a newline"]:
        assert part in text, part


def test_esxi_build_needs_its_loaders(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    path = store / "builds" / "esxi" / "8.0u3" / "manifest.json"
    data = json.loads(path.read_text())
    del data["files"]["mboot.c32"]
    with pytest.raises(BuildError, match=r"mboot\.c32"):
        parse_manifest(json.dumps(data))
