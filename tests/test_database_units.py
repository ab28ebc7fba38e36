"""Unit tests of the pieces of sutradb.database that stand alone (no Database)."""

from __future__ import annotations

import threading
import time

from sutradb.database.locking import ExclusiveLock, ReadLock, RWLock

JOIN = 30.0


# --------------------------------------------------------------------------- locking

def _in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:          # pragma: no cover - reported by the test
            out["error"] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


def test_rwlock_readers_share():
    rw = RWLock()
    with ReadLock(rw):
        th, out = _in_thread(lambda: (rw.acquire_read(), rw.release_read()))
        th.join(JOIN)
        assert not th.is_alive() and "error" not in out


def test_rwlock_exclusive_excludes_readers_and_may_read_itself():
    rw = RWLock()
    entered = threading.Event()
    with ExclusiveLock(rw):
        with ReadLock(rw):                   # the exclusive holder may read
            pass
        with ExclusiveLock(rw):              # and re-enter
            pass
        th, _ = _in_thread(lambda: (rw.acquire_read(), entered.set(), rw.release_read()))
        time.sleep(0.05)
        assert not entered.is_set()
    th.join(JOIN)
    assert entered.is_set()


def test_rwlock_waiting_writer_goes_before_new_readers():
    rw = RWLock()
    order = []
    rw.acquire_read()
    w, _ = _in_thread(lambda: (rw.acquire_write(), order.append("w"), rw.release_write()))
    for _ in range(200):                     # the writer is waiting
        if rw._wwait:
            break
        time.sleep(0.005)
    r, _ = _in_thread(lambda: (rw.acquire_read(), order.append("r"), rw.release_read()))
    time.sleep(0.05)
    assert order == []                       # the new reader waits behind the writer
    rw.release_read()
    w.join(JOIN)
    r.join(JOIN)
    assert order == ["w", "r"]
