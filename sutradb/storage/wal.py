"""The write-ahead log: creating, appending to and replaying ``wal-GGGGGGGG.log``.

Placeholder while the log code moves here (see the next commits).
"""

from __future__ import annotations

import os

from . import osio
from .format import wal_header, wal_name

__all__ = ["WAL_PREALLOC", "WAL_GROW_MAX", "create_log"]

#: Zeros a "full" log is preallocated with (and grown by, doubling up to 1 MiB): a commit then
#: overwrites allocated, written blocks and fdatasync need not update the file size.
WAL_PREALLOC = 64 << 10
WAL_GROW_MAX = 1 << 20


def create_log(directory: str, gen: int, uuid: bytes, preallocate: bool, sync: bool) -> None:
    """Create log ``gen``: a header with a fresh random salt (frames of any other
    log never match it), preallocated with zeros when every commit is fsynced.

    Parameters
    ----------
    directory : str
    gen : int
        The manifest generation the log starts at (its name and header).
    uuid : bytes
        The store's uuid.
    preallocate : bool
        Append :data:`WAL_PREALLOC` zeros (durability ``"full"``).
    sync : bool
        fsync the file.
    """
    path = os.path.join(directory, wal_name(gen))
    fd = osio.open_file(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        salt = int.from_bytes(os.urandom(4), "little") or 1
        head = wal_header(uuid, gen, salt)
        if preallocate:
            head += bytes(WAL_PREALLOC)
        osio.io.pwrite(fd, head, 0)
        if sync:
            osio.io.fsync(fd)
    finally:
        os.close(fd)
