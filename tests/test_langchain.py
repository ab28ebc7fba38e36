"""sutradb.integrations.langchain: LangChain's standard vector store suite (unmodified,
on disk and in memory), then persistence, filters, MMR, scores, ids and errors.

Skipped when langchain-core or langchain-tests is not installed (the test extra
installs them). Offline: the embeddings are LangChain's deterministic fakes or the
table embeddings below.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

import sutradb
from sutradb.errors import (
    ClosedError,
    DimensionError,
    DuplicateKeyError,
    EmbedderError,
    InvalidArgumentError,
    ReadOnlyError,
)
from sutradb.integrations.langchain import SutraVectorStore


class TestSutraVectorStoreStandard(VectorStoreIntegrationTests):
    """LangChain's standard suite, sync and async, as it ships."""

    @pytest.fixture(params=["disk", "memory"])
    def vectorstore(self, request: pytest.FixtureRequest, tmp_path) -> Iterator[VectorStore]:
        """An empty store: a new database directory under tmp_path, or ":memory:"."""
        path = tmp_path / "store" if request.param == "disk" else ":memory:"
        store = SutraVectorStore(path, self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


# ----------------------------------------------------------------------------- helpers

class TableEmbeddings(Embeddings):
    """Embeddings looked up in a table (text -> vector), so tests choose the geometry;
    counts the calls."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.document_calls: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_calls.append(list(texts))
        return [list(self.table[t]) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return list(self.table[text])


def fake(size: int = 8) -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=size)


ANIMALS = [
    ("the cat sleeps", {"kind": "cat", "legs": 4, "year": 2001, "tags": ["pet", "small"]}),
    ("the dog barks", {"kind": "dog", "legs": 4, "year": 2005, "tags": ["pet"]}),
    ("the parrot talks", {"kind": "bird", "legs": 2, "year": 2010, "tags": ["pet", "loud"]}),
    ("the eagle flies", {"kind": "bird", "legs": 2, "year": 2015, "src": {"site": "zoo"}}),
    ("the snake hides", {"kind": "reptile", "legs": 0, "year": 2020}),
]


@pytest.fixture
def animals() -> Iterator[SutraVectorStore]:
    store = SutraVectorStore(":memory:", fake())
    store.add_texts([t for t, _ in ANIMALS], [m for _, m in ANIMALS],
                    ids=[t.split()[1] for t, _ in ANIMALS])
    yield store
    store.close()


def ids_of(docs: list[Document]) -> list[str | None]:
    return [d.id for d in docs]


# ----------------------------------------------------------------------------- persistence

def test_persistence_reopen_from_path(tmp_path):
    path = tmp_path / "kb"
    emb = fake()
    with SutraVectorStore.from_texts([t for t, _ in ANIMALS], emb,
                                     metadatas=[m for _, m in ANIMALS], path=path) as store:
        ids = [d.id for d in store.similarity_search("the cat sleeps", k=5)]
        store.add_documents([Document("the cow moos", metadata={"kind": "cow"}, id="cow")])
        store.delete([ids[-1]])
    assert store.database.closed
    with SutraVectorStore(path, emb) as again:
        assert len(again.database) == len(ANIMALS)
        top = again.similarity_search("the cat sleeps", k=1)[0]
        assert (top.id, top.page_content, top.metadata) == (ids[0], "the cat sleeps", ANIMALS[0][1])
        assert again.get_by_ids(["cow", ids[-1]]) == [
            Document("the cow moos", metadata={"kind": "cow"}, id="cow")]
        # a replacement after reopening still replaces (the key index is on disk)
        again.add_texts(["the cow sleeps"], ids=["cow"])
    with SutraVectorStore(path, emb, mode="r") as ro:
        assert ro.get_by_ids(["cow"])[0].page_content == "the cow sleeps"
        assert len(ro.database) == len(ANIMALS)
        with pytest.raises(ReadOnlyError):
            ro.add_texts(["more"])


def test_new_directory_takes_the_dimension_of_the_first_vectors(tmp_path):
    store = SutraVectorStore(tmp_path / "new", fake(12))
    assert store.database.dim is None            # nothing embedded to find it
    assert store.similarity_search("anything") == []
    store.add_texts(["one"])
    assert store.database.dim == 12
    store.close()
    other = SutraVectorStore(tmp_path / "new", fake(5))     # other embeddings, same database
    with pytest.raises(DimensionError):
        other.add_texts(["two"])
    other.close()


def test_an_open_database_is_used_and_left_open(tmp_path):
    db = sutradb.open(tmp_path / "db", metric="cosine")
    store = SutraVectorStore(db, fake())
    store.add_texts(["x", "y"], ids=["a", "b"])
    store.close()
    assert not db.closed and db.get("a").text == "x"
    with pytest.raises(InvalidArgumentError):
        SutraVectorStore(db, fake(), metric="l2")    # open options are for a path
    db.close()
    with pytest.raises(ClosedError):
        SutraVectorStore(db, fake())


def test_concepts_added_without_a_key_have_no_document_id():
    emb = fake(4)
    store = SutraVectorStore(":memory:", emb)
    store.database.add_vectors([emb.embed_query("bare")], texts=None)
    docs = store.similarity_search("bare", k=1)
    assert docs == [Document(page_content="", metadata={}, id=None)]


# ----------------------------------------------------------------------------- ids

def test_ids_are_keys_generated_when_missing_and_replaced_on_re_add():
    store = SutraVectorStore(":memory:", fake())
    ids = store.add_documents([Document("a", id="given"), Document("b")])
    assert ids[0] == "given" and isinstance(ids[1], str) and len(ids[1]) == 36
    assert store.database.get(ids[1]).text == "b"
    first = store.database.get("given").id
    store.add_texts(["a2"], [{"v": 2}], ids=["given"])
    c = store.database.get("given")
    assert (c.id, c.text, c.metadata, len(store.database)) == (first, "a2", {"v": 2}, 2)
    # ids= of the call beat the documents' own
    assert store.add_documents([Document("c", id="own")], ids=["call"]) == ["call"]
    assert store.get_by_ids(["own"]) == []


def test_get_by_ids_order_repeats_and_missing(animals):
    docs = animals.get_by_ids(["snake", "nope", "cat", "snake"])
    assert ids_of(docs) == ["snake", "cat"]
    assert docs[1] == Document("the cat sleeps", metadata=ANIMALS[0][1], id="cat")
    assert animals.get_by_ids([]) == []


def test_delete_skips_missing_ids_and_deletes_by_filter(animals):
    assert animals.delete(["cat", "missing", "cat"]) is True
    assert animals.get_by_ids(["cat"]) == [] and len(animals.database) == 4
    animals.delete(filter={"legs": 2})
    assert sorted(d.id for d in animals.similarity_search("x", k=10)) == ["dog", "snake"]
    animals.delete(["dog", "snake"], filter={"kind": "dog"})   # ids that match
    assert ids_of(animals.similarity_search("x", k=10)) == ["snake"]
    animals.delete(filter={})
    assert len(animals.database) == 0


def test_writes_are_one_transaction():
    emb = fake()
    store = SutraVectorStore(":memory:", emb)
    store.add_texts(["kept"], ids=["k"])
    with pytest.raises(InvalidArgumentError):    # the second metadata cannot be stored
        store.add_texts(["a", "b"], [{"ok": 1}, {"bad": object()}], ids=["k", "n"])
    assert store.get_by_ids(["k", "n"]) == [Document("kept", id="k")]


def test_batch_size_splits_the_embedding_calls():
    table = {t: [float(i + 1), 1.0, 0.5] for i, t in enumerate("abcde")}
    emb = TableEmbeddings(table)
    store = SutraVectorStore(":memory:", emb)
    store.add_texts(list("abcde"), batch_size=2)
    assert emb.document_calls == [["a", "b"], ["c", "d"], ["e"]]
    store.add_texts(list("ab"))
    assert emb.document_calls[-1] == ["a", "b"]
    assert len(store.database) == 7


# ----------------------------------------------------------------------------- filters

@pytest.mark.parametrize("flt, expected", [
    ({"kind": "bird"}, {"parrot", "eagle"}),
    ({"kind": {"$eq": "dog"}}, {"dog"}),
    ({"kind": {"$ne": "bird"}}, {"cat", "dog", "snake"}),
    ({"kind": {"$in": ["cat", "reptile"]}}, {"cat", "snake"}),
    ({"kind": {"$nin": ["cat", "reptile"]}}, {"dog", "parrot", "eagle"}),
    ({"year": {"$gte": 2005, "$lt": 2020}}, {"dog", "parrot", "eagle"}),
    ({"legs": {"$lte": 2}}, {"parrot", "eagle", "snake"}),
    ({"tags": "pet"}, {"cat", "dog", "parrot"}),
    ({"tags": {"$all": ["pet", "loud"]}}, {"parrot"}),
    ({"tags": {"$contains": "small"}}, {"cat"}),
    ({"src": {"$exists": True}}, {"eagle"}),
    ({"src.site": "zoo"}, {"eagle"}),
    ({"$and": [{"legs": 4}, {"year": {"$gt": 2001}}]}, {"dog"}),
    ({"$or": [{"kind": "cat"}, {"legs": 0}]}, {"cat", "snake"}),
    ({"$not": {"legs": 4}}, {"parrot", "eagle", "snake"}),
    ({"year": {"$not": {"$gt": 2005}}}, {"cat", "dog"}),
    ({"$text": "the flies"}, {"eagle"}),
    ({}, {"cat", "dog", "parrot", "eagle", "snake"}),
    ({"kind": "fish"}, set()),
])
def test_filters(animals, flt, expected):
    docs = animals.similarity_search("the cat sleeps", k=10, filter=flt)
    assert set(ids_of(docs)) == expected
    k1 = animals.similarity_search("the cat sleeps", k=1, filter=flt)
    assert len(k1) == min(1, len(expected))    # applied inside the search, not after
    scored = animals.similarity_search_with_score("the cat sleeps", k=10, filter=flt)
    assert [d for d, _ in scored] == docs
    mmr = animals.max_marginal_relevance_search("the cat sleeps", k=10, filter=flt)
    assert set(ids_of(mmr)) == expected


def test_bad_filters_raise(animals):
    with pytest.raises(InvalidArgumentError, match=r"\$regex"):
        animals.similarity_search("x", filter={"kind": {"$regex": "c.*"}})
    with pytest.raises(InvalidArgumentError):
        animals.similarity_search("x", filter={"year": {"$gt": [1]}})
    with pytest.raises(InvalidArgumentError, match="filter must be a dict"):
        animals.similarity_search("x", filter=lambda doc: True)    # type: ignore[arg-type]


# ----------------------------------------------------------------------------- MMR

def test_mmr_returns_diverse_documents():
    table = {"q": [1.0, 0.0, 0.0],
             "a1": [1.0, 0.05, 0.0], "a2": [1.0, 0.06, 0.0], "a3": [1.0, 0.04, 0.01],
             "b": [0.7, -0.7, 0.0], "c": [0.0, 1.0, 0.0]}
    store = SutraVectorStore(":memory:", TableEmbeddings(table),
                             vector_dtype="float32")
    docs = [t for t in table if t != "q"]
    store.add_texts(docs, ids=docs)
    assert ids_of(store.similarity_search("q", k=2)) == ["a3", "a1"]
    assert ids_of(store.max_marginal_relevance_search("q", k=2, fetch_k=10)) == ["a3", "b"]
    # lambda 1: similarity only; fetch_k bounds the candidates
    assert ids_of(store.max_marginal_relevance_search("q", k=3, lambda_mult=1.0)) == [
        "a3", "a1", "a2"]
    assert set(ids_of(store.max_marginal_relevance_search("q", k=2, fetch_k=3))) <= {
        "a1", "a2", "a3"}
    by_vec = store.max_marginal_relevance_search_by_vector([1.0, 0.0, 0.0], k=2, fetch_k=10)
    assert ids_of(by_vec) == ["a3", "b"]
    assert store.max_marginal_relevance_search("q", k=2, filter={"nothing": 1}) == []
    for bad in ({"k": 0}, {"fetch_k": 0}, {"lambda_mult": 1.5}):
        with pytest.raises(InvalidArgumentError):
            store.max_marginal_relevance_search("q", **bad)


def test_mmr_needs_stored_vectors():
    store = SutraVectorStore(":memory:", fake(16), vector_dtype=None)
    store.add_texts([f"text {i}" for i in range(300)])
    assert len(store.similarity_search("text 1", k=3)) == 3
    with pytest.raises(InvalidArgumentError, match="vector_dtype=None"):
        store.max_marginal_relevance_search("text 1", k=2)


# ----------------------------------------------------------------------------- scores

def test_scores_are_distances_and_relevance_is_in_0_1():
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0], "-x": [-1.0, 0.0], "xy": [1.0, 1.0]}
    store = SutraVectorStore(":memory:", TableEmbeddings(table))
    store.add_texts(["x", "y", "-x"], ids=["x", "y", "-x"])
    scored = store.similarity_search_with_score("xy", k=3)
    assert ids_of([d for d, _ in scored]) in (["x", "y", "-x"], ["y", "x", "-x"])
    np.testing.assert_allclose([s for _, s in scored], [1 - 0.5 ** 0.5, 1 - 0.5 ** 0.5, 1 + 0.5 ** 0.5],
                               atol=2e-3)
    rel = store.similarity_search_with_relevance_scores("x", k=3)
    assert [d.id for d, _ in rel] == ["x", "y", "-x"]
    np.testing.assert_allclose([s for _, s in rel], [1.0, 0.0, 0.0], atol=2e-3)
    assert all(0.0 <= s <= 1.0 for _, s in rel)
    thr = store.similarity_search_with_relevance_scores("xy", k=3, score_threshold=0.5)
    assert sorted(d.id for d, _ in thr) == ["x", "y"]
    by_vec = store.similarity_search_with_score_by_vector([0.0, 2.0], k=1)
    assert by_vec[0][0].id == "y" and by_vec[0][1] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_relevance_of_other_metrics(metric):
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0], "q": [0.6, 0.8]}
    store = SutraVectorStore(":memory:", TableEmbeddings(table), metric=metric)
    store.add_texts(["x", "y"], ids=["x", "y"])
    rel = {d.id: s for d, s in store.similarity_search_with_relevance_scores("q", k=2)}
    if metric == "l2":      # squared distances 0.8 and 0.4 -> 1 / (1 + d)
        assert rel == pytest.approx({"y": 1 / 1.4, "x": 1 / 1.8}, abs=2e-3)
    else:                   # inner products 0.8 and 0.6
        assert rel == pytest.approx({"y": 0.8, "x": 0.6}, abs=2e-3)


# ----------------------------------------------------------------------------- construction

def test_from_texts_and_from_documents(tmp_path):
    emb = fake()
    mem = SutraVectorStore.from_texts(["a", "b"], emb, metadatas=[{"n": 1}, {"n": 2}],
                                      ids=["1", "2"])
    assert mem.database.path is None and mem.get_by_ids(["2"])[0].metadata == {"n": 2}
    mem.close()
    disk = SutraVectorStore.from_documents(
        [Document("a", metadata={"n": 1}, id="x"), Document("b")], emb,
        path=tmp_path / "d", vector_dtype="float32", batch_size=1)
    assert disk.database.path is not None and len(disk.database) == 2
    assert disk.get_by_ids(["x"]) == [Document("a", metadata={"n": 1}, id="x")]
    disk.close()
    db = sutradb.open(":memory:")
    same = SutraVectorStore.from_texts(["c"], emb, database=db)
    assert same.database is db and len(db) == 1
    with pytest.raises(InvalidArgumentError, match="not both"):
        SutraVectorStore.from_texts(["c"], emb, database=db, path=tmp_path / "e")
    # an error while adding closes the database the call opened (the lock is freed)
    with pytest.raises(DuplicateKeyError):
        SutraVectorStore.from_texts(["c", "d"], emb, ids=["same", "same"], path=tmp_path / "f")
    SutraVectorStore(tmp_path / "f", emb).close()


def test_from_texts_async():
    store = asyncio.run(SutraVectorStore.afrom_texts(["a", "b"], fake(), ids=["1", "2"]))
    assert ids_of(asyncio.run(store.asimilarity_search("a", k=1, filter={"$text": "a"}))) == ["1"]
    docs = asyncio.run(store.amax_marginal_relevance_search("b", k=1))
    assert ids_of(docs) == ["2"]
    store.close()


def test_retriever(animals):
    r = animals.as_retriever(search_kwargs={"k": 2, "filter": {"kind": "bird"}})
    assert set(ids_of(r.invoke("the parrot talks"))) == {"parrot", "eagle"}
    mmr = animals.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 5})
    assert len(mmr.invoke("the parrot talks")) == 2
    thr = animals.as_retriever(search_type="similarity_score_threshold",
                               search_kwargs={"score_threshold": 0.999, "k": 3})
    assert ids_of(thr.invoke("the snake hides")) == ["snake"]


@pytest.mark.parametrize("kind", ["pq", "ivf"])
def test_larger_store_with_a_trained_index(kind):
    emb = fake(16)
    store = SutraVectorStore(":memory:", emb, index_threshold=256,
                             ivf_threshold=256 if kind == "ivf" else 10**6)
    texts = [f"document number {i}" for i in range(400)]
    store.add_texts(texts, [{"i": i, "even": i % 2 == 0} for i in range(400)], ids=texts)
    assert store.database.index_info["kind"] == kind
    assert ids_of(store.similarity_search("document number 123", k=1)) == ["document number 123"]
    hits = store.similarity_search("document number 123", k=5, filter={"even": True})
    assert len(hits) == 5 and all(d.metadata["even"] for d in hits)
    store.add_texts(["replaced"], ids=["document number 7"])    # upsert with a trained PQ
    assert store.get_by_ids(["document number 7"])[0].page_content == "replaced"


# ----------------------------------------------------------------------------- errors

def test_bad_input_raises_sutradb_errors(tmp_path):
    emb = fake()
    store = SutraVectorStore(":memory:", emb)
    store.add_texts(["a"], ids=["a"])
    with pytest.raises(InvalidArgumentError, match="2 metadatas for 1 texts"):
        store.add_texts(["b"], [{}, {}])
    with pytest.raises(InvalidArgumentError, match="2 ids for 1 texts"):
        store.add_texts(["b"], ids=["1", "2"])
    with pytest.raises(DuplicateKeyError):
        store.add_texts(["b", "c"], ids=["x", "x"])
    with pytest.raises(InvalidArgumentError, match="must be a str"):
        store.add_texts(["b"], ids=[3])                          # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="list of texts"):
        store.add_texts("abc")
    with pytest.raises(InvalidArgumentError, match="list of ids"):
        store.delete("a")                                        # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="list of ids"):
        store.get_by_ids("a")
    with pytest.raises(InvalidArgumentError, match="needs ids"):
        store.delete()
    with pytest.raises(InvalidArgumentError, match="unknown keyword arguments colour"):
        store.similarity_search("a", colour="red")
    with pytest.raises(InvalidArgumentError, match="unknown keyword arguments"):
        store.add_texts(["b"], upsert=True)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        store.similarity_search("a", k=0)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        store.add_texts(["b"], batch_size=0)
    with pytest.raises(DimensionError):
        store.similarity_search_by_vector([1.0, 2.0])
    with pytest.raises(InvalidArgumentError, match="not a str"):
        store.similarity_search_by_vector("a")                   # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="Embeddings"):
        SutraVectorStore(":memory:", object())                   # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="path_or_database"):
        SutraVectorStore(3, emb)                                 # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="unknown options"):
        SutraVectorStore(tmp_path / "x", emb, colour="red")

    class Short(DeterministicFakeEmbedding):
        def embed_documents(self, texts):
            return super().embed_documents(texts)[:-1]

    with pytest.raises(EmbedderError, match="1 vectors for 2 texts"):
        SutraVectorStore(":memory:", Short(size=4)).add_texts(["a", "b"])
    assert store.get_by_ids(["a", "b", "c", "x"]) == [Document("a", id="a")]
    assert store.add_texts([]) == []
    store.close()
    store.close()                                                # idempotent
    with pytest.raises(ClosedError):
        store.similarity_search("a")


def test_import_sutradb_imports_no_langchain_and_a_missing_one_names_the_extra():
    code = textwrap.dedent("""
        import sys, sutradb, sutradb.integrations
        bad = [m for m in sys.modules if m.split(".")[0].startswith("langchain")]
        assert not bad, bad
        sys.modules["langchain_core"] = None        # as if it were not installed
        try:
            import sutradb.integrations.langchain
        except sutradb.MissingDependencyError as e:
            assert "sutradb[langchain]" in str(e), e
        else:
            raise SystemExit("no MissingDependencyError")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
