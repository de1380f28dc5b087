"""What netbootd serves as a NoCloud seed, checked by Debian 12's own cloud-init (22.4).

user-data goes through ``cloud-init schema -c`` (cloud-init's validator); network-config
through cloud-init's network parser and its ifupdown renderer (the one Debian's cloud-init
picks first); the guest bridge's ``network-config=`` kernel argument through cloud-init's own
decoder. Plans: plain, hypervisor (by var and by the build's manifest role), with SSH keys and
a domain, a guest bridge. An ESXi build has no NoCloud seed; a var cloud-init would reject is
refused before anything is served.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from debian_cloudinit import cloudinit_path, load_yaml, run_python, schema_check, version

from helpers import make_config, make_store, site_urls, write_build
from netbootd.core.identity import ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer, RenderError
from netbootd.store.builds import load_store

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfA0yZ0M7Ol9r3eSHTP0z1kd+W7G9wU6B0o5TxbFSwH op@site"
NODES: dict[str, Any] = {
    "plain": {"mac": "52:54:00:10:00:01"},
    "keys": {"mac": "52:54:00:10:00:02", "vars": {
        "ssh_authorized_keys": [KEY, "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ second"],
        "domain": "lab.example.org", "power_state": "reboot"}},
    "hv-var": {"mac": "52:54:00:10:00:03", "vars": {
        "role": "kvm-hypervisor", "guest_bridge": "br0", "power_state": "none"}},
    "hv-build": {"mac": "52:54:00:10:00:04", "build": "kvm/1.0",
                 "vars": {"guest_bridge": "br0"}},
    "esx": {"mac": "52:54:00:10:00:05", "build": "esxi/8.0u3"},
}


@pytest.fixture(scope="module")
def cloudinit() -> Path:
    return cloudinit_path()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeRenderer, dict[str, BootPlan]]:
    tmp = tmp_path_factory.mktemp("seed")
    make_store(tmp / "store")
    write_build(tmp / "store", "kvm", "1.0", {"vmlinuz": b"k", "initrd.img": b"i"},
                kind="linux", kernel="vmlinuz", initrds=["initrd.img"], role="kvm-hypervisor")
    config = make_config(tmp, {"nodes": NODES})
    catalog, _ = load_store(config.server.store_dir)
    inv = Inventory(config.groups, config.nodes)
    plans = {}
    for name, spec in NODES.items():
        plan = decide(ClientIdentity(mac=spec["mac"]), inv, catalog)
        assert isinstance(plan, BootPlan) and plan.node == name
        plans[name] = plan
    return NodeRenderer(make_environment(), site_urls(), catalog), plans


LINUX = ["plain", "keys", "hv-var", "hv-build"]


@pytest.mark.parametrize("node", LINUX)
def test_user_data_passes_cloud_inits_own_schema(
        node: str, seeds: tuple[NodeRenderer, dict[str, BootPlan]], cloudinit: Path,
        tmp_path: Path) -> None:
    renderer, plans = seeds
    text = renderer.user_data(plans[node])
    f = tmp_path / "user-data"
    f.write_text(text)
    checked = schema_check(cloudinit, f)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Valid cloud-config" in checked.stdout
    print(f"cloud-init {version(cloudinit)}: {node} user-data valid")

    ud = load_yaml(text)
    assert ud["hostname"] == node
    home = ud["phone_home"]
    assert "all" not in home["post"] and "pub_key_dsa" not in home["post"]
    assert home["url"] == renderer.urls.phone_home(plans[node].node_key, plans[node].build)
    # the report unit: systemd-run of python3 -c SCRIPT URL, the script valid Python
    (cmd,) = ud["bootcmd"]
    assert cmd[0] == "systemd-run" and "--no-block" in cmd and cmd[-3] == "-c"
    assert cmd[-1] == renderer.urls.report(plans[node].node_key, plans[node].build)
    compiled = run_python(cloudinit, "import sys; compile(sys.argv[1], 'report', 'exec')",
                          cmd[-2])
    assert compiled.returncode == 0, compiled.stderr
    # cloud-init runs bootcmd as a shell script it writes with util.shellify: the words
    # must come back unchanged (the script holds newlines and double quotes)
    shell = run_python(cloudinit, "import json, sys; from cloudinit import util; "
                                  "print(util.shellify(json.loads(sys.argv[1])))",
                       json.dumps(ud["bootcmd"]))
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.startswith("#!/bin/sh\n")
    assert shlex.split(shell.stdout.split("\n", 1)[1]) == cmd
    hypervisor = node.startswith("hv-")
    runcmd = json.dumps(ud.get("runcmd", []))
    assert ("libvirtd" in runcmd and "pool-define-as default dir" in runcmd) == hypervisor
    if node == "keys":
        assert ud["ssh_authorized_keys"] == NODES["keys"]["vars"]["ssh_authorized_keys"]
        assert ud["fqdn"] == "keys.lab.example.org"
        assert ud["power_state"] == {"mode": "reboot"}
    else:
        assert "ssh_authorized_keys" not in ud and "fqdn" not in ud
        if node == "hv-var":  # power_state "none": no power_state at all
            assert "power_state" not in ud
        else:  # the default group's vars say poweroff
            assert ud["power_state"] == {"mode": "poweroff"}


# network-config v2 -> cloud-init's NetworkState -> its ifupdown (ENI) renderer; the NIC is
# named by the host's MAC lookup, which finds nothing here, so it keeps its v2 id.
PARSE_V2 = """
import sys, yaml
from cloudinit.net import eni, network_state
cfg = yaml.safe_load(open(sys.argv[1]))
ns = network_state.parse_net_config_data(cfg["network"], skip_broken=False)
print(eni.Renderer()._render_interfaces(ns))
"""
FROM_CMDLINE = """
import json, sys
from cloudinit.net import cmdline
print(json.dumps(cmdline.read_kernel_cmdline_config(sys.argv[1])))
"""


@pytest.mark.parametrize("node", LINUX)
def test_network_config_parses_with_cloud_init(
        node: str, seeds: tuple[NodeRenderer, dict[str, BootPlan]], cloudinit: Path,
        tmp_path: Path) -> None:
    renderer, plans = seeds
    f = tmp_path / "network-config"
    f.write_text(renderer.network_config(plans[node]))
    assert load_yaml(f.read_text())["network"]["ethernets"]["bootnic"]["match"] == \
        {"macaddress": NODES[node]["mac"]}
    rendered = run_python(cloudinit, PARSE_V2, str(f))
    assert rendered.returncode == 0, rendered.stderr
    eni_text = rendered.stdout
    if node.startswith("hv-"):
        assert "iface br0 inet dhcp" in eni_text and "bridge_ports bootnic" in eni_text
        assert "iface bootnic inet dhcp" not in eni_text
    else:
        assert "iface bootnic inet dhcp" in eni_text and "br0" not in eni_text


def test_a_guest_bridge_rides_on_the_kernel_line_for_cloud_init_22_4(
        seeds: tuple[NodeRenderer, dict[str, BootPlan]], cloudinit: Path) -> None:
    """22.4 fetches no network-config over HTTP (and its meta-data network-interfaces drops
    bridge options); it reads network-config= from the kernel command line first."""
    renderer, plans = seeds
    for node in LINUX:
        plan = plans[node]
        assert plan.build is not None
        line = renderer.kernel_cmdline(plan, plan.build)
        assert f"ds=nocloud-net;s={renderer.urls.nocloud(plan.node_key, plan.build)}" in \
            line.split()
        decoded = run_python(cloudinit, FROM_CMDLINE, line)
        assert decoded.returncode == 0, decoded.stderr
        if node.startswith("hv-"):
            assert json.loads(decoded.stdout) == load_yaml(renderer.network_config(plan))
            print(f"{node}: kernel line {len(line)} bytes")
        else:
            assert "network-config=" not in line and json.loads(decoded.stdout) is None


def test_an_esxi_build_has_no_nocloud_seed(
        seeds: tuple[NodeRenderer, dict[str, BootPlan]]) -> None:
    renderer, plans = seeds
    for render in (renderer.user_data, renderer.meta_data, renderer.network_config):
        with pytest.raises(RenderError, match="no linux first-boot files"):
            render(plans["esx"])
    assert "ds=nocloud" not in renderer.esxi_kernelopt(plans["esx"], plans["esx"].build)


@pytest.mark.parametrize(("var", "value"), [
    ("power_state", "none-at-all"), ("guest_bridge", "br0; reboot"),
    ("domain", "bad domain"), ("ssh_authorized_keys", ["ok", "two\nlines"]),
    ("guest_bridge", "a-name-far-too-long"),
])
def test_a_var_cloud_init_would_reject_is_refused(var: str, value: Any,
                                                 tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    config = make_config(tmp_path, {"nodes": {"n1": {"mac": "52:54:00:10:00:09",
                                                     "vars": {var: value}}}})
    catalog, _ = load_store(config.server.store_dir)
    plan = decide(ClientIdentity(mac="52:54:00:10:00:09"),
                  Inventory(config.groups, config.nodes), catalog)
    assert isinstance(plan, BootPlan)
    renderer = NodeRenderer(make_environment(), site_urls(), catalog)
    for seed_file in (renderer.user_data, renderer.meta_data, renderer.network_config):
        with pytest.raises(RenderError, match=f"vars.{var}"):
            seed_file(plan)
    # the boot config itself still renders: the node boots and its seed says what is wrong
    assert "ds=nocloud-net;s=" in renderer.pxelinux_config(plan)
