"""The guest bridge's network-config as Debian 12's cloud-init (22.4) sees it on the node itself.

On the node, cloud-init's MAC lookup finds the boot NIC (``ens3`` on a QEMU client) and names
the matched ethernet after it, while the bridge's port list keeps the config's id: without
``set-name`` the ifupdown renderer then dies (``KeyError: None``) and the node never fetches
its seed (seen on the KVM appliance, images/README.md). Here the lookup is made to answer as
on such a node, and the config must render and ask cloud-init to rename the NIC to the port
name the bridge lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from debian_cloudinit import cloudinit_path, run_python

from helpers import make_config, make_store, site_urls, write_build
from netbootd.core.identity import ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.store.builds import load_store

MAC = "52:54:00:10:00:b0"
ON_THE_NODE = """
import json, sys, yaml
from cloudinit import net
from cloudinit.net import eni, network_state
mac, dev = sys.argv[2], sys.argv[3]
network_state.get_interfaces_by_mac = lambda *a, **k: {mac: dev}
network_state.find_interface_name_from_mac = lambda m: dev if m == mac else None
cfg = yaml.safe_load(open(sys.argv[1]))["network"]
ns = network_state.parse_net_config_data(cfg, skip_broken=False)
print(json.dumps({"renames": net.extract_physdevs(cfg),
                  "eni": eni.Renderer()._render_interfaces(ns)}))
"""


@pytest.fixture(scope="module")
def cloudinit() -> Path:
    return cloudinit_path()


def test_bridge_port_is_the_renamed_boot_nic(cloudinit: Path, tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    write_build(tmp_path / "store", "kvm", "1.0", {"vmlinuz": b"k", "initrd.img": b"i"},
                kind="linux", kernel="vmlinuz", initrds=["initrd.img"], role="kvm-hypervisor")
    config = make_config(tmp_path, {"nodes": {"hv": {
        "mac": MAC, "build": "kvm/1.0", "vars": {"guest_bridge": "br0"}}}})
    catalog, _ = load_store(config.server.store_dir)
    plan = decide(ClientIdentity(mac=MAC), Inventory(config.groups, config.nodes), catalog)
    assert isinstance(plan, BootPlan)
    f = tmp_path / "network-config"
    f.write_text(NodeRenderer(make_environment(), site_urls(), catalog).network_config(plan))
    done = run_python(cloudinit, ON_THE_NODE, str(f), MAC, "ens3")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # cloud-init renames the device with the node's MAC to the name the bridge lists ...
    assert [r[:2] for r in out["renames"]] == [[MAC, "bootnic"]]
    # ... and renders the NIC as a bare port of the bridge, which takes the DHCP address
    assert "iface bootnic inet manual" in out["eni"]
    assert "iface br0 inet dhcp" in out["eni"] and "bridge_ports bootnic" in out["eni"]
