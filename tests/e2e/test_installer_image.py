"""The reimage recipes with real QEMU: the installer writes a disk image, the disk then boots.

Independent of netbootd's reimage plumbing: the installer is booted directly (-kernel/-initrd)
with the reimage contract's ``netbootd.*`` parameters on its command line, as netbootd renders
them. It takes its address from the lab's site DHCP server, streams the disk image from a small
HTTP server in the lab namespace onto an empty virtio disk, and POSTs its report there. The
same disk file is then booted by SeaBIOS (``-boot order=c``, no network boot): its MBR prints
the marker on COM1 and exits QEMU through isa-debug-exit.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from e2e_helpers import read_posts, start_recording_server
from netbootd.lab.netlab import Lab, QemuGuest, lab_prerequisites, random_mac

REPO = Path(__file__).resolve().parents[2]
INSTALLER_RECIPE = REPO / "images" / "installer" / "build.py"
DISK_RECIPE = REPO / "images" / "disk" / "build.py"
CACHE = REPO / "images" / ".cache"
MISSING = lab_prerequisites("bios")
PORT = 8080
MARKER = "NETBOOTD-REIMAGE-MARKER disk booted ok"
DISK_MIB = 4
TARGET_MIB = 8  # the empty virtual disk is larger than the image, as a real disk would be
EXIT_DEVICE = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
DISK_EXIT_STATUS = (0x2A << 1) | 1  # the MBR writes 0x2a to the isa-debug-exit port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def make_disk(out: Path, compression: str, marker: str = MARKER,
              size_mib: int = DISK_MIB) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(DISK_RECIPE), "--out", str(out), "--marker", marker,
         "--size-mib", str(size_mib), "--compression", compression],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def raw_bytes(info: dict[str, Any]) -> bytes:
    data = Path(info["file"]).read_bytes()
    if info["compression"] == "gzip":
        return gzip.decompress(data)
    if info["compression"] == "xz":
        return lzma.decompress(data)
    return data


# --------------------------------------------------------------------------------------------
# The disk recipe alone
# --------------------------------------------------------------------------------------------


def test_disk_image_layout_and_description(tmp_path: Path) -> None:
    infos = {c: make_disk(tmp_path / f"disk.{c}", c) for c in ("none", "gzip", "xz")}
    raw = raw_bytes(infos["none"])
    assert len(raw) == DISK_MIB << 20
    for c, info in infos.items():
        assert info["compression"] == c and info["file"] == str(tmp_path / f"disk.{c}")
        file_bytes = Path(info["file"]).read_bytes()
        assert info["file_size"] == len(file_bytes)
        assert info["file_sha256"] == hashlib.sha256(file_bytes).hexdigest()
        # every form decompresses to the same raw image, described by raw_size/raw_sha256
        assert raw_bytes(info) == raw
        assert info["raw_size"] == len(raw)
        assert info["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert infos["gzip"]["file_size"] < len(raw) and infos["xz"]["file_size"] < len(raw)
    # an MBR: boot signature, the marker in the boot code's message, nothing in the partition
    # table; every 4 KiB block after it is non-zero and differs from its neighbours
    assert raw[510:512] == b"\x55\xaa"
    assert f"\r\n{MARKER}\r\n\0".encode() in raw[:446]
    assert raw[446:510] == bytes(64)
    blocks = [raw[i:i + 4096] for i in range(4096, len(raw), 4096)]
    assert all(any(b) for b in blocks)
    assert len(set(blocks)) == len(blocks)
    # deterministic: the same arguments give the same bytes; another marker other bytes
    again = make_disk(tmp_path / "again.gzip", "gzip")
    assert again["file_sha256"] == infos["gzip"]["file_sha256"]
    other = make_disk(tmp_path / "other.img", "none", marker="another disk")
    assert other["raw_sha256"] != infos["none"]["raw_sha256"]


def test_disk_recipe_refuses_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(DISK_RECIPE), "--out", str(tmp_path / "x.img"),
         "--marker", "x" * 300, "--size-mib", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "--marker must be 1..200 characters" in proc.stderr
    assert "--size-mib must be between 1 and 65536" in proc.stderr
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# The installer recipe
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    proc = subprocess.run(
        [sys.executable, str(INSTALLER_RECIPE), "--store", str(store), "--name", "installer",
         "--version", "1.0", "--cache", str(CACHE)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return store / "builds" / "installer" / "1.0"


def test_installer_build_layout(installer: Path, tmp_path: Path) -> None:
    manifest = json.loads((installer / "manifest.json").read_text())
    assert (manifest["name"], manifest["version"], manifest["kind"]) == \
        ("installer", "1.0", "linux")
    assert manifest["kernel"] == "vmlinuz" and manifest["initrds"] == ["initrd.img"]
    assert manifest["cmdline"] == "console=ttyS0 panic=-1"
    for name, entry in manifest["files"].items():
        data = (installer / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    listing = subprocess.run(
        f"zcat {installer / 'initrd.img'} | cpio -it --quiet",
        shell=True, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert {"init", "bin/busybox", "dev/console", "etc/netbootd-build"} <= set(listing)
    # virtio_blk is a module in Debian's kernel (CONFIG_VIRTIO_BLK=m): it must be inside
    assert {"lib/modules/virtio_blk.ko", "lib/modules/virtio_net.ko",
            "lib/modules/nvme.ko", "lib/modules/sd_mod.ko"} <= set(listing)
    subprocess.run(
        f"zcat {installer / 'initrd.img'} | cpio -id --quiet init etc/netbootd-build",
        shell=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert (tmp_path / "etc" / "netbootd-build").read_text() == "installer/1.0\n"
    init = (tmp_path / "init").read_text()
    assert "netbootd-installer:" in init and "netbootd.disk_sha256=" in init


# --------------------------------------------------------------------------------------------
# Reimage in the lab
# --------------------------------------------------------------------------------------------


@dataclass
class ReimageLab:
    """One lab for the module: bridge, site DHCP, and the HTTP peer serving ``www``."""

    lab: Lab
    www: Path
    posts: Path
    work: Path

    @property
    def base(self) -> str:
        return f"http://{self.lab.server_ip}:{PORT}"

    def install(self, name: str, installer: Path, params: dict[str, str],
                disk: Path | None) -> tuple[QemuGuest, dict[str, list[str]]]:
        """Boot the installer with ``params``; wait for power-off; its one report, parsed."""
        words = [f"netbootd.{k}={v}" for k, v in params.items()]
        words.append(f"netbootd.report={self.base}/report/{name}")
        guest = self.lab.start_qemu(
            name, firmware="bios", mac=random_mac(), kernel=installer / "vmlinuz",
            initrd=installer / "initrd.img", disk=disk,
            append=" ".join(["console=ttyS0", "panic=-1", *words]),
        )  # fmt: skip
        status = guest.wait(timeout=300)
        serial = guest.serial_text()
        print(f"{name}: QEMU start to power-off {time.monotonic() - guest.started:.1f} s")
        assert status == 0, (guest.qemu_output(), serial[-3000:])
        assert "netbootd-installer: report sent" in serial, serial[-3000:]
        assert "netbootd-installer: powering off" in serial
        reports = [p for p in read_posts(self.posts) if p["path"] == f"/report/{name}"]
        assert len(reports) == 1, reports
        assert reports[0]["content_type"] == "application/x-www-form-urlencoded"
        return guest, parse_qs(reports[0]["body"], keep_blank_values=True,
                               strict_parsing=True)

    def empty_disk(self, name: str, mib: int = TARGET_MIB) -> Path:
        path = self.work / f"{name}.raw"
        with path.open("wb") as f:
            f.truncate(mib << 20)
        return path


@pytest.fixture(scope="module")
def reimage_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReimageLab]:
    if MISSING:
        pytest.skip("lab prerequisites missing: " + "; ".join(MISSING))
    work = tmp_path_factory.mktemp("reimage")
    www = work / "www"
    www.mkdir()
    with Lab() as lab:
        posts = work / "posts.jsonl"
        start_recording_server(lab, www, PORT, posts, work / "http.log")
        yield ReimageLab(lab, www, posts, work)


def contract(rl: ReimageLab, info: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The reimage contract's parameters for a disk image served from ``rl.www``."""
    params = {
        "disk_url": f"{rl.base}/{Path(info['file']).name}",
        "disk_compression": info["compression"],
        "disk_size": str(info["raw_size"]),
        "disk_sha256": info["raw_sha256"],
    }
    return params | overrides


@pytest.mark.needs_root
@pytest.mark.parametrize("compression", ["none", "gzip", "xz"])
def test_installer_writes_the_disk_and_the_disk_boots(
    reimage_lab: ReimageLab, installer: Path, compression: str
) -> None:
    info = make_disk(reimage_lab.www / f"disk-{compression}.img", compression)
    disk = reimage_lab.empty_disk(f"target-{compression}")
    guest, report = reimage_lab.install(
        f"inst-{compression}", installer, contract(reimage_lab, info), disk
    )
    assert report == {"status": ["done"], "sha256": [info["raw_sha256"]],
                      "bytes": [str(info["raw_size"])]}
    serial = guest.serial_text()
    assert "netbootd-installer: target disk /dev/vda" in serial
    assert "FAILED" not in serial
    # what the installer measured is really on the disk file; the rest of the disk untouched
    written = disk.read_bytes()
    assert len(written) == TARGET_MIB << 20
    assert hashlib.sha256(written[: info["raw_size"]]).hexdigest() == info["raw_sha256"]
    assert written[info["raw_size"]:] == bytes(len(written) - info["raw_size"])

    # Power on from the disk alone: SeaBIOS runs the MBR, which prints the marker and exits.
    booted = reimage_lab.lab.start_qemu(
        f"boot-{compression}", firmware="bios", mac=random_mac(), disk=disk,
        boot_order="c", extra_args=EXIT_DEVICE,
    )  # fmt: skip
    status = booted.wait(timeout=120)
    text = booted.serial_text()
    assert status == DISK_EXIT_STATUS, (status, booted.qemu_output(), text[-1000:])
    assert "Booting from Hard Disk" in text and f"\r\n{MARKER}\r\n" in text, text[-1000:]
    # no network boot: the NIC's iPXE ROM initialises (its banner) but is never booted, and
    # the site DHCP server never heard from this guest
    assert re.findall(r"Booting from [A-Za-z ]*[A-Za-z]", text) == ["Booting from Hard Disk"], \
        text[-1000:]
    assert all(lease.mac != booted.mac for lease in reimage_lab.lab.leases())


@pytest.mark.needs_root
def test_wrong_sha256_is_reported_as_failed(reimage_lab: ReimageLab, installer: Path) -> None:
    info = make_disk(reimage_lab.www / "disk-badsha.img", "gzip")
    wrong = hashlib.sha256(b"not this image").hexdigest()
    disk = reimage_lab.empty_disk("target-badsha")
    # (with the optional netbootd.target= naming the disk explicitly)
    _, report = reimage_lab.install(
        "inst-badsha", installer,
        contract(reimage_lab, info, disk_sha256=wrong, target="/dev/vda"), disk,
    )  # fmt: skip
    assert report["status"] == ["failed"]
    (reason,) = report["reason"]
    assert reason.startswith("sha256 mismatch: /dev/vda holds " + info["raw_sha256"]), reason
    assert wrong in reason
    # the measured hash is what was written: the image itself, complete
    assert report["sha256"] == [info["raw_sha256"]]
    assert report["bytes"] == [str(info["raw_size"])]


@pytest.mark.needs_root
def test_download_error_size_mismatch_and_missing_disk_are_reported(
    reimage_lab: ReimageLab, installer: Path
) -> None:
    info = make_disk(reimage_lab.www / "disk-fail.img", "none")
    # the URL answers 404: nothing usable is written
    _, report = reimage_lab.install(
        "inst-404", installer,
        contract(reimage_lab, info, disk_url=f"{reimage_lab.base}/no-such-image.img"),
        reimage_lab.empty_disk("target-404"),
    )  # fmt: skip
    assert report["status"] == ["failed"]
    (reason,) = report["reason"]
    assert reason.startswith(f"download error: {reimage_lab.base}/no-such-image.img"), reason
    assert "404" in reason
    # netbootd.disk_size smaller than the image: the installer stops one byte past it
    short = info["raw_size"] - 4096
    _, report = reimage_lab.install(
        "inst-size", installer, contract(reimage_lab, info, disk_size=str(short)),
        reimage_lab.empty_disk("target-size"),
    )  # fmt: skip
    assert report["status"] == ["failed"] and report["bytes"] == [str(short + 1)]
    assert report["reason"] == [
        f"size mismatch: the image is larger than netbootd.disk_size={short} bytes"]
    # no disk attached at all (and zstd asked for): both problems in one report, no download
    _, report = reimage_lab.install(
        "inst-nodisk", installer, contract(reimage_lab, info, disk_compression="zstd"), None
    )
    assert report["status"] == ["failed"] and report["bytes"] == ["0"]
    (reason,) = report["reason"]
    assert "no target disk: none of /dev/vda /dev/sda /dev/nvme0n1 exists" in reason
    assert "netbootd.disk_compression=zstd is not supported" in reason
