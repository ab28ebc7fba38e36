"""Segment files: read-only mappings for readers, appenders and writers for the writer.

A segment file is a 64-byte header (see :func:`.format.seg_header`) followed by data.
The manifest names each file together with the number of data bytes that belong to
the database (``len``) and the CRC-32 of those bytes (``crc``). Bytes past ``len`` are
not part of any committed state: the writer may have appended them for a transaction
that never committed, and truncates them before it appends again. Nothing below
``len`` is ever rewritten.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptDatabaseError
from . import osio
from .format import HEADER_SIZE, check_seg_header, crc32, seg_header

if TYPE_CHECKING:
    import numpy.typing as npt

CHUNK = 1 << 22  # bytes per read when checksumming


def pread_all(fd: int, n: int, offset: int) -> bytes:
    """Read exactly ``n`` bytes at ``offset`` (fewer only at end of file)."""
    parts = []
    while n > 0:
        b = osio.pread(fd, min(n, 1 << 30), offset)
        if not b:
            break
        parts.append(b)
        n -= len(b)
        offset += len(b)
    return b"".join(parts)


class MappedFile:
    """The committed bytes of one segment file, mapped read-only.

    Parameters
    ----------
    dirpath : str
        Database directory.
    entry : dict
        The manifest entry: ``name``, ``len`` (data bytes), ``crc``.
    kind, uuid, width, dtype
        Expected header fields; a mismatch raises :class:`CorruptDatabaseError`.

    Raises
    ------
    FileNotFoundError
        The file is missing (the caller decides whether that is damage or a race with
        a writer that retired it).
    CorruptDatabaseError
        Header damage, or the file is shorter than the manifest says.
    """

    def __init__(self, dirpath: str, entry: dict[str, Any], kind: int, uuid: bytes,
                 width: int | None = None, dtype: int | None = None) -> None:
        self.name = entry["name"]
        self.length = entry["len"]
        self.crc = entry["crc"]
        fd = osio.open_file(os.path.join(dirpath, self.name), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            need = HEADER_SIZE + self.length
            if size < need:
                raise CorruptDatabaseError(
                    f"{self.name}: file has {size} bytes, the manifest names {need}")
            check_seg_header(pread_all(fd, HEADER_SIZE, 0), self.name, kind, uuid, width, dtype)
            self.mm = mmap.mmap(fd, need, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def array(self, dtype: npt.DTypeLike, count: int | None = None, offset: int = 0) -> np.ndarray:
        """A read-only NumPy view of data bytes ``offset ..`` (``count`` items)."""
        dt = np.dtype(dtype)
        if count is None:
            count = (self.length - offset) // dt.itemsize
        if offset < 0 or offset + count * dt.itemsize > self.length:
            raise CorruptDatabaseError(f"{self.name}: view [{offset}, +{count}) out of range")
        return np.frombuffer(self.mm, dtype=dt, count=count, offset=HEADER_SIZE + offset)

    def check_crc(self) -> None:
        """Recompute the CRC-32 of the data bytes and compare it with the manifest."""
        value = 0
        view = memoryview(self.mm)
        try:
            for pos in range(HEADER_SIZE, HEADER_SIZE + self.length, CHUNK):
                value = crc32(view[pos:min(pos + CHUNK, HEADER_SIZE + self.length)], value)
        finally:
            view.release()
        if value != self.crc:
            raise CorruptDatabaseError(f"{self.name}: data checksum mismatch")


class Appender:
    """The writer's handle on a segment file that grows (row files, the dead list).

    ``committed`` is the data length the current manifest names; ``length`` and
    ``crc`` include bytes appended since (by a checkpoint in progress or a spilled
    transaction). :meth:`reset` drops those bytes.
    """

    def __init__(self, dirpath: str, name: str, length: int, crc: int, *,
                 create_header: bytes | None = None) -> None:
        self.name = name
        self.path = os.path.join(dirpath, name)
        if create_header is not None:
            self.fd = osio.open_file(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                osio.io.pwrite(self.fd, create_header, 0)
            except BaseException:
                os.close(self.fd)
                raise
        else:
            self.fd = osio.open_file(self.path, os.O_RDWR)
        self.committed = self.length = length
        self.committed_crc = self.crc = crc
        self.dirty = create_header is not None

    def append(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Write ``data`` after the current end (bytes-like, or a C-contiguous array)."""
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        mv = memoryview(data).cast("B")  # type: ignore[arg-type]  # an ndarray is a buffer (its stubs say so from Python 3.12 on)
        if not len(mv):
            return
        osio.io.pwrite(self.fd, mv, HEADER_SIZE + self.length)
        self.length += len(mv)
        self.crc = crc32(mv, self.crc)
        self.dirty = True

    def reset(self) -> None:
        """Forget (and cut off) everything past the committed length."""
        self.length, self.crc = self.committed, self.committed_crc
        osio.io.truncate(self.fd, HEADER_SIZE + self.committed)

    def sync(self) -> None:
        if self.dirty:
            osio.io.fsync(self.fd)

    def publish(self) -> dict[str, Any]:
        """Manifest entry for the current contents."""
        return {"name": self.name, "len": self.length, "crc": self.crc}

    def mark_committed(self) -> None:
        self.committed, self.committed_crc = self.length, self.crc
        self.dirty = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_new_file(dirpath: str, name: str, kind: int, uuid: bytes,
                   parts: Iterable[bytes | bytearray | memoryview | np.ndarray], *, width: int = 0,
                   dtype: int = 0, sync: bool = True) -> dict[str, Any]:
    """Create segment file ``name`` holding ``parts`` (bytes-likes or arrays) in order.

    Returns its manifest entry. The file is fsynced when ``sync``; the caller makes the
    directory entry durable.
    """
    app = Appender(dirpath, name, 0, 0, create_header=seg_header(kind, uuid, width, dtype))
    try:
        for p in parts:
            app.append(p)
        if sync:
            app.sync()
        return app.publish()
    finally:
        app.close()
