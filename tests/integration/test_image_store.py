"""The image store through the admin core and the CLI: atomic, verified, deduplicated imports;
immutability; verify; remove refused while needed; gc; crash and disk-full safety."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import loopback_config, make_config
from netbootd.admin import Admin
from netbootd.cli import main as cli_main
from netbootd.config import parse_config
from netbootd.errors import BuildError, Conflict
from netbootd.lab.demo import toml_dump
from netbootd.service import Service
from netbootd.store.layout import BLOB_DIR, STAGING_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    config = make_config(tmp_path, {"groups": {"default": {"default": True,
                                                           "channel": "kvm-stable"}},
                                    "nodes": {}})
    with Admin(config) as a:
        yield a


def files(tmp: Path, **content: bytes) -> list[Path]:
    out = []
    for name, data in content.items():
        p = tmp / name.replace("_", ".")
        p.write_bytes(data)
        out.append(p)
    return out


def blobs(store: Path) -> list[Path]:
    return sorted((store / BLOB_DIR).glob("*/*"))


def test_identical_files_are_stored_once_and_builds_are_immutable(admin: Admin,
                                                                  tmp_path: Path) -> None:
    src1 = tmp_path / "v1"
    src2 = tmp_path / "v2"
    src1.mkdir()
    src2.mkdir()
    kernel = os.urandom(300_000)
    a = admin.import_build("linux", name="kvm", version="1", cmdline="console=ttyS0",
                           paths=files(src1, vmlinuz=kernel, initrd_img=b"initrd one"))
    b = admin.import_build("linux", name="kvm", version="2",
                           paths=files(src2, vmlinuz=kernel, initrd_img=b"initrd two"))
    assert a["files"]["vmlinuz"] == b["files"]["vmlinuz"]
    store = admin.store
    k1 = store / "builds/kvm/1/vmlinuz"
    k2 = store / "builds/kvm/2/vmlinuz"
    assert k1.stat().st_ino == k2.stat().st_ino  # one inode: stored once
    assert len(blobs(store)) == 3  # the kernel, two initrds
    assert k1.read_bytes() == kernel
    assert oct(k1.stat().st_mode & 0o777) == "0o444"  # read-only: builds never change
    with pytest.raises(BuildError, match="exists already; builds are immutable"):
        admin.import_build("linux", name="kvm", version="1", paths=files(src1, vmlinuz=b"x"))
    assert (store / "builds/kvm/1/vmlinuz").read_bytes() == kernel
    assert list((store / STAGING_DIR).iterdir()) == []
    assert [x["ref"] for x in admin.builds()] == ["kvm/1", "kvm/2"]


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tree_imports_from_a_directory_and_a_tarball(admin: Admin, tmp_path: Path) -> None:
    manifest = {"name": "appl", "version": "2026.10", "kind": "linux", "kernel": "vmlinuz",
                "initrds": ["initrd.img"], "cmdline": "quiet",
                "files": ["vmlinuz", "initrd.img"]}
    d = tmp_path / "tree"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps(manifest))
    files(d, vmlinuz=b"K", initrd_img=b"I")
    (d / "ignored.txt").write_text("not in the manifest: not imported")
    b = admin.import_build("tree", paths=[d])
    assert b["ref"] == "appl/2026.10" and sorted(b["files"]) == ["initrd.img", "vmlinuz"]
    assert b["cmdline"] == "quiet"
    tb = _tarball(tmp_path / "t.tar.gz", {"manifest.json": json.dumps(manifest).encode(),
                                          "vmlinuz": b"K", "initrd.img": b"I2"})
    b = admin.import_build("tree", paths=[tb], version="2026.11")
    assert b["ref"] == "appl/2026.11"
    assert b["files"]["initrd.img"]["sha256"] == hashlib.sha256(b"I2").hexdigest()


def test_a_wrong_sha256_in_the_manifest_leaves_the_store_as_it_was(admin: Admin,
                                                                    tmp_path: Path) -> None:
    manifest = {"name": "appl", "version": "1", "kind": "linux", "kernel": "vmlinuz",
                "files": {"vmlinuz": {"sha256": "0" * 64}}}
    tb = _tarball(tmp_path / "bad.tar", {"manifest.json": json.dumps(manifest).encode(),
                                         "vmlinuz": b"kernel"})
    with pytest.raises(BuildError, match=r"sha256 is .* the manifest says 0000"):
        admin.import_build("tree", paths=[tb])
    assert admin.builds() == []
    assert blobs(admin.store) == []
    assert not (admin.store / "builds" / "appl").exists()
    assert list((admin.store / STAGING_DIR).iterdir()) == []
    assert admin.gc()["blobs_removed"] == 0  # nothing was linked either


@pytest.mark.parametrize(("compress", "suffix", "compression"), [
    (lambda b: b, "img", "none"), (gzip.compress, "img.gz", "gzip"),
    (lzma.compress, "img.xz", "xz")])
def test_disk_images_record_the_raw_size_and_sha256(admin: Admin, tmp_path: Path,
                                                    compress: Any, suffix: str,
                                                    compression: str) -> None:
    raw = os.urandom(4096) * 64
    src = tmp_path / f"disk.{suffix}"
    src.write_bytes(compress(raw))
    b = admin.import_build("disk", name="lab", version="1", paths=[src])
    assert b["kind"] == "disk"
    assert b["disk"] == {"file": {"none": "disk.img", "gzip": "disk.img.gz",
                                  "xz": "disk.img.xz"}[compression],
                         "compression": compression, "raw_size": len(raw),
                         "raw_sha256": hashlib.sha256(raw).hexdigest()}


def test_a_disk_image_that_does_not_decompress_is_refused(admin: Admin, tmp_path: Path) -> None:
    src = tmp_path / "broken.gz"
    src.write_bytes(gzip.compress(os.urandom(10000))[:-20])
    with pytest.raises(BuildError, match="does not decompress as gzip"):
        admin.import_build("disk", name="lab", version="1", paths=[src])
    assert admin.builds() == []
    assert blobs(admin.store) == []  # the file was staged and linked: the blob went too


def test_verify_finds_a_file_corrupted_on_disk(admin: Admin, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    admin.import_build("linux", name="kvm", version="1",
                       paths=files(tmp_path, vmlinuz=b"kernel bytes", initrd_img=b"initrd"))
    assert admin.verify()["ok"]
    victim = admin.store / "builds/kvm/1/initrd.img"
    os.chmod(victim, 0o644)
    victim.write_bytes(b"initrX")  # same size: only the hash can tell
    r = admin.verify("kvm/1")
    assert not r["ok"]
    assert r["problems"] == [f"kvm/1: initrd.img: sha256 {hashlib.sha256(b'initrX').hexdigest()}"
                             f", manifest says {hashlib.sha256(b'initrd').hexdigest()}"]
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml_dump(_config_data(admin)))
    assert cli_main(["image", "verify", "--config", str(cfg)]) == 1
    assert "initrd.img: sha256" in capsys.readouterr().out


def _config_data(admin: Admin) -> dict[str, Any]:
    c = admin.config
    return {"server": {"address": "127.0.0.1", "state_dir": str(c.server.state_dir),
                       "store_dir": str(c.server.store_dir)},
            "groups": {"default": {"default": True, "channel": "kvm-stable"}}}


def test_remove_is_refused_while_a_channel_or_its_history_needs_the_build(
        admin: Admin, tmp_path: Path) -> None:
    for v in "1234":
        d = tmp_path / v
        d.mkdir()
        admin.import_build("linux", name="kvm", version=v,
                           paths=files(d, vmlinuz=f"kernel {v}".encode()))
    admin.channel_set("kvm-stable", "kvm/1", who="t")
    with pytest.raises(Conflict, match="still needed by channel kvm-stable"):
        admin.remove("kvm/1")
    for v in "234":
        admin.channel_set("kvm-stable", f"kvm/{v}", who="t")
    # kvm/1..3 are the last three builds rollback walks back through
    with pytest.raises(Conflict, match="rollback history"):
        admin.remove("kvm/1")
    admin.channel_set("kvm-stable", "kvm/4", who="t", why="again")  # no step: still needed
    admin.channel_rollback("kvm-stable", who="t")  # -> kvm/3
    admin.channel_rollback("kvm-stable", who="t")  # -> kvm/2
    admin.channel_set("kvm-stable", "kvm/4", who="t")  # stack: 1, 2 -> kvm/1 still kept
    with pytest.raises(Conflict):
        admin.remove("kvm/1")
    admin.channel_set("kvm-stable", "kvm/3", who="t")
    admin.channel_set("kvm-stable", "kvm/2", who="t")  # stack 1, 2, 4, 3: kvm/1 falls out
    n_blobs = len(blobs(admin.store))
    assert admin.remove("kvm/1") == {"removed": "kvm/1"}
    assert "kvm/1" not in [b["ref"] for b in admin.builds()]
    assert admin.gc() == {"blobs_removed": 1, "bytes_freed": len(b"kernel 1"),
                          "staging_removed": 0}
    assert len(blobs(admin.store)) == n_blobs - 1


def test_channel_set_and_history_through_the_cli(admin: Admin, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml_dump(_config_data(admin)))
    for v in "12":
        d = tmp_path / v
        d.mkdir()
        k = d / "vmlinuz"
        k.write_bytes(f"kernel {v}".encode())
        assert cli_main(["image", "import", "--config", str(cfg), "--name", "kvm",
                         "--version", v, str(k)]) == 0
    assert cli_main(["channel", "set", "--config", str(cfg), "kvm-stable", "kvm/9"]) == 2
    assert "no build named kvm/9 (known: kvm/1, kvm/2)" in capsys.readouterr().err
    assert cli_main(["channel", "set", "--config", str(cfg), "kvm-stable", "kvm/1"]) == 0
    assert cli_main(["channel", "set", "--config", str(cfg), "kvm-stable", "kvm/2",
                     "--why", "new kernel"]) == 0
    assert cli_main(["channel", "rollback", "--config", str(cfg), "kvm-stable", "--yes"]) == 0
    capsys.readouterr()
    assert cli_main(["channel", "history", "--config", str(cfg), "--json", "kvm-stable"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["from"], e["to"]) for e in hist] == [
        ("set", None, "kvm/1"), ("set", "kvm/1", "kvm/2"), ("rollback", "kvm/2", "kvm/1")]
    assert hist[1]["why"] == "new kernel" and hist[0]["who"].endswith("@cli")


def _import_cmd(cfg: Path, source: Path) -> list[str]:
    return [sys.executable, "-m", "netbootd", "image", "import", "--config", str(cfg),
            "--name", "big", "--version", "1", str(source)]


def test_an_import_killed_half_way_leaves_no_build_and_can_be_redone(
        admin: Admin, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml_dump(_config_data(admin)))
    fifo = tmp_path / "vmlinuz"
    os.mkfifo(fifo)
    chunk = os.urandom(1 << 20)
    proc = subprocess.Popen(_import_cmd(cfg, fifo), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    stop = threading.Event()

    def feed() -> None:  # 6 MiB, then hold the pipe open as a slow source would
        with fifo.open("wb") as f:
            for _ in range(6):
                f.write(chunk)
            f.flush()
            stop.wait(60)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        staged: list[Path] = []
        while time.monotonic() < deadline:
            staged = [p for p in (admin.store / STAGING_DIR).glob("*/vmlinuz")
                      if p.stat().st_size >= 6 << 20]
            if staged:
                break
            time.sleep(0.05)
        assert staged, "the import never got half way"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        writer.join(10)
    assert admin.builds() == []
    assert not (admin.store / "builds/big").exists()
    full = tmp_path / "full-vmlinuz"
    full.write_bytes(chunk * 8)
    done = subprocess.run(_import_cmd(cfg, full), cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert [b["ref"] for b in admin.builds()] == ["big/1"]
    assert admin.verify("big/1")["ok"]
    assert admin.gc()["staging_removed"] == 1  # the killed import's leftovers
    assert list((admin.store / STAGING_DIR).iterdir()) == []


@pytest.mark.needs_root
def test_disk_full_during_an_import_is_explained_and_changes_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        config = make_config(tmp_path, {"server": {
            "address": "127.0.0.1", "state_dir": str(tmp_path / "state"),
            "store_dir": str(small / "store")}})
        with Admin(config) as admin:
            src = tmp_path / "src"
            src.mkdir()
            admin.import_build("linux", name="kvm", version="1",
                               paths=files(src, vmlinuz=b"k" * 1000))
            before = sorted(str(p) for p in admin.store.rglob("*") if ".staging" not in p.parts)
            big = tmp_path / "big"
            big.write_bytes(os.urandom(3 << 20))
            with pytest.raises(BuildError, match=r"no space left in .* the store is unchanged"):
                admin.import_build("linux", name="kvm", version="2", paths=[big])
            after = sorted(str(p) for p in admin.store.rglob("*") if ".staging" not in p.parts)
            assert after == before
            assert list((admin.store / STAGING_DIR).iterdir()) == []
            assert [b["ref"] for b in admin.builds()] == ["kvm/1"]
            assert admin.verify()["ok"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_long_import_shows_progress_on_a_terminal(admin: Admin, tmp_path: Path) -> None:
    import pty

    cfg = tmp_path / "c.toml"
    cfg.write_text(toml_dump(_config_data(admin)))
    big = tmp_path / "vmlinuz"
    big.write_bytes(os.urandom(24 << 20))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(_import_cmd(cfg, big), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(120) == 0
    text = out.decode(errors="replace")
    assert "vmlinuz" in text and "100% 24.00 MiB/24.00 MiB" in text, text[-500:]
    # not a terminal: no progress lines
    cmd = [*_import_cmd(cfg, big)[:-3], "--name", "big", "--version", "2", str(big)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "%" not in done.stderr


@pytest.mark.parametrize("verify", [True, False])
async def test_verify_builds_refuses_a_corrupted_build_at_serve_time(
        tmp_path: Path, verify: bool) -> None:
    data = loopback_config(tmp_path, nodes={})
    data["server"]["verify_builds"] = verify
    data["groups"] = {"default": {"default": True, "build": "kvm/1"}}
    config = parse_config(data, "verify-test")
    with Admin(config) as a:
        for v in "12":
            d = tmp_path / v
            d.mkdir()
            a.import_build("linux", name="kvm", version=v,
                           paths=files(d, vmlinuz=f"kernel {v}".encode()))
    victim = config.server.store_dir / "builds/kvm/2/vmlinuz"
    os.chmod(victim, 0o644)
    victim.write_bytes(b"kernel X")  # same size: only a hash can tell
    service = Service(config)
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.http_port}/builds"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/kvm/1/vmlinuz") as r:
                assert r.status == 200 and await r.read() == b"kernel 1"
            async with s.get(f"{base}/kvm/2/vmlinuz") as r:
                if verify:
                    assert r.status == 404 and "no build named kvm/2" in await r.text()
                else:
                    assert r.status == 200 and await r.read() == b"kernel X"
    finally:
        await service.stop()
