"""`netbootd check` reports every problem with its key, beyond what the TOML schema catches."""

import json
from pathlib import Path

import pytest

from helpers import BASE_CONFIG, make_store
from netbootd.cli import main
from netbootd.lab.demo import toml_dump


def write(tmp: Path, data: dict) -> Path:  # type: ignore[type-arg]
    data["server"].update(state_dir=str(tmp / "state"), store_dir=str(tmp / "store"))
    p = tmp / "netbootd.toml"
    p.write_text(toml_dump(data))
    return p


def test_check_lists_missing_builds_and_missing_loaders(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    make_store(tmp_path / "store")
    data = json.loads(json.dumps(BASE_CONFIG))
    data["groups"]["default"]["build"] = "demo/3.0"
    data["nodes"]["db1"]["build"] = "kvm/1"
    data["loaders"] = {"dirs": {"bios": [str(tmp_path / "nowhere")]}}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 1
    out = capsys.readouterr().out
    assert "groups.default.build: no build named demo/3.0 (known: demo/1.0, demo/2.0, " \
           "esxi/8.0u3)" in out
    assert "nodes.db1.build: no build named kvm/1" in out
    assert "loaders.bootfiles.pxelinux.bios: bios/lpxelinux.0 not found" in out


def test_check_passes_a_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_store(tmp_path / "store")
    data = json.loads(json.dumps(BASE_CONFIG))
    loaders = tmp_path / "loaders"
    for f in ("lpxelinux.0", "syslinux.efi", "undionly.kpxe", "snponly.efi"):
        (loaders / f).parent.mkdir(parents=True, exist_ok=True)
        (loaders / f).write_bytes(b"x")
    data["loaders"] = {"dirs": {p: [str(loaders)] for p in ("bios", "efi64", "ipxe")}}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 0
    assert "ok (3 groups, 6 nodes, " in capsys.readouterr().out


def test_invalid_toml_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[server\naddress = 1")
    assert main(["check", "--config", str(p)]) == 2
    assert "not valid TOML" in capsys.readouterr().out


def test_check_reports_a_channel_that_points_nowhere(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_store(tmp_path / "store")
    data = json.loads(json.dumps(BASE_CONFIG))
    data["groups"]["default"] = {"default": True, "channel": "kvm-stable"}
    data["nodes"]["db1"] = {"mac": "52:54:00:00:00:02", "channel": "kvm-canary"}
    config = write(tmp_path, data)
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "groups.default.channel: channel kvm-stable points at no build; run " \
           "`netbootd channel set kvm-stable NAME/VERSION`" in out
    assert "nodes.db1.channel: channel kvm-canary" in out
    assert main(["channel", "set", "--config", str(config), "kvm-stable", "demo/1.0"]) == 0
    capsys.readouterr()
    main(["check", "--config", str(config)])
    out = capsys.readouterr().out
    assert "kvm-stable" not in out and "nodes.db1.channel" in out


def test_a_config_cannot_pin_and_follow_at_once(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(json.dumps(BASE_CONFIG))
    data["groups"]["default"]["channel"] = "kvm-stable"
    data["reimage"] = {"target": "sda; rm -rf /"}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().out
    assert "groups.default.: set build (pin) or channel (follow), not both" in err
    assert "reimage.target: 'sda; rm -rf /' is not a block device path" in err


def test_check_refuses_a_first_boot_key_others_can_read(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    make_store(tmp_path / "store")
    key = tmp_path / "firstboot.key"
    key.write_bytes(bytes(32))
    key.chmod(0o640)
    data = json.loads(json.dumps(BASE_CONFIG))
    data["firstboot"] = {"key_file": str(key)}
    config = write(tmp_path, data)
    assert main(["check", "--config", str(config)]) == 1
    assert f"firstboot.key_file: first-boot key {key} is accessible to group or others " \
        f"(mode 0640): chmod 600 {key}" in capsys.readouterr().out


def test_check_lists_every_seed_var_cloud_init_would_reject(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_store(tmp_path / "store")
    data = json.loads(json.dumps(BASE_CONFIG))
    data["groups"]["default"]["vars"] = {"power_state": "off", "guest_bridge": "br 0"}
    data["nodes"]["db1"]["vars"] = {"ssh_authorized_keys": "ssh-ed25519 AAA\nmore",
                                    "domain": "-bad-"}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 1
    out = capsys.readouterr().out
    assert "groups.default.vars.power_state 'off' is not one of poweroff, reboot, halt, none" \
        in out
    assert "groups.default.vars.guest_bridge 'br 0' is not an interface name" in out
    assert "nodes.db1.vars.ssh_authorized_keys must be a list of one-line public keys" in out
    assert "nodes.db1.vars.domain '-bad-' is not a DNS domain" in out


def _grub_site(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    """BASE_CONFIG plus builds with a signed, an unsigned and a self-signed PE kernel, loader
    folders with every file, and Secure Boot groups on each build."""
    from pe_maker import make_pe

    from helpers import write_build

    make_store(tmp_path / "store")
    kernels = {"signed": make_pe("Debian Secure Boot Signer 2022 - linux",
                                 "Debian Secure Boot CA"),
               "unsigned": make_pe(), "own": make_pe("Lab kernel key", "Lab kernel key")}
    for name, kernel in kernels.items():
        write_build(tmp_path / "store", f"k-{name}", "1", {"vmlinuz": kernel, "initrd": b"i"},
                    kind="linux", kernel="vmlinuz", initrds=["initrd"], cmdline="")
    data = json.loads(json.dumps(BASE_CONFIG))
    loaders = tmp_path / "loaders"
    for f in ("lpxelinux.0", "syslinux.efi", "undionly.kpxe", "snponly.efi",
              "i386-pc/core.0", "x86_64-efi/core.efi", "shimx64.efi"):
        (loaders / f).parent.mkdir(parents=True, exist_ok=True)
        (loaders / f).write_bytes(b"x")
    data["loaders"] = {"dirs": {p: [str(loaders)] for p in ("bios", "efi64", "ipxe", "grub")}}
    for name in kernels:
        data["groups"][f"sb-{name}"] = {"build": f"k-{name}/1", "secure_boot": True}
    return data


def test_check_warns_of_kernels_shim_will_refuse(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = _grub_site(tmp_path)
    data["dhcp"] = {"site_next_server": "10.77.0.1"}
    data["nodes"]["n-override"] = {"mac": "52:54:00:77:00:01", "group": "sb-signed",
                                   "build": "k-unsigned/1"}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 0  # warnings only
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    assert any(ln.startswith("warning: groups.sb-unsigned.secure_boot: build k-unsigned/1's "
                             "kernel vmlinuz is unsigned") and "MOK" in ln for ln in lines)
    assert any(ln.startswith("warning: nodes.n-override.secure_boot: build k-unsigned/1")
               for ln in lines)
    assert any(ln.startswith("warning: groups.sb-own.secure_boot:") and
               "signed by Lab kernel key" in ln and "mokutil --import" in ln for ln in lines)
    assert not any("sb-signed." in ln for ln in lines)
    assert not any("ProxyDHCP" in ln for ln in lines)  # the site points GRUB at netbootd
    assert len(lines) == 3, out


def test_check_warns_of_grub_behind_a_proxy(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = _grub_site(tmp_path)
    data["nodes"]["g1"] = {"mac": "52:54:00:77:00:02", "loader": "grub"}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 0
    out = capsys.readouterr().out
    proxy = [ln for ln in out.splitlines() if "ProxyDHCP" in ln]
    assert len(proxy) == 1
    assert "nodes.g1" in proxy[0] and "groups.sb-signed" in proxy[0]
    assert "dhcp-boot=,,10.77.0.1" in proxy[0] and 'dhcp.site_next_server = "10.77.0.1"' \
        in proxy[0]


def test_check_does_not_warn_of_grub_when_netbootd_is_the_dhcp_server(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _grub_site(tmp_path)
    data["nodes"]["g1"] = {"mac": "52:54:00:77:00:02", "loader": "grub"}
    data["dhcp"] = {"mode": "server", "pools": {"lab": {
        "subnet": "10.77.0.0/24", "range": ["10.77.0.100", "10.77.0.200"]}}}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 0
    assert not [ln for ln in capsys.readouterr().out.splitlines() if "ProxyDHCP" in ln]


def test_check_reports_missing_grub_images(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = _grub_site(tmp_path)
    (tmp_path / "loaders" / "shimx64.efi").unlink()
    assert main(["check", "--config", str(write(tmp_path, data))]) == 1
    out = capsys.readouterr().out
    assert "loaders.bootfiles.shim.efi64: grub/shimx64.efi not found" in out
    assert "netbootd loaders grub" in out


def test_secure_boot_needs_grub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(json.dumps(BASE_CONFIG))
    data["groups"]["x"] = {"build": "demo/1.0", "secure_boot": True, "loader": "ipxe"}
    data["groups"]["y"] = {"build": "demo/1.0", "secure_boot": "yes"}
    assert main(["check", "--config", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().out
    assert "groups.x.secure_boot: the signed chain is shim -> GRUB" in err
    assert "groups.y.secure_boot: expected true or false" in err
