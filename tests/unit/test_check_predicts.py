"""`netbootd check` (a subprocess, as an operator runs it) reports each config that would fail at
boot, with the key to change and the fix, and its exit code says so: 0 ok, 1 problems, 2 the
file breaks the schema. Its --json report has the documented shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from example_configs import fake_bzimage, fake_initrd, fake_loaders, netbootd
from helpers import BASE_CONFIG, make_store
from netbootd.config import load_config
from netbootd.lab.demo import toml_dump
from netbootd.service import firstboot_key
from netbootd.store.importer import import_kind


def site(tmp: Path, **changes: Any) -> Path:
    """BASE_CONFIG with a store and loaders under ``tmp``; ``changes`` edit sections."""
    if not (tmp / "store").exists():
        make_store(tmp / "store")
    data = json.loads(json.dumps(BASE_CONFIG))
    data["server"].update(state_dir=str(tmp / "state"), store_dir=str(tmp / "store"))
    data["loaders"] = {"dirs": fake_loaders(tmp)}
    for path, value in changes.items():
        *parents, last = path.split("__")
        t = data
        for p in parents:
            t = t.setdefault(p.replace("_", "-") if p == "uefi_ipxe" else p, {})
        t[last] = value
    p = tmp / "netbootd.toml"
    p.write_text(toml_dump(data))
    return p


def check(config: Path) -> tuple[int, dict[str, Any]]:
    r = netbootd("check", "--json", "--config", str(config), check=False)
    assert r.stderr == "", r.stderr  # never a traceback
    return r.returncode, json.loads(r.stdout)


def finding(report: dict[str, Any], key: str) -> dict[str, str]:
    hits = [f for f in report["errors"] if f["key"] == key]
    assert hits, f"no error for {key}: {report['errors']}"
    return hits[0]


def test_the_base_site_is_clean_and_renders_every_node(tmp_path: Path) -> None:
    code, report = check(site(tmp_path))
    assert (code, report["ok"], report["errors"]) == (0, True, [])
    assert report["nodes"] == 6 and report["rendered_files"] > 6
    text = netbootd("check", "--config", str(site(tmp_path))).stdout
    assert "ok (3 groups, 6 nodes, " in text


def test_a_user_data_template_that_does_not_exist(tmp_path: Path) -> None:
    code, report = check(site(tmp_path, groups__default__user_data="my-user-data.j2"))
    f = finding(report, "groups.default.user_data")
    assert code == 1 and "'my-user-data.j2' not found" in f["problem"]
    assert "server.templates_dir" in f["fix"]


def test_an_undefined_template_variable(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "site-user-data.j2").write_text("#cloud-config\nfqdn: {{ vars.fqdn_typo }}\n")
    config = site(tmp_path, server__templates_dir=str(templates),
                  nodes__db1__user_data="site-user-data.j2")
    code, report = check(config)
    f = finding(report, "nodes.db1")
    assert code == 1 and "fqdn_typo" in f["problem"] and "site-user-data.j2" in f["problem"]
    assert f["fix"]


def test_an_arch_name_no_firmware_sends(tmp_path: Path) -> None:
    code, report = check(site(tmp_path, groups__uefi_ipxe__match={"arch": "x64-uefi"}))
    assert code == 2 and report["schema_ok"] is False
    f = finding(report, "groups.uefi-ipxe.match.arch")
    assert "unknown arch 'x64-uefi'" in f["problem"] and "efi64" in f["problem"]


def test_selector_values_that_can_never_match(tmp_path: Path) -> None:
    code, report = check(site(tmp_path, groups__uefi_ipxe__match={
        "mac_prefix": "52:54:00:00:00:00:01", "vendor_class": "UEFI"}))
    assert code == 1
    assert "never matches" in finding(report, "groups.uefi-ipxe.match.mac_prefix")["problem"]
    assert "PXEClient" in finding(report, "groups.uefi-ipxe.match.vendor_class")["fix"]


def test_an_interface_and_a_templates_dir_that_do_not_exist(tmp_path: Path) -> None:
    code, report = check(site(tmp_path, server__interface="nosuch0",
                              server__templates_dir=str(tmp_path / "missing")))
    assert code == 1
    assert "'nosuch0'" in finding(report, "server.interface")["problem"]
    assert "is not a directory" in finding(report, "server.templates_dir")["problem"]


def test_an_iso_imported_as_a_kernel(tmp_path: Path) -> None:
    config = site(tmp_path, groups__default__build="live/1")
    iso = tmp_path / "debian-live.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001\x01" + b"\0" * 4096)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(fake_initrd("x"))
    # `image import` refuses it now (store/sniff.py); a store written before that, or by
    # hand, can still hold one: put it there through the importer itself.
    refused = netbootd("image", "import", "--config", str(config), "--name", "live",
                       "--version", "1", "--arch", "amd64", str(iso), str(initrd), check=False)
    assert refused.returncode != 0 and "ISO 9660" in refused.stderr
    import_kind(load_config(config).server.store_dir, "linux", name="live", version="1",
                paths=[iso, initrd], arch="amd64")
    code, report = check(config)
    f = finding(report, "store: live/1/debian-live.iso")
    assert code == 1 and "ISO 9660" in f["problem"] and "groups.default" in f["problem"]
    assert "mount -o loop" in f["fix"]
    # The real kernel under the same name is fine.
    netbootd("image", "import", "--config", str(config), "--name", "live", "--version", "2",
             str(tmp_path / "k"), str(initrd), check=False)  # no such file: refused, no build
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(fake_bzimage("k"))
    netbootd("image", "import", "--config", str(config), "--name", "live", "--version", "2",
             str(kernel), str(initrd))
    code, report = check(site(tmp_path, groups__default__build="live/2"))
    assert code == 0, report["errors"]


def test_esxi_without_a_root_password_hash(tmp_path: Path) -> None:
    config = site(tmp_path, nodes__esx1__vars={})
    code, report = check(config)
    f = finding(report, "nodes.esx1.vars.root_password_hash")
    assert code == 1 and "rootpw --iscrypted *" in f["problem"]
    assert "openssl passwd -6" in f["fix"] and "insecure_no_root_password" in f["fix"]
    # render shows the refusal too, and names the fix
    r = netbootd("render", "--config", str(config), "--mac", "52:54:00:00:00:03", "--arch",
                 "bios", check=False)
    assert r.returncode != 0 and "root_password_hash" in r.stderr
    assert "Traceback" not in r.stderr
    # the explicit opt-in serves it
    code, report = check(site(tmp_path, nodes__esx1__vars={"insecure_no_root_password": True}))
    assert code == 0, report["errors"]


@pytest.mark.parametrize("value", ["yes", 1])
def test_the_opt_in_must_be_true_itself(tmp_path: Path, value: object) -> None:
    code, report = check(site(tmp_path, nodes__esx1__vars={"insecure_no_root_password": value}))
    assert code == 1
    finding(report, "nodes.esx1.vars.root_password_hash")


def test_every_problem_is_in_one_report(tmp_path: Path) -> None:
    code, report = check(site(tmp_path, groups__default__user_data="nope.j2",
                              server__interface="nosuch0", nodes__db1__build="demo/9"))
    keys = {f["key"] for f in report["errors"]}
    assert code == 1
    assert {"groups.default.user_data", "server.interface", "nodes.db1.build"} <= keys
    for f in report["errors"]:
        assert set(f) == {"key", "problem", "fix"}
    assert set(report) == {"config", "ok", "exit_code", "schema_ok", "errors", "warnings",
                           "groups", "nodes", "rendered_files"}
    assert report["exit_code"] == code


def test_invalid_toml_is_exit_2_with_no_traceback(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[server\naddress = 1")
    code, report = check(p)
    assert code == 2 and "not valid TOML" in report["errors"][0]["problem"]


def test_render_before_the_first_serve_makes_the_key_serve_uses(tmp_path: Path) -> None:
    config = site(tmp_path)
    (tmp_path / "state").mkdir()
    key_file = tmp_path / "state" / "firstboot.key"
    r = netbootd("render", "--config", str(config), "--mac", "52:54:00:00:00:02",
                 "--arch", "bios", "--at", "1800000000")
    assert r.returncode == 0 and f"created the first-boot key {key_file}" in r.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = r.stdout
    again = netbootd("render", "--config", str(config), "--mac", "52:54:00:00:00:02",
                     "--arch", "bios", "--at", "1800000000")
    assert again.stdout == first and "created" not in again.stderr  # the same key, kept
    assert firstboot_key(load_config(config)) == key_file.read_bytes()


def test_uefi_is_a_name_for_x86_64_uefi_clients(tmp_path: Path) -> None:
    code, report = check(site(tmp_path, groups__uefi_ipxe__match={"arch": "uefi"}))
    assert code == 0, report["errors"]
    r = netbootd("render", "--config", str(site(tmp_path, groups__uefi_ipxe__match={
        "arch": "uefi"})), "--mac", "52:54:00:99:00:01", "--arch", "7")
    assert "group=uefi-ipxe" in r.stdout
