"""Byte sources a TFTP transfer reads from: an in-memory buffer or an open file.

This module owns opening and reading files for TFTP (the edge ring). It does not decide which
file a client may read: the resolver hands it a path that already went through the store's
containment check. Both classes satisfy :class:`netbootd.tftp.session.TftpSource`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from netbootd.errors import NotFound, PathRefused

__all__ = ["BytesSource", "FileSource"]


class BytesSource:
    """A transfer served from memory (rendered pxelinux configs, tests)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]

    def close(self) -> None:
        self._data = b""


class FileSource:
    """A file opened read-only once; reads are positional (``os.pread``) so no seek state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # O_CLOEXEC: a transfer's descriptor must not leak into child processes.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no file {path.name!r}") from None
        except PermissionError:
            raise PathRefused(f"{path.name!r} is not readable by the server") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                # Directories and devices are not files a client may fetch.
                raise NotFound(f"{path.name!r} is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        # The size is fixed at open: tsize was promised from it, and builds are immutable.
        self.size = st.st_size

    def read(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        chunk = os.pread(self._fd, length, offset)
        if len(chunk) == length or not chunk:
            return chunk
        # pread may return short reads on some filesystems; finish the block or reach EOF.
        parts = [chunk]
        got = len(chunk)
        while got < length:
            more = os.pread(self._fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:
        # Safety net only: the endpoint closes every source when its transfer ends. getattr,
        # because __init__ may have failed before the descriptor existed.
        if getattr(self, "_fd", None) is not None:
            self.close()
