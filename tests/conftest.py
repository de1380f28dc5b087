"""Suite-wide test setup.

In CI (``CI`` set, as CI runs ``.ci/run``) a skipped test is a failure: ``.ci/install-deps.sh``
installs every tool the suite needs, so a skip there means a missing install step, not a
missing tool.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


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
