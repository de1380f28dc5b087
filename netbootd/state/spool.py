"""A bounded on-disk spool of state write batches, kept while the state database is away.

When a flush of the boot-event database fails (the database server is unreachable, a full
disk), the batch it held (node upserts and event rows, in order) is appended here instead of
being lost; a background task replays the spool in order once the database answers again
(``netbootd/state/replay.py``). Layout, one directory:

- ``<seq>.seg``: segment files, one JSON line per batch (``{"seq": n, "nodes": [...],
  "events": [...]}``), appended and fsync'd once per batch (a batch is one 50 ms flush window,
  so at most ~20 fsyncs a second; docs/design-choices.md has the cost). A segment is closed
  when it reaches an eighth of the bound, and a server that starts again never appends to a
  segment it did not open, so a line torn by a crash can only be a segment's last (it is
  skipped and counted as ``state_spool_torn``).
- ``replayed``: the ``seq`` of the last batch committed to the database, written (renamed
  into place) after each commit and fsync'd once per ``replay`` call (a chunk of batches:
  an fsync per batch made replay 10x slower here, docs/design-choices.md). A segment whose
  batches are all at or below it is deleted.

Bounded: when the segments' total size passes ``max_bytes``, the oldest segment is deleted
and its events counted as ``events_dropped`` (oldest first: the newest state is worth more).
Replay is at-least-once: a crash of the server after the database committed a batch and
before ``replayed`` moved replays that one batch again after the restart (its events appear
twice; docs/operations.md says so); a power loss, at most the chunk being replayed. Nothing is
lost by a crash once ``append`` returned.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootd.metrics import Counters

log = logging.getLogger(__name__)

_SUFFIX = ".seg"
_CURSOR = "replayed"


@dataclass(frozen=True, slots=True)
class Batch:
    """One flush's writes: node statements (SQL, parameters) and event rows, each in order."""

    nodes: tuple[tuple[str, tuple[Any, ...]], ...]
    events: tuple[tuple[Any, ...], ...]

    def to_json(self, seq: int) -> str:
        return json.dumps({"seq": seq, "nodes": [[s, list(p)] for s, p in self.nodes],
                           "events": [list(e) for e in self.events]}, separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> tuple[int, Batch]:
        d = json.loads(line)
        return int(d["seq"]), Batch(tuple((str(s), tuple(p)) for s, p in d["nodes"]),
                                    tuple(tuple(e) for e in d["events"]))


@dataclass(slots=True)
class _Segment:
    path: Path
    first_seq: int
    size: int = 0
    batches: int = 0  # not yet replayed
    events: int = 0  # not yet replayed


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int, counters: Counters | None = None,
                 fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.counters = counters if counters is not None else Counters()
        self.fsync = fsync
        self._segment_max = max(max_bytes // 8, 1)
        directory.mkdir(parents=True, exist_ok=True)
        self._replayed = self._read_cursor()
        self._segments: deque[_Segment] = deque()
        self._active: _Segment | None = None  # the segment appends go to (this process's)
        self._head: deque[tuple[int, Batch]] | None = None  # the oldest segment, loaded
        self._next_seq = self._replayed + 1
        self._scan()

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def batches(self) -> int:
        """Batches waiting to be replayed."""
        return sum(s.batches for s in self._segments)

    @property
    def events(self) -> int:
        """Event rows waiting to be replayed."""
        return sum(s.events for s in self._segments)

    @property
    def size(self) -> int:
        """Bytes on disk in segments."""
        return sum(s.size for s in self._segments)

    def __bool__(self) -> bool:
        return any(s.batches for s in self._segments)

    # -- writing -------------------------------------------------------------------------------
    def append(self, batch: Batch) -> bool:
        """Spool ``batch``; False (its events counted as dropped) if the disk refused it."""
        seq = self._next_seq
        line = (batch.to_json(seq) + "\n").encode()
        if len(line) > self.max_bytes:
            self._dropped(len(batch.events), "too-large")
            return False
        if self._active is None or self._active.size >= self._segment_max:
            self._active = _Segment(self.directory / f"{seq:016d}{_SUFFIX}", seq)
            self._segments.append(self._active)
        seg = self._active
        try:
            with open(seg.path, "ab") as f:
                f.write(line)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        except OSError as e:
            log.error("state spool: cannot append to %s (%s); %d events lost", seg.path,
                      e.strerror or e, len(batch.events))
            self._dropped(len(batch.events), "disk")
            self._active = None  # a fresh segment next time, after a possibly torn line
            if seg.batches == 0:
                self._forget(seg)
            return False
        self._next_seq += 1
        seg.size += len(line)
        seg.batches += 1
        seg.events += len(batch.events)
        self.counters.inc("events_spooled", len(batch.events))
        self._bound()
        return True

    def _bound(self) -> None:
        """Delete the oldest segments until the total is back under ``max_bytes``."""
        while self.size > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments[0]
            log.warning("state spool over %d bytes: dropping its oldest %d events",
                        self.max_bytes, oldest.events)
            self._dropped(oldest.events, "spool-full")
            self._forget(oldest)

    def _dropped(self, events: int, reason: str) -> None:
        self.counters.inc("events_dropped", events, reason=reason)

    def _forget(self, seg: _Segment) -> None:
        if seg is self._active:
            self._active = None
        if self._segments and self._segments[0] is seg:
            self._head = None
        self._segments.remove(seg)
        try:
            seg.path.unlink(missing_ok=True)
        except OSError as e:
            log.error("state spool: cannot delete %s: %s", seg.path, e.strerror or e)

    # -- replay --------------------------------------------------------------------------------
    def replay(self, write: Callable[[Batch], None], max_batches: int) -> int:
        """Hand up to ``max_batches`` of the oldest batches to ``write``, in order; a batch
        leaves the spool once ``write`` returned. Whatever ``write`` raises stops the replay
        and propagates (the batch stays first in line). Returns the batches replayed."""
        done = 0
        while done < max_batches and self._segments:
            head = self._load_head()
            if not head:
                self._forget(self._segments[0])
                continue
            seq, batch = head[0]
            try:
                write(batch)
            except BaseException:
                self._sync_cursor(done)
                raise
            head.popleft()
            self._mark_replayed(seq, len(batch.events))
            done += 1
        self._sync_cursor(done)
        return done

    def _sync_cursor(self, done: int) -> None:
        if not done or not self.fsync:
            return
        try:
            fd = os.open(self.directory / _CURSOR, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            log.error("state spool: cannot sync %s: %s", self.directory / _CURSOR,
                      e.strerror or e)

    def _load_head(self) -> deque[tuple[int, Batch]]:
        seg = self._segments[0]
        if self._head is None:
            if seg is self._active:
                self._active = None  # appends from now on go to a new segment
            self._head = deque(self._read_segment(seg.path))
        return self._head

    def _mark_replayed(self, seq: int, events: int) -> None:
        seg = self._segments[0]
        seg.batches -= 1
        seg.events -= events
        self._replayed = seq
        self._write_cursor(seq)
        self.counters.inc("events_replayed", events)
        if seg.batches <= 0:
            self._forget(seg)

    # -- files ---------------------------------------------------------------------------------
    def _read_cursor(self) -> int:
        try:
            return int((self.directory / _CURSOR).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            log.error("state spool: unreadable %s (%s); replaying every batch still spooled",
                      self.directory / _CURSOR, e)
            return 0

    def _write_cursor(self, seq: int) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        try:
            tmp.write_text(f"{seq}\n")
            os.replace(tmp, self.directory / _CURSOR)
        except OSError as e:
            # The batch is in the database; the worst case is that it is replayed again.
            log.error("state spool: cannot record replay progress in %s: %s", self.directory,
                      e.strerror or e)

    def _read_segment(self, path: Path) -> list[tuple[int, Batch]]:
        """The batches of one segment not yet replayed; a torn or corrupt line is skipped."""
        out: list[tuple[int, Batch]] = []
        try:
            data = path.read_bytes()
        except OSError as e:
            log.error("state spool: cannot read %s: %s", path, e.strerror or e)
            return out
        for raw in data.split(b"\n"):
            if not raw:
                continue
            try:
                seq, batch = Batch.from_json(raw.decode())
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.counters.inc("state_spool_torn")
                continue
            if seq > self._replayed:
                out.append((seq, batch))
        return out

    def _scan(self) -> None:
        """What an earlier run left: segments in order, counted; the cursor's seq onwards."""
        paths = sorted(p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))
        for path in paths:
            try:
                first = int(path.name[:-len(_SUFFIX)])
            except ValueError:
                continue
            records = self._read_segment(path)
            if not records:
                path.unlink(missing_ok=True)
                continue
            seg = _Segment(path, first, size=path.stat().st_size, batches=len(records),
                           events=sum(len(b.events) for _, b in records))
            self._segments.append(seg)
            self._next_seq = max(self._next_seq, records[-1][0] + 1)
        if self._segments:
            log.info("state spool: %d batches (%d events) from an earlier run to replay",
                     self.batches, self.events)
