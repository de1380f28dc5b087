"""netbootd(8) in roff, generated from the argparse parser (``netbootd --print-man``), so the
man page lists exactly the commands and options the installed version has; and the shell
completion scripts (``netbootd --print-completion bash|zsh``), generated statically by shtab
from the same parser (docs/design-choices.md says why shtab)."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Iterator


def _esc(text: str) -> str:
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in out.splitlines())


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def commands(p: argparse.ArgumentParser, prefix: str = "") -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    """Every leaf command: ``("image import", parser)``, ...; groups are walked into."""
    for name, sp in _subparsers(p).items():
        full = f"{prefix} {name}".strip()
        if _subparsers(sp):
            yield from commands(sp, full)
        else:
            yield full, sp


def _option_lines(p: argparse.ArgumentParser) -> list[str]:
    out = []
    for a in p._actions:
        if isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if a.option_strings:
            flags = ", ".join(a.option_strings)
            if a.nargs != 0:
                flags += " " + (a.metavar if isinstance(a.metavar, str)
                                else a.dest.upper())
        else:
            flags = a.metavar if isinstance(a.metavar, str) else a.dest
        out += [".TP", f"\\fB{_esc(flags)}\\fR", _esc(a.help or "")]
    return out


def man_page(p: argparse.ArgumentParser, version: str) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [f'.TH NETBOOTD 8 "{today}" "netbootd {version}" "System Administration"',
             ".SH NAME", "netbootd \\- network\\-boot server: ProxyDHCP, TFTP, HTTP, builds",
             ".SH SYNOPSIS", "\\fBnetbootd\\fR [\\fB\\-v\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
             ".SH DESCRIPTION", _esc(p.description or ""), ".SH OPTIONS",
             *_option_lines(p), ".SH COMMANDS"]
    for name, sp in commands(p):
        lines += [".SS " + _esc(f"netbootd {name}"), _esc(sp.description or "")]
        lines += _option_lines(sp)
        if sp.epilog:
            lines += [".PP", "Example:", ".nf", *(_esc(line.strip()) for line in
                                                  sp.epilog.splitlines()[1:]), ".fi"]
    lines += [".SH EXIT STATUS",
              "0 done; 1 problems found (check, image verify); 2 refused (bad input, unknown "
              "name, a change refused, no \\-\\-yes); 3 another DHCP server answers; 4 no "
              "permission, read\\-only or locked state; 5 disk full; 130 interrupted; "
              "141 the output pipe closed.",
              ".SH FILES", "/etc/netbootd/netbootd.toml (or $NETBOOTD_CONFIG)",
              ".SH SEE ALSO", "docs/operations.md, docs/configuration.md, docs/admin-api.md"]
    return "\n".join(lines) + "\n"


def completion(p: argparse.ArgumentParser, shell: str) -> str:
    import shtab

    return str(shtab.complete(p, shell=shell))
