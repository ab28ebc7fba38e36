"""Storage engine: API behaviour, a stateful model test, and fault injection.

Crash (SIGKILL) and concurrency tests are in ``test_storage_crash.py``, torn and
damaged files in ``test_storage_damage.py``.
"""

from __future__ import annotations

import errno
import os

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sutradb.text import term_hash
from sutradb.errors import (ClosedError, CorruptDatabaseError, DimensionError,
                            InvalidArgumentError, LockedError, NotFoundError, ReadOnlyError,
                            SutraError)
from sutradb.storage import Record, Store, osio

SMALL = dict(checkpoint_bytes=3000, spill_bytes=2000, compact_min_rows=8, compact_ratio=0.3)


def dump(store: Store) -> dict:
    """Everything a store shows, as plain Python (for equality checks)."""
    ids = sorted(store.live_ids().tolist())
    rows = {}
    for i in ids:
        r = store.get_record(i)
        c = store.get_codes([i])[0].tobytes() if store.code_size else None
        v = store.get_vectors([i])[0].tobytes() if store.vector_dim else None
        rows[i] = (r.key, r.text, r.metadata, c, v)
    # the term postings of the live texts (ranked full-text search reads them)
    tok = store.tokenizer
    live, sid, dl = store.live, store.ids, store.doc_lengths()
    postings = {}
    for t in sorted({t for r in rows.values() for t in tok.terms(r[1])}):
        p, tf = store.postings(term_hash(t))
        postings[t] = sorted(zip(sid[p[live[p]]].tolist(), tf[live[p]].tolist()))
    lengths = {i: int(dl[r]) for i, r in zip(ids, store.rows_of(ids).tolist())}
    return {"rows": rows, "postings": postings, "lengths": lengths, "links": store.all_links(), "meta": store.meta,
            "index": (store.index_blob, {k: (a.dtype.str, a.shape, a.tobytes())
                                         for k, a in store.index_arrays.items()}),
            "txn": store.txn_id, "n_live": store.n_live}


def put(txn, ids, *, m=4, d=3, text=None, meta=None):
    ids = list(ids)
    txn.put(ids, texts=[text if text is not None else f"text {i}" for i in ids],
            metadata=[meta if meta is not None else {"i": i} for i in ids],
            codes=np.array([[i % 256] * m for i in ids], np.uint8),
            vectors=np.array([[i, -i, 0.5][:d] for i in ids], np.float32))


# --------------------------------------------------------------------------- basics

def test_roundtrip_put_get_update_delete(tmp_path):
    path = tmp_path / "db"
    with Store.open(path) as s:
        with s.begin() as t:
            t.put([5, 1, 9], keys=["five", None, "nine"], texts=["a", None, "c"],
                  metadata=[{"x": [1, 2], "y": {"z": b"b"}}, None, {}],
                  codes=np.array([[1, 2], [3, 4], [5, 6]], np.uint8),
                  vectors=np.arange(6, dtype=np.float16).reshape(3, 2))
        assert s.code_size == 2 and s.vector_dim == 2 and s.vector_dtype == np.float16
        assert s.get_record(5) == Record(5, "five", "a", {"x": [1, 2], "y": {"z": b"b"}})
        assert s.get_record(1) == Record(1, None, None, {})
        assert s.get_codes([9, 5]).tolist() == [[5, 6], [1, 2]]
        assert s.get_vectors([1]).tolist() == [[2.0, 3.0]]
        with s.begin() as t:
            t.put([1], texts=["new"], codes=np.array([[7, 7]], np.uint8),
                  vectors=np.zeros((1, 2), np.float16))
            t.delete([9, 12345])
        assert s.n_rows == 4 and s.n_live == 2 and len(s) == 2
        assert s.live.tolist() == [True, False, False, True]
        assert s.ids.tolist() == [5, 1, 9, 1]
        assert s.get_record(1).text == "new" and 9 not in s and 1 in s
        with pytest.raises(NotFoundError):
            s.get_record(9)
        before = dump(s)
    with Store.open(path, "r") as r:
        assert dump(r) == before
    with Store.open(path) as s:      # reopen after the checkpoint done by close()
        assert dump(s) == before
        assert s.verify()["live"] == 2


def test_codes_are_readonly_c_contiguous_mmap_views(tmp_path):
    with Store.open(tmp_path / "db") as s:
        with s.begin() as t:
            put(t, range(100), m=16)
        blocks = s.code_blocks()
        assert [b[0] for b in blocks] == [0]           # only the log tail so far
        s.checkpoint()
        c = s.codes
        assert c.dtype == np.uint8 and c.shape == (100, 16) and c.flags.c_contiguous
        assert not c.flags.writeable
        with pytest.raises(ValueError):
            c[0, 0] = 1
        base = c
        while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
            base = base.base
        assert type(base.obj if isinstance(base, memoryview) else base).__name__ == "mmap"
        with s.begin() as t:
            put(t, range(100, 110), m=16)
        blocks = s.code_blocks()
        assert [(r0, b.shape) for r0, b in blocks] == [(0, (100, 16)), (100, (10, 16))]
        assert np.array_equal(np.concatenate([b for _, b in blocks]), s.codes)


def test_ids_unsorted_use_order_file_and_lookups(tmp_path):
    with Store.open(tmp_path / "db") as s:
        ids = np.random.default_rng(0).permutation(1000) * 7 - 3000
        with s.begin() as t:
            put(t, ids)
        s.checkpoint()
        assert "order" in s._man["files"]
        assert np.array_equal(s.rows_of(ids), np.arange(1000))
        assert s.rows_of([1, 2, 4, -3000 - 4, 7 * 1000 - 3000]).tolist() == [-1] * 5
        with s.begin() as t:
            put(t, ids[:10], text="v2")
        s.checkpoint()
        assert s.rows_of(ids[:10]).tolist() == list(range(1000, 1010))
        assert all(s.get_record(int(i)).text == "v2" for i in ids[:10])


def test_links(tmp_path):
    with Store.open(tmp_path / "db") as s:
        with s.begin() as t:
            put(t, [1, 2, 3])
            t.link(1, [2, 3], "is_a", [0.5, 2.0])
            t.link(3, 1, "part_of")
        assert s.links_from(1) == [(2, "is_a", 0.5), (3, "is_a", 2.0)]
        assert s.links_to(1) == [(3, "part_of", 1.0)]
        s.checkpoint()
        with s.begin() as t:
            t.link(1, 2, "is_a", 9.0)        # re-weight
            t.unlink(1, 3, "is_a")
            t.link(2, 3, "near")
        assert s.links_from(1) == [(2, "is_a", 9.0)]
        with s.begin() as t:
            t.delete([3])                     # takes its links with it
        assert s.links_from(2) == [] and s.links_to(1) == []
        s.checkpoint()
        assert s.all_links() == [(1, 2, "is_a", 9.0)]
        assert s.links_from(1, relation="nope") == []
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.link(1, 2, "")
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.link(1, 2, "x", float("nan"))


def test_index_blob_and_meta(tmp_path):
    path = tmp_path / "db"
    cb = np.random.default_rng(1).standard_normal((4, 256, 2)).astype(np.float32)
    with Store.open(path) as s:
        assert s.index_blob is None and s.index_arrays == {} and s.meta == {}
        with s.begin() as t:
            t.set_index(msgpack.packb({"M": 4, "Ks": 256}), {"codebooks": cb, "seed": np.array([7])})
            t.set_meta({"embedder": "x", "dim": 8, "tuple": (1, 2)})
        assert s.meta == {"embedder": "x", "dim": 8, "tuple": [1, 2]}
        m = s.meta
        m["embedder"] = "changed"        # a copy
        assert s.meta["embedder"] == "x"
    with Store.open(path, "r") as r:
        arrays = r.index_arrays
        assert np.array_equal(arrays["codebooks"], cb) and arrays["codebooks"].dtype == np.float32
        assert arrays["seed"].tolist() == [7]
        assert msgpack.unpackb(r.index_blob) == {"M": 4, "Ks": 256}
        assert not arrays["codebooks"].flags.writeable


def test_large_index_commits_by_checkpoint_not_the_log(tmp_path):
    path = tmp_path / "db"
    big = np.arange(1 << 16, dtype=np.int64)               # 512 KiB > spill_bytes
    with Store.open(path, spill_bytes=1 << 16) as s:
        with s.begin() as t:
            put(t, range(10), m=4)                         # a small commit: in the log
        gen = s.generation
        with s.begin() as t:
            put(t, range(10, 20), m=4)
            t.set_index(b"big", {"perm": big})
        assert s.generation == gen + 1                     # the manifest swap committed it
        wal = os.path.join(path, s._man["wal"])
        assert os.path.getsize(wal) < big.nbytes           # the arrays never went to the log
        assert s.n_rows == 20 and s.index_blob == b"big"
    with Store.open(path, "r") as r:
        assert r.n_rows == 20 and np.array_equal(r.index_arrays["perm"], big)


def test_on_renumber_rewrites_the_index_with_the_rows(tmp_path):
    path = tmp_path / "db"
    seen = []

    def remap(kept):
        seen.append(kept.copy())
        return b"remapped", {"rows": np.arange(len(kept), dtype=np.int64)}

    with Store.open(path) as s:
        with s.begin() as t:
            put(t, range(10), m=4)
            t.set_index(b"orig", {"rows": np.arange(10, dtype=np.int64)})
        s.on_renumber = remap
        with s.begin() as t:
            t.delete([2, 5])
        s.compact()
        assert seen and seen[0].tolist() == [0, 1, 3, 4, 6, 7, 8, 9]
        assert s.index_blob == b"remapped" and s.index_arrays["rows"].tolist() == list(range(8))
    with Store.open(path) as s:                             # written in the same swap
        assert s.index_blob == b"remapped" and s.n_rows == 8
        s.on_renumber = lambda kept: None                   # None keeps the stored index
        with s.begin() as t:
            t.delete([0])
        s.compact()
        assert s.index_blob == b"remapped"
    mem = Store.open(":memory:")
    with mem.begin() as t:
        put(t, range(6), m=4)
        t.set_index(b"orig", {"rows": np.arange(6, dtype=np.int64)})
    mem.on_renumber = remap
    with mem.begin() as t:
        t.delete([1])
    mem.compact()
    assert mem.index_blob == b"remapped" and mem.index_arrays["rows"].tolist() == list(range(5))


def test_replace_codes_changes_code_size_atomically(tmp_path):
    path = tmp_path / "db"
    with Store.open(path) as s:
        with s.begin() as t:
            put(t, range(50), m=4)
            t.delete([3, 4])
        live = s.live_ids()
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.replace_codes(live[:-1], np.zeros((len(live) - 1, 8), np.uint8))
        assert s.code_size == 4
        with s.begin() as t:
            t.replace_codes(live, np.tile(np.arange(8, dtype=np.uint8), (len(live), 1)))
            t.set_index(b"retrained")
        assert s.code_size == 8 and s.n_rows == 48 and s.index_blob == b"retrained"
        assert s.get_codes([10]).tolist() == [list(range(8))]
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.put([1000], codes=np.zeros((1, 8), np.uint8), vectors=np.zeros((1, 3)))
                t.replace_codes([1000], np.zeros((1, 8), np.uint8))
    with Store.open(path, "r") as r:
        assert r.code_size == 8 and r.verify()["live"] == 48


def test_width_rules(tmp_path):
    with Store.open(tmp_path / "db", create_params={"code_size": 4, "dim": 2, "vector_dtype": "float16"}) as s:
        with pytest.raises(DimensionError):
            with s.begin() as t:
                t.put([1], codes=np.zeros((1, 5), np.uint8), vectors=np.zeros((1, 2)))
        with pytest.raises(DimensionError):
            with s.begin() as t:
                t.put([1], vectors=np.zeros((1, 2)))
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.put([1], codes=np.zeros((1, 4), np.int64), vectors=np.zeros((1, 2)))
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.put([1.5], codes=np.zeros((1, 4), np.uint8), vectors=np.zeros((1, 2)))
        with pytest.raises(InvalidArgumentError):
            with s.begin() as t:
                t.put([1], codes=np.zeros((1, 4), np.uint8), vectors=np.zeros((1, 2)),
                      metadata=[{"f": object()}])
        with pytest.raises(DimensionError):
            with s.begin() as t:
                t.put([1, 2], texts=["a"], codes=np.zeros((2, 4), np.uint8), vectors=np.zeros((2, 2)))
        assert s.n_rows == 0 and s.txn_id == 0
    with pytest.raises(InvalidArgumentError):
        Store.open(tmp_path / "x", create_params={"code_size": -1})
    with pytest.raises(InvalidArgumentError):
        Store.open(tmp_path / "x", durability="sometimes")


def test_modes_and_errors(tmp_path):
    path = tmp_path / "db"
    with pytest.raises(FileNotFoundError):
        Store.open(path, "r")
    s = Store.open(path, "x")
    with s.begin() as t:
        put(t, [1])
    with pytest.raises(LockedError):
        Store.open(path, "a")
    with pytest.raises(LockedError):
        Store.open(path, "a", timeout=0.05)
    r = Store.open(path, "r")
    with pytest.raises(ReadOnlyError):
        r.begin()
    with pytest.raises(ReadOnlyError):
        r.checkpoint()
    t = s.begin()
    with pytest.raises(InvalidArgumentError):
        s.begin()
    t.rollback()
    s.close()
    s.close()
    with pytest.raises(ClosedError):
        s.n_live
    with pytest.raises(ClosedError):
        s.begin()
    with pytest.raises(FileExistsError):
        Store.open(path, "x")
    with Store.open(path, "w") as s:
        assert s.n_live == 0
    assert r.n_live == 1                 # the reader keeps its snapshot
    r.refresh()
    assert r.n_live == 0
    r.close()
    assert issubclass(LockedError, TimeoutError) and issubclass(ReadOnlyError, PermissionError)


def test_foreign_directory_without_manifest(tmp_path):
    path = tmp_path / "db"
    path.mkdir()
    (path / "000001.ids").write_bytes(b"x" * 100)
    with pytest.raises(CorruptDatabaseError, match="MANIFEST"):
        Store.open(path)


def test_reader_snapshot_isolation_and_refresh(tmp_path):
    path = tmp_path / "db"
    w = Store.open(path, **SMALL)
    with w.begin() as t:
        put(t, [1, 2])
    r = Store.open(path, "r")
    snap = dump(r)
    for k in range(30):                   # commits, checkpoints and compactions
        with w.begin() as t:
            put(t, [100 + k])
            t.delete([100 + k - 1])
    assert dump(r) == snap                # old files unlinked, still readable
    assert r.get_codes([1]).tolist() == [[1, 1, 1, 1]]
    assert r.refresh() is True
    assert dump(r) == dump(w)
    assert r.refresh() is False
    w.close()
    r.close()


def test_reader_writes_nothing(tmp_path):
    path = tmp_path / "db"
    with Store.open(path, **SMALL) as w:
        with w.begin() as t:
            put(t, range(20))
        w.checkpoint()
        with w.begin() as t:
            put(t, [99])

        def state():
            return {n: (os.stat(path / n).st_mtime_ns, (path / n).read_bytes()) for n in os.listdir(path)}
        before = state()
        r = Store.open(path, "r")
        r.refresh()
        dump(r)
        r.verify()
        r.close()
        assert state() == before


def test_memory_store():
    s = Store.open(":memory:")
    assert s.path is None
    with s.begin() as t:
        put(t, [1, 2, 3])
        t.link(1, 2, "r")
    ids = np.array([4], np.int64)
    with s.begin() as t:
        put(t, ids)
        t.delete([2])
    ids[0] = 99                            # the store copied it
    assert sorted(s.live_ids().tolist()) == [1, 3, 4] and s.links_from(1) == []
    s.compact()
    assert s.n_rows == 3 and s.get_record(4).text == "text 4"
    s.verify()
    s.close()


def test_spilled_transaction_goes_to_segments(tmp_path):
    path = tmp_path / "db"
    with Store.open(path, durability="off", spill_bytes=1 << 16) as s:
        with s.begin() as t:
            put(t, [1])
        n = 5000
        with s.begin() as t:
            for c0 in range(0, n, 1000):
                ids = np.arange(10 + c0, 10 + c0 + 1000)
                t.put(ids, codes=np.full((1000, 4), 3, np.uint8), vectors=np.ones((1000, 3), np.float32))
            t.delete([1])
            t.link(10, 11, "r")
        assert s.n_live == n and 1 not in s
        assert s._log.pos == 64                 # committed by a manifest swap, not the log
        assert os.path.getsize(path / s._man["wal"]) == 64
        # an abandoned spilled transaction leaves nothing behind
        t = s.begin()
        t.put(np.arange(10**6, 10**6 + 3000), codes=np.zeros((3000, 4), np.uint8),
              vectors=np.zeros((3000, 3), np.float32))
        assert t._spilled
        t.rollback()
        assert s.n_live == n and s.verify()["rows"] == n + 1
        snap = dump(s)
    with Store.open(path, "r") as r:
        assert dump(r) == snap and r.links_from(10) == [(11, "r", 1.0)]


def test_autocompaction_bounds_garbage(tmp_path):
    with Store.open(tmp_path / "db", **SMALL) as s:
        for k in range(60):
            with s.begin() as t:
                put(t, [k % 5])                # five concepts, rewritten over and over
        s.checkpoint()
        assert s.n_live == 5 and s.n_rows < 5 + 5 / SMALL["compact_ratio"] + SMALL["compact_min_rows"]
        names = os.listdir(s.path)
        assert len([n for n in names if not n.endswith(".terms")]) <= 11
        assert len([n for n in names if n.endswith(".terms")]) <= 3   # O(log n) runs


def test_torn_tail_is_dropped_then_appends_continue(tmp_path):
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1])
    good = dump(s)
    wal = path / s._man["wal"]
    size = s._log.pos                         # the log's end (the file is preallocated)
    lock = (path / "LOCK").read_bytes()       # the watermark before the second commit
    with s.begin() as t:
        put(t, [2])
    s._release()                              # "crash" without a checkpoint
    with open(wal, "r+b") as f:
        f.truncate(size + 20)
    (path / "LOCK").write_bytes(lock)         # the crash came before the commit returned
    s = Store.open(path)
    assert dump(s) == good and wal.stat().st_size == size
    with s.begin() as t:
        put(t, [3])
    s._release()
    s = Store.open(path, "r")
    assert sorted(s.live_ids().tolist()) == [1, 3]
    s.close()


def test_zero_filled_tail_is_a_torn_tail(tmp_path):
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1])
    good = dump(s)
    s._release()
    wal = path / s._man["wal"]
    with open(wal, "ab") as f:
        f.write(bytes(4096))
    with Store.open(path, "r") as r:
        assert dump(r) == good


# --------------------------------------------------------------------------- stateful model

class StoreMachine(RuleBasedStateMachine):
    """Random operations on a store against a dict model; a crash drops the process's
    handles without a checkpoint; the store must equal the committed model always."""

    def __init__(self):
        super().__init__()
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="sutra-sm-")
        self.path = os.path.join(self.dir, "db")
        self.store = Store.open(self.path, **SMALL)
        self.committed = {"rows": {}, "links": {}}
        self.staged = None
        self.txn = None

    def teardown(self):
        import shutil
        if not self.store.closed:
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _model(self):
        return self.staged if self.staged is not None else self.committed

    def _begin(self):
        if self.txn is None:
            self.txn = self.store.begin()
            self.staged = {"rows": dict(self.committed["rows"]), "links": dict(self.committed["links"])}

    ids = st.lists(st.integers(0, 30), min_size=1, max_size=6)

    @rule(ids=ids, text=st.text(max_size=5), n=st.integers(0, 400))
    def put(self, ids, text, n):
        self._begin()
        big = n > 350                          # a transaction that spills past spill_bytes
        ids = ids + (list(range(1000, 1000 + n)) if big else [])
        self.txn.put(ids, texts=[text] * len(ids), metadata=[{"n": n}] * len(ids),
                     codes=np.full((len(ids), 4), n % 256, np.uint8),
                     vectors=np.full((len(ids), 3), n, np.float32))
        for i in ids:
            self.staged["rows"][i] = (text, n)

    @rule(ids=ids)
    def delete(self, ids):
        self._begin()
        self.txn.delete(ids)
        for i in ids:
            self.staged["rows"].pop(i, None)
            self.staged["links"] = {k: w for k, w in self.staged["links"].items() if i not in k[:2]}

    @rule(a=st.integers(0, 30), b=st.integers(0, 30), rel=st.sampled_from(["x", "y"]),
          w=st.floats(-5, 5, allow_nan=False), remove=st.booleans())
    def link(self, a, b, rel, w, remove):
        self._begin()
        if remove:
            self.txn.unlink(a, b, rel)
            self.staged["links"].pop((a, b, rel), None)
        else:
            self.txn.link(a, b, rel, w)
            self.staged["links"][(a, b, rel)] = w

    @precondition(lambda self: self.txn is not None)
    @rule()
    def commit(self):
        self.txn.commit()
        self.committed, self.staged, self.txn = self.staged, None, None

    @precondition(lambda self: self.txn is not None)
    @rule()
    def rollback(self):
        self.txn.rollback()
        self.staged = self.txn = None

    @precondition(lambda self: self.txn is None)
    @rule(kind=st.sampled_from(["checkpoint", "compact", "reopen", "crash", "reader"]))
    def maintenance(self, kind):
        if kind == "checkpoint":
            self.store.checkpoint()
        elif kind == "compact":
            self.store.compact()
        elif kind == "reopen":
            self.store.close()
            self.store = Store.open(self.path, **SMALL)
        elif kind == "crash":
            self.store._release()
            self.store = Store.open(self.path, **SMALL)
        else:
            with Store.open(self.path, "r") as r:
                self._check(r)

    def _check(self, s):
        m = self.committed
        got = {}
        for i in s.live_ids().tolist():
            r = s.get_record(i)
            got[i] = (r.text, r.metadata["n"])
            assert s.get_codes([i])[0, 0] == r.metadata["n"] % 256
        assert got == m["rows"]
        assert {(a, b, r): w for a, b, r, w in s.all_links()} == m["links"]

    @invariant()
    def matches_committed(self):
        self._check(self.store)


StoreMachine.TestCase.settings = settings(max_examples=25 if os.environ.get("CI") else 20,
                                          stateful_step_count=25, deadline=None,
                                          suppress_health_check=list(HealthCheck))
TestStoreMachine = StoreMachine.TestCase


def test_model_machine_verifies_at_the_end(tmp_path):
    """A long deterministic run through the same machinery, then a full verify()."""
    rng = np.random.default_rng(3)
    path = tmp_path / "db"
    s = Store.open(path, **SMALL)
    for k in range(200):
        with s.begin() as t:
            ids = rng.integers(0, 50, 3)
            put(t, ids.tolist())
            if k % 3 == 0:
                t.delete(rng.integers(0, 50, 2))
            t.link(int(ids[0]), int(ids[1]), "r", float(k))
    snap = dump(s)
    assert s.verify()["live"] == snap["n_live"]
    s.close()
    with Store.open(path, "r") as r:
        assert dump(r) == snap and r.verify()


# --------------------------------------------------------------------------- fault injection

class Faults:
    """Counts calls through the I/O seam; raises OSError(EIO) on call number ``fail_at``."""

    def __init__(self, monkeypatch, fail_at=None, methods=("pwrite", "fsync", "fsync_dir",
                                                            "replace", "truncate")):
        self.calls = 0
        self.fail_at = fail_at
        self.failed = None
        real = {m: getattr(osio.io, m) for m in methods}
        for m in methods:
            monkeypatch.setattr(osio.io, m, self._wrap(m, real[m]))

    def _wrap(self, name, fn):
        def call(*a, **kw):
            self.calls += 1
            if self.calls == self.fail_at:
                self.failed = name
                raise OSError(errno.EIO, f"injected {name} failure")
            return fn(*a, **kw)
        return call


def _scenario_store(path):
    s = Store.open(path, **SMALL)
    with s.begin() as t:
        put(t, range(10))
        t.link(1, 2, "r")
    s.checkpoint()
    with s.begin() as t:
        put(t, [3], text="in the log")
    return s


OPERATIONS = {
    "small commit": lambda s: _commit(s, lambda t: (put(t, [20, 21]), t.delete([1]))),
    "spilled commit": lambda s: _commit(s, lambda t: put(t, range(100, 400))),
    "checkpoint": lambda s: s.checkpoint(),
    "compact": lambda s: s.compact(),
    "replace_codes": lambda s: _commit(s, lambda t: t.replace_codes(
        s.live_ids(), np.zeros((s.n_live, 6), np.uint8))),
    "index": lambda s: _commit(s, lambda t: t.set_index(b"x" * 5000, {"a": np.ones(10, np.float32)})),
}


def _commit(s, fn):
    with s.begin() as t:
        fn(t)


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_io_failures_leave_last_committed_state(tmp_path, monkeypatch, op):
    # dry run: the state after the operation and the number of seam calls it makes
    with Store.open(tmp_path / "dry", **SMALL) as s0:
        pass
    s = _scenario_store(tmp_path / "dry2")
    pre = dump(s)
    counter = Faults(monkeypatch)
    OPERATIONS[op](s)
    n_calls = counter.calls
    post = dump(s)
    s.close()
    monkeypatch.undo()
    assert n_calls > 0
    trials = 0
    for k in range(1, n_calls + 1):
        path = tmp_path / f"db{k}"
        s = _scenario_store(path)
        assert dump(s) == pre
        faults = Faults(monkeypatch, fail_at=k)
        raised = None
        try:
            OPERATIONS[op](s)
        except OSError as e:
            raised = e
        except SutraError as e:           # a store made unusable by the fault says so
            raised = e
        monkeypatch.undo()
        trials += 1
        if raised is not None:
            assert faults.failed is not None
        broken = s._broken is not None
        if raised is not None and not broken:
            assert dump(s) == pre, (op, k, faults.failed)
            # and the store keeps working
            with s.begin() as t:
                put(t, [777])
            pre_more = dump(s)
            s.close()
            with Store.open(path, "r") as r:
                assert dump(r) == pre_more
        elif raised is None:
            assert dump(s) == post, (op, k, faults.failed)
            s.close()
            with Store.open(path, "r") as r:
                assert dump(r) == post
        else:   # failed after the commit point: reopen shows one of the two states
            with pytest.raises(SutraError):
                s.n_live
            s._release()
            with Store.open(path, **SMALL) as r:
                assert dump(r) in (pre, post)
                r.verify()
    assert trials == n_calls
    print(f"fault injection {op}: {trials} trials")


def test_failed_fsync_in_commit_is_not_visible(tmp_path, monkeypatch):
    s = Store.open(tmp_path / "db")
    with s.begin() as t:
        put(t, [1])
    pre = dump(s)

    def bad_fsync(fd):
        raise OSError(errno.EIO, "disk on fire")
    monkeypatch.setattr(osio.io, "fsync", bad_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        with s.begin() as t:
            put(t, [2])
    monkeypatch.undo()
    assert dump(s) == pre and 2 not in s
    s._release()
    with Store.open(tmp_path / "db", "r") as r:
        assert dump(r) == pre


@given(st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), st.text(max_size=20),
                          st.dictionaries(st.text(max_size=5),
                                          st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                                                    st.floats(allow_nan=False), st.text(max_size=10),
                                                    st.binary(max_size=10)), max_size=4)),
                min_size=1, max_size=20, unique_by=lambda x: x[0]))
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_records_roundtrip_any_msgpack_values(rows):
    s = Store.open(None)
    with s.begin() as t:
        t.put([r[0] for r in rows], texts=[r[1] for r in rows], metadata=[r[2] for r in rows])
    for i, text, meta in rows:
        assert s.get_record(i) == Record(i, None, text, meta)
    s.close()


@given(st.lists(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 80), max_size=100)),
                         min_size=1, max_size=4), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_row_resolution_small_and_vectorized_paths_agree(txns):
    """Transactions mixing puts (duplicates included) and deletes in any order, small
    enough for the plain-Python path or large enough for the NumPy one."""
    s = Store.open(None)
    model = {}
    for k, ops in enumerate(txns):
        with s.begin() as t:
            for j, (is_put, ids) in enumerate(ops):
                if is_put and ids:
                    t.put(ids, texts=[f"{k}.{j}.{n}" for n in range(len(ids))])
                    for n, i in enumerate(ids):
                        model[i] = f"{k}.{j}.{n}"
                elif ids:
                    t.delete(ids)
                    for i in ids:
                        model.pop(i, None)
        got = {i: s.get_record(i).text for i in s.live_ids().tolist()}
        assert got == model
        assert s.n_live == len(model) == int(s.live.sum())
    s.compact()
    assert {i: s.get_record(i).text for i in s.live_ids().tolist()} == model


def test_a_damaged_or_older_watermark_is_reported(tmp_path):
    """Regression (issue 19, found by the fuzz campaign): LOCK replaced by an older
    copy would hide a cut log, so a log more than one transaction past its watermark
    (only the commit a crash interrupted can be missing from it) is damage; so are
    watermark bytes that are not a record. Zeros (an older database) are not."""
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1])
    old_lock = (path / "LOCK").read_bytes()
    for i in (2, 3, 4):
        with s.begin() as t:
            put(t, [i])
    good = dump(s)
    s._release()                                   # as a crash leaves it
    lock = path / "LOCK"
    final = lock.read_bytes()
    lock.write_bytes(old_lock)
    for mode in ("r", "a"):
        with pytest.raises(CorruptDatabaseError, match=r"LOCK: the watermark says transaction 1 "
                           r"but the log holds transaction 4"):
            Store.open(path, mode)
    bad = bytearray(final)
    bad[100] ^= 0x10
    lock.write_bytes(bytes(bad))
    with pytest.raises(CorruptDatabaseError, match="LOCK: the watermark .* is damaged"):
        Store.open(path, "r")
    with Store.open(path, "r", recover=True) as r:
        assert dump(r) == good and "damaged" in r.recovery["problems"][0]
    lock.write_bytes(b"")                          # no watermark: nothing to compare
    with Store.open(path, "r") as r:
        assert dump(r) == good


def test_records_at_equals_record_at(tmp_path):
    """records_at (many rows at once: the metadata index's build) gives what record_at
    gives, for checkpointed rows and rows of the log, in any order."""
    with Store.open(tmp_path / "db", **SMALL) as s:
        for j in range(6):
            with s.begin() as t:
                put(t, range(10 * j, 10 * j + 10), meta={"j": j, "tags": [j, "x"]})
            if j == 3:
                s.checkpoint()
        with s.begin() as t:
            t.delete([3, 45])
            put(t, [7], meta={"new": True})
        n = s.n_rows
        rng = np.random.default_rng(0)
        for rows in (np.arange(n), rng.permutation(n), rng.integers(0, n, 30), [], [n - 1, 0]):
            assert s.records_at(rows) == [s.record_at(r) for r in np.asarray(rows, int).tolist()]
        with pytest.raises(InvalidArgumentError):
            s.records_at([0, n])
        with pytest.raises(InvalidArgumentError):
            s.records_at([-1])
