"""The World is one immutable value; the watcher makes a new one only when something changed."""

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from helpers import TEST_KEY, make_config, make_store, write_build
from netbootd.core.identity import ClientIdentity
from netbootd.service import make_renderer
from netbootd.state.events import StateDB
from netbootd.state.registry import Registry
from netbootd.store.builds import load_store
from netbootd.store.layout import bump_generation
from netbootd.world import WorldWatcher
from pgserver import Backend

GUID = "8e1c5a4f-2b7d-4c39-9a60-0f1e2d3c4b5a"  # web1's


def watcher(tmp_path: Path, backend: Backend) -> tuple[WorldWatcher, StateDB]:
    make_store(tmp_path / "store")
    config = make_config(tmp_path)
    catalog, _ = load_store(config.server.store_dir)
    state = StateDB(backend.db("state.sqlite3"))
    return WorldWatcher(config, catalog, make_renderer(config, catalog, TEST_KEY), state,
                        registry=Registry(backend.db("intent.sqlite3")),
                        store_dir=config.server.store_dir), state


def test_nothing_changed_means_the_same_world(tmp_path: Path, backend: Backend) -> None:
    w, _ = watcher(tmp_path, backend)
    first = w.current()
    assert all(w.current() is first for _ in range(100))  # no rebuild per request
    assert first.generation == 0
    with pytest.raises(FrozenInstanceError):
        first.generation = 5  # type: ignore[misc]


def test_a_flip_by_another_process_is_in_the_next_world(tmp_path: Path,
                                                        backend: Backend) -> None:
    w, _ = watcher(tmp_path, backend)
    before = w.current()
    cli = Registry(backend.db("intent.sqlite3"))  # another handle, as the CLI has
    cli.set_channel("stable", "demo/2.0", who="test", why="", now=1.0)
    after = w.current()  # the very next request
    assert after is not before and after.generation == before.generation + 1
    assert after.intent.channels.get("stable") == "demo/2.0"
    assert "stable" not in before.intent.channels  # the old World did not change
    assert w.world is after  # one attribute, swapped


def test_an_import_is_in_the_next_world(tmp_path: Path, backend: Backend) -> None:
    w, _ = watcher(tmp_path, backend)
    before = w.current()
    write_build(tmp_path / "store", "new", "1", {"vmlinuz": b"k"}, kind="linux",
                kernel="vmlinuz")
    bump_generation(tmp_path / "store")
    after = w.current()
    assert "new/1" in after.catalog and "new/1" not in before.catalog
    assert after.generation == before.generation + 1
    assert after.renderer is not before.renderer  # renders from the new catalog


def test_a_guid_on_a_second_machine_is_in_the_next_world_a_storm_rebuilds_nothing(
        tmp_path: Path, backend: Backend) -> None:
    w, state = watcher(tmp_path, backend)
    state.saw(ClientIdentity(mac="52:54:00:00:10:01", guid=GUID), 1.0)
    first = w.current()
    state.saw(ClientIdentity(mac="52:54:00:00:10:02", guid=GUID), 2.0)
    shared = w.current()
    assert GUID in shared.intent.ambiguous_guids and GUID not in first.intent.ambiguous_guids
    for i in range(3, 50):  # more clones of the same GUID: it already identifies nobody
        state.saw(ClientIdentity(mac=f"52:54:00:00:10:{i:02x}", guid=GUID), float(i))
        assert w.current() is shared
