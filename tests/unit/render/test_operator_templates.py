"""An operator's template folder overrides file by file, inside jinja2's sandbox."""

from pathlib import Path

import pytest

from helpers import make_config, make_store, site_urls
from netbootd.core.identity import ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer, RenderError
from netbootd.store.builds import load_store


def renderer_and_plan(tmp: Path, operator: Path) -> tuple[NodeRenderer, BootPlan]:
    make_store(tmp / "store")
    config = make_config(tmp)
    catalog, _ = load_store(config.server.store_dir)
    plan = decide(ClientIdentity(mac="52:54:00:00:00:02"),
                  Inventory(config.groups, config.nodes), catalog)
    assert isinstance(plan, BootPlan)
    urls = site_urls()
    return NodeRenderer(make_environment(operator), urls, catalog), plan


def test_operator_template_overrides_one_file(tmp_path: Path) -> None:
    operator = tmp_path / "site-templates"
    operator.mkdir()
    (operator / "nocloud-user-data.j2").write_text(
        "#cloud-config\nhostname: {{ hostname }}\nruncmd: [echo {{ build.ref }}]\n")
    r, plan = renderer_and_plan(tmp_path, operator)
    assert r.user_data(plan) == "#cloud-config\nhostname: db1\nruncmd: [echo demo/2.0]\n"
    assert r.meta_data(plan).startswith("instance-id: db1-demo-2.0\n")  # built-in still used


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ plan.__class__.__init__.__globals__ }}",
    "{{ urls.build_file.__func__.__globals__['__builtins__'] }}",
    "{{ undefined_name }}",
])
def test_template_escapes_and_typos_are_refused(tmp_path: Path, payload: str) -> None:
    operator = tmp_path / "site-templates"
    operator.mkdir()
    (operator / "nocloud-user-data.j2").write_text("#cloud-config\n" + payload + "\n")
    r, plan = renderer_and_plan(tmp_path, operator)
    with pytest.raises(RenderError):
        r.user_data(plan)
