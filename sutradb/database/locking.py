"""The readers/writer lock of a :class:`~sutradb.database.Database`.

Thread safety
-------------
Any number of threads may read (``get``, ``search``, ``distance``, ``neighbors``...)
at once. Writes are serialised by a lock: a transaction belongs to the thread that
opened it and other writers wait for it to finish. A read that overlaps a commit waits
for the commit's few store updates to finish, so every read sees one committed state.
Across processes, one writer and any number of readers (``mode="r"``); see
:mod:`sutradb.storage.store`.

A database holds two locks: the write lock (a ``threading.RLock``, held by the
thread whose transaction is open, and by ``build_index``, ``tune(save=True)``,
``compact``, ``verify`` and ``close``), and one :class:`RWLock`, whose shared side
(:class:`ReadLock`) every read of the store takes and whose exclusive side
(:class:`ExclusiveLock`) every change of the store takes (beginning, staging into,
committing and rolling back a store transaction, index swaps, ``refresh``).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["RWLock", "ReadLock", "ExclusiveLock"]


class RWLock:
    """Shared (readers) / exclusive (store mutation) lock; the exclusive holder may
    also read. Writers are additionally serialised by the database's write lock.
    A waiting writer goes before readers that arrive after it (else a thread that
    reads in a loop keeps the count of readers above zero and no commit ever gets
    in); readers do not nest. Readers notify only when a writer waits (the common
    uncontended read is two plain lock operations)."""

    __slots__ = ("_mutex", "_cond", "_readers", "_owner", "_depth", "_rwait", "_wwait")

    def __init__(self) -> None:
        # the condition's own lock, also taken directly (``with self._mutex``: no
        # Python-level __enter__ on the uncontended read path)
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._owner: int | None = None
        self._depth = 0
        self._rwait = 0         # readers waiting
        self._wwait = 0         # writers waiting

    def acquire_read(self) -> None:
        """Take the shared side: waits while another thread holds the exclusive side
        or waits for it; returns at once for the exclusive holder."""
        with self._mutex:
            if ((self._owner is not None or self._wwait)
                    and self._owner != threading.get_ident()):
                self._rwait += 1
                try:
                    while self._owner is not None or self._wwait:
                        self._cond.wait()
                finally:
                    self._rwait -= 1
            self._readers += 1

    def release_read(self) -> None:
        """Release the shared side (waking a waiting writer when the last reader leaves)."""
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._wwait:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        """Take the exclusive side (re-entrant for its holder): waits for the readers
        and for another exclusive holder to leave."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            self._wwait += 1
            try:
                while self._owner is not None or self._readers:
                    self._cond.wait()
            finally:
                self._wwait -= 1
            self._owner = me
            self._depth = 1

    def release_write(self) -> None:
        """Release one level of the exclusive side."""
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                if self._rwait or self._wwait:
                    self._cond.notify_all()


class ReadLock:
    """``with`` the shared side of an :class:`RWLock`."""

    __slots__ = ("rw",)

    def __init__(self, rw: RWLock) -> None:
        self.rw = rw

    def __enter__(self) -> None:
        rw = self.rw
        with rw._mutex:        # the uncontended case inline (a read is often ~2 us)
            if rw._owner is None and not rw._wwait:
                rw._readers += 1
                return
        rw.acquire_read()

    def __exit__(self, *exc: Any) -> None:
        rw = self.rw
        with rw._mutex:
            rw._readers -= 1
            if rw._readers == 0 and rw._wwait:
                rw._cond.notify_all()


class ExclusiveLock(ReadLock):
    """``with`` the exclusive side of an :class:`RWLock`."""

    __slots__ = ()

    def __enter__(self) -> None:
        self.rw.acquire_write()

    def __exit__(self, *exc: Any) -> None:
        self.rw.release_write()
