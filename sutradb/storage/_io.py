"""The I/O seam of the storage layer.

Every call that changes a file of a database goes through the module-level object
:data:`io` (an instance of :class:`FileIO`). Tests replace its methods (for example with
``monkeypatch.setattr(storage._io.io, "fsync", failing)``) to inject ``OSError`` at a
chosen point and check that the store surfaces the error and stays at its last
committed state. Reads do not go through the seam: a failing read is reported by the
operating system as it is.
"""

from __future__ import annotations

import os

__all__ = ["FileIO", "io"]


class FileIO:
    """Thin wrappers around the ``os`` calls that write.

    Methods
    -------
    pwrite(fd, data, offset)
        Write all of ``data`` at ``offset`` (loops over short writes).
    fsync(fd)
        Make the data (and the size) of an open file durable (``fdatasync`` where the
        platform has it).
    fsync_dir(path)
        Make the entries of a directory durable (after create, rename, unlink).
    replace(src, dst)
        Atomically rename ``src`` over ``dst``.
    truncate(fd, length)
        Cut or extend a file to ``length`` bytes.
    unlink(path)
        Remove a file; a missing file is not an error.
    """

    def pwrite(self, fd: int, data, offset: int) -> None:
        if type(data) is bytes:                # the common case: one call, no view
            n = os.pwrite(fd, data, offset)
            if n == len(data):
                return
            data = memoryview(data)[max(n, 0):]
            offset += max(n, 0)
        view = memoryview(data).cast("B")
        done = 0
        total = len(view)
        while done < total:
            n = os.pwrite(fd, view[done:], offset + done)
            if n <= 0:  # pragma: no cover - the kernel reports errors as OSError
                raise OSError("short write")
            done += n

    def fsync(self, fd: int) -> None:
        if hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:  # pragma: no cover - macOS
            os.fsync(fd)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


#: The seam used by the whole storage layer.
io = FileIO()
