"""Helper processes for the storage crash and concurrency tests, and the model they obey.

Transaction ``t`` (1, 2, 3, ...) of the workload is a pure function of ``t``
(:func:`txn_ops`), so the committed state after ``T`` transactions is known
(:class:`Model`) and any process can check a store against it: the store's
``meta["t"]`` says which transaction it ends with, and everything else must match
the model after exactly that many transactions.

Run as a script::

    python storage_child.py writer PATH DURABILITY [SECONDS]
        open PATH (mode "a"), print "ready", then commit transactions in a loop,
        printing "ok T" after each commit returned (until killed, or SECONDS).
    python storage_child.py reader PATH SECONDS
        open PATH read-only, refresh and check against the model for SECONDS,
        print "checks N snapshots M" (exit 1 with a message on a mismatch).
    python storage_child.py zygote -
        a fork server for the kill test: reads commands on stdin.
        "fork PATH DURABILITY" forks a writer (as above; it prints "pid N" first);
        "reap N" waits for that process and prints "reaped N STATUS" (every line the
        writer printed comes before it); "exit" ends. Importing once and forking keeps
        a kill cheap, so the test can afford hundreds of them.

The script imports only ``sutradb.storage`` (not the kernels or the index layer) to
keep process start cheap: the kill test starts one process per kill.
"""

from __future__ import annotations

import os
import sys
import types

if __name__ == "__main__":  # load sutradb.storage without sutradb/__init__ (kernels)
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _pkg = types.ModuleType("sutradb")
    _pkg.__path__ = [os.path.join(_root, "sutradb")]
    sys.modules["sutradb"] = _pkg

import numpy as np

from sutradb.errors import CorruptDatabaseError
from sutradb.storage import Store

M = 8      # code bytes
DIM = 4    # vector dimension
#: knobs that make small workloads exercise checkpoints, spills and compactions
STORE_KW = dict(checkpoint_bytes=6000, spill_bytes=3000, compact_min_rows=40, compact_ratio=0.25)


def txn_ops(t: int) -> list[tuple]:
    """The operations of transaction ``t`` (in order)."""
    ops = []
    ids = [3 * t, 3 * t + 1, 3 * t + 2]
    ops.append(("put", ids, [f"t{t}-{j}" for j in range(3)], [{"t": t, "j": j} for j in range(3)], t))
    if t % 10 == 0:  # a bigger transaction: spills past STORE_KW["spill_bytes"]
        big = [10**6 + 100 * t + j for j in range(60)]
        ops.append(("put", big, [f"big{t}"] * 60, [None] * 60, t))
    if t % 4 == 0 and t > 2:  # a new version of an older concept
        ops.append(("put", [3 * (t - 2)], [f"u{t}"], [{"u": t}], t))
    if t % 5 == 0 and t > 3:
        ops.append(("delete", [3 * (t - 3) + 1]))
    if t % 10 == 5 and t > 20:
        ops.append(("delete", [10**6 + 100 * (t - 15) + j for j in range(0, 60, 2)]))
    ops.append(("link", 3 * t, 3 * t + 1, "next", float(t)))
    if t % 7 == 0:
        ops.append(("unlink", 3 * (t - 1), 3 * (t - 1) + 1, "next"))
    if t % 3 == 0:
        ops.append(("link", 3 * t + 2, 3 * (t - 1), "prev", 0.5))
    ops.append(("meta", {"t": t}))
    return ops


def key_for(i: int, text: str) -> str:
    """The (unique) key of a row: it changes when a new version changes the text."""
    return f"k{i}:{text}"


def codes_for(t: int, k: int) -> np.ndarray:
    return np.full((k, M), t % 251, np.uint8)


def vectors_for(t: int, k: int) -> np.ndarray:
    return np.full((k, DIM), t % 97, np.float16)


def run_txn(store: Store, t: int) -> None:
    """Commit transaction ``t`` on ``store``."""
    with store.begin() as txn:
        for op in txn_ops(t):
            if op[0] == "put":
                _, ids, texts, metas, v = op
                txn.put(ids, keys=[key_for(i, x) for i, x in zip(ids, texts)], texts=texts,
                        metadata=metas, codes=codes_for(v, len(ids)), vectors=vectors_for(v, len(ids)))
            elif op[0] == "delete":
                txn.delete(op[1])
            elif op[0] == "link":
                txn.link(op[1], op[2], op[3], op[4])
            elif op[0] == "unlink":
                txn.unlink(op[1], op[2], op[3])
            elif op[0] == "meta":
                txn.set_meta(op[1])


class Model:
    """The committed state after ``t`` transactions, advanced one transaction at a time."""

    def __init__(self):
        self.t = 0
        self.rows = {}    # id -> (text, metadata, value used for codes/vectors)
        self.links = {}   # (src, dst, rel) -> weight
        self.meta = {}

    def advance(self, to: int) -> "Model":
        while self.t < to:
            self.t += 1
            for op in txn_ops(self.t):
                if op[0] == "put":
                    _, ids, texts, metas, v = op
                    for i, x, m in zip(ids, texts, metas):
                        self.rows[i] = (x, m or {}, v)
                elif op[0] == "delete":
                    for i in op[1]:   # links of a deleted id go with it (live or not)
                        self.rows.pop(i, None)
                        self.links = {k: w for k, w in self.links.items() if i not in (k[0], k[1])}
                elif op[0] == "link":
                    self.links[(op[1], op[2], op[3])] = op[4]
                elif op[0] == "unlink":
                    self.links.pop((op[1], op[2], op[3]), None)
                elif op[0] == "meta":
                    self.meta = op[1]
        return self


def committed_t(store: Store) -> int:
    return int(store.meta.get("t", 0))


def check_full(store: Store, model: Model) -> None:
    """Assert that ``store`` equals ``model`` exactly (every row, link, meta)."""
    assert committed_t(store) == model.t, (committed_t(store), model.t)
    assert store.n_live == len(model.rows), (store.n_live, len(model.rows), model.t)
    ids = store.live_ids()
    assert sorted(ids.tolist()) == sorted(model.rows), model.t
    if len(ids):
        codes = store.get_codes(ids)
        vecs = store.get_vectors(ids)
        for i, c, v in zip(ids.tolist(), codes, vecs):
            text, meta, val = model.rows[i]
            r = store.get_record(i)
            assert (r.text, r.metadata) == (text, meta), (i, r, model.rows[i])
            assert (c == val % 251).all() and (v == val % 97).all(), (i, c, v, val)
            assert r.key == key_for(i, text) and store.id_for_key(r.key) == i, (i, r.key)
            if text.startswith("u"):     # a new version with a new key freed the old one
                assert store.id_for_key(key_for(i, f"t{i // 3}-{i % 3}")) is None, i
    got = {(s, d, r): w for s, d, r, w in store.all_links()}
    assert got == model.links, (model.t, set(got) ^ set(model.links))
    assert store.meta == model.meta


def check_quick(store: Store, model: Model) -> None:
    """A cheaper check (counts, the last transaction's rows, links count)."""
    assert committed_t(store) == model.t
    assert store.n_live == len(model.rows), (store.n_live, len(model.rows), model.t)
    assert len(store.all_links()) == len(model.links)
    t = model.t
    if t:
        for op in txn_ops(t):
            if op[0] == "put":
                for i in op[1]:
                    text, meta, val = model.rows[i]
                    r = store.get_record(i)
                    assert (r.text, r.metadata) == (text, meta)
                    assert (store.get_codes([i]) == val % 251).all()
                    assert store.id_for_key(key_for(i, text)) == i


def _say(*words) -> None:
    """Print one line with a single write(2): a killed process never leaves half of
    one (and PYTHONUNBUFFERED would split print() into several writes)."""
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def _writer(path, durability, seconds=None):
    import time
    store = Store.open(path, "a", durability=durability, timeout=10.0, **STORE_KW)
    t = committed_t(store)
    _say("ready", t)
    end = None if seconds is None else time.monotonic() + seconds
    while end is None or time.monotonic() < end:
        t += 1
        run_txn(store, t)
        _say("ok", t)
    store.close()


def _reader(path, seconds):
    import time
    end = time.monotonic() + seconds
    store = Store.open(path, "r", timeout=10.0)
    model = Model()
    checks = 0
    seen = set()
    while time.monotonic() < end:
        if checks % 25 == 24:
            store.close()
            store = Store.open(path, "r", timeout=10.0)
        else:
            store.refresh()
        t = committed_t(store)
        if t < model.t:
            _say(f"FAIL snapshot went back from {model.t} to {t}")
            sys.exit(1)
        model.advance(t)
        try:
            (check_full if checks % 10 == 0 else check_quick)(store, model)
        except (AssertionError, CorruptDatabaseError, KeyError) as e:
            _say(f"FAIL at t={t}: {type(e).__name__}: {e!r}"[:2000])
            sys.exit(1)
        checks += 1
        seen.add(t)
    store.close()
    _say("checks", checks, "snapshots", len(seen))


def _zygote():
    import traceback
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
                    _writer(cmd[1], cmd[2])
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
    role, path = sys.argv[1], sys.argv[2]
    if role == "writer":
        _writer(path, sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else None)
    elif role == "reader":
        _reader(path, float(sys.argv[3]))
    elif role == "zygote":
        _zygote()
    elif role == "modules":   # what a child process has loaded (start-up cost check)
        _say(*sorted(m for m in sys.modules if m.startswith("sutradb")))
    else:
        raise SystemExit(f"unknown role {role}")
