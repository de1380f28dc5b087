from pathlib import Path

import pytest

from helpers import make_config, make_store
from netbootd.config import BootSettings, GroupSpec, Selector
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan, Decline
from netbootd.core.planner import decide
from netbootd.store.builds import load_store

WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, problems = load_store(config.server.store_dir)
    assert problems == []
    return Inventory(config.groups, config.nodes), catalog


def plan(world, **kw) -> BootPlan:  # type: ignore[no-untyped-def]
    p = decide(ClientIdentity(**kw), *world)
    assert isinstance(p, BootPlan), p
    return p


def test_node_by_guid_gets_its_hostname_and_the_default_group(world) -> None:  # type: ignore[no-untyped-def]
    p = plan(world, mac="52:54:00:00:00:01", guid=WEB1_GUID, arch=Arch.BIOS)
    assert (p.node, p.group, p.hostname, p.build and p.build.ref) == \
        ("web1", "default", "web1", "demo/1.0")
    assert p.loader == "pxelinux" and p.mode == "appliance"


def test_unknown_mac_gets_the_default_group(world) -> None:  # type: ignore[no-untyped-def]
    p = plan(world, mac="52:54:00:99:99:99", arch=Arch.BIOS)
    assert p.node is None and p.group == "default" and p.hostname == "node-525400999999"


def test_node_pin_overrides_group_build_and_appends_cmdline(world) -> None:  # type: ignore[no-untyped-def]
    p = plan(world, mac="52:54:00:00:00:02")
    assert p.build is not None and p.build.ref == "demo/2.0" and p.cmdline == "role=db"


def test_selector_group_matches_by_arch(world) -> None:  # type: ignore[no-untyped-def]
    p = plan(world, mac="52:54:00:99:99:98", arch=Arch.EFI_X64)
    assert p.group == "uefi-ipxe" and p.loader == "ipxe"


def test_esxi_on_uefi_always_uses_ipxe(world) -> None:  # type: ignore[no-untyped-def]
    assert plan(world, mac="52:54:00:00:00:03", arch=Arch.BIOS).loader == "pxelinux"
    assert plan(world, mac="52:54:00:00:00:03", arch=Arch.EFI_BC).loader == "ipxe"


def test_missing_build_is_a_decline_naming_known_builds(world) -> None:  # type: ignore[no-untyped-def]
    d = decide(ClientIdentity(mac="52:54:00:00:00:02"), *world, build_override="demo/9.9")
    assert isinstance(d, Decline)
    assert "no build named demo/9.9" in d.reason and "demo/1.0" in d.reason


def test_no_mac_is_a_decline(world) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(decide(ClientIdentity(guid=WEB1_GUID), *world), Decline)


def test_most_specific_group_wins_and_ties_go_by_name() -> None:
    def g(name: str, **sel: tuple[str, ...]) -> GroupSpec:
        return GroupSpec(name, BootSettings(), match=Selector(**sel))

    inv = Inventory([
        g("b-arch", arch=("efi64",)),
        g("a-arch", arch=("efi64",)),
        g("arch-and-vendor", arch=("efi64",), mac_prefix=("52:54:00",)),
        GroupSpec("fallback", BootSettings(), default=True),
    ], [])
    m = inv.match(ClientIdentity(mac="52:54:00:01:02:03", arch=Arch.EFI_BC))
    assert m is not None and m.group.name == "arch-and-vendor"
    m = inv.match(ClientIdentity(mac="aa:54:00:01:02:03", arch=Arch.EFI_BC))
    assert m is not None and m.group.name == "a-arch"
    m = inv.match(ClientIdentity(mac="aa:54:00:01:02:03", arch=Arch.BIOS))
    assert m is not None and m.group.name == "fallback"


def test_decide_is_deterministic(world) -> None:  # type: ignore[no-untyped-def]
    ident = ClientIdentity(mac="52:54:00:00:00:01", guid=WEB1_GUID, arch=Arch.BIOS)
    assert decide(ident, *world) == decide(ident, *world)
