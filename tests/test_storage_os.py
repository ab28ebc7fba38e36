"""The OS boundary of the storage layer (``sutradb/storage/osio.py``).

This machine is Linux, so the POSIX back-end (``flock``, ``pread``/``pwrite``,
``fdatasync``, directory fsync, ``madvise``) is tested for real, across processes.
What only exists elsewhere is tested through its logic: the Windows back-end
(``LockFileEx``/``UnlockFileEx``/``MoveFileExW``) on a fake ``kernel32`` that keeps
Windows' lock rules, macOS's ``F_FULLFSYNC`` on a fake ``fcntl``, and a child process
that hides ``fcntl``, ``os.pread``, ``os.pwrite``, ``os.fdatasync`` and
``mmap.MADV_RANDOM`` before importing sutradb runs a whole database through the
fallbacks (seek+read/write, ``fsync``, the in-process lock table).
"""

from __future__ import annotations

import ast
import errno
import json
import mmap
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sutradb.errors import LockedError
from sutradb.storage import Store, osio
from sutradb.storage.format import LOCK_NAME, parse_file_name
from sutradb.storage.segments import pread_all
from sutradb.storage.wal import writer_active

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "sutradb"
POSIX = osio.fcntl is not None and not osio.WINDOWS


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_child(code: str, *args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=_child_env())


def put(t, ids, m=4):
    ids = list(ids)
    t.put(ids, texts=[f"t{i}" for i in ids], codes=np.full((len(ids), m), 7, np.uint8))


def unnamed(store, path):
    """Files of ours in ``path`` that the store's manifest does not name."""
    man = store._man
    names = {e["name"] for e in man["files"].values()} | {man["wal"]}
    names |= {man[k]["name"] for k in ("links", "index") if man[k] is not None}
    names |= {e["name"] for e in (man.get("terms") or {"runs": []})["runs"]}
    return {n for n in os.listdir(path) if parse_file_name(n) and n not in names}


# --------------------------------------------------------------------------- (a) no POSIX calls

_RECORDER = """
import importlib.abc, json, os, sys

importers = []            # (module asked for, module that asked)

class Hook(importlib.abc.MetaPathFinder):
    def __init__(self, block):
        self.block = block

    def find_spec(self, name, path=None, target=None):
        if name not in ("fcntl", "msvcrt"):
            return None
        f = sys._getframe(1)
        while f is not None and (f.f_globals.get("__name__") or "").startswith(("importlib", "_frozen")):
            f = f.f_back
        importers.append((name, f.f_globals.get("__name__") if f is not None else None))
        if self.block:
            raise ImportError(f"{name} hidden by the test")
        return None
"""


def test_only_osio_imports_fcntl():
    """``import sutradb`` asks for ``fcntl`` (and ``msvcrt``) only from the OS module.

    The hook refuses the import, so ``fcntl`` never lands in ``sys.modules`` and every
    later attempt (by any module) reaches the hook again and is recorded."""
    r = _run_child(_RECORDER + """
sys.modules.pop("fcntl", None)
sys.meta_path.insert(0, Hook(block=True))
import sutradb, sutradb.storage
print(json.dumps(importers))
""")
    assert r.returncode == 0, r.stderr
    importers = json.loads(r.stdout.strip().splitlines()[-1])
    ours = {who for name, who in importers if who and who.startswith("sutradb")}
    assert ours == {"sutradb.storage.osio"}, importers


_NO_POSIX_CHILD = _RECORDER + """
import mmap
sys.modules.pop("fcntl", None)
sys.meta_path.insert(0, Hook(block=True))
for name in ("pread", "pwrite", "fdatasync"):
    if hasattr(os, name):
        delattr(os, name)
if hasattr(mmap, "MADV_RANDOM"):
    del mmap.MADV_RANDOM

import numpy as np
import sutradb
from sutradb import errors
from sutradb.storage import osio

out = {"lock": osio.LOCKS.name, "fcntl": osio.fcntl is not None,
       "pread": osio.pread is osio.seek_pread, "pwrite": osio.pwrite is osio.seek_pwrite,
       "sync": osio.sync_file is os.fsync, "madv": osio.MADV_RANDOM,
       "importers": importers}
path = sys.argv[1]
rng = np.random.default_rng(5)
V = rng.standard_normal((400, 16)).astype(np.float32)
with sutradb.open(path, "x", dim=16, durability="full", index_threshold=200) as db:
    ids = db.add_vectors(V[:300], texts=[f"t{i}" for i in range(300)])
    more = db.add_vectors(V[300:])
    db.delete(ids[:40].tolist())
    try:
        sutradb.open(path, "a")
        out["second_writer"] = "opened"
    except errors.LockedError:
        out["second_writer"] = "LockedError"
    with sutradb.open(path, "r") as r:          # replays the writer's log (seek_pread)
        D, I = r.search_vectors(V[100:101], k=1)
        out["reader_hit"] = [int(I[0, 0]), int(ids[100])]
        out["reader_len"] = len(r)
    db.compact()
    s = db._store
    man = s._man
    names = {e["name"] for e in man["files"].values()} | {man["wal"]}
    names |= {man[k]["name"] for k in ("links", "index") if man[k] is not None}
    names |= {e["name"] for e in (man.get("terms") or {"runs": []})["runs"]}
    out["named"] = sorted(names)
    out["listing"] = sorted(os.listdir(path))
with sutradb.open(path, "a") as db:
    D, I = db.search_vectors(V[250:251], k=1)
    out["hit"] = [int(I[0, 0]), int(ids[250])]
    out["text"] = db.get(int(ids[250])).text
    out["len"] = len(db)
    out["verify"] = db.verify()
    out["n_vec"] = int(np.asarray(db.get_vectors([int(more[0])])).shape[0])
out["fcntl_loaded"] = "fcntl" in sys.modules
print(json.dumps(out, default=str))
"""


def test_database_runs_without_fcntl_pread_pwrite_fdatasync(tmp_path):
    r = _run_child(_NO_POSIX_CHILD, tmp_path / "db")
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # the fallbacks were the ones in use
    assert out["lock"] == "process" and not out["fcntl"]
    assert out["pread"] and out["pwrite"] and out["sync"] and out["madv"] is None
    assert not out["fcntl_loaded"]
    assert {who for _, who in out["importers"] if who and who.startswith("sutradb")} == {"sutradb.storage.osio"}
    # and the database worked through them
    assert out["second_writer"] == "LockedError"
    assert out["reader_hit"][0] == out["reader_hit"][1] and out["reader_len"] == 360
    assert out["hit"][0] == out["hit"][1] and out["text"] == "t250"
    assert out["len"] == 360 and out["n_vec"] == 1
    assert out["verify"]
    # compaction's old files were removed (remove_file), nothing else is left
    assert out["listing"] == sorted(out["named"] + ["LOCK", "MANIFEST"]), out


def _names_in(tree):
    """(line, name) of every import, ``module.attribute``, bare attribute and
    ``getattr(module, "name")`` in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module.split(".")[0]
            for a in node.names:
                yield node.lineno, f"{node.module}.{a.name}"
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
            if isinstance(node.value, ast.Name):
                yield node.lineno, f"{node.value.id}.{node.attr}"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[0], ast.Name) and isinstance(node.args[1], ast.Constant)):
            yield node.lineno, f"{node.args[0].id}.{node.args[1].value}"


#: modules, ``os``/``mmap`` attributes and method names that exist on some platforms only
_PLATFORM_ONLY = {"fcntl", "msvcrt", "winreg", "_winapi",
                  "os.pread", "os.pwrite", "os.fdatasync", "os.O_DIRECTORY", "os.O_BINARY",
                  "os.open", "madvise", "flock", "lockf", "F_FULLFSYNC", "get_osfhandle",
                  "LockFileEx", "MoveFileExW"}


def test_no_platform_specific_name_outside_osio():
    """Nothing POSIX- or Windows-only (nor a bare ``os.open``, which would miss
    ``O_BINARY``) is named anywhere in the package except the OS module."""
    found = []
    for f in sorted(PKG.rglob("*.py")):
        if f == PKG / "storage" / "osio.py":
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for line, name in _names_in(tree):
            if name in _PLATFORM_ONLY or name.startswith(("MADV_", "mmap.MADV_")):
                found.append(f"{f.relative_to(ROOT)}:{line}: {name}")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- (b) Windows, faked

class FakeKernel32:
    """``LockFileEx``/``UnlockFileEx``/``MoveFileExW`` with Windows' rules.

    Handles are ``fd + 1000`` (so a mix-up of fd and handle shows); locks are keyed by
    the file (device, inode) and owned by the handle. An exclusive lock conflicts with
    any lock of any other handle, a shared one with another handle's exclusive lock;
    a handle's second exclusive lock on the same byte fails too (exclusive locks may
    not overlap anything). ``UnlockFileEx`` removes one lock of the handle or fails
    with ERROR_NOT_LOCKED.
    """

    BASE = 1000

    def __init__(self):
        self.locks = {}          # file key -> [(handle, exclusive)]
        self.calls = []
        self.last_error = 0
        self.fail_lock_with = None
        self.move_failures = []  # error codes MoveFileExW returns first, in order

    def get_osfhandle(self, fd):
        return fd + self.BASE

    def _key(self, h):
        st = os.fstat(h - self.BASE)
        return st.st_dev, st.st_ino

    def _check_range(self, reserved, low, high, ov):
        assert reserved == 0 and (low, high) == (1, 0)
        assert ov._obj.Offset == 0 and ov._obj.OffsetHigh == 0 and not ov._obj.hEvent

    def LockFileEx(self, h, flags, reserved, low, high, ov):
        self.calls.append(("lock", h, flags))
        self._check_range(reserved, low, high, ov)
        assert flags & 1, "always LOCKFILE_FAIL_IMMEDIATELY"
        if self.fail_lock_with is not None:
            self.last_error = self.fail_lock_with
            return 0
        exclusive = bool(flags & 2)
        held = self.locks.setdefault(self._key(h), [])
        if held if exclusive else any(x for _, x in held):
            self.last_error = 33          # ERROR_LOCK_VIOLATION
            return 0
        held.append((h, exclusive))
        return 1

    def UnlockFileEx(self, h, reserved, low, high, ov):
        self.calls.append(("unlock", h))
        self._check_range(reserved, low, high, ov)
        held = self.locks.get(self._key(h), [])
        for i, (hh, _) in enumerate(held):
            if hh == h:
                del held[i]
                return 1
        self.last_error = 158             # ERROR_NOT_LOCKED
        return 0

    def MoveFileExW(self, src, dst, flags):
        self.calls.append(("move", src, dst, flags))
        assert isinstance(src, str) and isinstance(dst, str)
        if self.move_failures:
            self.last_error = self.move_failures.pop(0)
            return 0
        os.replace(src, dst)
        return 1


@pytest.fixture
def fake_win(monkeypatch):
    """A Win32 back-end on a fake kernel32, installed as the module's lock and
    rename back-end."""
    k = FakeKernel32()
    w = osio.Win32(k, k.get_osfhandle, lambda: k.last_error)
    monkeypatch.setattr(osio, "LOCKS", w)
    monkeypatch.setattr(osio, "_WIN32", w)
    return SimpleNamespace(k=k, w=w)


def _fds(path, n, flags=os.O_RDWR | os.O_CREAT):
    return [os.open(path, flags, 0o644) for _ in range(n)]


def test_win32_shared_locks_coexist_exclusive_refused(tmp_path, fake_win):
    w, k = fake_win.w, fake_win.k
    a, b, c = _fds(tmp_path / "LOCK", 3)
    try:
        assert w.try_lock(a, shared=True)
        assert w.try_lock(b, shared=True)          # shared + shared
        assert not w.try_lock(c)                   # shared + exclusive: refused
        assert [f for op, h, f in [x for x in k.calls if x[0] == "lock"]] == [1, 1, 3]
        assert {h for op, h, *_ in k.calls} == {a + 1000, b + 1000, c + 1000}
        with pytest.raises(LockedError, match="busy"):
            osio.lock(c, message="busy")           # through the module: LockedError
        w.unlock(a)
        assert not w.try_lock(c)                   # b still shares it
        w.unlock(b)
        assert w.try_lock(c)                       # now exclusive
        assert not w.try_lock(a, shared=True)      # exclusive refuses shared
        assert not w.try_lock(c)                   # and a second exclusive, same handle
        w.close(c)                                 # close unlocks first
        assert k.calls[-1] == ("unlock", c + 1000)
        assert w.try_lock(a)
        w.unlock(a)
        w.unlock(a)                                # ERROR_NOT_LOCKED is not an error
    finally:
        for fd in (a, b):
            os.close(fd)


def test_win32_lock_errors_are_raised(tmp_path, fake_win):
    (a,) = _fds(tmp_path / "LOCK", 1)
    try:
        fake_win.k.fail_lock_with = 6                      # ERROR_INVALID_HANDLE
        with pytest.raises(OSError, match="LockFileEx") as e:
            fake_win.w.try_lock(a)
        assert not isinstance(e.value, PermissionError)
        fake_win.k.fail_lock_with = None
        fake_win.k.last_error = 6
        fake_win.k.UnlockFileEx = lambda *a: 0             # unlock failing for real
        with pytest.raises(OSError, match="UnlockFileEx"):
            fake_win.w.unlock(a)
    finally:
        os.close(a)


def test_win32_lock_timeout(tmp_path, fake_win):
    a, b = _fds(tmp_path / "LOCK", 2)
    try:
        assert osio.try_lock(a)
        t0 = time.monotonic()
        with pytest.raises(LockedError):
            osio.lock(b, timeout=0.3, message="held")
        waited = time.monotonic() - t0
        tries = sum(1 for x in fake_win.k.calls if x[:2] == ("lock", b + 1000))
        assert 0.3 <= waited < 2.0 and tries >= 4          # polled, with back-off
        # released during the wait: the lock is taken before the timeout
        threading.Timer(0.15, osio.unlock, (a,)).start()
        t0 = time.monotonic()
        osio.lock(b, timeout=5.0)
        assert 0.1 < time.monotonic() - t0 < 2.0
        assert not osio.try_lock(a, shared=True)
    finally:
        os.close(a)
        os.close(b)


def test_store_with_win32_locks(tmp_path, fake_win):
    """The store's writer lock and the reader's probe on the Windows back-end."""
    p = tmp_path / "db"
    k = fake_win.k
    w = Store.open(p)
    handle = w._lock_fd + k.BASE
    try:
        assert ("lock", handle, 3) in k.calls               # exclusive, fail-immediately
        with pytest.raises(LockedError, match="another process is writing"):
            Store.open(p)
        with Store.open(p, "r") as r:
            assert writer_active(r.path)                      # its shared probe is refused
        with Store.open(p, "r") as r:
            t0 = time.monotonic()
            with pytest.raises(LockedError):
                Store.open(p, timeout=0.2)
            assert time.monotonic() - t0 >= 0.2
    finally:
        w.close()
    assert ("unlock", handle) in k.calls                  # unlocked before the close
    assert all(not v for v in k.locks.values()), k.locks
    with Store.open(p) as w2, Store.open(p, "r") as r:
        assert writer_active(r.path)
    with Store.open(p, "r") as r:
        assert not writer_active(r.path)


def test_win32_replace(tmp_path, fake_win, monkeypatch):
    k = fake_win.k
    src, dst = tmp_path / "MANIFEST.tmp", tmp_path / "MANIFEST"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    k.move_failures = [32, 5, 32]              # a reader has MANIFEST open for a moment
    osio.replace_file(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()
    moves = [x for x in k.calls if x[0] == "move"]
    assert len(moves) == 4 and all(x[3] == 0x1 | 0x8 for x in moves)   # REPLACE_EXISTING|WRITE_THROUGH
    assert moves[0][1:3] == (str(src), str(dst))
    # still refused after the retry time: PermissionError
    src.write_bytes(b"newer")
    monkeypatch.setattr(osio, "REPLACE_RETRY_SECONDS", 0.1)
    k.move_failures = [32] * 1000
    t0 = time.monotonic()
    with pytest.raises(PermissionError):
        osio.io.replace(str(src), str(dst))
    assert 0.1 <= time.monotonic() - t0 < 2.0 and dst.read_bytes() == b"new"
    # another error: raised at once, no retry
    k.move_failures = [2]
    n = len(k.calls)
    with pytest.raises(FileNotFoundError):
        osio.replace_file(src, dst)
    assert len(k.calls) == n + 1


def test_remove_file_in_use(tmp_path, monkeypatch):
    f = tmp_path / "x"
    f.write_bytes(b"1")
    assert osio.remove_file(f) and not f.exists()
    assert osio.remove_file(f)                         # missing: fine

    def refuse(path, *a, **kw):
        raise PermissionError(errno.EACCES, "in use", str(path))
    f.write_bytes(b"1")
    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(PermissionError):               # POSIX: a real error
        osio.remove_file(f)
    monkeypatch.setattr(osio, "WINDOWS", True)
    assert osio.remove_file(f) is False and f.exists() # Windows: left for a later sweep


def test_undeletable_files_are_swept_later(tmp_path, monkeypatch):
    """Windows: files a reader still maps cannot be deleted after a compaction; the
    store carries on, and a later checkpoint's sweep deletes them."""
    p = tmp_path / "db"
    kw = dict(durability="off", compact_min_rows=1000000)
    s = Store.open(p, **kw)
    with s.begin() as t:
        put(t, range(50))
    s.checkpoint()
    with s.begin() as t:
        t.delete(list(range(0, 50, 2)))
    s.checkpoint()
    r = Store.open(p, "r")                              # maps the old row files
    busy = set(os.listdir(p))
    real_unlink = os.unlink

    def windows_unlink(path, *a, **kw):
        if os.path.basename(path) in busy:
            raise PermissionError(errno.EACCES, "file in use", str(path))
        return real_unlink(path, *a, **kw)
    monkeypatch.setattr(osio, "WINDOWS", True)
    monkeypatch.setattr(os, "unlink", windows_unlink)
    s.compact()
    garbage = unnamed(s, p)
    assert garbage and garbage <= busy, "compaction retired files that Windows would not delete"
    assert {n.split(".")[-1] for n in garbage} >= {"ids", "rec", "codes", "log"}
    assert sorted(r.live_ids().tolist()) == list(range(1, 50, 2))   # the reader is unharmed
    assert s.verify()
    r.close()
    busy.clear()                                        # the reader let go
    with s.begin() as t:
        put(t, [100])
    s.checkpoint()
    assert not (garbage & set(os.listdir(p)))
    assert sorted(s.live_ids().tolist()) == list(range(1, 50, 2)) + [100]
    s.close()
    with Store.open(p, "r") as r2:
        assert r2.verify() and r2.n_live == 26


# --------------------------------------------------------------------------- (c) POSIX, for real

_HOLDER = """
import os, sys, time
from sutradb.storage import osio
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
ok = osio.try_lock(fd, shared=sys.argv[2] == "shared")
print("locked" if ok else "refused", flush=True)
sys.stdin.readline()
"""


class Holder:
    """A child process holding a lock on a file until it is told to stop."""

    def __init__(self, path, kind):
        self.p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), kind],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=_child_env())
        self.state = self.p.stdout.readline().strip()
        assert self.state in ("locked", "refused"), self.p.stderr.read()

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.write("\n")
            self.p.stdin.flush()
            self.p.wait(30)


@pytest.mark.skipif(not POSIX, reason="flock exists on POSIX only")
def test_posix_locks_across_processes(tmp_path):
    f = tmp_path / "LOCK"
    assert osio.LOCKS.name == "flock"
    h = Holder(f, "shared")
    try:
        assert h.state == "locked"
        (fd,) = _fds(f, 1)
        try:
            assert osio.try_lock(fd, shared=True)        # readers share
            osio.unlock(fd)
            assert not osio.try_lock(fd)                 # a writer waits for them
            h2 = Holder(f, "shared")
            assert h2.state == "locked"
            h2.stop()
        finally:
            os.close(fd)
    finally:
        h.stop()
    h = Holder(f, "exclusive")
    try:
        assert h.state == "locked"
        assert Holder(f, "exclusive").state == "refused"     # writer excludes writer
        assert Holder(f, "shared").state == "refused"        # and readers' probes
        (fd,) = _fds(f, 1)
        try:
            assert not osio.try_lock(fd, shared=True)
        finally:
            os.close(fd)
    finally:
        h.stop()
    assert Holder(f, "exclusive").state == "locked"           # the dead holder's lock is gone


@pytest.mark.skipif(not POSIX, reason="flock exists on POSIX only")
def test_posix_store_writer_in_another_process(tmp_path):
    p = tmp_path / "db"
    Store.open(p).close()
    h = Holder(p / LOCK_NAME, "exclusive")
    try:
        assert h.state == "locked"
        t0 = time.monotonic()
        with pytest.raises(LockedError, match="for 0.2 s"):
            Store.open(p, timeout=0.2)
        assert time.monotonic() - t0 >= 0.2
        with Store.open(p, "r") as r:
            assert writer_active(r.path)
        threading.Timer(0.2, h.stop).start()
        with Store.open(p, timeout=10) as w:                 # taken once the holder quits
            assert w.n_live == 0
    finally:
        h.stop()
    with Store.open(p, "r") as r:
        assert not writer_active(r.path)


@pytest.mark.skipif(not POSIX, reason="flock exists on POSIX only")
def test_posix_locks_in_one_process(tmp_path):
    a, b, c = _fds(tmp_path / "LOCK", 3)
    try:
        assert osio.try_lock(a)
        assert not osio.try_lock(b) and not osio.try_lock(b, shared=True)  # per open file
        dup = os.dup(a)
        osio.close_locked(dup)        # the same open file description: a stays locked
        assert not osio.try_lock(b)
        osio.close_locked(a)
        a = -1
        assert osio.try_lock(b, shared=True) and osio.try_lock(c, shared=True)
        with pytest.raises(OSError):
            osio.try_lock(10 ** 6)    # EBADF is an error, not "held"
    finally:
        for fd in (a, b, c):
            if fd >= 0:
                os.close(fd)


def test_process_locks(tmp_path):
    """The back-end of platforms with neither flock nor LockFileEx."""
    L = osio.ProcessLocks()
    a, b, c = _fds(tmp_path / "LOCK", 3)
    (other,) = _fds(tmp_path / "OTHER", 1)
    try:
        assert L.try_lock(a, shared=True) and L.try_lock(b, shared=True)
        assert not L.try_lock(c)
        assert L.try_lock(other)                     # another file is independent
        L.unlock(a)
        L.unlock(b)
        assert L.try_lock(c) and not L.try_lock(a, shared=True) and not L.try_lock(b)
        L.close(c)                                   # unlocks, then closes
        assert c not in L._key_of
        c = -1
        assert L.try_lock(a)
    finally:
        for fd in (a, b, c, other):
            if fd >= 0:
                os.close(fd)


# --------------------------------------------------------------------------- (d) seek fallbacks

def test_seek_pread_pwrite_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    fa = os.open(tmp_path / "a", os.O_RDWR | os.O_CREAT)
    fb = os.open(tmp_path / "b", os.O_RDWR | os.O_CREAT)
    try:
        for _ in range(200):
            off = int(rng.integers(0, 50000))
            data = rng.bytes(int(rng.integers(1, 3000)))
            assert os.pwrite(fa, data, off) == osio.seek_pwrite(fb, data, off) == len(data)
            mv = memoryview(bytearray(data))[1:]
            assert os.pwrite(fa, mv, off + 7) == osio.seek_pwrite(fb, mv, off + 7)
        size = os.fstat(fa).st_size
        assert size == os.fstat(fb).st_size
        for _ in range(300):
            off = int(rng.integers(0, size + 100))
            n = int(rng.integers(0, 5000))
            assert os.pread(fa, n, off) == osio.seek_pread(fb, n, off)
        assert osio.seek_pread(fb, 10, size) == b""
        assert pread_all(fa, size, 0) == pread_all(fb, size, 0)
    finally:
        os.close(fa)
        os.close(fb)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_seek_fallbacks_two_threads_one_fd(tmp_path):
    """Two threads read and write through one descriptor at their own offsets: the
    per-descriptor lock keeps each seek with its read or write."""
    block, rounds = 512, 20000
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    errors = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def work(t):
        try:
            for i in range(rounds):
                off = (2 * (i % 64) + t) * block
                data = bytes([t * 100 + i % 97]) * block
                assert osio.seek_pwrite(fd, data, off) == block
                got = osio.seek_pread(fd, block, off)
                if got != data:
                    errors.append((t, i, got[:4]))
                    return
        except Exception as e:   # pragma: no cover - reported below
            errors.append((t, repr(e)))
    try:
        ts = [threading.Thread(target=work, args=(t,)) for t in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        final = os.pread(fd, 128 * block, 0)
    finally:
        sys.setswitchinterval(old)
        os.close(fd)
    assert not errors, errors[:3]
    for k in range(128):
        t, slot = k % 2, k // 2
        last = max(i for i in range(rounds) if i % 64 == slot)
        assert final[k * block:(k + 1) * block] == bytes([t * 100 + last % 97]) * block


def test_fileio_pwrite_through_fallback_and_short_writes(tmp_path, monkeypatch):
    calls = []

    def short(fd, data, off):                # at most 5 bytes a call, via seek+write
        calls.append(len(data))
        return osio.seek_pwrite(fd, memoryview(data)[:5], off)
    monkeypatch.setattr(osio, "pwrite", short)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        osio.io.pwrite(fd, b"0123456789abcdef", 3)
        osio.io.pwrite(fd, np.arange(4, dtype="<u2"), 40)
        assert os.pread(fd, 100, 0) == (b"\0" * 3 + b"0123456789abcdef" + b"\0" * 21
                                        + np.arange(4, dtype="<u2").tobytes())
    finally:
        os.close(fd)
    assert len(calls) == 4 + 2


@pytest.mark.skipif(not hasattr(os, "pread"), reason="compares with os.pread")
def test_posix_primitives_are_the_os_calls():
    """No Python layer between the commit and the kernel on POSIX."""
    assert osio.pread is os.pread and osio.pwrite is os.pwrite
    if sys.platform.startswith("linux"):
        assert osio.sync_file is os.fdatasync
        assert osio.LOCKS.name == "flock" and osio.DIR_SYNC


# --------------------------------------------------------------------------- (e) no-ops, syncs

def test_advise_random(tmp_path, monkeypatch):
    f = tmp_path / "m"
    f.write_bytes(b"x" * 8192)
    with open(f, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if hasattr(mmap, "MADV_RANDOM") and hasattr(mm, "madvise"):
            assert osio.advise_random(mm) is True
        assert osio.advise_random(SimpleNamespace()) is False       # no madvise method
        seen = []
        bad = SimpleNamespace(madvise=lambda a: seen.append(a) or (_ for _ in ()).throw(OSError(22, "no")))
        assert osio.advise_random(bad) is False and seen            # OS refused: ignored
        monkeypatch.setattr(osio, "MADV_RANDOM", None)              # no constant
        seen.clear()
        spy = SimpleNamespace(madvise=seen.append)
        assert osio.advise_random(spy) is False and not seen
    finally:
        mm.close()


def test_sync_dir_skipped_where_directories_cannot_be_opened(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-dir"
    if POSIX:
        osio.sync_dir(tmp_path)                      # a real fsync of a directory
        with pytest.raises(FileNotFoundError):
            osio.sync_dir(missing)                   # it really opens the directory
    monkeypatch.setattr(osio, "DIR_SYNC", False)     # Windows
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    osio.sync_dir(missing)                           # nothing happens at all
    assert opened == []
    with Store.open(tmp_path / "db", durability="full") as s:   # the store does not need it
        with s.begin() as t:
            put(t, [1, 2])
        s.checkpoint()
    assert not [p for p in opened if os.path.isdir(p)]
    monkeypatch.undo()
    with Store.open(tmp_path / "db", "r") as r:
        assert r.n_live == 2 and r.verify()


def test_choose_sync_per_platform():
    log = []
    fake_os = SimpleNamespace(fsync=lambda fd: log.append(("fsync", fd)),
                              fdatasync=lambda fd: log.append(("fdatasync", fd)))
    no_fdatasync = SimpleNamespace(fsync=fake_os.fsync)

    class FakeFcntl:
        F_FULLFSYNC = 51
        refuse = False

        @classmethod
        def fcntl(cls, fd, op):
            log.append(("fcntl", fd, op))
            if cls.refuse:
                raise OSError(errno.ENOTTY, "not supported")
    f, d = osio.choose_sync("linux", fake_os, FakeFcntl)
    f(3), d(4)
    assert log == [("fdatasync", 3), ("fsync", 4)]
    log.clear()
    f, d = osio.choose_sync("win32", no_fdatasync, None)       # FlushFileBuffers
    f(3), d(4)
    assert log == [("fsync", 3), ("fsync", 4)]
    log.clear()
    f, d = osio.choose_sync("darwin", fake_os, FakeFcntl)      # F_FULLFSYNC, files and dirs
    f(3), d(4)
    assert log == [("fcntl", 3, 51), ("fcntl", 4, 51)]
    log.clear()
    FakeFcntl.refuse = True                                    # a file system without it
    f(5)
    assert log == [("fcntl", 5, 51), ("fsync", 5)]
    log.clear()
    f, _ = osio.choose_sync("darwin", no_fdatasync, SimpleNamespace(fcntl=None))   # no constant
    f(6)
    assert log == [("fsync", 6)]


def test_open_file_adds_o_binary(tmp_path, monkeypatch):
    seen = []
    real_open = os.open
    flag = getattr(os, "O_BINARY", 1 << 30)          # a bit no Linux flag uses
    monkeypatch.setattr(osio, "O_BINARY", flag)
    monkeypatch.setattr(os, "open", lambda p, flags, mode=0o777: seen.append(flags) or
                        real_open(p, flags if hasattr(os, "O_BINARY") else flags & ~flag, mode))
    fd = osio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    assert seen and all(fl & osio.O_BINARY for fl in seen)
    seen.clear()
    Store.open(tmp_path / "db", durability="off").close()   # every open of the store
    assert len(seen) > 5 and all(fl & osio.O_BINARY for fl in seen)
