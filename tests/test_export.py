"""Export and import (Database.export, sutradb.from_export): an equal database back."""

import io
import json
import os

import numpy as np
import pytest

import sutradb
from sutradb.demo import load_sample
from sutradb.errors import DatabaseExistsError, InvalidArgumentError, MissingDependencyError

from exchange_helpers import ZOO, same

FORMATS = ["parquet", "jsonl", "jsonl-file", "stream"]


class Embedder:
    """A stand-in embedder: its name is stored, it is never loaded on import."""
    name = "test:fixed"
    dim = 8

    def __call__(self, texts):
        return np.ones((len(texts), 8), np.float32)


def export_import(db, tmp_path, fmt, name="copy"):
    """Export ``db`` in ``fmt`` and import it into a new database at tmp_path/name."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    dest = tmp_path / name
    if fmt == "stream":
        buf = io.StringIO()
        db.export(buf)
        buf.seek(0)
        return sutradb.from_export(buf, dest)
    src = tmp_path / f"export-{name}" if fmt in ("parquet", "jsonl") else tmp_path / f"{name}.jsonl"
    db.export(src, format=None if fmt == "jsonl-file" else fmt)
    return sutradb.from_export(src, dest)


def assert_equal_databases(a, b, queries=None, **search):
    assert a.ids().tolist() == b.ids().tolist()
    assert (a.dim, a.metric, a.embedder_name) == (b.dim, b.metric, b.embedder_name)
    for i in a.ids().tolist():
        x, y = a.get(i), b.get(i)
        assert (x.id, x.key, x.text) == (y.id, y.key, y.text)
        assert same(x.metadata, y.metadata), (x.metadata, y.metadata)
        if x.vector is None:
            assert y.vector is None
        else:
            assert x.vector.dtype == y.vector.dtype and x.vector.tobytes() == y.vector.tobytes()
    assert a.links() == b.links()
    assert a._meta["next_id"] == b._meta["next_id"]
    assert a.index_info["kind"] == b.index_info["kind"]
    if queries is not None:
        D1, I1 = a.search_vectors(queries, k=10, **search)
        D2, I2 = b.search_vectors(queries, k=10, **search)
        assert np.array_equal(I1, I2) and np.array_equal(D1, D2)
    b.verify()


def small_db(path):
    """Every kind of value: nested metadata, None texts, keys, deleted ids (gaps),
    updated concepts (out of id order in storage), links, an embedder spec."""
    rng = np.random.default_rng(3)
    db = sutradb.open(path, embedder=Embedder())
    n = 60
    V = rng.standard_normal((n, 8)).astype(np.float32)
    mds = [dict(ZOO[i % len(ZOO)], i=i) if i % 7 else None for i in range(n)]
    db.add_vectors(V, texts=[None if i % 5 == 0 else f"t{i}" for i in range(n)],
                   metadata=mds, keys=[f"k{i}" if i % 3 else None for i in range(n)])
    db.delete([0, 13, 14, 15, 59])
    db.update(7, text="changed", metadata={"new": [1, 2.5, "x"]})
    db.update(8, vector=rng.standard_normal(8).astype(np.float32), key="renamed")
    # a text and a field that look like a JSONL line's end
    db.update(3, text='ends like a line: "vector": [1, 2]}', metadata={"vector": [1, "x"]})
    for a, b, rel, w in [(1, 2, "is_a", 1.0), (2, 1, "is_a", 0.25), (1, 7, "near", -3.5),
                         (40, 41, "next", 2.0)]:
        db.link(a, b, rel, weight=w)
    db.delete([41])                                   # and its link
    return db, rng.standard_normal((20, 8)).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_equal_database(tmp_path, fmt):
    db, Q = small_db(tmp_path / "src")
    with export_import(db, tmp_path, fmt) as copy:
        assert_equal_databases(db, copy, Q)
        assert_equal_databases(db, copy, Q, exact=True)
        hits1 = [(h.id, h.distance) for h in db.search(Q[0], k=5, where={"n": 1})]
        hits2 = [(h.id, h.distance) for h in copy.search(Q[0], k=5, where={"n": 1})]
        assert hits1 == hits2 and hits1
        # the embedder spec is stored, not loaded
        assert copy._embedder is None and copy.embedder_name == "test:fixed"
        # ids go on where the original's would (59 was given out, then deleted)
        v = np.ones((1, 8), np.float32)
        assert copy.add_vectors(v).tolist() == db.add_vectors(v).tolist() == [60]
    db.close()


def test_round_trip_of_an_empty_database(tmp_path):
    with sutradb.open(tmp_path / "src", dim=4, metric="l2", vector_dtype="float32") as db:
        for fmt in FORMATS:
            with export_import(db, tmp_path, fmt, name=f"copy-{fmt}") as copy:
                assert len(copy) == 0 and copy.dim == 4 and copy.metric == "l2"
                assert copy._meta["vector_dtype"] == "float32"


@pytest.fixture(scope="module")
def sample():
    base, texts, queries, qtexts, gt = load_sample()
    return base.astype(np.float32), texts, queries[:40].astype(np.float32)


def indexed_db(path, sample, kind):
    """A trained database: PQ or IVF-PQ lists (with a tail of rows added since and an
    updated row), or one that keeps only codes."""
    base, texts, _ = sample
    if kind == "codes":
        db = sutradb.open(path, dim=384, vector_dtype=None, seed=1)
        db.add_vectors(base[:1500], texts=texts[:1500], metadata=[{"i": i} for i in range(1500)])
        db.delete(list(range(0, 1500, 11)))
        return db
    db = sutradb.open(path, dim=384, index="pq", seed=1)
    db.add_vectors(base[:1800], texts=texts[:1800], metadata=[{"i": i} for i in range(1800)])
    db.delete(list(range(0, 1800, 13)))
    db.build_index(kind=kind, **({"nlist": 16} if kind == "ivf" else {}))
    db.update(5, vector=base[1900])
    db.add_vectors(base[1800:], texts=texts[1800:])          # the tail
    db.link(1, 2, "near")
    return db


@pytest.mark.parametrize("kind", ["pq", "ivf", "codes"])
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_round_trip_keeps_the_index(tmp_path, sample, kind, fmt):
    db = indexed_db(tmp_path / "src", sample, kind)
    Q = sample[2]
    info = db.index_info
    assert info["kind"] == ("pq" if kind == "codes" else kind)
    with export_import(db, tmp_path, fmt) as copy:
        assert_equal_databases(db, copy, Q)
        assert_equal_databases(db, copy, Q, rerank=0)
        if kind == "ivf":
            assert_equal_databases(db, copy, Q, nprobe=2)
            got = copy.index_info
            for k in ("nlist", "nprobe", "rerank", "tail_rows", "m", "nbits", "seed"):
                assert got[k] == info[k], k
        # the same codes and quantizer, not a retrained one
        assert np.array_equal(copy._store.codes, db._store.codes[np.flatnonzero(db._store.live)])
    db.close()


def test_export_refuses_to_overwrite_and_import_to_existing(tmp_path):
    db, _ = small_db(tmp_path / "src")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not an empty directory"):
        db.export(tmp_path / "full", format="jsonl")
    (tmp_path / "empty").mkdir()
    db.export(tmp_path / "empty", format="jsonl")            # an empty directory is fine
    with pytest.raises(InvalidArgumentError, match="a directory"):
        db.export(tmp_path / "x.jsonl", format="parquet")
    with pytest.raises(DatabaseExistsError):
        sutradb.from_export(tmp_path / "empty", tmp_path / "src")
    with pytest.raises(InvalidArgumentError, match="stored options"):
        sutradb.from_export(tmp_path / "empty", tmp_path / "new", vector_dtype="float32")
    assert not (tmp_path / "new").exists()
    db.close()


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    db, _ = small_db(tmp_path / "db" / "src")
    before = sorted(os.listdir(tmp_path))

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(type(db), "_write_concept_lines", fail)
    for out in (tmp_path / "dir", tmp_path / "one.jsonl"):
        with pytest.raises(OSError, match="disk full"):
            db.export(out, format="jsonl")
        assert sorted(os.listdir(tmp_path)) == before
    db.close()


def damage(tmp_path, fmt, how):
    db, _ = small_db(tmp_path / "src")
    out = tmp_path / "exp"
    db.export(out, format=fmt)
    db.close()
    man = json.loads((out / "manifest.json").read_text())
    if how == "manifest":
        man["format"] = "something"
        (out / "manifest.json").write_text(json.dumps(man))
    elif how == "count":
        man["concepts"] += 1
        (out / "manifest.json").write_text(json.dumps(man))
    elif how == "link":
        p = out / "links.jsonl"
        p.write_text(p.read_text() + json.dumps({"source": 1, "target": 999, "relation": "x",
                                                 "weight": 1}) + "\n")
    elif how == "line":
        p = out / "concepts.jsonl"
        lines = p.read_text().splitlines()
        lines[3] = lines[3][:-5]
        p.write_text("\n".join(lines) + "\n")
    elif how == "id":
        p = out / "concepts.jsonl"
        lines = p.read_text().splitlines()
        d = json.loads(lines[4])
        d["id"] = json.loads(lines[2])["id"]
        lines[4] = json.dumps(d)
        p.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize("how, match", [
    ("manifest", "not a sutradb export"), ("count", "the manifest says"),
    ("link", "names id 999"), ("line", r"concepts.jsonl:4: not JSON"),
    ("id", "given twice"),
])
def test_a_damaged_export_imports_nothing(tmp_path, how, match):
    out = damage(tmp_path, "jsonl", how)
    with pytest.raises(InvalidArgumentError, match=match):
        sutradb.from_export(out, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_from_export_into_memory_and_errors(tmp_path):
    db, Q = small_db(tmp_path / "src")
    db.export(tmp_path / "e.jsonl")
    with sutradb.from_export(tmp_path / "e.jsonl", ":memory:") as copy:
        assert_equal_databases(db, copy, Q)
    with pytest.raises(FileNotFoundError):
        sutradb.from_export(tmp_path / "nothing", tmp_path / "d")
    (tmp_path / "plain.jsonl").write_text('{"id": 0}\n')
    with pytest.raises(InvalidArgumentError, match="not a sutradb export"):
        sutradb.from_export(tmp_path / "plain.jsonl", tmp_path / "d")
    db.close()


def test_parquet_export_needs_pyarrow(tmp_path, monkeypatch):
    import sys
    db, _ = small_db(tmp_path / "src")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError):
        db.export(tmp_path / "p")
    assert not os.path.exists(tmp_path / "p")
    db.export(tmp_path / "j", format="jsonl")                # JSONL needs nothing
    db.close()


def test_the_parquet_export_is_a_plain_table(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    db, _ = small_db(tmp_path / "src")
    db.export(tmp_path / "p")
    t = pq.read_table(tmp_path / "p" / "concepts.parquet")
    # storage order: the updated concepts 7, 8 and 3 last
    assert t.column("id").to_pylist() == db.to_arrow(["id"], order_by=None)["id"].to_pylist()
    assert t.column("id").to_pylist()[-3:] == [7, 8, 3]
    assert str(t.schema.field("vector").type).startswith("fixed_size_list")
    assert t.schema.field("i").type == "int64"
    links = pq.read_table(tmp_path / "p" / "links.parquet").to_pylist()
    assert {(r["source"], r["target"], r["relation"], r["weight"]) for r in links} == \
        set(db.links())
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert man["embedder"] == {"name": "test:fixed", "dim": 8}
    assert man["options"]["vector_dtype"] == "float16" and man["concepts"] == len(db)
    db.close()
