"""The operating-system boundary of the storage layer, and its write seam.

This is the only module of sutradb that uses anything platform-specific: ``fcntl``,
``msvcrt`` and ``kernel32`` (through ``ctypes``), ``os.pread`` / ``os.pwrite`` /
``os.fdatasync``, ``os.O_DIRECTORY``, ``os.O_BINARY``, ``mmap.MADV_*``. Each is looked up
once, at import, with a fallback where the platform lacks it, so ``import sutradb`` works
on Linux, macOS and Windows (``tests/test_storage_os.py`` checks that no other module
of the package names them). What each platform guarantees is in ``docs/file-format.md``,
section "Platforms".

Primitives (chosen at import for the running platform)
------------------------------------------------------
:func:`open_file`
    ``os.open`` with ``O_BINARY`` (Windows would otherwise open in text mode).
:data:`pread`, :data:`pwrite`
    ``os.pread`` / ``os.pwrite`` themselves where they exist (no extra Python layer);
    else :func:`seek_pread` / :func:`seek_pwrite`: ``lseek`` + ``read``/``write`` under a
    per-descriptor lock, so threads sharing a descriptor do not move each other's offset.
:data:`sync_file`
    Makes an open file's data (and size) durable: ``F_FULLFSYNC`` on macOS (its
    ``fsync`` does not flush the drive's cache; falls back to ``fsync`` where the file
    system refuses), ``fdatasync`` where it exists, else ``fsync`` (Windows:
    ``FlushFileBuffers``).
:func:`sync_dir`
    Makes a directory's entries durable (after create, rename, unlink); skipped on
    Windows, where a directory cannot be opened (the manifest rename is made durable
    by ``MOVEFILE_WRITE_THROUGH`` instead, see :func:`replace_file`).
:func:`replace_file`
    Atomic rename over an existing name: ``os.replace`` on POSIX; on Windows
    ``MoveFileExW(REPLACE_EXISTING | WRITE_THROUGH)``, retried for up to
    :data:`REPLACE_RETRY_SECONDS` while another process has the target open (a reader
    reading ``MANIFEST``).
:func:`remove_file`
    Unlink; a missing file is not an error, and on Windows a file still open or mapped
    by a reader (or by this process) is left in place (``False``): the writer deletes
    every file the manifest does not name at each checkpoint and on open, so it goes
    at a later sweep.
:func:`advise_random`
    ``madvise(MADV_RANDOM)`` on a mapping; a no-op where ``mmap`` has no ``madvise`` or
    no such constant.
:func:`try_lock`, :func:`lock`, :func:`unlock`, :func:`close_locked`
    Whole-file locks, exclusive (the writer) or shared (a reader's probe), never
    blocking in the OS: ``flock`` on POSIX (:class:`PosixLocks`), ``LockFileEx`` /
    ``UnlockFileEx`` on byte 0 of the file on Windows (:class:`Win32`), and where
    neither exists a lock table inside this process (:class:`ProcessLocks`). :func:`lock`
    polls with a back-off until its timeout and then raises
    :class:`~sutradb.errors.LockedError`.

The write seam
--------------
Every call that changes a file of a database goes through the module-level object
:data:`io` (a :class:`FileIO`). Tests replace its methods (for example with
``monkeypatch.setattr(osio.io, "fsync", failing)``) to inject ``OSError`` at a chosen
point and check that the store surfaces the error and stays at its last committed
state. Reads do not go through the seam: a failing read is reported by the operating
system as it is.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
import time

from ..errors import LockedError

try:
    import fcntl
except ImportError:      # Windows; platforms without it get the fallbacks below
    fcntl = None  # type: ignore[assignment]  # the module or None, tested before each use

__all__ = ["WINDOWS", "MACOS", "O_BINARY", "open_file", "pread", "pwrite", "seek_pread",
           "seek_pwrite", "sync_file", "sync_dir", "replace_file", "remove_file",
           "advise_random", "try_lock", "lock", "unlock", "close_locked", "PosixLocks",
           "Win32", "ProcessLocks", "LOCKS", "FileIO", "io"]

WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"

# --------------------------------------------------------------------------- opening

#: Added to every ``os.open`` of the storage layer (0 where the flag does not exist).
O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def open_file(path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags | O_BINARY, mode)``."""
    return os.open(path, flags | O_BINARY, mode)


# --------------------------------------------------------------------------- positional I/O

_fd_locks: dict[int, threading.Lock] = {}
_fd_locks_guard = threading.Lock()


def _fd_lock(fd: int) -> threading.Lock:
    lk = _fd_locks.get(fd)
    if lk is None:
        with _fd_locks_guard:
            lk = _fd_locks.setdefault(fd, threading.Lock())
    return lk


def seek_pread(fd: int, n: int, offset: int) -> bytes:
    """``os.pread`` without ``pread``: seek and read under the descriptor's lock.

    The storage layer does all its I/O at explicit offsets, so the descriptor's file
    position carries nothing; the lock only keeps two threads from interleaving their
    seek and read (or write) on the same descriptor."""
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)


def seek_pwrite(fd: int, data, offset: int) -> int:
    """``os.pwrite`` without ``pwrite``: seek and write under the descriptor's lock.
    Returns the number of bytes written (may be short, as ``pwrite``)."""
    with _fd_lock(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


#: ``os.pread(fd, n, offset)`` where it exists (POSIX), else :func:`seek_pread`.
pread = getattr(os, "pread", None) or seek_pread
#: ``os.pwrite(fd, data, offset)`` where it exists (POSIX), else :func:`seek_pwrite`.
pwrite = getattr(os, "pwrite", None) or seek_pwrite


# --------------------------------------------------------------------------- durability

def full_fsync_with(fcntl_module, fsync):
    """A file sync by ``fcntl(fd, F_FULLFSYNC)`` (macOS: the data reaches the medium,
    not just the drive's cache), falling back to ``fsync`` on file systems that refuse it."""
    op = fcntl_module.F_FULLFSYNC

    def full_fsync(fd: int) -> None:
        try:
            fcntl_module.fcntl(fd, op)
        except OSError:
            fsync(fd)
    return full_fsync


def choose_sync(platform: str, os_module, fcntl_module):
    """``(sync of a file, sync of a directory descriptor)`` for a platform."""
    if platform == "darwin" and fcntl_module is not None and hasattr(fcntl_module, "F_FULLFSYNC"):
        full = full_fsync_with(fcntl_module, os_module.fsync)
        return full, full
    return getattr(os_module, "fdatasync", None) or os_module.fsync, os_module.fsync


#: Make an open file's data durable (``fdatasync`` / ``F_FULLFSYNC`` / ``fsync``).
sync_file, _sync_dir_fd = choose_sync(sys.platform, os, fcntl)

#: Whether directories are fsynced (not on Windows, where one cannot be opened).
DIR_SYNC = not WINDOWS


def sync_dir(path) -> None:
    """fsync a directory (its entries: created, renamed, removed files); a no-op
    where :data:`DIR_SYNC` is false (Windows)."""
    if not DIR_SYNC:
        return
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY)
    try:
        _sync_dir_fd(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- names

#: Windows: how long :func:`replace_file` retries while the target is open elsewhere.
REPLACE_RETRY_SECONDS = 1.0


def replace_file(src, dst) -> None:
    """Atomically rename ``src`` over ``dst`` (``os.replace``; on Windows
    :meth:`Win32.replace`, durable when it returns)."""
    if _WIN32 is not None:
        _WIN32.replace(src, dst, REPLACE_RETRY_SECONDS)
    else:
        os.replace(src, dst)


def remove_file(path) -> bool:
    """Unlink ``path``. ``True`` when it is gone (or was missing); ``False`` on Windows
    when the file is still open or mapped (``PermissionError``): it stays, for a later
    sweep. Any other error is raised."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except PermissionError:
        if not WINDOWS:
            raise
        return False
    return True


# --------------------------------------------------------------------------- mappings

#: ``mmap.MADV_RANDOM`` where the platform has it, else ``None``.
MADV_RANDOM = getattr(mmap, "MADV_RANDOM", None)


_BOOT_ID: list = []


def boot_id() -> bytes | None:
    """16 bytes that change at every boot of this machine (Linux:
    ``/proc/sys/kernel/random/boot_id``), or None where the OS does not say. The
    watermark uses it to tell a reboot (which may lose page-cache writes of
    ``durability="normal"``) from damage."""
    if not _BOOT_ID:
        value = None
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                import uuid as _uuid
                value = _uuid.UUID(f.read().strip().decode("ascii")).bytes
        except (OSError, ValueError, UnicodeDecodeError):
            value = None
        _BOOT_ID.append(value)
    return _BOOT_ID[0]


def advise_random(mm) -> bool:
    """``mm.madvise(MADV_RANDOM)`` (no readahead); ``False`` (nothing done) where
    ``madvise`` or the constant is missing or the OS refuses."""
    advise = getattr(mm, "madvise", None)
    if advise is None or MADV_RANDOM is None:
        return False
    try:
        advise(MADV_RANDOM)
    except (OSError, ValueError):
        return False
    return True


#: ``mmap.MADV_HUGEPAGE`` where the platform has it (Linux), else ``None``.
MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def huge_pages(nbytes: int) -> mmap.mmap | None:
    """A zeroed anonymous mapping of ``nbytes`` advised for transparent huge pages
    (``MADV_HUGEPAGE``: fewer TLB misses for scans that jump around a large array),
    or None where the platform has no such advice or refuses it (then the caller
    allocates as usual)."""
    if MADV_HUGEPAGE is None or nbytes <= 0:
        return None
    try:
        mm = mmap.mmap(-1, nbytes)
        mm.madvise(MADV_HUGEPAGE)
    except (OSError, ValueError, AttributeError):
        return None
    return mm


# --------------------------------------------------------------------------- locks

_HELD_ERRNOS = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class PosixLocks:
    """``flock(2)``: advisory, owned by the open file description (two descriptors of
    one process exclude each other), released by the kernel when the process dies."""

    name = "flock"

    def __init__(self, fcntl_module) -> None:
        self._f = fcntl_module

    def try_lock(self, fd: int, shared: bool = False) -> bool:
        f = self._f
        try:
            f.flock(fd, (f.LOCK_SH if shared else f.LOCK_EX) | f.LOCK_NB)
        except OSError as e:
            if e.errno in _HELD_ERRNOS:
                return False
            raise
        return True

    def unlock(self, fd: int) -> None:
        self._f.flock(fd, self._f.LOCK_UN)

    def close(self, fd: int) -> None:
        # no LOCK_UN first: the kernel drops the lock with the last descriptor of the
        # open file description, so a forked child closing its copy keeps the parent's
        os.close(fd)


_OVERLAPPED = None


def _overlapped_type():
    """ctypes ``OVERLAPPED`` (Offset/OffsetHigh give the start of a locked range)."""
    global _OVERLAPPED
    if _OVERLAPPED is None:
        import ctypes

        class OVERLAPPED(ctypes.Structure):
            _fields_ = [("Internal", ctypes.c_size_t), ("InternalHigh", ctypes.c_size_t),
                        ("Offset", ctypes.c_uint32), ("OffsetHigh", ctypes.c_uint32),
                        ("hEvent", ctypes.c_void_p)]
        _OVERLAPPED = OVERLAPPED
    return _OVERLAPPED


_WIN_ERRNO = {2: errno.ENOENT, 3: errno.ENOENT, 5: errno.EACCES, 32: errno.EACCES,
              33: errno.EACCES, 183: errno.EEXIST}


def win_error(code: int, what: str, filename=None) -> OSError:
    """An ``OSError`` (``PermissionError`` for access/sharing/lock violations) for a
    Windows error code."""
    return OSError(_WIN_ERRNO.get(code, errno.EIO), f"{what} failed [WinError {code}]", filename)


class Win32:
    """Windows back-end: locks by ``LockFileEx`` / ``UnlockFileEx`` and durable
    renames by ``MoveFileExW``, on an injected ``kernel32`` (tests pass a fake).

    A lock covers byte 0 of the file (``LOCK`` is empty; locking past the end is
    allowed), on the handle ``get_osfhandle(fd)``: shared locks coexist, an exclusive
    one excludes every other lock of every other handle, in this process too. Unlike
    ``flock`` these locks are mandatory (nobody reads ``LOCK``, so that changes
    nothing). The lock is always requested with ``LOCKFILE_FAIL_IMMEDIATELY``.
    """

    name = "LockFileEx"
    LOCKFILE_FAIL_IMMEDIATELY = 0x1
    LOCKFILE_EXCLUSIVE_LOCK = 0x2
    MOVEFILE_REPLACE_EXISTING = 0x1
    MOVEFILE_WRITE_THROUGH = 0x8
    ERROR_ACCESS_DENIED = 5
    ERROR_SHARING_VIOLATION = 32
    ERROR_LOCK_VIOLATION = 33
    ERROR_NOT_LOCKED = 158

    def __init__(self, kernel32, get_osfhandle, get_last_error) -> None:
        self._k = kernel32
        self._handle = get_osfhandle
        self._last_error = get_last_error

    def try_lock(self, fd: int, shared: bool = False) -> bool:
        import ctypes
        ov = _overlapped_type()()
        flags = self.LOCKFILE_FAIL_IMMEDIATELY | (0 if shared else self.LOCKFILE_EXCLUSIVE_LOCK)
        if self._k.LockFileEx(self._handle(fd), flags, 0, 1, 0, ctypes.byref(ov)):
            return True
        code = self._last_error()
        if code in (self.ERROR_LOCK_VIOLATION, self.ERROR_SHARING_VIOLATION):
            return False
        raise win_error(code, "LockFileEx")

    def unlock(self, fd: int) -> None:
        import ctypes
        ov = _overlapped_type()()
        if not self._k.UnlockFileEx(self._handle(fd), 0, 1, 0, ctypes.byref(ov)):
            code = self._last_error()
            if code != self.ERROR_NOT_LOCKED:
                raise win_error(code, "UnlockFileEx")

    def close(self, fd: int) -> None:
        # Windows releases the locks of a closed handle only "when resources allow":
        # unlock first, so the next writer does not have to wait for it
        try:
            self.unlock(fd)
        except OSError:
            pass
        os.close(fd)

    def replace(self, src, dst, retry_seconds: float = 1.0) -> None:
        """``MoveFileExW(src, dst, REPLACE_EXISTING | WRITE_THROUGH)``: atomic on one
        volume, and returns once the rename is on disk (what the directory fsync after
        a rename gives on POSIX). Retried while the target is open in another process
        (access denied / sharing violation) for up to ``retry_seconds``."""
        flags = self.MOVEFILE_REPLACE_EXISTING | self.MOVEFILE_WRITE_THROUGH
        src, dst = os.fspath(src), os.fspath(dst)
        deadline = time.monotonic() + retry_seconds
        delay = 0.001
        while not self._k.MoveFileExW(src, dst, flags):
            code = self._last_error()
            if (code not in (self.ERROR_ACCESS_DENIED, self.ERROR_SHARING_VIOLATION)
                    or time.monotonic() >= deadline):
                raise win_error(code, "MoveFileExW", src)
            time.sleep(delay)
            delay = min(2 * delay, 0.05)


def _bind_win32() -> Win32:   # pragma: no cover - Windows only
    import ctypes
    import msvcrt
    from ctypes import wintypes

    k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]  # Windows only
    pov = ctypes.POINTER(_overlapped_type())
    k.LockFileEx.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.DWORD,
                             wintypes.DWORD, wintypes.DWORD, pov]
    k.LockFileEx.restype = wintypes.BOOL
    k.UnlockFileEx.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, pov]
    k.UnlockFileEx.restype = wintypes.BOOL
    k.MoveFileExW.argtypes = [wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD]
    k.MoveFileExW.restype = wintypes.BOOL
    return Win32(k, msvcrt.get_osfhandle,  # type: ignore[attr-defined,unused-ignore]  # Windows only
                 ctypes.get_last_error)  # type: ignore[attr-defined,unused-ignore]  # Windows only


class ProcessLocks:
    """No OS lock primitive (no ``fcntl``, not Windows; e.g. WASI, or a test hiding
    ``fcntl``): a lock table inside this process, keyed by the file's (device, inode),
    with the semantics of the others (shared locks coexist, an exclusive one excludes
    every other descriptor). It cannot exclude another process."""

    name = "process"

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._held: dict[tuple, dict[int, bool]] = {}   # file -> {fd: shared}
        self._key_of: dict[int, tuple] = {}

    def try_lock(self, fd: int, shared: bool = False) -> bool:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._mu:
            holders = self._held.setdefault(key, {})
            others = [s for f, s in holders.items() if f != fd]
            if others and not (shared and all(others)):
                return False
            holders[fd] = shared
            self._key_of[fd] = key
            return True

    def unlock(self, fd: int) -> None:
        with self._mu:
            key = self._key_of.pop(fd, None)
            holders = self._held.get(key)  # type: ignore[arg-type]  # key None (fd never locked): no holders
            if holders is not None:
                holders.pop(fd, None)
                if not holders:
                    del self._held[key]  # type: ignore[arg-type]  # holders found: key is set

    def close(self, fd: int) -> None:
        self.unlock(fd)
        os.close(fd)


# the lock back-end of this platform; _WIN32 also does the renames on Windows
_WIN32: Win32 | None
LOCKS: Win32 | PosixLocks | ProcessLocks
if WINDOWS:  # pragma: no cover - Windows only
    _WIN32 = _bind_win32()
    LOCKS = _WIN32
else:
    _WIN32 = None
    LOCKS = PosixLocks(fcntl) if fcntl is not None and hasattr(fcntl, "flock") else ProcessLocks()


def try_lock(fd: int, shared: bool = False) -> bool:
    """Take a shared or exclusive lock on ``fd``'s file without waiting; ``False``
    when another descriptor holds a conflicting lock."""
    return LOCKS.try_lock(fd, shared)


def unlock(fd: int) -> None:
    """Release ``fd``'s lock, keeping ``fd`` open."""
    LOCKS.unlock(fd)


def close_locked(fd: int) -> None:
    """Close a descriptor that holds a lock, releasing the lock (POSIX: just
    ``close``; elsewhere unlock first)."""
    LOCKS.close(fd)


def lock(fd: int, *, shared: bool = False, timeout: float = 0.0,
         message: str = "the file is locked") -> None:
    """Take a lock on ``fd``'s file, polling (2 ms doubling to 50 ms) for up to
    ``timeout`` seconds; then raise :class:`~sutradb.errors.LockedError` (``message``)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not LOCKS.try_lock(fd, shared):
        now = time.monotonic()
        if now >= deadline:
            raise LockedError(message)
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


# --------------------------------------------------------------------------- the write seam

class FileIO:
    """The calls that change files, each one call to the primitives above.

    Methods
    -------
    pwrite(fd, data, offset)
        Write all of ``data`` at ``offset`` (loops over short writes).
    fsync(fd)
        Make the data (and the size) of an open file durable (:data:`sync_file`).
    fsync_dir(path)
        Make the entries of a directory durable (:func:`sync_dir`; nothing on Windows).
    replace(src, dst)
        Atomically rename ``src`` over ``dst`` (:func:`replace_file`).
    truncate(fd, length)
        Cut or extend a file to ``length`` bytes.
    unlink(path)
        Remove a file (:func:`remove_file`): a missing file is not an error, a file
        Windows will not delete yet is left for a later sweep.
    """

    def pwrite(self, fd: int, data, offset: int) -> None:
        # `pwrite` here is the module's: os.pwrite itself on POSIX
        if type(data) is bytes:                # the common case: one call, no view
            n = pwrite(fd, data, offset)
            if n == len(data):
                return
            data = memoryview(data)[max(n, 0):]
            offset += max(n, 0)
        view = memoryview(data).cast("B")
        done = 0
        total = len(view)
        while done < total:
            n = pwrite(fd, view[done:], offset + done)
            if n <= 0:  # pragma: no cover - the kernel reports errors as OSError
                raise OSError("short write")
            done += n

    def fsync(self, fd: int) -> None:
        sync_file(fd)

    def fsync_dir(self, path: str) -> None:
        sync_dir(path)

    def replace(self, src: str, dst: str) -> None:
        replace_file(src, dst)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def unlink(self, path: str) -> None:
        remove_file(path)


#: The seam used by the whole storage layer.
io = FileIO()
