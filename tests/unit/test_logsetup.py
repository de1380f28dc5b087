"""The server's log formatter writes the same lines as logging.Formatter, cheaper."""

from __future__ import annotations

import logging

from netbootd.logsetup import LOG_FORMAT, LineFormatter


def _record(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("netbootd.responder", logging.INFO, __file__, 1,
                            "offer mac=%s", ("52:54:00:00:00:01",), None)
    rec.created = created
    rec.msecs = (created - int(created)) * 1000
    return rec


def test_lines_match_the_standard_formatter_across_seconds() -> None:
    ours, stock = LineFormatter(), logging.Formatter(LOG_FORMAT)
    # Within one second, at a second boundary, and a later second (the cached prefix changes).
    for created in (1_790_000_000.001, 1_790_000_000.999, 1_790_000_001.0, 1_790_000_001.5,
                    1_790_003_600.25):
        rec = _record(created)
        assert ours.format(rec) == stock.format(rec)


def test_an_explicit_date_format_is_honoured() -> None:
    rec = _record(1_790_000_000.5)
    assert LineFormatter().formatTime(rec, "%Y") == logging.Formatter().formatTime(rec, "%Y")
