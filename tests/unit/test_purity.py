"""The pure ring imports no asyncio, socket, aiohttp, clock or environment (design.md)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "netbootd"
PURE = ["core/identity.py", "core/inventory.py", "core/plan.py", "core/planner.py",
        "core/bootfile.py", "dhcp/options.py", "dhcp/packet.py", "dhcp/proxy.py",
        "tftp/packet.py", "tftp/session.py", "store/manifest.py", "render/urls.py",
        "render/node_files.py", "config.py", "paths.py"]
FORBIDDEN = {"asyncio", "socket", "aiohttp", "time", "datetime", "selectors", "threading",
             "subprocess"}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports(module: str) -> None:
    tree = ast.parse((PKG / module).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & FORBIDDEN, f"{module} imports {names & FORBIDDEN}"
    assert "os.environ" not in (PKG / module).read_text()
