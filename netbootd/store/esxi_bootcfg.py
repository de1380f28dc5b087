"""VMware's ``boot.cfg`` (the ESXi installer's mboot configuration), parsed into an EsxiBoot.

Pure: text in, value out. The format, as the ESXi installation guide documents it ("About the
boot.cfg file") and as every installer ISO ships it::

    bootstate=0
    title=Loading ESXi installer
    timeout=5
    prefix=
    kernel=/b.b00
    kernelopt=runweasel cdromBoot
    modules=/jumpstrt.gz --- /useropts.gz --- /features.gz --- /k.b00 --- ...
    build=8.0.3-0.0.24022510
    updated=0

One ``key=value`` per line; ``#`` starts a comment line. ``modules=`` separates module names with
`` --- ``. Names are absolute on the ISO (``/b.b00``); the leading ``/`` is stripped and names are
lower-cased, which is how the ISO's ISO9660 names (``B.B00;1``) appear to mboot and to
netbootd's store. Keys mboot knows but netbootd does not need (``bootstate``, ``timeout``,
``build``, ``updated``, ``norts``...) are ignored.

The file comes from an ISO the operator hands us, so it is input like any other: every problem
is collected and reported at once in one BuildError.
"""

from __future__ import annotations

from netbootd.errors import BuildError
from netbootd.store.manifest import EsxiBoot, valid_file_name

MODULE_SEPARATOR = "---"
# A real boot.cfg is about 2 KB; the cap keeps a hostile "boot.cfg" from being read whole.
MAX_BOOT_CFG_BYTES = 64 * 1024
_NEEDED = ("kernel", "modules", "kernelopt", "title", "prefix")


def _has_control(value: str) -> bool:
    """Control characters (other than tab) in a value would break the per-node boot.cfg."""
    return any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)


def _file_name(raw: str, what: str, problems: list[str]) -> str:
    name = raw.strip().lstrip("/").lower()
    if not name:
        problems.append(f"{what}: empty file name")
    elif not valid_file_name(name):
        problems.append(f"{what}: {raw.strip()!r} is not an acceptable file name "
                        "(letters, digits, '.', '_', '+', '-', '/')")
    return name


def parse_boot_cfg(text: str, where: str = "boot.cfg") -> EsxiBoot:
    """Parse an ESXi installer's boot.cfg; BuildError lists every problem found.

    ``where`` names the file in messages (e.g. ``"esxi.iso:/BOOT.CFG"``).
    """
    problems: list[str] = []
    seen: dict[str, tuple[int, str]] = {}
    # Split on "\n" only: a lone "\r" inside a value is a problem to report, not a line break.
    for lineno, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.removesuffix("\r").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            problems.append(f"line {lineno}: {line[:60]!r} is not key=value")
            continue
        if key not in _NEEDED:
            continue
        if key in seen:
            problems.append(f"line {lineno}: {key}= given again (first on line {seen[key][0]});"
                            " keep one")
            continue
        seen[key] = (lineno, value.strip())
        if _has_control(value):
            problems.append(f"line {lineno}: {key}= contains a control character "
                            "(newline or carriage return?); it must be one line of text")

    def value_of(key: str) -> str:
        return seen[key][1] if key in seen else ""

    kernel = ""
    if not value_of("kernel"):
        problems.append("kernel=: missing or empty; an ESXi installer's boot.cfg names its "
                        "kernel (kernel=/b.b00): is this an ESXi installer ISO?")
    else:
        kernel = _file_name(value_of("kernel"), "kernel=", problems)
    modules: list[str] = []
    if not value_of("modules"):
        problems.append("modules=: missing or empty; ESXi boots only with its modules "
                        "(modules=/jumpstrt.gz --- /useropts.gz --- ...)")
    else:
        for i, part in enumerate(value_of("modules").split(MODULE_SEPARATOR), start=1):
            if len(part.split()) > 1:
                problems.append(f"modules=: entry {i} {part.strip()!r} has arguments or "
                                "is missing a '---' separator; give one file name per entry")
                continue
            name = _file_name(part, f"modules= entry {i}", problems)
            if name:
                modules.append(name)
    if value_of("prefix"):
        # Installer ISOs ship "prefix=" empty; a set prefix means a boot.cfg already edited for
        # a PXE server, whose names are not paths on this ISO.
        problems.append(f"prefix=: {value_of('prefix')!r}: an installer ISO's boot.cfg has an "
                        "empty prefix; import the unmodified installer ISO")
    if problems:
        raise BuildError(f"{where}: " + "; ".join(problems))
    return EsxiBoot(kernel=kernel, modules=tuple(modules), kernelopt=value_of("kernelopt"),
                    title=value_of("title"))
