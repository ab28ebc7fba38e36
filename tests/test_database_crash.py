"""Kill test of the whole Database: SIGKILL at I/O calls during commits, checkpoints,
compactions and IVF folds (and anywhere, opening and recovery included); after every
kill the database holds exactly the transactions that committed. The workload, its
model and the kill placement are in ``db_child.py``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

import sutradb

import db_child as child
from test_storage_crash import Lines, _send, _stderr

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "db_child.py")
KILLS = int(os.environ.get("SUTRADB_DB_KILLS", "50"))
#: the k-th write-seam call of the phase is the kill; a fold writes few (and folds are
#: ~18 transactions apart), a checkpoint or a compaction tens
KMAX = {"commit": 8, "checkpoint": 40, "compact": 20, "fold": 3, "any": 300}
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")]


def test_sigkill_in_commit_checkpoint_compaction_and_fold(tmp_path):
    rng = random.Random(int(os.environ.get("SUTRADB_KILL_SEED", "20261203")))
    zyg = subprocess.Popen([sys.executable, CHILD, "zygote", "-"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    lines = Lines(zyg)
    landed = {p: 0 for p in child.PHASES}
    landed["timeout"] = 0
    kills = 0
    started = time.monotonic()
    model = child.Model()
    path = None
    try:
        while kills < KILLS:
            if kills % 25 == 0:                      # a fresh database now and then
                path = tmp_path / f"db{kills}"
                model = child.Model()
            phase = child.PHASES[kills % len(child.PHASES)]
            k = rng.randint(1, KMAX[phase])
            durability = rng.choice(["full", "normal", "off"])
            _send(zyg, f"fork {path} {durability} {phase} {k}")
            last_ok = model.t
            pid, killed = None, None
            deadline = time.monotonic() + 30
            while True:
                line = lines.next(deadline)
                if line is None:                     # the phase was not reached in time
                    break
                if line[0] == "pid":
                    pid = int(line[1])
                elif line[0] == "ready":
                    assert int(line[1]) == model.t, (line, model.t)
                elif line[0] == "ok":
                    last_ok = int(line[1])
                elif line[0] == "kill":
                    killed = line[1:]
                    break
            assert pid is not None, _stderr(zyg)
            if killed is None:
                os.kill(pid, signal.SIGKILL)
            _send(zyg, f"reap {pid}")
            while True:
                line = lines.next(time.monotonic() + 30)
                assert line is not None, _stderr(zyg)
                if line[0] == "ok":
                    last_ok = int(line[1])
                elif line[0] == "reaped":
                    status = int(line[2])
                    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                        (status, _stderr(zyg))
                    break
            kills += 1
            if os.environ.get("SUTRADB_KILL_TRACE"):
                print(f"kill {kills} {phase} k={k} {durability} t={last_ok} -> {killed} "
                      f"{time.monotonic() - started:.1f}s", flush=True)
            landed[killed[0] if killed else "timeout"] += 1
            mode = "r" if kills % 2 else "a"         # read it as a reader, or recover as the writer
            with sutradb.open(path, mode, timeout=10) as db:
                t = child.committed_t(db)
                assert last_ok <= t <= last_ok + 1, (last_ok, t, killed)
                model.advance(t)
                child.check(db, model)
                db.verify()
    finally:
        try:
            _send(zyg, "exit")
            zyg.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            zyg.kill()
            zyg.wait()
        for f in (zyg.stdin, zyg.stdout, zyg.stderr):
            f.close()
    print(f"\ndatabase kill test: {kills} SIGKILLs, landed in {landed}, "
          f"{time.monotonic() - started:.1f} s")
    assert kills >= KILLS
    # every phase was really hit (not only killed by the timeout)
    assert all(landed[p] > 0 for p in child.PHASES), landed
