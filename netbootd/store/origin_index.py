"""The origin's build index: what ``GET /store/v1/builds`` sends, and how an edge reads it.

::

    {"format": 1,
     "builds": [{"name": "demo", "version": "1.0", "manifest_sha256": "ab12...",
                 "size": 12345678}, ...]}

``manifest_sha256`` is the sha256 of the exact bytes ``GET /store/v1/builds/NAME/VERSION/
manifest.json`` returns, so an edge verifies a manifest before it believes it, as it verifies
each blob against the manifest. ``size`` is the sum of the build's file sizes (what pulling it
costs). Pure: text in, records out; a malformed index is refused with every problem listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from netbootd.errors import BuildError
from netbootd.store.manifest import NAME_RE, SHA256_RE

FORMAT = 1


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    manifest_sha256: str
    size: int

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


def index_json(entries: list[IndexEntry]) -> str:
    """The index body (sorted, stable)."""
    return json.dumps({"format": FORMAT, "builds": [
        {"name": e.name, "version": e.version, "manifest_sha256": e.manifest_sha256,
         "size": e.size} for e in sorted(entries, key=lambda e: (e.name, e.version))]},
        sort_keys=True) + "\n"


def parse_index(text: str, where: str = "origin index") -> list[IndexEntry]:
    """The entries of an index; BuildError listing every problem (nothing is half-read)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BuildError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT \
            or not isinstance(data.get("builds"), list):
        raise BuildError(f"{where}: expected {{\"format\": {FORMAT}, \"builds\": [...]}}")
    problems: list[str] = []
    out: list[IndexEntry] = []
    seen: set[tuple[str, str]] = set()
    for i, b in enumerate(data["builds"]):
        at = f"builds[{i}]"
        if not isinstance(b, dict):
            problems.append(f"{at}: expected an object")
            continue
        name, version = b.get("name"), b.get("version")
        sha, size = b.get("manifest_sha256"), b.get("size")
        bad = [k for k, v in (("name", name), ("version", version))
               if not isinstance(v, str) or not NAME_RE.match(v)]
        if not isinstance(sha, str) or not SHA256_RE.match(sha):
            bad.append("manifest_sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            bad.append("size")
        if bad:
            problems.append(f"{at}: bad {', '.join(bad)}")
            continue
        assert isinstance(name, str) and isinstance(version, str)
        assert isinstance(sha, str) and isinstance(size, int)
        if (name, version) in seen:
            problems.append(f"{at}: {name}/{version} listed twice")
            continue
        seen.add((name, version))
        out.append(IndexEntry(name, version, sha, size))
    if problems:
        raise BuildError(f"{where}: " + "; ".join(problems))
    return out
