"""The pure ring imports no asyncio, socket, aiohttp, clock, OS or database (design.md).

``os`` is forbidden outright, so the environment (``os.environ``) is out of reach too.

Checked transitively: a pure module may import other netbootd modules only if they are pure
too. ``paths.py`` is not pure (containment must resolve symlinks on disk) and neither is
``store/builds.py`` (it reads the store); the pure ring gets their results as values.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "netbootd"
PURE = ["core/identity.py", "core/inventory.py", "core/plan.py", "core/planner.py",
        "core/bootfile.py", "core/funnel.py", "core/report.py", "render/seed.py",
        "render/report_agent.py", "dhcp/options.py", "dhcp/packet.py", "dhcp/proxy.py",
        "dhcp/server.py",
        "tftp/packet.py", "tftp/session.py", "tftp/admission.py", "store/manifest.py",
        "store/catalog.py",
        "store/esxi_bootcfg.py",
        "render/urls.py", "render/node_files.py", "render/environment.py", "render/tokens.py",
        "config.py",
        "errors.py", "metrics.py"]
FORBIDDEN = {"asyncio", "socket", "aiohttp", "time", "datetime", "selectors", "threading",
             "subprocess", "os", "sqlite3", "signal", "shutil", "tempfile"}


def imports_of(module: Path) -> tuple[set[str], set[Path]]:
    """(top-level external modules, netbootd module files) that ``module`` imports."""
    external: set[str] = set()
    internal: set[Path] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "netbootd":
                external.add(name.split(".")[0])
                continue
            parts = name.split(".")[1:]
            if not parts:
                internal.add(PKG / "__init__.py")
                continue
            rel = Path(*parts)
            for candidate in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
                if candidate.is_file():
                    internal.add(candidate)
    return external, internal


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_transitively(module: str) -> None:
    seen: set[Path] = set()
    todo = [PKG / module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        external, internal = imports_of(current)
        bad = external & FORBIDDEN
        assert not bad, f"{module} reaches {current.relative_to(PKG)}, which imports {bad}"
        todo.extend(internal)
