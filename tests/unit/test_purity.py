"""The pure ring imports no asyncio, socket, aiohttp, clock, OS, randomness or database.

One list, one rule (design in docs/architecture.md):

- every module in ``PURE`` (and every ``core/*.py``, found by globbing so a new core module is
  checked without being listed) imports nothing in ``FORBIDDEN``, checked transitively: a pure
  module may import other netbootd modules only if they are pure too. ``os`` is forbidden
  outright, so the environment (``os.environ``) is out of reach; ``random``, so answers are
  reproducible. ``paths.py`` is not pure (containment must resolve symlinks on disk) and neither
  is ``store/builds.py`` (it reads the store); the pure ring gets their results as values.
- ``core/`` is the innermost ring: it imports no other netbootd package (not ``config``,
  ``store``, ``state``, ``render`` nor any edge); ``config`` and ``store`` produce the core's
  records (core/model.py), never the reverse.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "netbootd"
CORE = sorted(str(p.relative_to(PKG)) for p in (PKG / "core").glob("*.py"))
PURE = sorted({*CORE, "render/seed.py",
               "render/report_agent.py", "dhcp/options.py", "dhcp/packet.py", "dhcp/proxy.py",
               "dhcp/server.py",
               "tftp/packet.py", "tftp/session.py", "tftp/admission.py", "store/manifest.py",
               "store/catalog.py",
               "store/esxi_bootcfg.py", "store/authenticode.py", "store/kernel_arch.py",
               "store/channels.py", "store/origin_index.py", "store/origin_lru.py",
               "config_origin.py",
               "render/urls.py", "render/node_files.py", "render/environment.py",
               "render/tokens.py",
               "config.py", "answers.py", "answers_reports.py", "answers_tftp.py",
               "error_map.py",
               "errors.py", "metrics.py"})
FORBIDDEN = {"asyncio", "socket", "aiohttp", "time", "datetime", "selectors", "threading",
             "subprocess", "os", "sqlite3", "signal", "shutil", "tempfile", "random"}
# What a core module may import from netbootd: the core itself and the exception types.
CORE_MAY_IMPORT = {PKG / "core", PKG / "errors.py"}


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
        if current.parent == PKG / "core":
            outside = {i for i in internal
                       if not any(i == a or a in i.parents for a in CORE_MAY_IMPORT)}
            assert not outside, (f"{module} reaches {current.relative_to(PKG)}, which imports "
                                 f"{sorted(str(i.relative_to(PKG)) for i in outside)}")
        todo.extend(internal)


def test_the_list_names_real_modules() -> None:
    # A renamed module must not silently drop out of the check.
    assert "core/model.py" in CORE and "core/planner.py" in CORE
    missing = [m for m in PURE if not (PKG / m).is_file()]
    assert not missing
