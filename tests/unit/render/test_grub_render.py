"""GRUB: quoting for GRUB's parser, device paths, the config names GRUB asks for, and which
boot program a GRUB or Secure Boot node is handed."""

from pathlib import Path

import pytest

from helpers import make_config, make_store, site_urls
from netbootd.core.bootfile import NoLoader, choose_bootfile
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.core.inventory import Inventory
from netbootd.core.plan import BootPlan
from netbootd.core.planner import decide
from netbootd.errors import NotFound
from netbootd.render.environment import make_environment
from netbootd.render.grub import grub_args, grub_device_path, grub_quote, kernel_words
from netbootd.render.node_files import NodeRenderer
from netbootd.responder import Rendered, Responder
from netbootd.state.events import StateDB
from netbootd.store.builds import load_store

WEB1_GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"


@pytest.mark.parametrize(("word", "quoted"), [
    ("console=ttyS0", "console=ttyS0"),
    ("ds=nocloud;s=http://x/", "'ds=nocloud;s=http://x/'"),  # ';' ends a GRUB command
    ("x=$y", "'x=$y'"),  # GRUB would expand $y
    ("it's", "'it'\\''s'"),
    ("a b", "'a b'"),
    ("", "''"),
])
def test_grub_quote(word: str, quoted: str) -> None:
    assert grub_quote(word) == quoted


def test_kernel_words_follow_the_kernels_double_quotes() -> None:
    assert kernel_words('a="b c;d" e  f ""') == ["a=b c;d", "e", "f", ""]
    assert grub_args('quiet a="b c" ds=nocloud;s=u/') == "quiet 'a=b c' 'ds=nocloud;s=u/'"


def test_device_paths() -> None:
    assert grub_device_path("http://10.0.0.1:8080/builds/a/1/k", "10.0.0.1") == \
        "(http,10.0.0.1:8080)/builds/a/1/k"
    assert grub_device_path("http://boot.example/builds/a/1/k", "10.0.0.1") == \
        "(http,boot.example:80)/builds/a/1/k"
    # GRUB has no TLS: the same path over TFTP.
    assert grub_device_path("https://boot.example/builds/a/1/k", "10.0.0.1") == \
        "(tftp,10.0.0.1)/builds/a/1/k"


@pytest.fixture
def responder(tmp_path: Path) -> Responder:
    make_store(tmp_path / "store")
    config = make_config(tmp_path, {
        "groups": {"default": {"default": True, "build": "demo/1.0", "loader": "grub"},
                   "sb": {"build": "demo/2.0", "secure_boot": True}},
        "nodes": {"web1": {"uuid": WEB1_GUID, "hostname": "web1"},
                  "laptop": {"mac": "52:54:00:00:00:5b", "group": "sb"}}})
    catalog, _ = load_store(config.server.store_dir)
    renderer = NodeRenderer(make_environment(), site_urls("http://10.77.0.1:8080", "10.77.0.1"),
                            catalog)
    return Responder(config, catalog, StateDB(Path(":memory:")), renderer)


def text(r: Responder, name: str, ip: str = "10.77.0.50") -> str:
    found = r.tftp_lookup(name, ip)
    assert isinstance(found, Rendered)
    return found.text


def test_grub_config_names(responder: Responder) -> None:
    own = text(responder, "/grub/grub.cfg-01-52-54-00-00-00-5b")
    assert "laptop" in own and "boots demo/2.0" in own
    # The dispatcher's spelling ($net_default_mac has colons) names the same file.
    assert text(responder, "grub/grub.cfg-01-52:54:00:00:00:5b") == own
    # ... and by the address GRUB reported, once that address is known to be this MAC.
    assert text(responder, "grub/grub.cfg-ip-10.77.0.50") == own
    assert "$net_default_mac" in text(responder, "grub/grub.cfg")
    with pytest.raises(NotFound, match="per MAC"):
        responder.tftp_lookup("grub/grub.cfg-0A4D4D32", "10.77.0.50")
    with pytest.raises(NotFound, match="no node with this GUID"):
        responder.tftp_lookup("grub/grub.cfg-00000000-0000-0000-0000-000000000000",
                              "10.77.0.60")
    with pytest.raises(NotFound, match="not a MAC"):
        responder.tftp_lookup("grub/grub.cfg-01-zz", "10.77.0.50")


def test_grub_config_by_guid_and_for_unknown_addresses(responder: Responder) -> None:
    responder.learn_ip("10.77.0.61", "52:54:00:00:00:61")
    responder.observe_dhcp(ClientIdentity(mac="52:54:00:00:00:61", guid=WEB1_GUID))
    assert "web1 boots demo/1.0" in text(responder, f"grub/grub.cfg-{WEB1_GUID}", "10.77.0.61")
    # An address nobody is known at: a config that says why and leaves the network boot.
    declined = text(responder, "grub/grub.cfg-ip-10.77.0.99")
    assert "not booting over the network: client not identified" in declined


def plan_for(responder: Responder, mac: str, arch: Arch) -> BootPlan:
    p = decide(ClientIdentity(mac=mac, arch=arch), responder.inventory, responder.catalog)
    assert isinstance(p, BootPlan)
    return p


def test_bootfiles(responder: Responder) -> None:
    bf = responder.config.loaders.bootfiles
    cases = [("52:54:00:00:00:01", Arch.BIOS, "grub/i386-pc/core.0"),
             ("52:54:00:00:00:01", Arch.EFI_X64, "grub/x86_64-efi/core.efi"),
             ("52:54:00:00:00:5b", Arch.EFI_X64, "grub/shimx64.efi"),
             ("52:54:00:00:00:5b", Arch.BIOS, "grub/i386-pc/core.0")]  # no SB on BIOS
    for mac, arch, want in cases:
        plan = plan_for(responder, mac, arch)
        assert plan.loader == "grub"
        # QEMU's BIOS ROM is iPXE: a GRUB node still gets GRUB, not an iPXE script.
        for is_ipxe in (False, True):
            t = choose_bootfile(plan, arch, is_ipxe=is_ipxe, http_boot=False, bootfiles=bf,
                                http_base="http://h:1", server_ip="192.0.2.1")
            assert (t.bootfile, t.via_http) == (want, False)
    sb = plan_for(responder, "52:54:00:00:00:5b", Arch.EFI_X64)
    assert sb.secure_boot
    with pytest.raises(NoLoader, match=r"\[loaders.bootfiles.shim\] arm64"):
        choose_bootfile(sb, Arch.EFI_ARM64, is_ipxe=False, http_boot=False, bootfiles=bf,
                        http_base="http://h:1", server_ip="192.0.2.1")


def test_esxi_never_boots_through_grub(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    config = make_config(tmp_path, {"groups": {"default": {
        "default": True, "build": "esxi/8.0u3", "loader": "grub"}}, "nodes": {}})
    catalog, _ = load_store(config.server.store_dir)
    inv = Inventory(config.groups, config.nodes)
    for arch, loader in ((Arch.BIOS, "pxelinux"), (Arch.EFI_X64, "ipxe")):
        p = decide(ClientIdentity(mac="52:54:00:00:00:01", arch=arch), inv, catalog)
        assert isinstance(p, BootPlan) and p.loader == loader
