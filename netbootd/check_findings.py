"""The report ``netbootd check`` prints: findings (key, problem, fix), the exit code, text
and ``--json`` (documented in docs/configuration.md, "Checking a config")."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

EXIT_OK, EXIT_PROBLEMS, EXIT_SCHEMA = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Finding:
    key: str  # the config key (groups.web.user_data) or store path to change
    problem: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.key}: {self.problem}" + (f" (fix: {self.fix})" if self.fix else "")


@dataclass(slots=True)
class Report:
    config: str
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    schema_ok: bool = True
    groups: int = 0
    nodes: int = 0
    rendered_files: int = 0  # files the render pass produced without error

    @property
    def exit_code(self) -> int:
        if not self.schema_ok:
            return EXIT_SCHEMA
        return EXIT_PROBLEMS if self.errors else EXIT_OK

    def to_json(self) -> str:
        return json.dumps({
            "config": self.config, "ok": not self.errors, "exit_code": self.exit_code,
            "schema_ok": self.schema_ok,
            "errors": [asdict(f) for f in self.errors],
            "warnings": [asdict(f) for f in self.warnings],
            "groups": self.groups, "nodes": self.nodes, "rendered_files": self.rendered_files,
        }, indent=2)

    def to_text(self) -> str:
        lines = [f"warning: {w.line()}" for w in self.warnings]
        if self.errors:
            lines.append(f"{self.config}: {len(self.errors)} problem(s):")
            lines += [f"  - {e.line()}" for e in self.errors]
        else:
            lines.append(f"{self.config}: ok ({self.groups} groups, {self.nodes} nodes, "
                         f"{self.rendered_files} files rendered)")
        return "\n".join(lines)


def finding_from_line(text: str) -> Finding:
    """A ``key: message`` line (parse_config, load_store) as a Finding."""
    key, sep, rest = text.partition(": ")
    if not sep or " " in key:
        return Finding("config", text)
    return Finding(key, rest)
