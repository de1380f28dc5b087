"""parse_boot_report: only a clean ``done`` is ready; the node's fields are bounded."""

from __future__ import annotations

import json

from netbootd.core.report import parse_boot_report


def test_done_without_errors_is_ready() -> None:
    r = parse_boot_report({"status": "done", "errors": "[]", "libvirtd": "active"})
    assert r.state == "ready" and r.errors == () and r.extra == {"libvirtd": "active"}


def test_anything_else_is_failed_and_says_why() -> None:
    assert parse_boot_report({}).errors == ("no status reported",)
    assert parse_boot_report({"status": "running"}).errors == ("cloud-init status 'running'",)
    r = parse_boot_report({"status": "done", "errors": json.dumps(["boom"])})
    assert r.state == "failed" and r.errors == ("boom",)  # done but with errors: not ready


def test_errors_that_are_not_a_json_list() -> None:
    assert parse_boot_report({"status": "error", "errors": '"one"'}).errors == ("one",)
    assert parse_boot_report({"status": "error", "errors": "{x"}).errors == ("{x",)
    deep = parse_boot_report({"status": "error", "errors": "[" * 100_000})
    assert deep.errors == ("[" * 500,)
    objs = parse_boot_report({"status": "error", "errors": json.dumps([{"a": 1}, 2])})
    assert objs.errors == ("{'a': 1}", "2")
