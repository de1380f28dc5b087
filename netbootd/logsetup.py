"""The server's log output: one line per record on stderr, at a cost a DHCP answer can afford.

Every boot decision is logged at INFO with its reason (a design rule), so at thousands of
DISCOVERs per second the log line is part of the answer's cost. With the standard library's
defaults a line cost ~14 µs here, as much as the DHCP codec; most of it was work whose result
the format never shows (docs/performance.md, "DHCP and iPXE scripts: where the time went"):

- ``findCaller`` walks the stack for file name and line number on every record;
- thread, process and multiprocessing names are looked up per record;
- ``formatTime`` calls ``localtime`` and ``strftime`` per record although the text changes
  once a second.

``setup_logging`` turns the first two off (the format uses none of them) and installs
``LineFormatter``, which formats the timestamp once per second. Records below the level are
still never formatted: every call site passes ``%``-style arguments, and DEBUG call sites
that compute arguments check ``isEnabledFor`` first.
"""

from __future__ import annotations

import logging
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MSEC_FORMAT = "%s,%03d"  # logging.Formatter.default_msec_format


class LineFormatter(logging.Formatter):
    """``logging.Formatter`` with the same ``asctime`` text, formatted once per second."""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            # The default format of logging.Formatter: "%Y-%m-%d %H:%M:%S" in local time,
            # then ",mmm" (default_msec_format).
            self._prefix = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return _MSEC_FORMAT % (self._prefix, record.msecs)


def setup_logging(verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG when ``verbose``), one line per record."""
    # Documented switches of the logging module: the format shows none of these fields.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Without a source file, Logger._log skips findCaller (a stack walk per record); the
    # format has no %(filename)s, %(lineno)d or %(funcName)s.
    logging._srcfile = None
    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
