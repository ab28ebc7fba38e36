"""Unit tests of the pieces of sutradb.database that stand alone (no Database)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sutradb.database.indexing import added_error, recall_grid
from sutradb.database.ivflists import (assign_rows, fold_lists, lay_out_lists, recall,
                                       remap_lists)
from sutradb.database.locking import ExclusiveLock, ReadLock, RWLock
from sutradb.database.options import DEFAULT_OPTIONS
from sutradb.database.progress import progress_bar, stage_progress
from sutradb.database.recordindex import RecordIndexes
from sutradb.database.distances import NO_TABLE, DistanceTable
from sutradb.database.transactions import Bulk, Staged
from sutradb.database.validation import (check_metadata, check_options, check_query_rows,
                                         check_vector_rows, is_id, seq_arg)
from sutradb.index.pq import ProductQuantizer
from sutradb.index.vector import code_rows
from sutradb.errors import DimensionError, EmbedderError, InvalidArgumentError

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


# --------------------------------------------------------------------------- validation

def test_is_id():
    assert is_id(3) and is_id(np.int32(3))
    assert not is_id(True) and not is_id(np.bool_(True)) and not is_id(3.0) and not is_id("3")


def test_check_options():
    check_options(dict(DEFAULT_OPTIONS))
    for bad in ({"pq_nbits": 6}, {"index": "hnsw"}, {"target_recall": 0}, {"seed": -1},
                {"batch_size": True}, {"progress": "yes"}, {"vector_dtype": "int8"}):
        with pytest.raises(InvalidArgumentError):
            check_options(dict(DEFAULT_OPTIONS, **bad))
    with pytest.raises(EmbedderError):
        check_options(dict(DEFAULT_OPTIONS, embedder=object()))


def test_check_metadata_round_trips_and_rejects():
    assert check_metadata(None) is None and check_metadata({}) is None
    assert check_metadata({"a": (1, 2)}) == {"a": [1, 2]}
    for bad in ([1], {1: "x"}, {"a": object()}):
        with pytest.raises(InvalidArgumentError):
            check_metadata(bad)


def test_seq_arg():
    assert seq_arg(None, 3, "texts") is None
    assert seq_arg(("a", "b"), 2, "texts") == ["a", "b"]
    with pytest.raises(InvalidArgumentError):
        seq_arg("ab", 2, "texts")
    with pytest.raises(DimensionError):
        seq_arg(["a"], 2, "texts")


def test_check_vector_rows():
    V = np.ones((3, 4), np.float32)
    assert check_vector_rows(V, 4, True) is V
    assert check_vector_rows(V, 0, True) is V                  # dimension not fixed yet
    assert check_vector_rows([1, 2], 2, True, "vector", one=True).shape == (1, 2)
    with pytest.raises(DimensionError):
        check_vector_rows(V, 5, True)
    with pytest.raises(InvalidArgumentError, match="float16 range"):
        check_vector_rows(V * 1e5, 4, True)
    assert check_vector_rows(V * 1e5, 4, False) is not None    # float32 storage
    with pytest.raises(InvalidArgumentError, match="NaN"):
        check_vector_rows(np.full((1, 4), np.nan), 4, False)
    with pytest.raises(InvalidArgumentError):
        check_vector_rows(np.ones((1, 4), bool), 4, False)


def test_check_query_rows():
    Q = check_query_rows([3.0, 4.0], 2, "cosine", one=True)
    assert Q.shape == (1, 2) and Q.dtype == np.float32
    np.testing.assert_allclose(Q[0], [0.6, 0.8], rtol=1e-6)
    assert check_query_rows(np.ones((2, 7)), 0, "l2").shape == (2, 7)   # empty database
    with pytest.raises(DimensionError, match="search_vectors"):
        check_query_rows(np.ones((2, 2)), 2, "l2", one=True)


# --------------------------------------------------------------------------- progress

def test_progress_callables():
    seen = []
    bar = progress_bar(lambda d, n: seen.append((d, n)), 10, 5)
    bar(5, 10)
    bar(None, 10)                           # closing does not reach the callable
    assert seen == [(5, 10)]
    assert progress_bar(False, 10, 5) is None and stage_progress(False) is None
    cb = stage_progress(seen.append)
    assert cb == seen.append


def test_stage_progress_plain_lines(capsys):
    cb = stage_progress(True, "stage")      # stderr is not a terminal here
    cb(1, 2)
    cb(2, 2)
    assert capsys.readouterr().err == "\rsutradb: stage 1/2\rsutradb: stage 2/2\n"


# --------------------------------------------------------------------------- staging

def test_staged_snapshot_restore_and_bulk_of():
    st = Staged({"next_id": 5, "dim": 2}, None)
    snap = st.snapshot()
    st.bulks.append(Bulk(5, 3, np.zeros((3, 2)), None, ["a", "b", None], None))
    st.starts.append(5)
    st.next_id = 8
    st.over[2] = None
    st.keys["k"] = 6
    st.meta["dim"] = 3
    assert st.bulk_of(4) is None and st.bulk_of(8) is None
    b = st.bulk_of(7)
    assert b is st.bulks[0] and b.record(1)[:3] == (None, "b", {})
    st.restore(snap)
    assert (st.next_id, st.bulks, st.starts, st.over, st.keys, st.meta) == (
        5, [], [], {}, {}, {"next_id": 5, "dim": 2})


# --------------------------------------------------------------------------- IVF lists

@pytest.fixture(scope="module")
def lists():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((400, 8)).astype(np.float32)
    pq = ProductQuantizer(8, 2, 4, "l2", 0).fit(V[:300])
    codes = pq.encode(V)
    live = np.zeros(400, bool)
    live[:300] = True
    part = lay_out_lists(pq, V, live, np.arange(300), codes, dim=8, metric="l2", nlist=4,
                         seed=0, target_recall=0.9)
    return V, pq, codes, part


def test_lay_out_lists(lists):
    V, pq, codes, part = lists
    assert part.covered == 300 and part.ivf.nlist == 4 and 1 <= part.nprobe <= 4
    assert part.tuned["n_built"] == 300 and part.tuned["recall"] >= 0.9
    assert sorted(part.ivf.perm.tolist()) == list(range(300))
    np.testing.assert_array_equal(code_rows(part.codes), codes[part.ivf.perm])


def test_fold_then_remap_lists(lists):
    V, pq, codes, part = lists
    live = np.ones(400, bool)
    live[[3, 5, 350]] = False
    new_rows = 300 + np.flatnonzero(live[300:])
    lid, err = assign_rows(part.ivf, V, new_rows, "l2")
    assert err > 0 and lid.shape == new_rows.shape
    folded = fold_lists(pq, part, live, new_rows, lid, codes[new_rows], 400)
    assert folded.covered == 400 and folded.nprobe == part.nprobe
    assert sorted(folded.ivf.perm.tolist()) == np.flatnonzero(live).tolist()
    np.testing.assert_array_equal(code_rows(folded.codes), codes[folded.ivf.perm])
    assert len(part.ivf.perm) == 300                    # the old lists are untouched
    kept = np.flatnonzero(live)
    remapped = remap_lists(pq, folded, kept)
    assert remapped.covered == len(kept)
    assert sorted(remapped.ivf.perm.tolist()) == list(range(len(kept)))
    np.testing.assert_array_equal(code_rows(remapped.codes), codes[kept][remapped.ivf.perm])


def test_recall_and_recall_grid():
    gt = np.array([[0, 1], [2, -1]])
    assert recall(np.array([[1, 5], [2, 3]]), gt) == 2 / 3
    ran = []

    def search(r, p):                   # recall grows with nprobe * rerank
        ran.append((r, p))
        return gt if (p or 0) * r >= 40 else np.full_like(gt, 9)
    grid = recall_grid(search, gt, [1, 2, 4, 8], [10, 20], 0.9)
    assert ran == [(20, 1), (20, 2), (10, 2), (10, 4)]  # a shallower ladder starts higher
    assert [g["recall"] for g in grid] == [0.0, 1.0, 0.0, 1.0]


def test_added_error_is_zero_for_codebook_rows(lists):
    V, pq, codes, part = lists
    R = pq.decode(codes[:10])
    assert added_error(pq, R, pq.encode(R)) == pytest.approx(0.0, abs=1e-6)
    assert added_error(pq, V[:10], codes[:10]) > 0


# --------------------------------------------------------------------------- distance table

def test_distance_table():
    from sutradb.errors import NotFoundError
    from sutradb.index.flat import pair_scorer
    mat = np.array([[1, 0], [0, 2], [3, 4]], np.float32)
    idrow = np.array([-1, 2, -1, 0, 1], np.int64)             # ids 1, 3, 4 -> rows 2, 0, 1
    rows_of = lambda ids: idrow[ids]                           # noqa: E731
    t = DistanceTable("exact", rows_of, scorer=pair_scorer([mat], idrow, 2), dense=True)
    assert t.fast is t.scorer
    assert t.fast.distance(3, 4) == pytest.approx(1.0)         # orthogonal rows
    assert t.fast.distance(1, 3) == pytest.approx(1 - 3 / 5)
    with pytest.raises(KeyError):
        t.fast.distance(0, 1)                                   # no row for id 0
    with pytest.raises(KeyError):
        t.fast.distance(1, 5)                                   # past the table
    np.testing.assert_allclose(t.pairs(np.array([[3, 4], [1, 3]])), [1.0, 1 - 3 / 5], rtol=1e-6)
    with pytest.raises(NotFoundError):
        t.pairs(np.array([[3, 2]]))
    # sparse ids: the table maps rows to themselves, ids go through rows_of
    s = DistanceTable("exact", rows_of, scorer=pair_scorer([mat[:1], mat[1:]], np.arange(3), 0))
    assert s.fast is None
    np.testing.assert_allclose(s.pairs(np.array([[1, 3]])), [(3 - 1) ** 2 + 4 ** 2], rtol=1e-6)
    with pytest.raises(NotFoundError):
        s.pairs(np.array([[0, 1]]))
    with pytest.raises(InvalidArgumentError):
        DistanceTable("none", rows_of).pairs(np.array([[1, 3]]))   # no vectors, no codes
    assert NO_TABLE.fast is None and NO_TABLE.rows_of(np.array([1, 2])).tolist() == [-1, -1]
    with pytest.raises(ValueError):
        pair_scorer([mat], np.array([0, 3]), 0)                   # a row the vectors lack


def test_database_distance_paths():
    import sutradb
    for metric in ("cosine", "ip", "l2"):
        V = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
        db = sutradb.open(":memory:", dim=4, metric=metric, vector_dtype="float32")
        db.add_vectors(V, keys=list("abcde"))
        assert db._dtable is NO_TABLE
        first = db.distance(0, 3)           # builds the table
        assert db._dtable is not NO_TABLE
        assert db.distance(0, 3) == pytest.approx(first)
        assert db.distance("a", "d") == pytest.approx(first)      # keys: the slow path
        a, b = V[0].astype(np.float64), V[3].astype(np.float64)
        want = {"cosine": 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), "ip": -a @ b,
                "l2": (a - b) @ (a - b)}[metric]
        assert first == pytest.approx(want, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(db.distances([[0, 3]]), [first], rtol=1e-5, atol=1e-6)
        db.update(3, vector=V[0])
        assert db._dtable is NO_TABLE                              # dropped by the commit
        assert db.distance(0, 3) == pytest.approx(0.0 if metric != "ip" else -a @ a, abs=1e-5)
        db.close()
        assert db._dtable is NO_TABLE


# --------------------------------------------------------------------------- record indexes

class _Rec:
    def __init__(self, id, key, text, metadata):
        self.id, self.key, self.text, self.metadata = id, key, text, metadata


class _FakeStore:
    """What RecordIndexes reads of a store: the live mask and records by row."""

    def __init__(self, recs, live):
        self.recs, self.live = recs, np.array(live)

    def record_at(self, row):
        return self.recs[row]

    def records_at(self, rows):
        return [self.recs[r] for r in np.asarray(rows).tolist()]


def test_record_indexes_build_and_follow_commits():
    store = _FakeStore([_Rec(0, "a", "red fox", {"n": 1}), _Rec(1, None, None, {}),
                        _Rec(0, "a0", "old", {})], [True, True, False])
    r = RecordIndexes()
    assert not r.built
    r.set(5, ("x", "t", {}, None))          # nothing built: nothing to update
    assert r.build_keys(store) == {"a": 0} and r.key_of == {0: "a"} and r.built
    assert r.build_metadata(store) == {0: {"n": 1}, 1: {}}
    assert r.build_words(store).find("fox") == {0}
    r.set(0, ("b", "blue fox", None, None))  # key changed, metadata dropped
    r.set(2, ("a", "fox", {"n": 2}, None))   # the freed key taken by another id
    r.set(1, None)                           # deleted
    assert r.keys == {"b": 0, "a": 2} and r.key_of == {0: "b", 2: "a"}
    assert r.metadata == {0: {}, 2: {"n": 2}}
    assert r.words.find("fox") == {0, 2} and r.words.find("red") == set()


def test_record_indexes_field_index_follows_commits():
    from sutradb.index.filters import compile_where
    store = _FakeStore([_Rec(0, None, None, {"n": 1}), _Rec(1, None, None, {"n": [1, 2]}),
                        _Rec(2, None, None, {})], [True, True, True])
    r = RecordIndexes()
    fi = r.field("n", store)
    assert r.field("n", store) is fi and r.metadata is not None and r.built
    f = compile_where({"n": 1})

    def ids():
        return np.flatnonzero(f.mask(4, lambda p: r.field(p, store), {})).tolist()

    assert ids() == [0, 1]
    r.set(0, ("k", None, {"n": 3}, None))    # updated
    r.set(1, None)                           # deleted
    r.set(3, (None, None, {"n": 1}, None))   # added
    assert ids() == [3]
    assert fi.dirty_count == 3
