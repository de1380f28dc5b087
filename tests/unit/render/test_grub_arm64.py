"""An ARM64 node's GRUB config: its arm64 build, kernel and initrd over TFTP (Debian's signed
arm64 network GRUB has no http module), while an amd64 node's GRUB fetches over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_config, make_store, site_urls, write_build
from netbootd.core.identity import Arch, ClientIdentity
from netbootd.render.environment import make_environment
from netbootd.render.node_files import NodeRenderer
from netbootd.responder import Rendered, Responder, StaticFile
from netbootd.state.events import StateDB
from netbootd.store.builds import load_store

ARM_MAC = "52:54:00:a6:00:01"
X86_MAC = "52:54:00:a6:00:86"


@pytest.fixture
def responder(tmp_path: Path) -> Responder:
    store = make_store(tmp_path / "store")
    write_build(store, "armdemo", "1.0", {"vmlinuz": b"arm kernel", "initrd.img": b"i"},
                kind="linux", kernel="vmlinuz", initrds=["initrd.img"], arch="arm64",
                cmdline="console=ttyAMA0 panic=-1")
    config = make_config(tmp_path, {"groups": {
        "default": {"default": True, "build": "demo/1.0", "loader": "grub"},
        "arm": {"match": {"arch": "arm64"}, "build": "armdemo/1.0"}}, "nodes": {}})
    catalog, problems = load_store(config.server.store_dir)
    assert problems == []
    renderer = NodeRenderer(make_environment(), site_urls("http://10.77.0.1:8080", "10.77.0.1"),
                            catalog)
    return Responder(config, catalog, StateDB(Path(":memory:")), renderer)


def grub_cfg(r: Responder, mac: str, ip: str) -> str:
    found = r.tftp_lookup(f"/grub/grub.cfg-01-{mac}", ip)
    assert isinstance(found, Rendered)
    return found.text


def test_arm64_node_gets_grub_and_its_build_over_tftp(responder: Responder) -> None:
    target = responder.dhcp_boot_target(ClientIdentity(mac=ARM_MAC, arch=Arch.EFI_ARM64),
                                        is_ipxe=False, http_boot=False, message="offer")
    assert target is not None and target.bootfile == "grub/grubaa64.efi"
    text = grub_cfg(responder, ARM_MAC, "10.77.0.139")
    assert "linux (tftp,10.77.0.1)/builds/armdemo/1.0/vmlinuz console=ttyAMA0" in text
    assert "initrd (tftp,10.77.0.1)/builds/armdemo/1.0/initrd.img" in text
    assert "(http," not in text
    # ...and TFTP serves those paths (GRUB sends them with a leading slash).
    found = responder.tftp_lookup("/builds/armdemo/1.0/vmlinuz", "10.77.0.139")
    assert isinstance(found, StaticFile) and found.path.read_bytes() == b"arm kernel"


def test_amd64_node_of_the_same_server_fetches_over_http(responder: Responder) -> None:
    target = responder.dhcp_boot_target(ClientIdentity(mac=X86_MAC, arch=Arch.EFI_BC),
                                        is_ipxe=False, http_boot=False, message="offer")
    assert target is not None and target.bootfile == "grub/x86_64-efi/core.efi"
    text = grub_cfg(responder, X86_MAC, "10.77.0.140")
    assert "linux (http,10.77.0.1:8080)/builds/demo/1.0/vmlinuz" in text

