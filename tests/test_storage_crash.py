"""Crash and concurrency tests: SIGKILLed writers, one writer with three readers,
and the writer lock. The workload and its model are in ``storage_child.py``."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from sutradb.errors import LockedError
from sutradb.storage import Store

import storage_child as child

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "storage_child.py")
KILLS = int(os.environ.get("SUTRADB_KILLS", "200"))
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def _spawn(*args):
    return subprocess.Popen([sys.executable, CHILD, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)


class Lines:
    """Unbuffered line reader over a child's stdout (select + os.read, nothing lost)."""

    def __init__(self, proc):
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.eof = False

    def next(self, deadline):
        """The next line (split into words), or None at EOF / deadline."""
        while b"\n" not in self.buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().split()

    def until(self, word, deadline):
        while True:
            line = self.next(deadline)
            if line is None or (line and line[0] == word):
                return line


def test_sigkill_never_loses_or_splits_a_transaction(tmp_path):
    """A writer commits in a loop; it is SIGKILLed after a random few milliseconds
    (sometimes while it opens and recovers); then every transaction it reported is
    there, whole, at most one more (committed but not yet reported), nothing else, and
    ``verify()`` passes. Writers are forked by a zygote so that a kill costs ~10 ms."""
    rng = random.Random(int(os.environ.get("SUTRADB_KILL_SEED", "20240611")))
    zyg = _spawn("zygote", "-")
    lines = Lines(zyg)
    kills = 0
    phases = {"during-open": 0, "committing": 0}
    started = time.monotonic()
    model = child.Model()
    path = None
    try:
        while kills < KILLS:
            if kills % 40 == 0:                   # a fresh database now and then keeps checks cheap
                path = tmp_path / f"db{kills}"
                model = child.Model()
            durability = rng.choice(["full", "normal", "off"])
            _send(zyg, f"fork {path} {durability}")
            last_ok = model.t
            pid = None
            early = rng.random() < 0.15            # kill while it opens / recovers
            deadline = time.monotonic() + 30
            while pid is None or not early:
                line = lines.next(deadline)
                assert line is not None, _stderr(zyg)
                if line[0] == "pid":
                    pid = int(line[1])
                    if early:
                        time.sleep(rng.uniform(0.0, 0.01))
                elif line[0] == "ready":
                    assert int(line[1]) == model.t
                    break
            if not early:
                end = time.monotonic() + rng.uniform(0.001, 0.05)
                while (line := lines.next(end)) is not None:
                    if line[0] == "ok":
                        last_ok = int(line[1])
            os.kill(pid, signal.SIGKILL)
            _send(zyg, f"reap {pid}")
            while True:
                line = lines.next(time.monotonic() + 30)
                assert line is not None, _stderr(zyg)
                if line[0] == "ok":                  # reported before the kill landed
                    last_ok = int(line[1])
                elif line[0] == "reaped":
                    status = int(line[2])
                    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                        (status, _stderr(zyg))
                    break
            kills += 1
            phases["during-open" if early else "committing"] += 1
            mode = "r" if kills % 2 else "a"       # check as a reader, or recover as a writer
            with Store.open(path, mode, timeout=10, **({} if mode == "r" else child.STORE_KW)) as s:
                t = child.committed_t(s)
                assert last_ok <= t <= last_ok + 1, (last_ok, t)
                model.advance(t)
                child.check_full(s, model)
                s.verify()
    finally:
        try:
            _send(zyg, "exit")
            zyg.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            zyg.kill()
            zyg.wait()
        for f in (zyg.stdin, zyg.stdout, zyg.stderr):
            f.close()
    elapsed = time.monotonic() - started
    print(f"\nkill test: {kills} SIGKILLs {phases}, {elapsed:.1f} s")
    assert kills >= KILLS


def _send(proc, cmd):
    proc.stdin.write((cmd + "\n").encode())
    proc.stdin.flush()


def _stderr(proc):
    r, _, _ = select.select([proc.stderr], [], [], 0.5)
    return os.read(proc.stderr.fileno(), 65536).decode() if r else ""


def test_one_writer_three_readers_and_a_second_writer(tmp_path):
    path = tmp_path / "db"
    seconds = 4.0
    with Store.open(path, **child.STORE_KW) as s:   # create it, with a few transactions
        for t in range(1, 6):
            child.run_txn(s, t)
    writer = _spawn("writer", path, "normal", seconds)
    assert Lines(writer).until("ready", time.monotonic() + 30) is not None
    readers = [_spawn("reader", path, seconds) for _ in range(3)]
    # a second writer: LockedError at once, and after its timeout
    with pytest.raises(LockedError):
        Store.open(path, "a")
    t0 = time.monotonic()
    with pytest.raises(LockedError):
        Store.open(path, "a", timeout=0.3)
    waited = time.monotonic() - t0
    assert waited >= 0.3
    outs = [tuple(x.decode() for x in r.communicate(timeout=120)) for r in readers]
    wout, werr = (x.decode() for x in writer.communicate(timeout=120))
    assert writer.returncode == 0, werr
    commits = [int(x.split()[1]) for x in wout.splitlines() if x.startswith("ok")]
    assert commits, "the writer committed nothing"
    total_checks = 0
    for r, (out, err) in zip(readers, outs):
        assert r.returncode == 0, out + err
        words = out.split()
        checks, snaps = int(words[words.index("checks") + 1]), int(words[words.index("snapshots") + 1])
        assert checks > 0
        total_checks += checks
    print(f"\nconcurrency: writer committed {len(commits)} txns; readers made {total_checks} checks")
    with Store.open(path, "r") as r:
        model = child.Model().advance(child.committed_t(r))
        assert model.t == commits[-1]
        child.check_full(r, model)
        r.verify()


def test_lock_is_released_when_the_writer_dies(tmp_path):
    path = tmp_path / "db"
    proc = _spawn("writer", path, "off")
    try:
        assert Lines(proc).until("ready", time.monotonic() + 30) is not None
        with pytest.raises(LockedError):
            Store.open(path, "a", timeout=0.05)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    with Store.open(path, "a", timeout=5, **child.STORE_KW) as s:
        model = child.Model().advance(child.committed_t(s))
        child.check_full(s, model)


def test_child_starts_without_the_kernels():
    """The helper must stay cheap to start: it must not import the index layer."""
    out = subprocess.run([sys.executable, CHILD, "modules", "-"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    mods = out.stdout.split()
    assert "sutradb.storage" in mods
    assert not any(m.startswith(("sutradb.index", "sutradb._core", "sutradb._pq")) for m in mods), mods
