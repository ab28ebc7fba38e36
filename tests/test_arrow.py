"""Arrow and pandas in and out: Database.to_arrow / to_pandas / add_arrow."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sutradb
from sutradb import testing as st_sutra
from sutradb.errors import (DimensionError, DuplicateKeyError, EmbedderError,
                            InvalidArgumentError, MissingDependencyError)

pa = pytest.importorskip("pyarrow")

from sutradb.database.arrowcols import FIELD_KEY, metadata_plan, vector_array  # noqa: E402

from exchange_helpers import ZOO, same  # noqa: E402


def assert_same_concepts(db1, db2, ids1=None, ids2=None):
    ids1 = db1.ids().tolist() if ids1 is None else list(ids1)
    ids2 = db2.ids().tolist() if ids2 is None else list(ids2)
    assert len(ids1) == len(ids2)
    for i, j in zip(ids1, ids2):
        a, b = db1.get(i), db2.get(j)
        assert (a.key, a.text) == (b.key, b.text), (a, b)
        assert same(a.metadata, b.metadata), (a.metadata, b.metadata)
        if a.vector is not None:
            assert a.vector.dtype == b.vector.dtype
            assert a.vector.tobytes() == b.vector.tobytes()



def zoo_db(n=40, dim=6, **kw):
    rng = np.random.default_rng(1)
    db = sutradb.open(":memory:", dim=dim, **kw)
    V = rng.standard_normal((n, dim)).astype(np.float32)
    mds = [ZOO[i % len(ZOO)] if i % 9 else None for i in range(n)]
    mds = [dict(m, i=i) if m is not None else None for i, m in enumerate(mds)]
    for m in mds:
        if m is not None and "always" not in m:
            m["always"] = None          # every concept has "always" -> stays typed
    db.add_vectors(V, texts=[None if i % 4 == 0 else f"text {i}" for i in range(n)],
                   metadata=mds, keys=[None if i % 3 == 0 else f"k{i}" for i in range(n)])
    return db


# ----------------------------------------------------------------------------- out

def test_to_arrow_schema_and_values():
    db = zoo_db()
    t = db.to_arrow()
    f = t.schema.field
    assert t.column_names[:4] == ["id", "key", "text", "vector"]
    assert f("id").type == pa.int64() and not f("id").nullable
    assert f("vector").type == pa.list_(pa.float16(), 6)
    assert f("i").type == pa.int64()
    assert f("f").type == pa.float64()
    assert f("s").type == pa.string() and f("b").type == pa.bool_()
    assert f("tags").type == pa.list_(pa.string())
    assert f("raw").type == pa.binary()
    assert f("n").type == pa.int64()
    # mixed, nested: JSON text; nested bytes: msgpack; beyond int64: JSON
    for name, enc in (("mixed", "json"), ("nested", "json"), ("deep_raw", "msgpack"),
                      ("big", "json")):
        assert f(name).metadata[FIELD_KEY].decode().find(f'"encoding": "{enc}"') > 0, name
    # some concepts lack "always", some have it None: JSON ("null" is None, null absent)
    assert f("always").type == pa.string()
    col = t.column("always").to_pylist()
    assert col[0] is None and col[1] == "3" and col[3] == "null"
    # every concept has it, some None: typed, null means None
    t2 = sutradb.open(":memory:", dim=1)
    t2.add_vectors(np.ones((2, 1), np.float32), metadata=[{"a": 1}, {"a": None}])
    f2 = t2.to_arrow().schema.field("a")
    assert f2.type == pa.int64() and b'"nulls": "none"' in f2.metadata[FIELD_KEY]
    # fields named like fixed columns are renamed, and say which field they hold
    assert "metadata.text" in t.column_names and "metadata.id" in t.column_names
    assert b'"field": "text"' in f("metadata.text").metadata[FIELD_KEY]
    assert t.num_rows == 40
    assert t.column("id").to_pylist() == list(range(40))
    assert t.column("text").to_pylist()[:3] == [None, "text 1", "text 2"]
    V = vector_array(t.column("vector"))
    assert np.array_equal(V, db.get_vectors(range(40)))


def test_to_arrow_columns_where_order_and_pages():
    db = zoo_db()
    t = db.to_arrow(["id", "s", "text"], where={"n": 2}, order_by="-id", limit=3, offset=1)
    assert t.column_names == ["id", "s", "text"]
    want = db.find_ids({"n": 2}, order_by="-id", limit=3, offset=1).tolist()
    assert t.column("id").to_pylist() == want
    assert set(t.column("s").to_pylist()) == {"é"}
    # a field no concept has: a column of nulls
    assert db.to_arrow(["id", "nope"]).column("nope").null_count == 40
    t32 = db.to_arrow(["vector"], vectors="float32")
    assert t32.schema.field("vector").type == pa.list_(pa.float32(), 6)
    assert np.array_equal(vector_array(t32.column(0)),
                          db.get_vectors(range(40)).astype(np.float32))
    assert "vector" not in db.to_arrow(vectors=None).column_names
    assert db.to_arrow(order_by=None)["id"].to_pylist() == db.find_ids(order_by="id").tolist()
    with pytest.raises(InvalidArgumentError):
        db.to_arrow(vectors="float64")
    with pytest.raises(InvalidArgumentError):
        db.to_arrow("id")
    with pytest.raises(InvalidArgumentError):
        db.to_arrow(["codes"])             # no quantizer
    with pytest.raises(InvalidArgumentError):
        db.to_arrow(limit=-1)
    empty = sutradb.open(":memory:", dim=3).to_arrow()
    assert empty.num_rows == 0 and empty.column_names == ["id", "key", "text", "vector"]


def test_to_arrow_vectors_are_a_view_of_the_stored_ones(tmp_path):
    path = tmp_path / "db"
    with sutradb.open(path, dim=8) as db:
        db.add_vectors(np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32))
        db.delete([100])
    with sutradb.open(path, "r") as db:
        stored = db._store.vectors
        t = db.to_arrow(["id", "vector"])
        col = t.column("vector")
        # rows 0..99 and 101..299 in one batch: gathered (a copy); one run: a view
        t1 = db.to_arrow(["vector"], limit=100)
        assert np.shares_memory(vector_array(t1.column(0)), stored)
        assert not np.shares_memory(vector_array(col), stored)
        assert np.array_equal(vector_array(col), stored[np.flatnonzero(db._store.live)])
    # the table keeps the mapped array alive after the database is closed
    assert float(vector_array(t1.column(0))[0, 0]) == float(stored[0, 0])


def test_vector_array_is_zero_copy_for_fixed_size_lists():
    V = np.arange(24, dtype=np.float16).reshape(6, 4)
    col = pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), 4)
    got = vector_array(col)
    assert got.shape == (6, 4) and np.shares_memory(got, V)
    sl = vector_array(col.slice(2, 3))
    assert np.array_equal(sl, V[2:5]) and np.shares_memory(sl, V)
    assert np.array_equal(vector_array(pa.chunked_array([col])), V)
    lists = pa.array([[1.0, 2.0], [3.0, 4.0]])
    assert np.array_equal(vector_array(lists), [[1, 2], [3, 4]])
    with pytest.raises(DimensionError, match="row 1"):
        vector_array(pa.array([[1.0, 2.0], [3.0]]), "emb")
    with pytest.raises(InvalidArgumentError, match="null vector at row 1"):
        vector_array(pa.array([[1.0, 2.0], None], pa.list_(pa.float32(), 2)))
    with pytest.raises(InvalidArgumentError, match="null component"):
        vector_array(pa.array([[1.0, None]], pa.list_(pa.float32(), 2)))
    with pytest.raises(InvalidArgumentError, match="must hold vectors"):
        vector_array(pa.array(["a"]))


# ----------------------------------------------------------------------------- round trips

def test_round_trip_new_ids_and_kept_ids():
    db = zoo_db()
    db.delete([3, 4, 17])
    t = db.to_arrow()
    db2 = sutradb.open(":memory:", dim=6)
    ids = db2.add_arrow(t)
    assert ids.tolist() == list(range(37))
    assert_same_concepts(db, db2, db.ids(), ids)
    db3 = sutradb.open(":memory:", dim=6)
    assert db3.add_arrow(t, id="id").tolist() == db.ids().tolist()
    assert_same_concepts(db, db3)
    # new ids go on after the largest
    assert db3.add_vectors(np.ones((1, 6), np.float32)).tolist() == [40]


def test_round_trip_through_parquet_and_batches(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    db = zoo_db(n=50)
    pq.write_table(db.to_arrow(), tmp_path / "c.parquet", row_group_size=7)
    reader = pq.ParquetFile(tmp_path / "c.parquet")
    db2 = sutradb.open(":memory:", dim=6)
    db2.add_arrow(pa.RecordBatchReader.from_batches(reader.schema_arrow,
                                                    reader.iter_batches(batch_size=9)),
                  id="id")
    assert_same_concepts(db, db2)


@settings(max_examples=40)
@given(st.lists(st.one_of(st.none(), st_sutra.metadata(max_size=5)), min_size=1, max_size=12))
def test_any_metadata_comes_back_exactly(mds):
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((len(mds), 2), np.float32), metadata=mds)
    db2 = sutradb.open(":memory:", dim=2)
    db2.add_arrow(db.to_arrow())
    for i in range(len(mds)):
        assert same(db.get(i).metadata, db2.get(i).metadata), (db.get(i).metadata,
                                                              db2.get(i).metadata)


def test_metadata_plan_kinds():
    plan = {p.field: (p.kind, p.nulls) for p in metadata_plan(
        [{"a": 1, "b": None, "c": [1], "d": None}, {"a": 2, "b": 1, "c": [], "e": [[1]]},
         {"b": 2, "d": None}], 3)}
    assert plan == {"a": ("int", "absent"), "b": ("int", "none"), "c": ("list<int>", "absent"),
                    "d": ("json", "absent"), "e": ("json", "absent")}


# ----------------------------------------------------------------------------- in

def test_add_arrow_columns_and_defaults():
    V = np.eye(3, dtype=np.float32)
    t = pa.table({"emb": pa.FixedSizeListArray.from_arrays(V.reshape(-1), 3),
                  "body": ["a", None, "c"], "year": [2001, None, 2003],
                  "id": ["x", "y", "z"], "tag": ["p", "q", "r"]})
    db = sutradb.open(":memory:", dim=3)
    ids = db.add_arrow(t, vector="emb", text="body", key="tag")
    assert ids.tolist() == [0, 1, 2]
    c = db.get("q")
    assert c.text is None and c.metadata == {} and db.get(2).metadata == {"year": 2003}
    # a column named "id" is not metadata unless listed
    db.add_arrow(t, vector="emb", metadata=["id", "year"])
    assert db.get(3).metadata == {"id": "x", "year": 2001} and db.get(3).text is None
    db.add_arrow(t, vector="emb", metadata=None)
    assert db.get(6).metadata == {}


def test_add_arrow_list_vectors_and_float64():
    t = pa.table({"vector": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float64())),
                  "key": ["a", "b"]})
    db = sutradb.open(":memory:")
    db.add_arrow(t)
    assert db.dim == 2 and db.get("b").vector.tolist() == [0.0, 1.0]

    class Stream:               # Polars, DuckDB...: the Arrow C stream interface
        def __arrow_c_stream__(self, requested_schema=None):
            return t.__arrow_c_stream__(requested_schema)

    if hasattr(pa.RecordBatchReader, "from_stream"):
        assert db.add_arrow(Stream(), key=None).tolist() == [2, 3]
    big = pa.table({"vector": [[1.0, 2.0]], "id": pa.array([2 ** 63 - 1], pa.int64())})
    with pytest.raises(InvalidArgumentError, match="no id after"):
        db.add_arrow(big, id="id")


def test_add_arrow_pandas():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"text": ["a", "b", "c"],
                       "vector": [np.array([1, 0], np.float32), np.array([0, 1], np.float32),
                                  np.array([1, 1], np.float32)],
                       "score": [0.5, np.nan, 1.5], "n": [1, 2, 3]}, index=[10, 11, 12])
    db = sutradb.open(":memory:", dim=2)
    assert db.add_arrow(df).tolist() == [0, 1, 2]
    assert db.get(1).metadata == {"n": 2}              # NaN: no value
    assert same(db.get(2).metadata, {"score": 1.5, "n": 3})
    out = db.to_pandas()
    assert out["id"].tolist() == [0, 1, 2] and out["text"].tolist() == ["a", "b", "c"]
    assert out["n"].dtype == np.int64
    assert np.array_equal(np.stack(out["vector"]), db.get_vectors([0, 1, 2]))
    nn = db.to_pandas(dtype_backend="numpy_nullable")
    assert str(nn["score"].dtype) == "Float64"
    assert nn["score"].isna().tolist() == [False, True, False]
    pa_df = db.to_pandas(["id", "n"], dtype_backend="pyarrow")
    assert str(pa_df["n"].dtype) == "int64[pyarrow]"
    with pytest.raises(InvalidArgumentError):
        db.to_pandas(dtype_backend="numpy")
    # a DataFrame round trip keeps the exact metadata too
    db2 = sutradb.open(":memory:", dim=2)
    db2.add_arrow(zoo_db(dim=2).to_pandas())
    assert_same_concepts(zoo_db(dim=2), db2)


class Embedder:
    name = "test:hash"
    dim = 4

    def __call__(self, texts):
        out = np.zeros((len(texts), 4), np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 1.0
            out[i, (len(t) + 1) % 4] = 0.5
        return out


def test_add_arrow_embeds_texts_without_a_vector_column():
    db = sutradb.open(":memory:", embedder=Embedder())
    t = pa.table({"text": ["a", "bb", "ccc"], "src": ["x", "y", "z"]})
    ids = db.add_arrow(t, batch_size=2)
    assert ids.tolist() == [0, 1, 2] and db.get(2).metadata == {"src": "z"}
    assert np.array_equal(db.get(1).vector.astype(np.float32), Embedder()(["bb"])[0])
    with pytest.raises(InvalidArgumentError, match="'text' is null at row 1"):
        db.add_arrow(pa.table({"text": ["a", None]}))
    with pytest.raises(EmbedderError):
        sutradb.open(":memory:").add_arrow(t)
    with pytest.raises(InvalidArgumentError, match="vector column or a text column"):
        db.add_arrow(pa.table({"x": [1]}))
    assert len(db) == 3


@pytest.mark.parametrize("table, kw, err, match", [
    (lambda: pa.table({"vector": [[1.0, 2.0]]}), {"text": "body"}, InvalidArgumentError,
     "text='body': no such column"),
    (lambda: pa.table({"vector": [[1.0, 2.0]], "text": [5]}), {}, InvalidArgumentError,
     "column 'text' must hold strings"),
    (lambda: pa.table({"vector": [[1.0, 2.0, 3.0]]}), {}, DimensionError,
     "column 'vector' have dimension 3"),
    (lambda: pa.table({"vector": pa.array([[1.0, 2.0], None])}), {}, InvalidArgumentError,
     "null vector at row 1"),
    (lambda: pa.table({"vector": [[1.0, float("nan")]]}), {}, InvalidArgumentError, "NaN"),
    (lambda: pa.table({"vector": [[1.0, 2.0]], "id": [0]}), {"id": "id"},
     InvalidArgumentError, "below 2"),
    (lambda: pa.table({"vector": [[1.0, 2.0]] * 2, "id": [5, 5]}), {"id": "id"},
     DuplicateKeyError, "id 5 is given twice"),
    (lambda: pa.table({"vector": [[1.0, 2.0]], "id": ["5"]}), {"id": "id"},
     InvalidArgumentError, "must hold integers"),
    (lambda: pa.table({"vector": [[1.0, 2.0]], "when": pa.array([0], pa.timestamp("s"))}), {},
     InvalidArgumentError, "'when' has type timestamp"),
    (lambda: pa.table({"vector": [[1.0, 2.0]], "key": ["a"]}), {}, DuplicateKeyError, "'a'"),
    (lambda: pa.table({"vector": [[1.0, 2.0]]}), {"metadata": "all"}, InvalidArgumentError,
     "metadata="),
    (lambda: pa.table({"vector": [[1.0, 2.0]]}), {"metadata": ["nope"]}, InvalidArgumentError,
     "'nope': no such column"),
    (lambda: pa.table({"v": [[1.0, 2.0]]}), {"vector": "v", "text": "v"}, InvalidArgumentError,
     "two roles"),
    (lambda: [1, 2], {}, InvalidArgumentError, "takes a pyarrow Table"),
])
def test_add_arrow_rejects_bad_input_and_adds_nothing(table, kw, err, match):
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((2, 2), np.float32), keys=["a", None])
    with pytest.raises(err, match=match):
        db.add_arrow(table(), **kw)
    assert len(db) == 2 and db.add_vectors(np.ones((1, 2), np.float32)).tolist() == [2]


def test_add_arrow_is_all_or_nothing_across_batches():
    db = sutradb.open(":memory:", dim=2)
    good = pa.record_batch({"vector": pa.array([[1.0, 0.0]] * 5, pa.list_(pa.float32(), 2)),
                            "key": [f"k{i}" for i in range(5)]})
    bad = pa.record_batch({"vector": pa.array([[1.0, 0.0]] * 2, pa.list_(pa.float32(), 2)),
                           "key": ["x", "k3"]})             # k3 is in the first batch
    reader = pa.RecordBatchReader.from_batches(good.schema, [good, good.slice(0, 0), bad])
    with pytest.raises(DuplicateKeyError):
        db.add_arrow(reader)
    assert len(db) == 0 and "k0" not in db
    # inside a transaction the call is a savepoint: its rollback leaves the rest
    with db.transaction():
        db.add_vectors(np.ones((1, 2), np.float32), keys=["first"])
        with pytest.raises(DuplicateKeyError):
            db.add_arrow(pa.RecordBatchReader.from_batches(good.schema, [good, bad]))
        db.add_arrow(good)
    assert len(db) == 6 and db.get("k4").id == 5


def test_missing_pyarrow_is_a_clear_error(monkeypatch):
    db = sutradb.open(":memory:", dim=2)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"sutradb\[arrow\]") as e:
        db.to_arrow()
    assert isinstance(e.value, ImportError)
    with pytest.raises(MissingDependencyError):
        db.add_arrow(object())
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependencyError, match="pandas"):
        db.to_pandas()
