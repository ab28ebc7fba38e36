"""upsert, batch update, delete(where=), and listing (find / find_ids / find_iter /
count) against a plain-Python oracle."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sutradb
from sutradb.errors import (DimensionError, DuplicateKeyError, InvalidArgumentError,
                            NotFoundError, ReadOnlyError, SutraError)


def randv(n, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


class Toy:
    """A deterministic embedder: the vector is a function of the text."""
    name, dim = "toy", 4

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.array([[len(t), t.count("a"), t.count("e"), 1] for t in texts], np.float32)


def snapshot(db):
    """Every concept and link, comparable."""
    cs = [(c.id, c.key, c.text, c.metadata, np.asarray(c.vector, np.float32).round(2).tolist())
          for c in db.find()]
    return cs, sorted(db.links())


def stored(v):
    """A vector as the database keeps it (float16 by default)."""
    return np.asarray(v, np.float32).astype(np.float16).astype(np.float32)


# ---------------------------------------------------------------------------- upsert

def test_upsert_inserts_and_replaces_by_key(sutra_db):
    db = sutra_db
    V = randv(6)
    ids = db.upsert(V[:4], keys=["a", "b", "c", "d"], texts=["ta", "tb", "tc", "td"],
                    metadata=[{"n": i} for i in range(4)])
    assert ids.tolist() == [0, 1, 2, 3]
    db.link("a", "b", "near", 0.5)
    db.link("c", "a", "near")
    # b and d replaced whole, e new; order of the result follows the input
    out = db.upsert(V[3:6], keys=["d", "e", "b"], texts=["TD", "te", None],
                    metadata=[{"m": 1}, None, {"n": 9}])
    assert out.tolist() == [3, 4, 1]
    assert len(db) == 5
    b = db.get("b")
    assert (b.id, b.text, b.metadata) == (1, None, {"n": 9})
    np.testing.assert_allclose(b.vector, stored(V[5]), atol=2e-3)
    d = db.get("d")
    assert (d.text, d.metadata) == ("TD", {"m": 1})
    np.testing.assert_allclose(d.vector, stored(V[3]), atol=2e-3)
    assert db.get("e").metadata == {} and db.get("a").metadata == {"n": 0}
    # links of a replaced concept are kept
    assert sorted(db.links()) == sorted([(0, 1, "near", 0.5), (2, 0, "near", 1.0)])
    # the replaced vector is what search sees
    assert db.search(V[5], k=1)[0].id == 1


def test_upsert_reopen_and_word_index(sutra_db_factory, tmp_path):
    p = tmp_path / "u.sutra"
    db = sutradb.open(p, dim=8)
    V = randv(3)
    db.upsert(V, keys=["x", "y", "z"], texts=["red apple", "green pear", "blue sky"])
    db.upsert(V[:1], keys=["y"], texts=["yellow banana"])
    assert db.find_words("pear") == [] and db.find_words("banana") == [1]
    before = snapshot(db)
    db.close()
    db = sutradb.open(p)
    assert snapshot(db) == before
    assert db.find_words("banana") == [1]
    db.close()


def test_upsert_texts_embeds_once_per_window():
    emb = Toy()
    db = sutradb.open(":memory:", embedder=emb)
    ids = db.upsert(["alpha", "beta", "gamma"], keys=["1", "2", "3"],
                    metadata=[{"g": 1}, None, None])
    assert ids.tolist() == [0, 1, 2]
    calls = emb.calls
    out = db.upsert(["beta!", "dddd", "eee"], keys=["2", "4", "5"], batch_size=2)
    assert out.tolist() == [1, 3, 4] and emb.calls == calls + 1     # one window, one call
    c = db.get("2")
    assert c.text == "beta!" and c.metadata == {}
    np.testing.assert_allclose(c.vector, stored(emb(["beta!"])[0]), atol=2e-3)
    assert db.search("beta!", k=1)[0].id == 1
    assert db.get("1").metadata == {"g": 1}


@pytest.mark.parametrize("bad, err", [
    (dict(keys=None), InvalidArgumentError),
    (dict(keys="ab"), InvalidArgumentError),
    (dict(keys=["a", None, "c"]), InvalidArgumentError),
    (dict(keys=["a", 3, "c"]), InvalidArgumentError),
    (dict(keys=["a", "b", "a"]), DuplicateKeyError),
    (dict(keys=["a", "b"]), DimensionError),
    (dict(keys=["a", "n1", "n2"], metadata=[{}, {"x": object()}, {}]), InvalidArgumentError),
    (dict(keys=["a", "n1", "n2"], texts=["t", 5, "u"]), InvalidArgumentError),
    (dict(keys=["n1", "a", "n2"], texts=["t", 5, "u"]), InvalidArgumentError),
    (dict(keys=["a", "n1", "n2"], metadata=[{}, {}]), InvalidArgumentError),
])
def test_upsert_bad_input_changes_nothing(sutra_db, bad, err):
    db = sutra_db
    db.upsert(randv(2), keys=["a", "b"], texts=["A", "B"], metadata=[{"v": 1}, {"v": 2}])
    db.link("a", "b", "r")
    before = snapshot(db)
    with pytest.raises(err):
        db.upsert(randv(3, seed=1), **bad)
    assert snapshot(db) == before
    # the database still takes the same upsert when it is correct
    db.upsert(randv(3, seed=1), keys=["a", "n1", "n2"])
    assert len(db) == 4


def test_upsert_wrong_dimension_and_text_item_errors(sutra_db):
    db = sutra_db
    db.upsert(randv(2), keys=["a", "b"])
    with pytest.raises(DimensionError):
        db.upsert(randv(2, d=5), keys=["a", "c"])
    with pytest.raises(InvalidArgumentError):
        db.upsert("just one text", keys=["a"])
    with pytest.raises(SutraError):            # texts without an embedder
        db.upsert(["one", "two"], keys=["a", "c"])
    assert len(db) == 2 and db.get("a").metadata == {}


def test_upsert_in_transaction_rolls_back(sutra_db):
    db = sutra_db
    db.upsert(randv(2), keys=["a", "b"], metadata=[{"v": 1}, {"v": 2}])
    before = snapshot(db)
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.upsert(randv(2, seed=3), keys=["b", "c"], metadata=[{"v": 20}, {"v": 3}])
            # reads inside a transaction see the committed state
            assert db.get("b").metadata == {"v": 2} and len(db) == 2
            raise RuntimeError("abort")
    assert snapshot(db) == before
    # in one transaction, a key added then upserted again is replaced, not duplicated
    with db.transaction():
        db.upsert(randv(1, seed=4), keys=["c"], metadata=[{"v": 3}])
        db.upsert(randv(1, seed=5), keys=["c"], metadata=[{"v": 4}])
        db.delete("a")
        db.upsert(randv(1, seed=6), keys=["a"], metadata=[{"v": 5}])
    assert len(db) == 3 and db.get("c").metadata == {"v": 4}
    assert db.get("a").metadata == {"v": 5} and db.get("a").id != 0


@pytest.mark.parametrize("opts", [
    dict(index_threshold=64, pq_m=4, train_iters=4),
    dict(index_threshold=64, pq_m=4, train_iters=4, vector_dtype=None),
], ids=["pq", "codes-only"])
def test_upsert_on_quantized_database(sutra_db_factory, opts):
    db = sutra_db_factory(**opts)
    V = randv(300)
    db.upsert(V, keys=[f"k{i}" for i in range(300)])
    assert db.index_info["kind"] == "pq"
    W = randv(10, seed=9)
    out = db.upsert(W, keys=[f"k{i}" for i in range(0, 100, 10)])
    assert out.tolist() == list(range(0, 100, 10))
    for j, i in enumerate(out.tolist()):
        assert db.search(W[j], k=1)[0].id == i
    db.verify()


# ---------------------------------------------------------------------- batch update

def test_batch_update_fields(sutra_db):
    db = sutra_db
    V = randv(5)
    db.add_vectors(V, keys=list("abcde"), texts=list("ABCDE"),
                   metadata=[{"i": i} for i in range(5)])
    db.update(["a", 2, np.int64(4)], metadata=[{"x": 1}, None, {"x": 3}])
    assert [db.get(i).metadata for i in range(5)] == [{"x": 1}, {"i": 1}, {}, {"i": 3}, {"x": 3}]
    assert db.get(0).text == "A"                                  # other fields kept
    W = randv(2, seed=7)
    db.update(np.array([1, 3]), vectors=W, texts=["b2", None], keys=["bb", None])
    assert db.get("bb").id == 1 and db.get(3).key is None and db.get(3).text is None
    np.testing.assert_allclose(db.get(1).vector, stored(W[0]), atol=2e-3)
    with pytest.raises(NotFoundError):
        db.get("b")
    db.update([], metadata=[])                                   # an empty batch is a no-op


@pytest.mark.parametrize("call, err", [
    (lambda db: db.update([0, 1], text="x"), InvalidArgumentError),
    (lambda db: db.update(0, texts=["x"]), InvalidArgumentError),
    (lambda db: db.update([0, 0], metadata=[{}, {}]), InvalidArgumentError),
    (lambda db: db.update([0, "a"], metadata=[{}, {}]), InvalidArgumentError),
    (lambda db: db.update([0, 1], metadata={"a": 1}), InvalidArgumentError),
    (lambda db: db.update([0, 1], metadata=[{"a": 1}]), InvalidArgumentError),
    (lambda db: db.update([0, 1], metadata=[{"a": 1}, {"b": {1, 2}}]), InvalidArgumentError),
    (lambda db: db.update([0, 99], metadata=[{"a": 1}, {}]), NotFoundError),
    (lambda db: db.update([0, 1], keys=["z", "c"]), DuplicateKeyError),
    (lambda db: db.update([0, 1], keys=["z", "z"]), DuplicateKeyError),
    (lambda db: db.update([0, 1], vectors=randv(3)), DimensionError),
    (lambda db: db.update([0, 1], vectors=randv(2, d=3)), DimensionError),
    (lambda db: db.update([0, 1], texts=["x", 1]), InvalidArgumentError),
])
def test_batch_update_errors_are_atomic(sutra_db, call, err):
    db = sutra_db
    db.add_vectors(randv(3), keys=["a", "b", "c"], metadata=[{"v": i} for i in range(3)])
    before = snapshot(db)
    with pytest.raises(err):
        call(db)
    assert snapshot(db) == before


def test_batch_update_swaps_keys(sutra_db):
    db = sutra_db
    db.add_vectors(randv(2), keys=["a", "b"])
    db.update([0, 1], keys=["b", "a"])
    assert db.get("a").id == 1 and db.get("b").id == 0


def test_update_read_only(tmp_path):
    p = tmp_path / "r.sutra"
    db = sutradb.open(p, dim=8)
    db.add_vectors(randv(2), keys=["a", "b"])
    db.close()
    ro = sutradb.open(p, "r")
    with pytest.raises(ReadOnlyError):
        ro.update([0, 1], metadata=[{}, {}])
    with pytest.raises(ReadOnlyError):
        ro.upsert(randv(1), keys=["a"])
    with pytest.raises(ReadOnlyError):
        ro.delete(where={})
    ro.close()


# ---------------------------------------------------------------------- delete(where)

def test_delete_where(sutra_db):
    db = sutra_db
    db.add_vectors(randv(10), metadata=[{"n": i % 3, "tag": "x" if i < 5 else "y"}
                                        for i in range(10)])
    db.link(0, 1, "r")
    db.link(3, 4, "r")
    db.link(4, 5, "r")
    assert db.delete(where={"n": 0}) == 4                        # 0, 3, 6, 9
    assert sorted(db.ids().tolist()) == [1, 2, 4, 5, 7, 8]
    assert db.links() == [(4, 5, "r", 1.0)]
    assert db.delete(where={"n": 0}) == 0
    assert db.delete([1, 2, 4], where={"tag": "x"}) == 3
    assert db.delete([5, 7], where={"tag": "x"}) == 0 and len(db) == 3
    assert db.delete(where={}) == 3 and len(db) == 0
    with pytest.raises(InvalidArgumentError):
        db.delete()


def test_delete_where_in_a_transaction(sutra_db):
    db = sutra_db
    db.add_vectors(randv(4), metadata=[{"n": i} for i in range(4)])
    with db.transaction():
        assert db.delete(where={"n": {"$lt": 2}}) == 2
        assert len(db) == 4                    # reads see the committed state
    assert sorted(db.ids().tolist()) == [2, 3]
    with pytest.raises(InvalidArgumentError):
        with db.transaction():
            db.add_vectors(randv(1), metadata=[{"n": 0}])
            db.delete(where={"n": 0})
    assert len(db) == 2


def test_delete_bad_filter_deletes_nothing(sutra_db):
    db = sutra_db
    db.add_vectors(randv(4), metadata=[{"n": i} for i in range(4)])
    with pytest.raises(InvalidArgumentError):
        db.delete(where={"n": {"$bogus": 1}})
    assert len(db) == 4


# --------------------------------------------------------------------------- listing

MD = [{"n": i % 7, "s": f"s{(i * 5) % 11:02d}", "tag": ["a", "b", "c"][i % 3],
       **({"opt": i} if i % 4 == 0 else {})} for i in range(60)]


@pytest.fixture
def listed(sutra_db):
    db = sutra_db
    keys = [None if i % 5 == 0 else f"k{(i * 13) % 60:02d}" for i in range(60)]
    db.add_vectors(randv(60), metadata=MD, keys=keys, texts=[f"t{i}" for i in range(60)])
    db.delete([7, 8, 30])
    return db


def oracle(db_ids, where_fn, key_fn=None, desc=False):
    ids = [i for i in db_ids if where_fn(MD[i])]
    if key_fn is None:
        return sorted(ids, reverse=desc)
    has = sorted([i for i in ids if key_fn(i) is not None])
    has.sort(key=key_fn, reverse=desc)
    return has + sorted(i for i in ids if key_fn(i) is None)


@pytest.mark.parametrize("where, fn", [
    (None, lambda m: True),
    ({}, lambda m: True),
    ({"n": 3}, lambda m: m["n"] == 3),
    ({"n": {"$gte": 2, "$lt": 5}}, lambda m: 2 <= m["n"] < 5),
    ({"tag": {"$in": ["a", "c"]}}, lambda m: m["tag"] in ("a", "c")),
    ({"$or": [{"n": 0}, {"tag": "b"}]}, lambda m: m["n"] == 0 or m["tag"] == "b"),
    ({"n": 99}, lambda m: False),
])
def test_find_and_count_match_oracle(listed, where, fn):
    db = listed
    live = sorted(db.ids().tolist())
    want = oracle(live, fn)
    assert db.find_ids(where).tolist() == want
    assert db.count(where) == len(want)
    got = db.find(where)
    assert [c.id for c in got] == want
    for c in got:
        assert c.metadata == MD[c.id] and c.text == f"t{c.id}"
    assert [c.id for c in db.find_iter(where, batch_size=7)] == want


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # listed is only read
@given(limit=st.one_of(st.none(), st.integers(0, 70)), offset=st.integers(0, 70),
       order=st.sampled_from(["id", "-id", "key", "-key", "metadata.n", "-metadata.s",
                              "metadata.opt", "-metadata.opt"]))
def test_paging_and_order_match_oracle(listed, limit, offset, order):
    db = listed
    live = sorted(db.ids().tolist())
    desc = order.startswith("-")
    field = order.lstrip("-")
    if field == "id":
        key_fn = None
    elif field == "key":
        key_fn = lambda i: db.get(i).key            # noqa: E731
    else:
        f = field.split(".", 1)[1]
        key_fn = lambda i: MD[i].get(f)               # noqa: E731
    want = oracle(live, lambda m: m["n"] != 1, key_fn, desc)
    stop = None if limit is None else offset + limit
    got = db.find_ids({"n": {"$ne": 1}}, limit=limit, offset=offset, order_by=order)
    assert got.tolist() == want[offset:stop]
    assert [c.id for c in db.find({"n": {"$ne": 1}}, limit=limit, offset=offset,
                                  order_by=order)] == want[offset:stop]
    assert [c.id for c in db.find_iter({"n": {"$ne": 1}}, order_by=order,
                                       batch_size=9)] == want


def test_order_by_nested_path_and_mixed_types(sutra_db):
    db = sutra_db
    mds = [{"src": {"rank": 3}}, {"src": {"rank": "b"}}, {"src": {}}, {"src": {"rank": 1.5}},
           {"src": {"rank": "a"}}, {"other": 1}, {"src": {"rank": [1]}}]
    db.add_vectors(randv(len(mds)), metadata=mds)
    # numbers, then strings, then other values; missing last
    assert db.find_ids(order_by="metadata.src.rank").tolist() == [3, 0, 4, 1, 6, 2, 5]
    assert db.find_ids(order_by="-metadata.src.rank").tolist()[:4] == [6, 1, 4, 0]
    assert db.find_ids(order_by="-metadata.src.rank").tolist()[-2:] == [2, 5]


@pytest.mark.parametrize("kw", [
    dict(limit=-1), dict(offset=-1), dict(limit=1.5), dict(offset="2"),
    dict(order_by="colour"), dict(order_by="metadata."), dict(order_by=3),
    dict(where={"n": {"$nope": 1}}), dict(where="n=1"),
])
def test_listing_bad_arguments(listed, kw):
    with pytest.raises(InvalidArgumentError):
        listed.find_ids(**kw)
    with pytest.raises(InvalidArgumentError):
        listed.find(**kw)


def test_find_iter_sees_deletes_and_updates_between_pages(listed):
    db = listed
    it = db.find_iter({"tag": "a"}, batch_size=3)
    first = [next(it) for _ in range(3)]
    ids = db.find_ids({"tag": "a"}).tolist()
    assert [c.id for c in first] == ids[:3]
    db.delete(ids[5])
    db.update(ids[6], metadata={"tag": "changed"})
    rest = list(it)
    assert [c.id for c in rest] == [i for i in ids[3:] if i != ids[5]]
    assert next(c for c in rest if c.id == ids[6]).metadata == {"tag": "changed"}
    with pytest.raises(InvalidArgumentError):
        db.find_iter(batch_size=0)


def test_find_returns_copies(listed):
    db = listed
    c = db.find({"n": 2}, limit=1)[0]
    c.metadata["n"] = 1000
    assert db.get(c.id).metadata["n"] == 2


def test_listing_on_a_closed_database(tmp_path):
    db = sutradb.open(tmp_path / "c.sutra", dim=8)
    db.add_vectors(randv(3))
    it = db.find_iter(batch_size=1)
    next(it)
    db.close()
    for call in (db.find, db.find_ids, db.count):
        with pytest.raises(SutraError):
            call()
    with pytest.raises(SutraError):
        list(it)
