"""The config examples in docs/examples/ pass `netbootd check`, and a real `netbootd serve` on
loopback answers each node's files exactly as `netbootd render` showed them before the first
start (the tokens render printed open them: render made the first-boot key serve uses). Over
the examples and variants of them, every config `check` passes renders every node."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from example_configs import (
    EXAMPLE_NAMES,
    example_data,
    http_get,
    import_builds,
    netbootd,
    rendered_files,
    serving,
    tftp_get,
    untoken,
    write_example,
)
from netbootd.check import run_check
from netbootd.cli import main
from netbootd.lab.demo import toml_dump


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_checks_and_serves_what_render_showed(name: str, tmp_path: Path) -> None:
    config = write_example(name, tmp_path, loopback=True)
    data = tomllib.loads(config.read_text())
    checked = netbootd("check", "--config", str(config))
    assert checked.returncode == 0 and ": ok (" in checked.stdout, checked.stdout
    key_file = tmp_path / "state" / "firstboot.key"
    assert not key_file.exists()  # a fresh state dir: serve never ran
    if "reimage" in data:  # the lab's drill: one laptop ordered to be reimaged, one not
        first = next(iter(data["nodes"]))
        netbootd("node", "reimage", "--config", str(config), first, "--image", "lab-disk/7",
                 "--yes")
    at = time.time()
    files: dict[tuple[str, str], str] = {}
    for node in data["nodes"].values():
        for arch in ("bios", "efi64"):
            files |= rendered_files(config, node["mac"], arch, at)
    key = key_file.read_bytes()
    assert files
    if "reimage" in data:
        assert any("netbootd.disk_url=" in c for c in files.values())
    else:
        assert any(c == "http" for c, _ in files)
    with serving(config):
        for (channel, fname), content in sorted(files.items()):
            if channel == "http":
                status, body = http_get(fname)
                assert status == 200, (fname, body)
            else:
                body = tftp_get(data["tftp"]["port"], fname)
            assert untoken(body.decode()) == untoken(content), fname
    assert key_file.read_bytes() == key  # serve kept the key render created


def _variants(base: dict[str, Any]) -> list[dict[str, Any]]:
    """Edits of one example: each loader, mode and secure_boot on its default group, and vars
    an operator might drop or get wrong."""
    out = []
    group = next(n for n, g in base["groups"].items() if g.get("default"))
    for loader, mode, secure, vars_ in itertools.product(
            ("pxelinux", "ipxe", "grub"), ("appliance", "local"), (False, True),
            ({}, None, {"power_state": "sometimes"})):
        d = json.loads(json.dumps(base))
        g = d["groups"][group]
        g.update(loader=loader, mode=mode)
        if secure:
            g["secure_boot"] = True
        if vars_ is not None:
            g["vars"] = vars_
            for n in d["nodes"].values():
                n.pop("vars", None)
        out.append(d)
    return out


def test_every_config_check_passes_renders_every_node(tmp_path: Path) -> None:
    clean = rejected = 0
    for name in EXAMPLE_NAMES:
        base = example_data(name, tmp_path / name)
        first = tmp_path / name / "base.toml"
        first.write_text(toml_dump(base))
        import_builds(first, base, tmp_path / name)
        for i, data in enumerate(_variants(base)):
            config = tmp_path / name / f"variant-{i}.toml"
            config.write_text(toml_dump(data))
            report = run_check(config)
            if report.exit_code != 0:
                rejected += 1
                continue
            clean += 1
            for node in data["nodes"].values():
                for arch in ("bios", "efi64"):
                    out, err = io.StringIO(), io.StringIO()
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        code = main(["render", "--config", str(config), "--mac", node["mac"],
                                     "--arch", arch])
                    assert code == 0, (name, i, data["groups"], arch, err.getvalue())
                    assert "==> " in out.getvalue()
    assert clean > 0 and rejected > 0, (clean, rejected)


def test_an_esxi_kickstart_without_a_hash_is_not_served(tmp_path: Path) -> None:
    data = example_data("esxi-iso", tmp_path, loopback=True)
    data["groups"]["esxi"]["vars"] = {"insecure_no_root_password": True}
    config = write_example("esxi-iso", tmp_path, data=data)
    mac = data["nodes"]["esx01"]["mac"]
    ks_url = next(name for (_, name) in rendered_files(config, mac, "bios", time.time())
                  if name.endswith("/ks.cfg"))
    del data["groups"]["esxi"]["vars"]  # the opt-in gone: the same URL must not answer
    config.write_text(toml_dump(data))
    assert netbootd("check", "--config", str(config), check=False).returncode == 1
    with serving(config):
        status, body = http_get(ks_url)
    assert status == 404 and b"root_password_hash" in body and b"rootpw" in body
