"""Build manifests: the JSON file that describes one immutable build and every file in it.

``<store>/builds/<name>/<version>/manifest.json``::

    {"format": 1, "name": "demo", "version": "1.0", "kind": "linux", "arch": "amd64",
     "kernel": "vmlinuz", "initrds": ["initrd.img"], "cmdline": "console=ttyS0",
     "description": "...",
     "files": {"vmlinuz": {"size": 123, "sha256": "..."}, ...},
     "esxi": {"kernel": "b.b00", "modules": ["jumpstrt.gz", ...], "kernelopt": "..."},
     "disk": {"file": "disk.img.gz", "compression": "gzip", "raw_size": 1048576,
              "raw_sha256": "..."}}

``esxi`` is present only for kind ``esxi`` (the fields of VMware's ``boot.cfg``); ``disk`` only
for kind ``disk`` (a disk image for lab reimage: which file, how it is compressed, and the size
and sha256 of the raw image it expands to, which the installer checks on the disk). ``arch`` is
the CPU architecture of the machines the build boots (``amd64`` or ``arm64``; a manifest without
it is ``amd64``, as every build was before the field existed). Parsing is
pure: it takes the decoded JSON text and returns a ``Manifest`` or raises BuildError listing
every problem.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The records live in the core (core/model.py); imported here under their old names.
from netbootd.core.model import ARCHES, DEFAULT_ARCH
from netbootd.core.model import DiskImage as DiskImage
from netbootd.core.model import EsxiBoot as EsxiBoot
from netbootd.core.model import FileInfo as FileInfo
from netbootd.core.model import Manifest as Manifest
from netbootd.errors import BuildError

KINDS = ("linux", "esxi", "disk")
COMPRESSIONS = ("none", "gzip", "xz")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
FILE_RE = re.compile(r"^[A-Za-z0-9._+-][A-Za-z0-9._+/-]{0,200}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def valid_file_name(name: str) -> bool:
    return bool(FILE_RE.match(name)) and ".." not in name.split("/")


def parse_manifest(text: str, where: str = "manifest.json") -> Manifest:
    """Parse and validate a manifest; BuildError lists every problem found."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BuildError(f"{where}: not valid JSON ({e}); rebuild or re-import the build") from e
    if not isinstance(data, dict):
        raise BuildError(f"{where}: expected a JSON object")
    problems: list[str] = []

    def text_field(key: str, required: bool = True) -> str:
        v = data.get(key)
        if v is None and not required:
            return ""
        if not isinstance(v, str):
            problems.append(f"{key}: expected a string")
            return ""
        return v

    if data.get("format") != 1:
        problems.append(f"format: expected 1, got {data.get('format')!r}")
    name, version, kind = text_field("name"), text_field("version"), text_field("kind")
    for key, value in (("name", name), ("version", version)):
        if value and not NAME_RE.match(value):
            problems.append(f"{key}: {value!r} must be 1-64 of letters, digits, '.', '_', '+', '-'")
    if kind and kind not in KINDS:
        problems.append(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    arch = data.get("arch", DEFAULT_ARCH)
    if arch not in ARCHES:
        problems.append(f"arch: {arch!r} is not one of {', '.join(ARCHES)}")
    files: dict[str, FileInfo] = {}
    raw_files = data.get("files")
    if not isinstance(raw_files, dict) or not raw_files:
        problems.append("files: expected a non-empty object of name -> {size, sha256}")
    else:
        for fname, info in raw_files.items():
            if not valid_file_name(fname):
                problems.append(f"files.{fname}: not an acceptable file name")
                continue
            if (not isinstance(info, dict) or not isinstance(info.get("size"), int)
                    or info["size"] < 0 or not isinstance(info.get("sha256"), str)
                    or not SHA256_RE.match(info["sha256"])):
                problems.append(f"files.{fname}: expected {{size: int >= 0, sha256: 64 hex}}")
                continue
            files[fname] = FileInfo(info["size"], info["sha256"])
    kernel = data.get("kernel")
    if kernel is not None and (not isinstance(kernel, str) or kernel not in files):
        problems.append(f"kernel: {kernel!r} is not one of the build's files")
    initrds = data.get("initrds", [])
    if not isinstance(initrds, list) or not all(isinstance(i, str) for i in initrds):
        problems.append("initrds: expected a list of file names")
        initrds = []
    problems += [f"initrds: {i!r} is not one of the build's files" for i in initrds
                 if i not in files]
    cmdline = text_field("cmdline", required=False)
    if "\n" in cmdline or "\r" in cmdline:
        problems.append("cmdline: may not contain a newline")
    if kind == "linux" and kernel is None:
        problems.append("kernel: a linux build needs a kernel")
    esxi = None
    if kind == "esxi":
        ed = data.get("esxi")
        if not isinstance(ed, dict) or not isinstance(ed.get("kernel"), str):
            problems.append("esxi: expected {kernel, modules, kernelopt} from the ISO's boot.cfg")
        else:
            mods = ed.get("modules", [])
            if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
                problems.append("esxi.modules: expected a list of file names")
                mods = []
            # mboot.c32 (BIOS) and mboot.efi or the ISO's bootx64.efi (UEFI) start ESXi.
            efi = "mboot.efi" if "mboot.efi" in files else "efi/boot/bootx64.efi"
            missing = [m for m in [ed["kernel"], *mods, "mboot.c32", efi] if m not in files]
            if missing:
                problems.append(f"esxi: files missing from the build: {', '.join(missing)}")
            opt = ed.get("kernelopt", "")
            if not isinstance(opt, str) or "\n" in opt:
                problems.append("esxi.kernelopt: expected one line of text")
                opt = ""
            esxi = EsxiBoot(ed["kernel"], tuple(mods), opt, str(ed.get("title", "")))
    disk = _parse_disk(data.get("disk"), files, problems) if kind == "disk" else None
    if problems:
        raise BuildError(f"{where}: " + "; ".join(problems))
    known = {"format", "name", "version", "kind", "files", "kernel", "initrds", "cmdline",
             "description", "esxi", "disk", "arch"}
    return Manifest(
        name=name, version=version, kind=kind, files=files,
        kernel=kernel, initrds=tuple(initrds), cmdline=cmdline,
        description=text_field("description", required=False), esxi=esxi, disk=disk,
        extra={k: v for k, v in data.items() if k not in known}, arch=arch,
    )


def _parse_disk(d: object, files: dict[str, FileInfo], problems: list[str]) -> DiskImage | None:
    if not isinstance(d, dict):
        problems.append("disk: a disk build needs {file, compression, raw_size, raw_sha256}")
        return None
    before = len(problems)
    file, comp = d.get("file"), d.get("compression")
    raw_size, raw_sha = d.get("raw_size"), d.get("raw_sha256")
    if not isinstance(file, str) or file not in files:
        problems.append(f"disk.file: {file!r} is not one of the build's files")
    if comp not in COMPRESSIONS:
        problems.append(f"disk.compression: {comp!r} is not one of {', '.join(COMPRESSIONS)}")
    if not isinstance(raw_size, int) or isinstance(raw_size, bool) or raw_size <= 0:
        problems.append("disk.raw_size: expected the raw image's size in bytes (> 0)")
    if not isinstance(raw_sha, str) or not SHA256_RE.match(raw_sha):
        problems.append("disk.raw_sha256: expected 64 lower-case hex digits")
    if len(problems) > before:
        return None
    assert isinstance(file, str) and isinstance(comp, str)
    assert isinstance(raw_size, int) and isinstance(raw_sha, str)
    return DiskImage(file, comp, raw_size, raw_sha)


def manifest_to_json(m: Manifest) -> str:
    """Serialise a manifest (sorted keys, stable output)."""
    data: dict[str, Any] = {
        "format": 1, "name": m.name, "version": m.version, "kind": m.kind, "arch": m.arch,
        "files": {k: {"size": v.size, "sha256": v.sha256} for k, v in sorted(m.files.items())},
        "cmdline": m.cmdline, "description": m.description, "initrds": list(m.initrds),
        **m.extra,
    }
    if m.kernel is not None:
        data["kernel"] = m.kernel
    if m.esxi is not None:
        data["esxi"] = {"kernel": m.esxi.kernel, "modules": list(m.esxi.modules),
                        "kernelopt": m.esxi.kernelopt, "title": m.esxi.title}
    if m.disk is not None:
        data["disk"] = {"file": m.disk.file, "compression": m.disk.compression,
                        "raw_size": m.disk.raw_size, "raw_sha256": m.disk.raw_sha256}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
