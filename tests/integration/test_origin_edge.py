"""Builds by content address, through two real ``netbootd serve`` processes on loopback: an
origin with imported builds, and an edge (``[origin] url``) that pulls, verifies, caches and
serves them over HTTP and TFTP, keeps serving with its origin stopped (also after its own
restart), refuses tampered bytes, and stays within its cache bound without evicting what a
channel or the config points at. Every assertion reads the servers' files, HTTP, TFTP and
/metrics, never their logs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from example_configs import http_get, serving, tftp_get
from helpers import loopback_config, write_build
from hostile import TftpFailure
from netbootd.lab.demo import toml_dump

ROOT = Path(__file__).resolve().parents[2]
KIB = 1024


def blob(seed: str, size: int) -> bytes:
    """Deterministic bytes that do not compress or repeat (distinct blobs per seed)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


FILES: dict[str, dict[str, bytes]] = {
    "demo/1.0": {"vmlinuz": blob("k1", 300 * KIB), "initrd.img": blob("i1", 200 * KIB)},
    "demo/2.0": {"vmlinuz": blob("k2", 300 * KIB), "initrd.img": blob("i2", 250 * KIB)},
    **{f"big/{v}": {"vmlinuz": blob(f"bk{v}", 400 * KIB), "initrd.img": blob(f"bi{v}", 400 * KIB)}
       for v in ("1", "2", "3")},
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_origin(base: Path) -> Path:
    store = base / "store"
    for ref, files in FILES.items():
        name, version = ref.split("/")
        write_build(store, name, version, files, kind="linux", kernel="vmlinuz",
                    initrds=["initrd.img"], cmdline="console=ttyS0")
        # As an import leaves them: each file is a hard link of its blob.
        for f, data in files.items():
            b = store / "blobs" / "sha256" / sha(data)[:2] / sha(data)
            b.parent.mkdir(parents=True, exist_ok=True)
            os.link(store / "builds" / name / version / f, b)
    data = loopback_config(base, groups={"default": {"default": True, "build": "demo/1.0"}},
                           nodes={})
    cfg = base / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    return cfg


def make_edge(base: Path, origin_port: int, **origin: Any) -> Path:
    data = loopback_config(base, groups={"default": {"default": True, "build": "demo/1.0"},
                                         "fleet": {"channel": "fleet"}}, nodes={})
    data["origin"] = {"url": f"http://127.0.0.1:{origin_port}", "poll": 0.5, "wait": 60,
                      **origin}
    base.mkdir(parents=True, exist_ok=True)
    cfg = base / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    return cfg


def port_of(cfg: Path, section: str) -> int:
    import tomllib
    return int(tomllib.loads(cfg.read_text())[section]["port"])


def metrics(cfg: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = http_get(f"http://127.0.0.1:{port_of(cfg, 'http')}/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(cfg: Path, name: str, **labels: str) -> float:
    return metrics(cfg).get((f"netbootd_{name}_total", frozenset(labels.items())), 0.0)


def until(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def url(cfg: Path, path: str) -> str:
    return f"http://127.0.0.1:{port_of(cfg, 'http')}{path}"


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "netbootd", *args, "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def knows(cfg: Path, ref: str) -> bool:
    """The edge's catalog (as its CLI reads the store) holds ``ref``."""
    r = cli(cfg, "image", "list", "--json")
    assert r.returncode == 0, r.stderr
    return any(b["ref"] == ref for b in json.loads(r.stdout))


def cached(edge_base: Path) -> dict[str, bytes]:
    """Every blob in the edge's cache, by file name (which is its sha256)."""
    root = edge_base / "store" / ".origin" / "blobs" / "sha256"
    return {p.name: p.read_bytes() for p in root.glob("*/*")} if root.is_dir() else {}


class Origin:
    def __init__(self, cfg: Path, proc: subprocess.Popen[bytes]) -> None:
        self.cfg, self.proc = cfg, proc

    def stop(self) -> None:
        self.proc.terminate()  # our own child, by its PID
        self.proc.wait(timeout=60)


@pytest.fixture
def origin_server(tmp_path: Path) -> Iterator[Origin]:
    cfg = make_origin(tmp_path / "origin")
    with serving(cfg) as proc:
        yield Origin(cfg, proc)


@pytest.fixture
def origin(origin_server: Origin) -> Path:
    return origin_server.cfg


def test_the_origin_offers_its_builds_by_content_address(origin: Path) -> None:
    status, body = http_get(url(origin, "/store/v1/builds"))
    assert status == 200
    index = json.loads(body)["builds"]
    assert [f"{b['name']}/{b['version']}" for b in index] == sorted(FILES)
    store = origin.parent / "store"
    for b in index:
        status, text = http_get(url(origin, f"/store/v1/builds/{b['name']}/{b['version']}/"
                                    "manifest.json"))
        assert status == 200 and sha(text) == b["manifest_sha256"]
        assert text == (store / "builds" / b["name"] / b["version"] / "manifest.json"
                        ).read_bytes()
        assert b["size"] == sum(len(d) for d in FILES[f"{b['name']}/{b['version']}"].values())
    data = FILES["demo/2.0"]["vmlinuz"]
    import urllib.request
    req = urllib.request.Request(url(origin, f"/store/v1/blobs/sha256/{sha(data)}"),
                                 headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 206 and r.read() == data[100:200]
        assert r.headers["ETag"] == f'"{sha(data)}"'
    for bad in ("0" * 64, "../../etc/passwd", "ABC", sha(data).upper()):
        assert http_get(url(origin, f"/store/v1/blobs/sha256/{bad}"))[0] == 404
    assert http_get(url(origin, "/store/v1/builds/demo/9.9/manifest.json"))[0] == 404


def test_an_edge_serves_pulled_files_byte_identical_and_keeps_serving_without_origin(
        origin_server: Origin, tmp_path: Path) -> None:
    origin = origin_server.cfg
    edge = make_edge(tmp_path / "edge", port_of(origin, "http"))
    with serving(edge) as proc:
        until("the edge to learn demo/2.0", lambda: knows(edge, "demo/2.0"))
        for f, data in FILES["demo/2.0"].items():
            status, body = http_get(url(edge, f"/builds/demo/2.0/{f}"))
            assert status == 200 and body == data
        assert tftp_get(port_of(edge, "tftp"), "builds/demo/2.0/vmlinuz") == \
            FILES["demo/2.0"]["vmlinuz"]
        held = cached(tmp_path / "edge")
        for data in FILES["demo/2.0"].values():
            assert sha(held[sha(data)]) == sha(data)
        assert all(sha(b) == name for name, b in held.items())  # only verified blobs
        # demo/1.0 is what the config boots: prefetched without any request for it.
        until("demo/1.0 prefetched", lambda: all(sha(d) in cached(tmp_path / "edge")
                                                 for d in FILES["demo/1.0"].values()))
        assert metric(edge, "origin_blobs_verified") >= 4
        assert metric(edge, "origin_fetched_bytes") >= sum(
            len(d) for r in ("demo/1.0", "demo/2.0") for d in FILES[r].values())
        # Pulled builds are offered onwards only once complete.
        idx = json.loads(http_get(url(edge, "/store/v1/builds"))[1])["builds"]
        assert {"demo/1.0", "demo/2.0"} <= {f"{b['name']}/{b['version']}" for b in idx}
        assert "big/3" not in {f"{b['name']}/{b['version']}" for b in idx}
    # The origin goes away.
    origin_server.stop()
    with serving(edge):  # restarted with its origin down: the catalog is on disk
        assert knows(edge, "demo/2.0")
        for f, data in FILES["demo/2.0"].items():
            status, body = http_get(url(edge, f"/builds/demo/2.0/{f}"))
            assert status == 200 and body == data
        assert tftp_get(port_of(edge, "tftp"), "builds/demo/1.0/initrd.img") == \
            FILES["demo/1.0"]["initrd.img"]
        # A file it never pulled fails cleanly, at once: HTTP 503 and a TFTP ERROR.
        t0 = time.monotonic()
        status, _ = http_get(url(edge, "/builds/big/3/vmlinuz"))
        assert status == 503 and time.monotonic() - t0 < 30
        with pytest.raises(TftpFailure):
            tftp_get(port_of(edge, "tftp"), "builds/big/3/initrd.img")
        assert not any(sha(d) in cached(tmp_path / "edge") for d in FILES["big/3"].values())
        assert metric(edge, "origin_fetch_errors") >= 1
    assert proc.poll() is not None  # that was a second edge process: a restart
    # `image verify` re-hashes what the edge holds and skips what it never pulled...
    assert cli(edge, "image", "verify").returncode == 0
    # ...and finds a cached blob that rotted on the edge's disk.
    rotten = tmp_path / "edge" / "store" / ".origin" / "blobs" / "sha256" / \
        sha(FILES["demo/2.0"]["vmlinuz"])[:2] / sha(FILES["demo/2.0"]["vmlinuz"])
    os.chmod(rotten, 0o644)
    rotten.write_bytes(b"x" * rotten.stat().st_size)
    r = cli(edge, "image", "verify")
    assert r.returncode == 1 and "demo/2.0: vmlinuz" in r.stdout + r.stderr


def test_a_tampered_origin_blob_is_refused_counted_and_never_served(
        origin: Path, tmp_path: Path) -> None:
    good = FILES["demo/2.0"]["initrd.img"]
    origin_blob = origin.parent / "store" / "blobs" / "sha256" / sha(good)[:2] / sha(good)
    # Behind the origin's back (same size, one byte flipped): it serves what is on disk.
    os.chmod(origin_blob, 0o644)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    origin_blob.write_bytes(bytes(bad))
    edge = make_edge(tmp_path / "edge", port_of(origin, "http"))
    with serving(edge):
        until("the edge to learn demo/2.0", lambda: knows(edge, "demo/2.0"))
        status, body = http_get(url(edge, "/builds/demo/2.0/initrd.img"))
        assert status == 503 and body != bytes(bad)
        with pytest.raises(TftpFailure):
            tftp_get(port_of(edge, "tftp"), "builds/demo/2.0/initrd.img")
        assert metric(edge, "origin_blobs_refused", reason="sha256") >= 1
        assert sha(good) not in cached(tmp_path / "edge")
        assert not list((tmp_path / "edge" / "store" / ".origin" / ".staging").iterdir())
        # Repaired at the origin: the edge fetches it again and serves the right bytes.
        origin_blob.write_bytes(good)

        def served() -> bool:
            status, body = http_get(url(edge, "/builds/demo/2.0/initrd.img"))
            assert status in (200, 503)
            return status == 200 and body == good
        until("the repaired blob to be served", served)
        assert cached(tmp_path / "edge")[sha(good)] == good


def test_the_cache_stays_bounded_least_recently_used_out_never_a_pinned_build(
        origin: Path, tmp_path: Path) -> None:
    # demo/1.0 (config, 500 KiB) and the channel's build are pinned; room for 2200 KiB.
    bound = 2200 * KIB
    edge = make_edge(tmp_path / "edge", port_of(origin, "http"), cache_max=bound)
    base = tmp_path / "edge"

    def has(ref: str) -> bool:
        return all(sha(d) in cached(base) for d in FILES[ref].values())

    def get_all(ref: str) -> None:
        for f, data in FILES[ref].items():
            assert http_get(url(edge, f"/builds/{ref}/{f}")) == (200, data)

    with serving(edge):
        until("the edge to learn big/3", lambda: knows(edge, "big/3"))
        until("demo/1.0 prefetched", lambda: has("demo/1.0"))
        get_all("big/1")   # 800 KiB: 1300 KiB in the cache
        get_all("demo/2.0")  # 550 KiB: 1850 KiB
        get_all("big/1")   # big/1 used again: demo/2.0 is now the least recently used
        get_all("big/2")   # 800 KiB more: both files of demo/2.0 go, big/1 is kept
        assert has("big/2") and has("big/1") and has("demo/1.0") and not has("demo/2.0")
        assert sum(len(b) for b in cached(base).values()) <= bound
        assert metric(edge, "origin_evicted_blobs") == 2
        # A channel moves to big/3: prefetched without any request, and pinned: big/2 and
        # big/1 (least recently used first) make room, demo/1.0 (config) stays.
        r = cli(edge, "channel", "set", "fleet", "big/3")
        assert r.returncode == 0, r.stderr
        until("big/3 prefetched", lambda: has("big/3"))
        assert has("demo/1.0") and not has("big/1")
        get_all("big/1")  # everything left but the pins goes; the pins stay
        assert has("big/3") and has("demo/1.0") and has("big/1") and not has("big/2")
        assert sum(len(b) for b in cached(base).values()) <= bound


def test_requests_for_a_blob_being_fetched_wait_on_one_fetch(origin: Path,
                                                             tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    edge = make_edge(tmp_path / "edge", port_of(origin, "http"))
    with serving(edge):
        until("the edge to learn big/2", lambda: knows(edge, "big/2"))
        until("demo/1.0 prefetched", lambda: all(sha(d) in cached(tmp_path / "edge")
                                                 for d in FILES["demo/1.0"].values()))
        before = metric(edge, "origin_fetched_bytes")
        kernel, initrd = FILES["big/2"]["vmlinuz"], FILES["big/2"]["initrd.img"]
        with ThreadPoolExecutor(8) as pool:
            https = [pool.submit(http_get, url(edge, "/builds/big/2/vmlinuz")) for _ in range(6)]
            tftps = [pool.submit(tftp_get, port_of(edge, "tftp"), "builds/big/2/initrd.img")
                     for _ in range(2)]
            assert all(f.result() == (200, kernel) for f in https)
            assert all(f.result() == initrd for f in tftps)
        # Each blob crossed the wire once, however many clients asked for it at once.
        assert metric(edge, "origin_fetched_bytes") - before == len(kernel) + len(initrd)
        assert metric(edge, "origin_waits") >= 2
