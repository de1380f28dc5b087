"""Interpreters recognise a script by its first line: iPXE needs `#!ipxe` alone on line one
(otherwise it treats the file as a PXE NBP), cloud-init needs `#cloud-config`."""

from pathlib import Path

from helpers import make_config, make_store, site_urls
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.store.builds import load_store


def test_first_lines(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    r = NodeRenderer(make_environment(), site_urls(), catalog)
    assert r.ipxe_stage1().startswith("#!ipxe\n# netbootd")
    inv = Inventory(config.groups, config.nodes)
    for mac in ("52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:99:00:01"):
        plan = decide(ClientIdentity(mac=mac, arch=Arch.EFI_BC), inv, catalog)
        assert isinstance(plan, BootPlan)
        assert r.ipxe_script(plan).startswith("#!ipxe\n# netbootd")
        if plan.build is not None and plan.build.kind == "linux":
            assert r.user_data(plan).startswith("#cloud-config\nhostname: ")
