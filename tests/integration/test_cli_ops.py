"""The operator's CLI through the real ``netbootd`` entry point, as a subprocess: safe orders
(reimage --cancel, --yes, rollback targets, kind checks at import), clean failures (one
message, a documented exit code, no traceback, the store and state unchanged) and readable
views (tables, UTC times, the planner's next build)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import loopback_config, make_store, write_build
from netbootd.cli_errors import (
    EXIT_ACCESS,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_NO_SPACE,
    EXIT_REFUSED,
)
from netbootd.lab.demo import toml_dump

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("netbootd")
ENTRY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "netbootd"]
RAW = bytes(range(256)) * 16
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def make_site(base: Path) -> Path:
    store = make_store(base / "store")
    write_build(store, "lab-disk", "1", {"disk.img": RAW}, kind="disk",
                disk={"file": "disk.img", "compression": "none", "raw_size": len(RAW),
                      "raw_sha256": hashlib.sha256(RAW).hexdigest()})
    data = loopback_config(base, reimage={"installer": "demo/2.0"})
    cfg = base / "netbootd.toml"
    cfg.write_text(toml_dump(data))
    return cfg


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    ok(site, "image", "list")  # the state databases exist before any snapshot
    return site


def nb(cfg: Path, *args: str, stdin: Any = subprocess.DEVNULL,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*ENTRY, *args, "--config", str(cfg)], cwd=ROOT, stdin=stdin,
                       capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def ok(cfg: Path, *args: str) -> str:
    r = nb(cfg, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def js(cfg: Path, *args: str) -> Any:
    return json.loads(ok(cfg, *args, "--json"))


def snapshot(cfg: Path) -> Any:
    """Every file of the store with its sha256, and every row of the intent."""
    base = cfg.parent
    store = base / "store"
    files = sorted((str(p.relative_to(store)), hashlib.sha256(p.read_bytes()).hexdigest())
                   for p in store.rglob("*") if p.is_file() and p.name != ".lock")
    intent = base / "state" / "intent.sqlite3"
    rows: dict[str, Any] = {}
    if intent.exists():
        db = sqlite3.connect(f"file:{intent}?mode=ro", uri=True)
        for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND "
                               "name NOT LIKE 'sqlite_%'"):
            rows[t] = db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
        db.close()
    return files, rows


def refused(cfg: Path, *args: str, code: int = EXIT_REFUSED, says: str) -> str:
    before = snapshot(cfg)
    r = nb(cfg, *args)
    assert r.returncode == code, (args, r.returncode, r.stderr)
    assert says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert snapshot(cfg) == before, args
    return r.stderr


# -- safe orders ---------------------------------------------------------------------------------
def test_a_reimage_order_can_be_cancelled_and_the_next_boot_is_the_normal_one(cfg: Path) -> None:
    def lab1() -> dict[str, Any]:
        return next(n for n in js(cfg, "node", "list") if n["name"] == "lab1")

    assert lab1()["next"] == {"group": "default", "mode": "local", "build": None,
                              "why": "mode local (config)"}
    order = js(cfg, "node", "reimage", "lab1", "--image", "lab-disk/1", "--yes")
    assert lab1()["next"]["mode"] == "reimage" and lab1()["next"]["build"] == "lab-disk/1"
    out = ok(cfg, "node", "reimage", "lab1", "--cancel")
    assert f"reimage order {order['id']} (lab-disk/1) cancelled" in out
    node = js(cfg, "node", "show", "lab1")
    assert node["reimage"] is None and node["next"]["mode"] == "local"
    assert [(a["id"], a["state"]) for a in node["actions"]] == [(order["id"], "cancelled")]
    assert node["actions"][0]["reason"].startswith("cancelled by ")
    refused(cfg, "node", "reimage", "lab1", "--cancel", says="has no open reimage order")
    refused(cfg, "node", "reimage", "lab1", says="give --image NAME/VERSION")


def test_node_set_clear_says_an_open_reimage_order_remains(cfg: Path) -> None:
    ok(cfg, "node", "reimage", "lab1", "--image", "lab-disk/1", "--yes")
    out = ok(cfg, "node", "set", "lab1", "--mode", "appliance")
    assert out.splitlines()[0] == "node lab1: mode: (unset) -> appliance"
    assert "still open and wins" in out and "node reimage lab1 --cancel" in out
    out = ok(cfg, "node", "set", "db1", "--build", "demo/1.0")
    assert out.strip() == "node db1: build: (unset) -> demo/1.0"
    out = ok(cfg, "node", "set", "db1", "--clear")
    assert out.strip() == "node db1: build: demo/1.0 -> (unset)"
    assert ok(cfg, "node", "set", "db1", "--clear").strip() == \
        "node db1: nothing changed (override: none)"


@pytest.mark.parametrize("args", [
    ("node", "reimage", "lab1", "--image", "lab-disk/1"),
    ("image", "remove", "lab-disk/1"),
    ("image", "gc"),
    ("channel", "rollback", "kvm-stable"),
])
def test_destructive_commands_without_a_terminal_need_yes(cfg: Path, args: tuple[str, ...]
                                                          ) -> None:
    ok(cfg, "channel", "set", "kvm-stable", "demo/1.0")
    ok(cfg, "channel", "set", "kvm-stable", "demo/2.0")
    refused(cfg, *args, says="add --yes")
    ok(cfg, *args, "--yes")


def test_an_answer_other_than_yes_on_a_terminal_changes_nothing(cfg: Path) -> None:
    import pty

    leader, follower = pty.openpty()
    before = snapshot(cfg)
    proc = subprocess.Popen([*ENTRY, "image", "remove", "lab-disk/1", "--config", str(cfg)],
                            cwd=ROOT, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    while b"[y/N]" not in out:
        out += os.read(leader, 1024)
    os.write(leader, b"n\n")
    with contextlib.suppress(OSError):
        while chunk := os.read(leader, 1024):
            out += chunk
    os.close(leader)
    assert proc.wait(60) == EXIT_REFUSED
    assert b"remove build lab-disk/1? [y/N]" in out and b"not confirmed" in out
    assert snapshot(cfg) == before


def test_rollback_to_a_build_the_channel_never_had_needs_force(cfg: Path) -> None:
    ok(cfg, "channel", "set", "kvm-stable", "demo/1.0")
    ok(cfg, "channel", "set", "kvm-stable", "demo/2.0")
    refused(cfg, "channel", "rollback", "kvm-stable", "--to", "lab-disk/1", "--yes",
            says="never pointed at lab-disk/1 (it had: demo/1.0, demo/2.0)")
    e = js(cfg, "channel", "rollback", "kvm-stable", "--to", "demo/1.0", "--yes")
    assert (e["from"], e["to"]) == ("demo/2.0", "demo/1.0")
    e = js(cfg, "channel", "rollback", "kvm-stable", "--to", "esxi/8.0u3", "--yes", "--force")
    assert e["to"] == "esxi/8.0u3"


def _iso(path: Path) -> Path:
    data = bytearray(0x9000)
    data[0x8000:0x8006] = b"\x01CD001"
    path.write_bytes(bytes(data))
    return path


def _bzimage(path: Path) -> Path:
    data = bytearray(0x1000)
    data[0:2] = b"MZ"
    data[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(data))
    return path


def test_imports_are_checked_by_their_bytes(cfg: Path, tmp_path: Path) -> None:
    iso = _iso(tmp_path / "some.iso")
    kernel = _bzimage(tmp_path / "vmlinuz")
    sq = tmp_path / "root.squashfs"
    sq.write_bytes(b"hsqs" + bytes(4092))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"070701" + bytes(200))
    linux = ("image", "import", "--name", "kvm", "--version", "2026.13")
    refused(cfg, *linux, str(iso), says="some.iso looks like an ISO 9660 image (CD001 at "
            "0x8001), not a kernel; it fits as an ESXi installer ISO: --kind esxi")
    refused(cfg, *linux, str(kernel), str(sq), says="root.squashfs looks like a squashfs "
            "file system (hsqs), not an initrd; it fits as a root file system: --rootfs FILE")
    refused(cfg, *linux, str(initrd), says="initrd.img looks like a cpio archive")
    refused(cfg, *linux, str(kernel), "--rootfs", str(initrd), says="not a root file system")
    refused(cfg, "image", "import", "--kind", "disk", "--name", "d", "--version", "1",
            str(kernel), says="vmlinuz looks like a Linux kernel")
    refused(cfg, "image", "import", "--kind", "esxi", "--name", "e", "--version", "1",
            str(kernel), says="looks like a Linux kernel")
    b = js(cfg, *linux, str(kernel), str(initrd), "--rootfs", str(sq))
    assert sorted(b["files"]) == ["initrd.img", "root.squashfs", "vmlinuz"]


# -- clean failures ------------------------------------------------------------------------------
def test_a_closed_pipe_ends_quietly_with_141(cfg: Path) -> None:
    ok(cfg, "channel", "set", "kvm-stable", "demo/1.0")
    state = cfg.parent / "state" / "intent.sqlite3"
    with sqlite3.connect(state) as db:
        db.executemany("INSERT INTO channel_history (channel, ts, who, action, from_build, "
                       "to_build, why) VALUES ('kvm-stable', ?, 't', 'set', 'demo/1.0', "
                       "'demo/2.0', 'x')", [(float(i),) for i in range(20000)])
    proc = subprocess.Popen([*ENTRY, "channel", "history", "kvm-stable", "--json", "--config",
                             str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"["  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == EXIT_BROKEN_PIPE
    assert err == ""


@pytest.mark.parametrize("args", [["--print-man"], ["node", "--help"]])
def test_help_and_the_man_page_into_a_closed_pipe_are_quiet(args: list[str]) -> None:
    proc = subprocess.Popen([*ENTRY, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(60) in (0, EXIT_BROKEN_PIPE) and err == "", err


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@root_only
def test_a_read_only_state_and_store_give_a_message_and_code_4(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "site", "16m") as base:
        site = make_site(base)
        ok(site, "channel", "set", "kvm-stable", "demo/1.0")
        subprocess.run(["mount", "-o", "remount,ro", str(base)], check=True)
        kernel = _bzimage(tmp_path / "vmlinuz")
        for args in (("node", "set", "db1", "--mode", "local"),
                     ("channel", "set", "kvm-stable", "demo/2.0"),
                     ("image", "import", "--name", "k", "--version", "1", str(kernel))):
            r = nb(site, *args)
            assert r.returncode == EXIT_ACCESS, (args, r.stderr)
            assert "read-only file system" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) <= 2, r.stderr


def test_a_locked_state_database_gives_a_message_and_code_4(cfg: Path) -> None:
    ok(cfg, "channel", "set", "kvm-stable", "demo/1.0")
    before = snapshot(cfg)
    holder = sqlite3.connect(cfg.parent / "state" / "intent.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = nb(cfg, "node", "set", "db1", "--mode", "local")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == EXIT_ACCESS and "locked by another process" in r.stderr, r.stderr
    assert snapshot(cfg) == before


def test_ctrl_c_during_an_import_leaves_the_store_as_it_was(cfg: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "vmlinuz"
    os.mkfifo(fifo)
    ok(cfg, "image", "list")  # the state databases exist before the snapshot
    before = snapshot(cfg)
    proc = subprocess.Popen([*ENTRY, "image", "import", "--name", "kvm", "--version", "1",
                             str(fifo), "--config", str(cfg)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    writer = os.open(fifo, os.O_WRONLY)  # blocks until the import opened it
    try:
        os.write(writer, b"\x00" * (1 << 20))
        staging = cfg.parent / "store" / ".staging"
        deadline = time.monotonic() + 60
        while not any(p.name == "vmlinuz" and p.stat().st_size > 0
                      for p in staging.rglob("vmlinuz")):
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "interrupted" in err
    assert snapshot(cfg) == before
    assert not list((cfg.parent / "store" / ".staging").iterdir())


@root_only
def test_a_full_disk_during_an_import_gives_code_5_and_changes_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "site", "2m") as base:
        site = make_site(base)
        ok(site, "image", "list")
        big = tmp_path / "vmlinuz"
        big.write_bytes(b"\x00" * (4 << 20))
        refused(site, "image", "import", "--name", "kvm", "--version", "1", str(big),
                code=EXIT_NO_SPACE, says="no space left")


# -- readable views ------------------------------------------------------------------------------
def test_views_have_headers_human_sizes_utc_and_the_next_build(cfg: Path) -> None:
    out = ok(cfg, "image", "list").splitlines()
    assert out[0].split() == ["BUILD", "KIND", "ARCH", "SIZE", "NEEDED", "BY"]
    lab = next(line for line in out if line.startswith("lab-disk/1"))
    assert "4.00 KiB" in lab
    show = ok(cfg, "image", "show", "demo/2.0")
    assert "command line: console=ttyS0 panic=-1" in show
    assert re.search(r"vmlinuz\s+10 B\s+[0-9a-f]{64}", show), show
    ok(cfg, "channel", "set", "kvm-stable", "demo/1.0")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC kvm-stable: set - -> demo/1.0",
                     ok(cfg, "channel", "history", "kvm-stable"))
    ok(cfg, "node", "set", "kiosk", "--channel", "kvm-stable")
    rows = {line.split()[0]: line for line in ok(cfg, "node", "list").splitlines()}
    assert rows["NODE"].split()[:4] == ["NODE", "GROUP", "NEXT", "BUILD"]
    assert re.match(r"db1\s+default\s+demo/2.0\s+pin \(nodes.db1.build\)\s+-\s+-", rows["db1"])
    assert re.match(r"kiosk\s+default\s+demo/1.0\s+channel kvm-stable \(node set --channel\)",
                    rows["kiosk"])
    assert "no MAC known yet" in rows["web1"]
    assert re.match(r"esx1\s+hypervisors\s+esxi/8.0u3\s+pin \(groups.hypervisors.build\)",
                    rows["esx1"])
    text = ok(cfg, "node", "show", "db1")
    assert "next:     appliance demo/2.0 (pin (nodes.db1.build))" in text
    assert "macs:     52:54:00:00:00:02" in text


def test_every_command_has_help_an_example_and_the_man_page_lists_it(cfg: Path) -> None:
    from netbootd.cli import build_parser
    from netbootd.manpage import commands

    leaves = [name for name, _ in commands(build_parser())]
    assert {"serve", "check", "render", "boot", "image import", "node reimage",
            "channel rollback", "node timeline"} <= set(leaves)
    man = subprocess.run([*ENTRY, "--print-man"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert man.startswith(".TH NETBOOTD 8")
    for name in leaves:
        assert f".SS netbootd {name.replace('-', chr(92) + '-')}" in man, name
    for name, sp in commands(build_parser()):
        assert sp.epilog and "netbootd " in sp.epilog, name
        for a in sp._actions:
            assert a.help, (name, a.dest)
    bash = subprocess.run([*ENTRY, "--print-completion", "bash"], capture_output=True,
                          text=True, check=True, cwd=ROOT).stdout
    assert "reimage" in bash and "--cancel" in bash and "complete" in bash


def test_the_exit_code_table_in_the_docs_matches_the_code() -> None:
    import netbootd.cli_errors as ce

    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| `(\d+)` \|", table, re.M)}
    assert documented == {v for k, v in vars(ce).items() if k.startswith("EXIT_")}
