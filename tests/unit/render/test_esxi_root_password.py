"""An ESXi kickstart without a root password hash is refused at render time (so never served,
and never with ``rootpw --iscrypted *``), unless vars.insecure_no_root_password is true."""

from dataclasses import replace
from pathlib import Path

import pytest

from helpers import make_config, make_store, site_urls
from netbootd.core.identity import ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer, NoRootPassword
from netbootd.store.builds import load_store

ESX1 = "52:54:00:00:00:03"


def kickstart(tmp: Path, vars_: dict[str, object], operator: Path | None = None) -> str:
    make_store(tmp / "store")
    config = make_config(tmp)
    nodes = tuple(n if n.name != "esx1" else replace(n, settings=replace(n.settings, vars=vars_))
                  for n in config.nodes)
    catalog, _ = load_store(config.server.store_dir)
    plan = decide(ClientIdentity(mac=ESX1), Inventory(config.groups, nodes), catalog)
    assert isinstance(plan, BootPlan) and plan.build is not None
    assert plan.build.kind == "esxi"
    return NodeRenderer(make_environment(operator), site_urls(), catalog).kickstart(plan)


def test_a_hash_is_rendered(tmp_path: Path) -> None:
    assert "rootpw --iscrypted $6$abc$def\n" in kickstart(tmp_path,
                                                          {"root_password_hash": "$6$abc$def"})


@pytest.mark.parametrize("vars_", [{}, {"root_password_hash": "*"},
                                   {"insecure_no_root_password": "true"}])
def test_no_hash_is_refused(tmp_path: Path, vars_: dict[str, object]) -> None:
    with pytest.raises(NoRootPassword, match=r"vars\.root_password_hash"):
        kickstart(tmp_path, vars_)


def test_an_operator_kickstart_without_a_hash_is_refused_too(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "esxi-ks.cfg.j2").write_text("vmaccepteula\ninstall --firstdisk\nrootpw --iscrypted\n")
    with pytest.raises(NoRootPassword):
        kickstart(tmp_path, {}, site)


def test_the_explicit_opt_in_serves_it(tmp_path: Path) -> None:
    text = kickstart(tmp_path, {"insecure_no_root_password": True})
    assert "rootpw --iscrypted *\n" in text
