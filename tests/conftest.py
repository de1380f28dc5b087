"""Suite-wide test setup.

In CI (``CI`` set, as CI runs ``.ci/run``) a skipped test is a failure: ``.ci/install-deps.sh``
installs every tool the suite needs, so a skip there means a missing install step, not a
missing tool.

A SIGTERM to pytest (a CI timeout, ``kill``) is turned into the KeyboardInterrupt that Ctrl-C
gives, so fixtures' finalizers still run: the PostgreSQL servers, QEMU guests and namespaces
the tests started are ended and removed rather than left running.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pgserver import Backend, PgServer, started_or_skip


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI, where every tool must be installed: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[
        None, pytest.CollectReport, None]:
    """The same for a whole module skipped at collection (``pytest.importorskip``...)."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI, where every tool must be installed: {reason}"


@pytest.fixture(scope="session")
def pg_server() -> Generator[PgServer, None, None]:
    """One PostgreSQL server for the session (tests/pgserver.py), stopped and deleted after.

    Skipped only where Debian's postgresql package is not installed; in CI a skip fails.
    """
    with started_or_skip() as server:
        yield server


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer) -> str:
    """The DSN of the session server's ``netbootd`` database (role ``netbootd``)."""
    return pg_server.dsn


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[Backend, None, None]:
    """Runs a state or intent test once on each backend (tests/pgserver.py, ``Backend``)."""
    server = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    b = Backend(request.param, tmp_path, server)
    try:
        yield b
    finally:
        b.close()
