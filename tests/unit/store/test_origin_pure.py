"""The pure parts of edges and origins: the LRU choice, the index format, the [origin]
table, and which builds are pinned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netbootd.config import parse_config
from netbootd.config_origin import parse_size
from netbootd.core.intent import Intent, NodeOverride, ReimageOrder
from netbootd.errors import BuildError, ConfigError
from netbootd.store.origin_edge import pinned_refs
from netbootd.store.origin_index import IndexEntry, index_json, parse_index
from netbootd.store.origin_lru import Cached, choose_evictions

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


# -- LRU -------------------------------------------------------------------------------------
def test_within_the_bound_nothing_is_evicted() -> None:
    blobs = {A: Cached(10, 1.0), B: Cached(10, 2.0)}
    assert choose_evictions(blobs, 30, incoming=10).evict == ()


def test_least_recently_used_go_first_until_the_incoming_blob_fits() -> None:
    blobs = {A: Cached(10, 3.0), B: Cached(10, 1.0), C: Cached(10, 2.0)}
    e = choose_evictions(blobs, 30, incoming=15)
    assert e.evict == (B, C) and e.over_by == 0


def test_pinned_and_held_blobs_are_never_chosen_even_if_the_bound_is_missed() -> None:
    blobs = {A: Cached(10, 1.0), B: Cached(10, 2.0), C: Cached(10, 3.0)}
    e = choose_evictions(blobs, 15, incoming=10, pinned={A}, held={B})
    assert e.evict == (C,) and e.over_by == 15


def test_a_tie_on_last_use_frees_the_larger_blob_first() -> None:
    blobs = {A: Cached(5, 1.0), B: Cached(50, 1.0), C: Cached(5, 9.0)}
    assert choose_evictions(blobs, 20).evict == (B,)


# -- index -----------------------------------------------------------------------------------
def test_the_index_round_trips() -> None:
    entries = [IndexEntry("demo", "2.0", D, 5), IndexEntry("demo", "1.0", A, 7)]
    assert parse_index(index_json(entries)) == sorted(entries, key=lambda e: e.version)


@pytest.mark.parametrize("doc, says", [
    ("not json", "not valid JSON"),
    ('{"format": 2, "builds": []}', "expected"),
    ('{"format": 1, "builds": {}}', "expected"),
    ('{"format": 1, "builds": [1]}', "builds[0]: expected an object"),
])
def test_a_malformed_index_is_refused(doc: str, says: str) -> None:
    with pytest.raises(BuildError, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse_index(doc)


def test_every_bad_entry_is_listed_and_nothing_is_half_read() -> None:
    doc: dict[str, Any] = {"format": 1, "builds": [
        {"name": "../etc", "version": "1", "manifest_sha256": A, "size": 1},
        {"name": "ok", "version": "1", "manifest_sha256": "ABC", "size": -1},
        {"name": "ok", "version": "2", "manifest_sha256": A, "size": True},
        {"name": "good", "version": "1", "manifest_sha256": A, "size": 1},
        {"name": "good", "version": "1", "manifest_sha256": B, "size": 1},
    ]}
    with pytest.raises(BuildError) as e:
        parse_index(json.dumps(doc))
    text = str(e.value)
    for says in ("builds[0]: bad name", "builds[1]: bad manifest_sha256, size",
                 "builds[2]: bad size", "builds[4]: good/1 listed twice"):
        assert says in text, says


# -- [origin] --------------------------------------------------------------------------------
BASE = {"server": {"address": "10.0.0.1"}, "groups": {"d": {"default": True, "build": "x/1"}}}


@pytest.mark.parametrize("given, size", [
    (1 << 30, 1 << 30), ("20GiB", 20 << 30), ("500 MB", 500_000_000), ("1.5GiB", 3 << 29),
    ("12345", 12345), ("20 parsecs", None), ("-1", None), (-5, None), (True, None), ("", None),
])
def test_sizes(given: object, size: int | None) -> None:
    assert parse_size(given) == size


def test_the_origin_table_defaults_and_values() -> None:
    assert parse_config(BASE).origin.url is None
    c = parse_config({**BASE, "origin": {"url": "http://10.1.0.1:8080/", "cache_max": "2GiB",
                                         "poll": 5, "wait": 30}}).origin
    assert (c.url, c.cache_max, c.poll, c.wait) == ("http://10.1.0.1:8080", 2 << 30, 5.0, 30.0)


def test_every_origin_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "origin": {"url": "ftp://x", "cache_max": "lots", "poll": 0,
                                         "wait": "soon", "colour": 1}})
    text = "\n".join(e.value.problems)
    for key in ("origin.url", "origin.cache_max", "origin.poll", "origin.wait",
                "origin.colour: unknown key"):
        assert key in text, key
    with pytest.raises(ConfigError, match="below 1MiB"):
        parse_config({**BASE, "origin": {"url": "http://a", "cache_max": 20}})
    with pytest.raises(ConfigError, match="no query"):
        parse_config({**BASE, "origin": {"url": "http://u:p@a/?x=1"}})


# -- pins ------------------------------------------------------------------------------------
def test_pinned_builds_are_what_anything_points_at_now() -> None:
    config = parse_config({"server": {"address": "10.0.0.1"},
                           "groups": {"d": {"default": True, "build": "base/1"},
                                      "web": {"channel": "web-stable"}},
                           "nodes": {"n": {"mac": "52:54:00:00:00:01", "build": "pin/1"}}})
    intent = Intent(channels={"web-stable": "web/3", "other": "other/2", "inst": "inst/1"},
                    overrides={"n": NodeOverride(build="ovr/1"),
                               "m": NodeOverride(channel="missing-channel")},
                    reimage={"n": ReimageOrder(1, "disk/1")}, installer="inst")
    assert pinned_refs(config, intent) == {"base/1", "web/3", "other/2", "inst/1", "pin/1",
                                           "ovr/1", "disk/1"}
