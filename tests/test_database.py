"""The Database API: opening, concepts, search, filters, links, transactions, errors."""

import os
import threading

import numpy as np
import pytest

import sutradb
from sutradb import errors
from sutradb.testing import sutra_db, sutra_db_factory  # noqa: F401  (fixtures)

RNG = np.random.default_rng(0)


def randv(n, d=8, seed=None):
    r = RNG if seed is None else np.random.default_rng(seed)
    return r.standard_normal((n, d)).astype(np.float32)


# ----------------------------------------------------------------------- opening

def test_public_names():
    for name in ("open", "Database", "Concept", "Hit", "Link", "Transaction", "ProductQuantizer"):
        assert hasattr(sutradb, name)
    assert sutradb.Concept._fields == ("id", "key", "text", "metadata", "vector")
    assert sutradb.Hit._fields == ("id", "distance", "concept")
    assert sutradb.Link._fields == ("id", "relation", "weight")


def test_modes(tmp_path):
    p = str(tmp_path / "db")
    with pytest.raises((FileNotFoundError, errors.SutraError)):
        sutradb.open(p, "r")
    with sutradb.open(p, "x", dim=4) as db:
        db.add_vectors(randv(3, 4), texts=["a", "b", "c"])
    with pytest.raises((FileExistsError, errors.SutraError)):
        sutradb.open(p, "x")
    with sutradb.open(p, "r") as db:
        assert len(db) == 3 and db.dim == 4 and db.read_only
        with pytest.raises(errors.ReadOnlyError):
            db.add_vectors(randv(1, 4))
        with pytest.raises(errors.ReadOnlyError):
            db.delete(0)
        assert db.get(1).text == "b"
    with sutradb.open(p, "a") as db:
        assert len(db) == 3
        with pytest.raises(errors.DimensionError):
            sutradb.open(str(tmp_path / "db"), "r", dim=5)
    with sutradb.open(p, "w") as db:
        assert len(db) == 0
    with pytest.raises(errors.InvalidArgumentError):
        sutradb.open(p, "q")
    with pytest.raises(errors.InvalidArgumentError):
        sutradb.open(p, bogus_option=1)


def test_metric_is_fixed_at_creation(tmp_path):
    p = str(tmp_path / "db")
    sutradb.open(p, dim=2, metric="l2").close()
    with sutradb.open(p) as db:              # default metric: take the stored one
        assert db.metric == "l2"
    with pytest.raises(errors.InvalidArgumentError):
        sutradb.open(p, metric="ip")


def test_memory_database_and_context_manager():
    with sutradb.open(":memory:") as db:
        assert db.path is None and db.dim is None
        ids = db.add_vectors(randv(5, 3))
        assert db.dim == 3 and ids.tolist() == [0, 1, 2, 3, 4] and ids.dtype == np.int64
    assert db.closed
    with pytest.raises(errors.ClosedError):
        len(db)
    with pytest.raises(errors.ClosedError):
        db.get(0)
    with pytest.raises(errors.ClosedError):
        db.add_vectors(randv(1, 3))
    db.close()   # idempotent


# ----------------------------------------------------------------------- concepts

def test_add_get_update_delete(sutra_db):
    db = sutra_db
    V = randv(4)
    ids = db.add_vectors(V, texts=["Paris is the capital of France", None, "x", "y"],
                         metadata=[{"src": "wiki", "n": 1}, None, {"nested": {"a": [1, 2]}}, {}],
                         keys=["paris", None, "x", None])
    c = db.get(int(ids[0]))
    assert c == (0, "paris", "Paris is the capital of France", {"src": "wiki", "n": 1}, c.vector)
    np.testing.assert_allclose(c.vector, V[0], rtol=1e-3, atol=1e-3)
    assert not c.vector.flags.writeable
    assert db.get("paris").id == 0 and db.get(1).metadata == {} and db.get(1).key is None
    assert len(db) == 4 and 2 in db and "x" in db and 99 not in db and "nope" not in db
    assert sorted(db) == [0, 1, 2, 3]
    c.metadata["src"] = "changed"                    # a snapshot
    assert db.get(0).metadata["src"] == "wiki"
    db.update(0, text="new", metadata={"v": 2})
    c = db.get("paris")
    assert (c.text, c.metadata, c.key) == ("new", {"v": 2}, "paris")
    db.update("paris", key="paris2", vector=np.ones(8))
    assert "paris" not in db and db.get("paris2").id == 0
    np.testing.assert_allclose(db.get(0).vector, np.ones(8))
    db.delete([1, "x"])
    assert len(db) == 2 and 1 not in db and "x" not in db
    with pytest.raises(errors.NotFoundError):
        db.get(1)
    with pytest.raises(KeyError):                    # NotFoundError is a KeyError
        db.get("x")
    ids2 = db.add_vectors(randv(1))
    assert ids2.tolist() == [4]                      # ids are never reused


def test_get_vectors_reads_many_at_once(sutra_db):
    db = sutra_db
    db.add_vectors(randv(6, seed=3))
    db.delete([2])
    want = [5, 0, 3, 3]                              # any order, repeats allowed
    V = db.get_vectors(want)
    assert V.shape == (4, 8) and V.dtype == db.get(0).vector.dtype
    for row, i in zip(V, want):
        np.testing.assert_array_equal(row, db.get(i).vector)
    V[:] = 0                                         # a copy, not the mapped file
    assert db.get(5).vector.any()
    assert db.get_vectors(np.zeros(0, np.int64)).shape == (0, 8)
    with pytest.raises(errors.NotFoundError):
        db.get_vectors([0, 2])                       # deleted
    with pytest.raises(errors.NotFoundError):
        db.get_vectors([99])
    with pytest.raises(errors.InvalidArgumentError):
        db.get_vectors(["a"])
    db.close()
    with pytest.raises(errors.ClosedError):
        db.get_vectors([0])


def test_bad_input_changes_nothing(sutra_db):
    db = sutra_db
    db.add_vectors(randv(2), keys=["a", "b"])
    before = [db.get(i) for i in db]
    bad = [
        (errors.DimensionError, lambda: db.add_vectors(randv(2, 5))),
        (errors.DimensionError, lambda: db.add_vectors(np.ones(8))),
        (errors.InvalidArgumentError, lambda: db.add_vectors(np.full((1, 8), np.nan))),
        (errors.InvalidArgumentError, lambda: db.add_vectors(np.full((1, 8), np.inf))),
        (errors.InvalidArgumentError, lambda: db.add_vectors(np.full((1, 8), 1e6))),   # > float16
        (errors.InvalidArgumentError, lambda: db.add_vectors([["a"] * 8])),
        (errors.DuplicateKeyError, lambda: db.add_vectors(randv(1), keys=["a"])),
        (errors.DuplicateKeyError, lambda: db.add_vectors(randv(2), keys=["c", "c"])),
        (errors.InvalidArgumentError, lambda: db.add_vectors(randv(1), keys=[3])),
        (errors.InvalidArgumentError, lambda: db.add_vectors(randv(1), metadata=[{1: "x"}])),
        (errors.InvalidArgumentError, lambda: db.add_vectors(randv(1), metadata=[{"x": object()}])),
        (errors.InvalidArgumentError, lambda: db.add_vectors(randv(1), metadata=[[1]])),
        (errors.DimensionError, lambda: db.add_vectors(randv(2), texts=["one"])),
        (errors.NotFoundError, lambda: db.delete([0, 42])),
        (errors.NotFoundError, lambda: db.update(42, text="x")),
        (errors.DuplicateKeyError, lambda: db.update(0, key="b")),
        (errors.DimensionError, lambda: db.update(0, vector=np.ones(3))),
        (errors.InvalidArgumentError, lambda: db.update(0, vector=np.full(8, np.nan))),
        (errors.NotFoundError, lambda: db.link(0, 42, "r")),
        (errors.InvalidArgumentError, lambda: db.link(0, 1, "")),
        (errors.InvalidArgumentError, lambda: db.link(0, 1, "r", weight=float("nan"))),
        (errors.InvalidArgumentError, lambda: db.get(1.5)),
        (errors.InvalidArgumentError, lambda: db.search_vectors(np.ones(8), k=0)),
        (errors.DimensionError, lambda: db.search_vectors(np.ones(7))),
        (errors.InvalidArgumentError, lambda: db.search_vectors(np.full(8, np.nan))),
        (errors.InvalidArgumentError, lambda: db.search_vectors(np.ones(8), where={"$bad": 1})),
        (errors.InvalidArgumentError, lambda: db.search_vectors(np.ones(8), where={"a": {"$in": 3}})),
        (errors.EmbedderError, lambda: db.search("some text")),
        (errors.NotFoundError, lambda: db.distance(0, 42)),
        (errors.InvalidArgumentError, lambda: db.neighbors(0, direction="up")),
    ]
    for exc, fn in bad:
        with pytest.raises(exc):
            fn()
    after = [db.get(i) for i in db]
    assert [c[:4] for c in after] == [c[:4] for c in before]
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(after, before))
    assert len(db) == 2 and db.links() == []


def test_keys_can_move_within_a_transaction(sutra_db):
    db = sutra_db
    a, b = db.add_vectors(randv(2), keys=["a", "b"])
    with db.transaction():
        db.update(a, key=None)
        db.update(b, key="a")
        db.add_vectors(randv(1), keys=["b"])
    assert db.get("a").id == b and db.get("b").id == 2 and db.get(a).key is None


# ----------------------------------------------------------------------- search

def exact_topk(V, q, k, metric="cosine"):
    V = V.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        d = 1 - (V @ q) / (np.linalg.norm(V, axis=1) * np.linalg.norm(q))
    elif metric == "ip":
        d = -(V @ q)
    else:
        d = ((V - q) ** 2).sum(1)
    o = np.argsort(d, kind="stable")[:k]
    return d[o], o


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_search_exact_while_small(sutra_db_factory, metric):
    db = sutra_db_factory(dim=16, metric=metric)
    V = randv(200, 16, seed=1)
    db.add_vectors(V)
    V16 = V.astype(np.float16)
    Q = randv(5, 16, seed=2)
    D, I = db.search_vectors(Q, k=7)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (5, 7)
    for q, d, i in zip(Q, D, I):
        ed, ei = exact_topk(V16, q, 7, metric)
        np.testing.assert_allclose(d, ed, rtol=1e-4, atol=1e-4)
    hits = db.search(Q[0], k=3)
    assert [h.id for h in hits] == I[0, :3].tolist()
    assert isinstance(hits[0], sutradb.Hit) and hits[0].concept.id == hits[0].id
    D, I = db.search_vectors(Q[:1], k=500)                  # more than stored
    assert (I[0, 200:] == -1).all() and np.isinf(D[0, 200:]).all()


def test_search_empty_database(sutra_db):
    D, I = sutra_db.search_vectors(np.ones((2, 8)), k=3)
    assert (I == -1).all() and np.isinf(D).all()
    assert sutra_db.search(np.ones(8)) == []


def test_deleted_and_updated_are_not_found(sutra_db):
    db = sutra_db
    V = randv(20)
    db.add_vectors(V)
    db.delete([3])
    db.update(4, vector=-V[4])
    _, I = db.search_vectors(V[3], k=20)
    assert 3 not in I[0] and (I[0] >= 0).sum() == 19
    _, I = db.search_vectors(-V[4], k=1)
    assert I[0, 0] == 4


def test_pq_index_lifecycle_and_rerank(sutra_db_factory):
    db = sutra_db_factory(dim=16, index_threshold=300, pq_m=4)
    V = randv(400, 16, seed=3)
    db.add_vectors(V[:200])
    assert db.index_info["kind"] == "flat"
    db.add_vectors(V[200:])
    info = db.index_info
    assert info["kind"] == "pq" and info["m"] == 4
    D, I = db.search_vectors(V[:5], k=5)                    # rerank covers every row here
    for q, d in zip(V[:5], D):
        np.testing.assert_allclose(d, exact_topk(V.astype(np.float16), q, 5)[0], atol=1e-4)
    Da, Ia = db.search_vectors(V[:5], k=5, rerank=0)        # ADC only: approximate
    assert (Ia >= 0).all()
    more = db.add_vectors(randv(10, 16, seed=4))            # encoded with the stored codebooks
    _, I = db.search_vectors(db.get(int(more[0])).vector, k=1)
    assert I[0, 0] == more[0]
    db.build_index(m=8, seed=1)
    assert db.index_info["m"] == 8
    D2, _ = db.search_vectors(V[:5], k=5)
    np.testing.assert_allclose(D2, D, atol=1e-4)
    path = db.path
    db.close()
    with sutradb.open(path) as db2:
        assert db2.index_info["kind"] == "pq" and len(db2) == 410
        D3, _ = db2.search_vectors(V[:5], k=5)
        np.testing.assert_allclose(D3, D, atol=1e-4)
        db2.verify()


def test_build_index_with_a_given_quantizer(tmp_path):
    from sutradb.index.pq import ProductQuantizer
    V = randv(600, 16, seed=11)
    pq = ProductQuantizer(16, 4, 8, "cosine", 3).fit(V[:400])
    p = str(tmp_path / "db")
    with sutradb.open(p, dim=16, index_threshold=0) as db:
        db.add_vectors(V)
        assert db.index_info["kind"] == "flat"          # threshold 0: never trains alone
        with pytest.raises(errors.InvalidArgumentError):
            db.build_index(quantizer=pq, m=8)
        with pytest.raises(errors.InvalidArgumentError):
            db.build_index(quantizer=ProductQuantizer(16, 4, 8, "l2", 3).fit(V[:400]))
        with pytest.raises(errors.InvalidArgumentError):
            db.build_index(quantizer=ProductQuantizer(16, 4))       # untrained
        db.build_index(quantizer=pq)
    with sutradb.open(p) as db:
        assert db.index_info["kind"] == "pq" and db.index_info["seed"] == 3
        np.testing.assert_array_equal(db._index.pq.codebooks, pq.codebooks)
        np.testing.assert_array_equal(db._store.codes, pq.encode(V.astype(np.float16)))


def test_pq_index_in_memory():
    db = sutradb.open(":memory:", dim=8, index_threshold=300)
    db.add_vectors(randv(310, 8, seed=5), keys=[f"k{i}" for i in range(310)])
    db.link(0, 1, "r")
    assert db.index_info["kind"] == "pq"
    assert db.get("k5").id == 5 and db.neighbors(0) == [sutradb.Link(1, "r", 1.0)]
    assert db.search_vectors(db.get(7).vector, k=1)[1][0, 0] == 7


def test_codes_only_database(sutra_db_factory):
    db = sutra_db_factory(dim=16, vector_dtype=None, pq_nbits=4, pq_m=8)
    with pytest.raises(errors.InvalidArgumentError):
        db.add_vectors(randv(3, 16))                        # training needs a batch
    V = randv(300, 16, seed=6)
    db.add_vectors(V)
    assert db.index_info["kind"] == "pq" and db.get(0).vector is None
    with pytest.raises(errors.InvalidArgumentError):
        db.get_vectors([0])                                 # no stored vectors
    _, I = db.search_vectors(V[:3], k=3)
    assert (I >= 0).all()
    d = db.distance(0, 1)
    assert np.isfinite(d) and db.distances([[0, 1]])[0] == pytest.approx(d, abs=1e-5)


# ----------------------------------------------------------------------- filters

def test_where_filters(sutra_db):
    db = sutra_db
    V = randv(40)
    md = [{"n": i % 5, "tag": "xyz"[i % 3], **({"opt": True} if i % 2 else {})} for i in range(40)]
    txt = [("red apple" if i % 4 == 0 else "green pear") for i in range(40)]
    db.add_vectors(V, metadata=md, texts=txt)

    def check(where, pred):
        want = {i for i in range(40) if pred(i)}
        _, I = db.search_vectors(V[0], k=40, where=where)
        got = set(I[0][I[0] >= 0].tolist())
        assert got == want, where
        _, I = db.search_vectors(V[0], k=3, where=where)      # pre-filter: k hits when >= k match
        assert (I[0] >= 0).sum() == min(3, len(want))

    check({"n": 2}, lambda i: i % 5 == 2)
    check({"n": {"$in": [1, 2]}}, lambda i: i % 5 in (1, 2))
    check({"n": {"$nin": [1, 2]}}, lambda i: i % 5 not in (1, 2))
    check({"n": {"$gt": 2}}, lambda i: i % 5 > 2)
    check({"n": {"$gte": 2, "$lt": 4}}, lambda i: 2 <= i % 5 < 4)
    check({"n": {"$lte": 0}}, lambda i: i % 5 == 0)
    check({"tag": "x", "n": 0}, lambda i: i % 3 == 0 and i % 5 == 0)
    check({"$or": [{"tag": "x"}, {"n": 4}]}, lambda i: i % 3 == 0 or i % 5 == 4)
    check({"$and": [{"tag": {"$ne": "x"}}, {"opt": True}]}, lambda i: i % 3 != 0 and i % 2 == 1)
    check({"opt": {"$ne": True}}, lambda i: i % 2 == 0)
    check({"opt": 1}, lambda i: False)                          # True is not 1
    check({"$text": "apple"}, lambda i: i % 4 == 0)
    check({"$text": "RED apple", "n": 0}, lambda i: i % 4 == 0 and i % 5 == 0)
    check({"$text": "apple pear"}, lambda i: False)
    check({"missing": {"$nin": [1]}}, lambda i: True)
    check({}, lambda i: True)
    assert db.find_words("Apple") == [i for i in range(40) if i % 4 == 0]
    assert db.find_words("") == []
    db.update(0, text="blue plum")
    db.delete(4)
    assert 0 not in db.find_words("apple") and 4 not in db.find_words("apple")
    assert db.find_words("plum") == [0]
    _, I = db.search_vectors(V[0], k=5, where={"$text": "plum"})
    assert I[0].tolist() == [0, -1, -1, -1, -1]


# ----------------------------------------------------------------------- distance

@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_distance(sutra_db_factory, metric):
    db = sutra_db_factory(dim=8, metric=metric)
    V = randv(10, seed=7)
    db.add_vectors(V, keys=[f"k{i}" for i in range(10)])
    V16 = V.astype(np.float16).astype(np.float64)
    for a, b in [(0, 1), (3, 3), (9, 2)]:
        want = exact_topk(V16[[b]], V16[a], 1, metric)[0][0]
        assert db.distance(a, b) == pytest.approx(want, abs=1e-4)
    assert db.distance("k0", "k1") == pytest.approx(db.distance(0, 1))
    P = np.array([[0, 1], [3, 3], [9, 2]])
    np.testing.assert_allclose(db.distances(P), [db.distance(a, b) for a, b in P], atol=1e-5)
    db.delete(1)
    with pytest.raises(errors.NotFoundError):
        db.distance(0, 1)
    with pytest.raises(errors.NotFoundError):
        db.distances([[0, 1]])
    db.add_vectors(V[:1])
    assert db.distance(0, 10) == pytest.approx(0.0 if metric != "ip" else db.distance(0, 0), abs=1e-4)


# ----------------------------------------------------------------------- links

def test_links(sutra_db):
    db = sutra_db
    a, b, c = db.add_vectors(randv(3)).tolist()
    db.link(a, b, "is_a", weight=0.5)
    db.link(a, c, "part_of")
    db.link(a, b, "is_a", weight=2.0)                        # re-weight
    db.link(c, a, "is_a")
    assert db.neighbors(a) == [sutradb.Link(b, "is_a", 2.0), sutradb.Link(c, "part_of", 1.0)]
    assert db.neighbors(a, relation="part_of") == [sutradb.Link(c, "part_of", 1.0)]
    assert db.neighbors(a, direction="in") == [sutradb.Link(c, "is_a", 1.0)]
    assert len(db.neighbors(a, direction="both")) == 3
    db.unlink(a, c)
    assert db.neighbors(a) == [sutradb.Link(b, "is_a", 2.0)]
    db.delete(b)
    assert db.neighbors(a) == [] and db.links() == [(c, a, "is_a", 1.0)]
    with pytest.raises(errors.NotFoundError):
        db.neighbors(b)


# ----------------------------------------------------------------------- transactions

def test_transactions_commit_rollback_savepoints(sutra_db):
    db = sutra_db
    with db.transaction():
        a, b = db.add_vectors(randv(2), keys=["a", "b"]).tolist()
        db.link(a, b, "r")
        db.update(a, text="staged")            # an id added in this transaction
        assert len(db) == 0                     # reads see the committed state
    assert len(db) == 2 and db.get(a).text == "staged" and db.neighbors(a)[0].id == b
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.add_vectors(randv(3))
            db.delete(a)
            raise RuntimeError
    assert len(db) == 2 and a in db
    with db.transaction():
        db.add_vectors(randv(1), keys=["c"])
        try:
            with db.transaction():               # savepoint
                db.delete(b)
                db.add_vectors(randv(1), keys=["d"])
                raise ValueError
        except ValueError:
            pass
        with db.transaction():
            db.update(a, metadata={"x": 1})
        t = db.transaction()
        db.add_vectors(randv(1), keys=["e"])
        t.rollback()
    assert len(db) == 3 and b in db and "c" in db and "d" not in db and "e" not in db
    assert db.get(a).metadata == {"x": 1}
    with db.transaction() as t:
        db.delete(a)
        t.rollback()
    assert a in db
    outer = db.transaction()
    inner = db.transaction()
    with pytest.raises(errors.InvalidArgumentError):
        outer.commit()                           # the inner one first
    inner.commit()
    outer.commit()
    with pytest.raises(errors.InvalidArgumentError):
        outer.commit()


def test_transaction_is_atomic_on_disk(sutra_db_factory):
    db = sutra_db_factory(name="atomic")
    path = db.path
    with db.transaction():
        db.add_vectors(randv(5), texts=list("abcde"))
    t = db.transaction()
    db.add_vectors(randv(5))
    db.close()                                   # an open transaction is rolled back
    with sutradb.open(path) as db2:
        assert len(db2) == 5 and db2.get(4).text == "e"


def test_bulk_add_spills(sutra_db_factory):
    # more than the store's spill threshold in one transaction (written to segments)
    db = sutra_db_factory(dim=128, index_threshold=0)        # index_threshold=0: never train
    V = randv(70_000, 128, seed=8)                          # > 16 MiB of float16 rows
    ids = db.add_vectors(V)
    assert len(db) == 70_000 and ids[-1] == 69_999
    np.testing.assert_allclose(db.get(69_999).vector, V[-1], rtol=1e-2, atol=1e-2)


def test_threads_read_while_one_writes(sutra_db):
    db = sutra_db
    db.add_vectors(randv(50))
    errs = []

    def reader():
        try:
            for _ in range(200):
                D, I = db.search_vectors(randv(1), k=5)
                assert (I >= 0).all()
                db.get(int(I[0, 0]))
        except Exception as e:          # pragma: no cover - reported below
            errs.append(e)

    def writer():
        try:
            for _ in range(30):
                with db.transaction():
                    ids = db.add_vectors(randv(2))
                    db.link(int(ids[0]), int(ids[1]), "w")
        except Exception as e:          # pragma: no cover
            errs.append(e)

    ts = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs, errs
    assert len(db) == 110 and len(db.links()) == 30


def test_embedder_protocol():
    class Toy:
        name, dim = "toy", 4

        def __call__(self, texts):
            return np.array([[len(t), t.count("a"), 1, 0] for t in texts], np.float32)

    db = sutradb.open(":memory:", embedder=Toy())
    ids = db.add(["a", "banana", "kiwi"])
    assert db.dim == 4 and len(ids) == 3
    hits = db.search("bananas", k=1)
    assert hits[0].concept.text == "banana"


def test_verify_and_compact(sutra_db):
    db = sutra_db
    db.add_vectors(randv(30), keys=[f"k{i}" for i in range(30)])
    db.delete(list(range(10)))
    db.update(15, text="t")
    db.verify()
    db.compact()
    assert len(db) == 20 and db.get("k15").text == "t" and db.get(20).key == "k20"
    assert db.verify()["concepts"] == 20
    assert db.distance(20, 21) >= 0


# ----------------------------------------------------------------------- regressions

def test_regression_4bit_index_trains_at_its_threshold(sutra_db_factory):
    """The automatic training used to wait for 256 concepts even with 4-bit codes
    (16 centroids), so small 4-bit databases never got their index."""
    db = sutra_db_factory(dim=8, index_threshold=16, pq_nbits=4, pq_m=2)
    db.add_vectors(randv(20, seed=9))
    assert db.index_info["kind"] == "pq" and db.index_info["nbits"] == 4


def test_regression_default_rerank_is_approximate_past_its_depth(sutra_db_factory):
    """Found by the state machine: with more rows than the re-ranking depth the default
    search is approximate (by design); a deeper ``rerank`` is exact again."""
    db = sutra_db_factory(dim=8, index_threshold=16, pq_nbits=4, pq_m=1)
    V = randv(300, seed=10)
    db.add_vectors(V)
    q = randv(1, seed=11)[0]
    D, _ = db.search_vectors(q, k=5, rerank=1000)
    De, _ = db.search_vectors(q, k=5, exact=True)
    np.testing.assert_allclose(D, De, atol=1e-4)


def test_regression_key_cache_follows_key_changes(sutra_db):
    """get(key) answers from a key -> id cache; it must never return the concept
    that used to hold a key after a delete, a re-key or a key moving to a new id."""
    db = sutra_db
    a, b = db.add_vectors(randv(2), keys=["k", "other"]).tolist()
    assert db.get("k").id == a and db.get("k").id == a          # second call: cached
    db.delete([a])
    with pytest.raises(KeyError):
        db.get("k")
    c = int(db.add_vectors(randv(1, seed=3), keys=["k"])[0])
    assert db.get("k").id == c
    db.update(c, key="k2")
    assert db.get("k2").id == c
    with pytest.raises(KeyError):
        db.get("k")
    db.update(b, key="k")
    assert db.get("k").id == b


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_close_unmaps_the_files_and_keeps_arrays_given_out(tmp_path):
    """After close() the process maps none of the database's files (a reader that
    closed does not keep them resident or pinned); arrays obtained before stay valid."""
    p = str(tmp_path / "db")
    X = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    with sutradb.open(p, "w", index_threshold=1000, pq_m=4) as db:
        db.add_vectors(X)
    db = sutradb.open(p, "r")
    db.search_vectors(X[:3], k=5)
    V = db._store.vectors                   # a view of the mapped vector file

    def mapped():
        return [line for line in open("/proc/self/maps") if str(tmp_path) in line]
    assert mapped()
    db.close()
    np.testing.assert_allclose(V[:3], X[:3], atol=1e-2)   # still readable
    assert mapped()                         # ... because V still refers to its file
    del V
    assert mapped() == []
    with pytest.raises(errors.ClosedError):
        db.search_vectors(X[0])


def test_delete_missing_ok():
    from sutradb.errors import InvalidArgumentError, NotFoundError
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors([[1, 0], [0, 1], [1, 1]], keys=["a", "b", "c"])
    with pytest.raises(NotFoundError):
        db.delete(["a", "zz"])
    assert len(db) == 3                              # nothing deleted half-way
    assert db.delete(["a", "zz", 77, "a"], missing_ok=True) == 1
    assert sorted(db.ids().tolist()) == [1, 2]
    with pytest.raises(InvalidArgumentError):
        db.delete([1.5], missing_ok=True)            # bad input still raises


def test_get_cache_evicts_in_batches_and_stays_correct(tmp_path):
    """A record cache smaller than the ids read: every get stays right through
    evictions, updates and deletes, and the cache never outgrows its size."""
    p = str(tmp_path / "db")
    with sutradb.open(p, "w", dim=8, cache_size=16) as db:
        db.add_vectors(randv(200, seed=5), texts=[f"t{i}" for i in range(200)],
                       metadata=[{"i": i, "l": [i]} for i in range(200)],
                       keys=[f"k{i}" for i in range(200)])
    with sutradb.open(p, "a", cache_size=16) as db:
        rng = np.random.default_rng(0)
        for step, i in enumerate(rng.integers(0, 200, 2000).tolist()):
            if step % 97 == 0:
                db.update(i, text=f"u{step}", metadata={"i": i, "step": step})
            c = db.get(i) if step % 2 else db.get(f"k{i}")
            assert c.id == i and c.key == f"k{i}" and c.metadata["i"] == i
            assert c.text == (f"t{i}" if "step" not in c.metadata else f"u{c.metadata['step']}")
            c.metadata["i"] = -1                     # the caller's own copy
            assert len(db._ccache) <= 16 and len(db._kcache) <= 16
        db.delete([3])
        with pytest.raises(errors.NotFoundError):
            db.get(3)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_get_many_equals_get(tmp_path, checkpoint):
    """get_many (the batch decode) returns what get returns, for ids and keys, from
    checkpointed rows and from the log's rows, in the order asked, repeats allowed."""
    p = str(tmp_path / "db")
    db = sutradb.open(p, "w", dim=8)
    db.add_vectors(randv(300, seed=6), texts=[f"t{i}" if i % 4 else None for i in range(300)],
                   metadata=[{"i": i, "n": {"l": [i]}} if i % 3 else None for i in range(300)],
                   keys=[f"k{i}" if i % 2 else None for i in range(300)])
    if checkpoint:                                   # closing checkpoints the log
        db.close()
        db = sutradb.open(p, "a")
    with db:
        db.update([5, 7], texts=["five", "seven"])
        db.delete([9])
        ask = [7, 0, "k5", 299, 7, 150, "k1"] + list(range(10, 300, 17))
        got = db.get_many(ask)
        want = [db.get(x) for x in ask]
        assert [(c.id, c.key, c.text, c.metadata) for c in got] == \
            [(c.id, c.key, c.text, c.metadata) for c in want]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.vector, b.vector)
            assert not a.vector.flags.writeable
        got[1].metadata["x"] = 1                     # the caller's own dicts
        assert "x" not in db.get_many([0])[0].metadata
        assert db.get_many([]) == [] and [c.id for c in db.get_many(iter([1]))] == [1]
        with pytest.raises(errors.NotFoundError, match="id 9"):
            db.get_many([1, 9])
        with pytest.raises(errors.NotFoundError, match="k2"):
            db.get_many([1, "k2"])
        with pytest.raises(errors.InvalidArgumentError):
            db.get_many([1, 2.5])
        with pytest.raises(errors.InvalidArgumentError):
            db.get_many([True])


def test_a_row_enters_the_record_cache_on_its_second_read(tmp_path):
    p = str(tmp_path / "db")
    with sutradb.open(p, "w", dim=8) as db:
        db.add_vectors(randv(10, seed=7), texts=[f"t{i}" for i in range(10)],
                       metadata=[{"i": i, "l": [i]} for i in range(10)], keys=[f"k{i}" for i in range(10)])
    with sutradb.open(p, "a") as db:
        a = db.get(3)
        assert 3 not in db._ccache                   # read once: not cached
        a.metadata["l"].append(99)                   # the caller's own
        b = db.get("k3")
        assert 3 in db._ccache and b.metadata == {"i": 3, "l": [3]}
        b.metadata["l"].append(98)
        c = db.get(3)                                # from the cache: a deep copy
        assert c.metadata == {"i": 3, "l": [3]} and c.text == "t3"
        db.update(3, text="new")
        assert db.get(3).text == "new" and db.get("k3").text == "new"
