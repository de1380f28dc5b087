"""Fuzzing EsxiIso: a damaged installer ISO only ever raises BuildError, never anything else.

Bytes are changed in the volume descriptors, path tables and directory records (sectors 16 to
40 of the image the maker writes), where pycdlib's decoding lives; file data is compared by the
integration tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esxi_iso_maker import make_esxi8_iso
from netbootd.errors import BuildError
from netbootd.store.esxi_iso import EsxiIso

SECTOR = 2048


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("esxi") / "esxi.iso"
    make_esxi8_iso(path)
    return path.read_bytes()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(16 * SECTOR, 40 * SECTOR - 1), st.integers(0, 255)),
                min_size=1, max_size=8))
def test_damaged_iso_raises_only_build_error(tmp_path: Path, pristine: bytes,
                                             changes: list[tuple[int, int]]) -> None:
    data = bytearray(pristine)
    for offset, value in changes:
        data[offset] = value
    path = tmp_path / "damaged.iso"
    path.write_bytes(data)
    try:
        with EsxiIso(path) as iso:
            sizes = {n: (iso.size(n), sum(len(c) for c in iso.iter_chunks(n)))
                     for n in iso.files()}
    except BuildError:
        return
    # Read without complaint: it streamed exactly the size it reported for every file it named
    # (a changed extent can point a name at other bytes; the import's sha256 of what it copied,
    # not this reader, is what makes a build trustworthy).
    assert sizes and all(reported == streamed for reported, streamed in sizes.values()), sizes
