"""Helper process for the Database kill test (tests/test_database_crash.py).

Transaction ``t`` (1, 2, ...) of the workload is a pure function of ``t``
(:func:`run_txn`), and so is the committed content after ``T`` transactions
(:class:`Model`): rows are identified by their keys (``r{t}-{j}``), and the concept
with key ``"t"`` holds the number of the last committed transaction.

Between transactions the writer also runs the maintenance a long-lived application
sees: ``compact()`` every 5th transaction, a clean ``close()`` + reopen (a checkpoint)
every 7th, and the automatic IVF fold whenever the unlisted tail passes its bound
(large transactions every 3rd ``t`` get there quickly).

Kills are placed at I/O calls: the child wraps every method of the storage layer's
write seam (``sutradb.storage.osio.io``: pwrite, fsync, fsync_dir, replace, truncate,
unlink) and SIGKILLs itself at the ``k``-th call made while a function whose name
contains the *phase* word is on the stack (``commit``, ``checkpoint``, ``compact``,
``fold``; ``any`` counts every call, opening and recovery included), printing
``kill PHASE FUNCTION`` just before.

    python db_child.py zygote -
        a fork server reading commands: "fork PATH DURABILITY PHASE K" (prints
        "pid N", "ready T", "ok T" after every commit, "kill ..." before it dies),
        "reap N" (prints "reaped N STATUS"), "exit".
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

DIM = 8
OPTIONS = dict(index="ivf", index_threshold=256, train_iters=3, seed=1)
PHASES = ("commit", "checkpoint", "compact", "fold", "any")


def batch(t: int) -> int:
    return 700 if t % 3 == 0 else 30


def vectors(t: int) -> np.ndarray:
    return np.random.default_rng(t).standard_normal((batch(t), DIM)).astype("float32")


def run_txn(db, t: int) -> None:
    """Transaction ``t``: rows r{t}-*, the counter, a delete, an update, a link."""
    n = batch(t)
    with db.transaction():
        new = db.add_vectors(vectors(t), texts=[f"t{t}-{j}" for j in range(n)],
                       metadata=[{"t": t, "j": j} for j in range(n)],
                       keys=[f"r{t}-{j}" for j in range(n)])
        if t == 1:
            db.add_vectors(np.ones((1, DIM), "float32"), keys=["t"], metadata=[{"t": 1}])
        else:
            db.update("t", metadata={"t": t})
        if t > 2:
            db.delete([db.get(f"r{t - 2}-0").id])
            db.update(f"r{t - 2}-1", text=f"u{t}")
            db.link(int(new[0]), db.get(f"r{t - 1}-1").id, "prev", weight=float(t))


class Model:
    """The committed content after ``t`` transactions: key -> (text, metadata), and the
    links as (src key, dst key, relation, weight)."""

    def __init__(self):
        self.t = 0
        self.rows = {}
        self.links = set()

    def advance(self, t: int) -> "Model":
        while self.t < t:
            self.t += 1
            u = self.t
            for j in range(batch(u)):
                self.rows[f"r{u}-{j}"] = (f"t{u}-{j}", {"t": u, "j": j})
            self.rows["t"] = (None, {"t": u})
            if u > 2:
                gone = f"r{u - 2}-0"
                self.rows.pop(gone)
                self.links = {x for x in self.links if gone not in (x[0], x[1])}
                self.rows[f"r{u - 2}-1"] = (f"u{u}", self.rows[f"r{u - 2}-1"][1])
                self.links.add((f"r{u}-0", f"r{u - 1}-1", "prev", float(u)))
        return self


def committed_t(db) -> int:
    try:
        return int(db.get("t").metadata["t"])
    except KeyError:
        return 0


def check(db, model: Model) -> None:
    """``db`` holds exactly ``model``; searches answer from the stored rows."""
    ids = db.ids()
    concepts = db.get_many(ids)
    got = {c.key: (c.text, c.metadata) for c in concepts}
    assert len(got) == len(concepts), "a key held by two concepts"
    assert got == model.rows, (len(got), len(model.rows), model.t)
    by_id = {c.id: c.key for c in concepts}
    links = {(by_id[a], by_id[b], r, w) for a, b, r, w in db.links()}
    assert links == model.links, (len(links), len(model.links))
    if len(ids):
        q = vectors(model.t)[:4]
        D, I = db.search_vectors(q, k=5)
        assert np.isin(I[I >= 0], ids).all() and (I[:, 0] >= 0).all()


def _say(*words) -> None:
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def arm(phase: str, k: int) -> None:
    """SIGKILL this process at the ``k``-th write-seam call made in ``phase``."""
    from sutradb.storage import osio

    seam = osio.io
    count = [0]

    def in_phase():
        if phase == "any":
            return "any"
        f = sys._getframe(2)
        while f is not None:
            name = f.f_code.co_name
            if phase in name:
                return name
            f = f.f_back
        return None

    def wrap(name):
        real = getattr(seam, name)

        def call(*a, **kw):
            where = in_phase()
            if where is not None:
                count[0] += 1
                if count[0] >= k:
                    _say("kill", phase, where, name)
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **kw)
        return call

    for name in ("pwrite", "fsync", "fsync_dir", "replace", "truncate", "unlink"):
        setattr(seam, name, wrap(name))


def writer(path: str, durability: str, phase: str, k: int) -> None:
    import sutradb

    arm(phase, k)
    db = sutradb.open(path, "a", dim=DIM, durability=durability, timeout=10, **OPTIONS)
    t = committed_t(db)
    _say("ready", t)
    while True:
        t += 1
        run_txn(db, t)
        _say("ok", t)
        if t % 5 == 0:
            db.compact()
        if t % 7 == 0:
            db.close()
            db = sutradb.open(path, "a", durability=durability, timeout=10)


def zygote() -> None:
    import traceback
    import warnings

    import sutradb  # noqa: F401 - imported once, before the forks
    warnings.simplefilter("error", RuntimeWarning)   # a failed index maintenance is a failure
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    sys.stdin.close()
                    _say("pid", os.getpid())
                    writer(cmd[1], cmd[2], cmd[3], int(cmd[4]))
                except BaseException:
                    traceback.print_exc()
                    sys.stderr.flush()
                    code = 1
                os._exit(code)
        elif cmd[0] == "reap":
            _, status = os.waitpid(int(cmd[1]), 0)
            _say("reaped", cmd[1], status)
        elif cmd[0] == "exit":
            break


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        zygote()
    else:
        raise SystemExit(f"unknown role {sys.argv[1]}")
