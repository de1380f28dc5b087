"""The ready/failed report a booted node sends after cloud-init: parsed, bounded, judged.

The payload is the node's (render/report_agent.py) and so hostile until shown otherwise:
every field is cut to a fixed length, ``errors`` is a JSON list of strings or is kept as one
string, and unknown fields are ignored. Only ``status: done`` makes a node ``ready``; any
other status, or none, makes it ``failed`` (cloud-init 22.4 reports ``done`` or ``error``
once it has finished).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_ERRORS = 20
MAX_ERROR_LEN = 500
_FIELDS = {"hostname": 253, "fqdn": 253, "detail": 4000, "host_keys": 2000, "libvirtd": 40}


@dataclass(frozen=True, slots=True)
class BootReport:
    state: str  # "ready" or "failed"
    status: str  # what cloud-init said, cut short
    errors: tuple[str, ...]
    extra: dict[str, str]  # hostname, fqdn, detail, host_keys, libvirtd (those sent)

    def detail(self) -> dict[str, Any]:
        """The event's detail (and what the admin API shows)."""
        return {"status": self.status, "errors": list(self.errors), **self.extra}


def parse_boot_report(fields: dict[str, str]) -> BootReport:
    status = fields.get("status", "").strip()[:40]
    raw = fields.get("errors", "")
    errors: list[str] = []
    if raw.strip():
        try:
            parsed = json.loads(raw)  # the HTTP layer bounds the body (64 KiB)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            parsed = raw
        items = parsed if isinstance(parsed, list) else [parsed]
        errors = [str(e)[:MAX_ERROR_LEN] for e in items[:MAX_ERRORS]]
    extra = {k: fields[k][:n] for k, n in _FIELDS.items() if fields.get(k)}
    state = "ready" if status == "done" and not errors else "failed"
    if state == "failed" and not errors:
        errors = [f"cloud-init status {status!r}" if status else "no status reported"]
    return BootReport(state=state, status=status, errors=tuple(errors), extra=extra)
