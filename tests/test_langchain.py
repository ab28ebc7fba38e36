"""sutradb.integrations.langchain: LangChain's standard vector store suite (unmodified,
on disk and in memory), then persistence, filters, MMR, scores, ids and errors.

Skipped when langchain-core or langchain-tests is not installed (the test extra
installs them). Offline: the embeddings are LangChain's deterministic fakes or the
table embeddings below.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from enum import Enum

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
from sutradb.index.bm25 import rrf
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


# ----------------------------------------------------------------------------- keyword and hybrid

# Oracles: Database.search_text for retrieval_mode="sparse" (ids, order, scores), and
# sutradb.index.bm25.rrf of the separate dense ranking (Database.search of the query's
# embedding) and BM25 ranking (Database.search_text), each to depth max(4k, 60), for
# retrieval_mode="hybrid".

STOP = {"the", "a", "an", "of", "in", "is", "and", "at", "to", "on", "for", "with", "its", "by"}


class BagOfWords(Embeddings):
    """Each word but a few stop words adds +-1 to one of ``dim`` coordinates (CRC-32);
    words in ``unknown`` are out of the model's vocabulary (ignored). Counts the
    query embeddings."""

    def __init__(self, dim: int = 64, unknown: frozenset[str] = frozenset()):
        self.dim = dim
        self.unknown = unknown
        self.queries = 0

    def vector(self, text: str) -> list[float]:
        v = np.zeros(self.dim)
        v[-1] = 0.05                                  # never all zeros
        for w in re.findall(r"\w+", text.lower()):
            if w not in STOP and w not in self.unknown:
                h = zlib.crc32(w.encode())
                v[h % (self.dim - 1)] += 1.0 if (h >> 8) & 1 else -1.0
        return v.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return self.vector(text)


NOTES = [
    ("paris", "Paris is the capital of France and its largest city.", {"topic": "geo", "year": 2019}),
    ("berlin", "Berlin became the capital of a reunified Germany in 1990.",
     {"topic": "geo", "year": 1990}),
    ("tokyo", "Tokyo is the most populous metropolitan area in the world.",
     {"topic": "geo", "year": 2021}),
    ("nile", "The Nile flows north through eleven countries into the Mediterranean.",
     {"topic": "geo", "year": 2015}),
    ("alps", "The Alps stretch across eight countries of Europe.", {"topic": "geo", "year": 2011}),
    ("boil", "Water boils at one hundred degrees Celsius at sea level.",
     {"topic": "science", "year": 2010}),
    ("photo", "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
     {"topic": "science", "year": 2012}),
    ("dna", "DNA carries the genetic instructions of living organisms.",
     {"topic": "science", "year": 2003}),
    ("light", "Light from the Sun reaches the Earth in about eight minutes.",
     {"topic": "science", "year": 2018}),
    ("bread", "Bread dough rises because yeast produces carbon dioxide.",
     {"topic": "food", "year": 2020}),
    ("omelette", "A French omelette is cooked quickly over medium heat.",
     {"topic": "food", "year": 2022}),
    ("pasta", "Fresh pasta needs only flour, eggs and a pinch of salt.", {"topic": "food", "year": 2017}),
    ("tomato", "Slow roasting tomatoes concentrates their sweetness.", {"topic": "food", "year": 2016}),
]
QUERIES = ["capital Mediterranean", "largest countries of the Mediterranean", "capital of Germany",
           "eight countries", "yeast heat", "carbon dioxide water", "nothing stored here zzz",
           "the"]


def notes_store(emb: Embeddings | None = None, **options) -> SutraVectorStore:
    store = SutraVectorStore(":memory:", emb or BagOfWords(), **options)
    store.add_texts([t for _, t, _ in NOTES], [m for *_, m in NOTES], ids=[i for i, *_ in NOTES])
    return store


@pytest.fixture
def notes() -> Iterator[SutraVectorStore]:
    store = notes_store()
    yield store
    store.close()


def sparse_oracle(store, q, k, flt=None) -> list[tuple[str, float]]:
    return [(h.concept.key, -h.score) for h in store.database.search_text(q, k, where=flt)]


def hybrid_oracle(store, q, k, weights=(1.0, 1.0), flt=None) -> list[tuple[str, float]]:
    db = store.database
    depth = max(4 * k, 60)
    v = np.asarray(store.embeddings.vector(q), dtype=np.float32)
    dense = [h.concept.key for h in db.search(v, depth, where=flt)]
    text = [h.concept.key for h in db.search_text(q, depth, where=flt)]
    return [(i, -s) for i, s in rrf([dense, text], weights, k)]


def assert_same(got, want):
    assert [d.id for d, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)


def test_sparse_mode_is_search_text(notes):
    for q in QUERIES:
        for k in (1, 3, 13):
            got = notes.similarity_search_with_score(q, k, retrieval_mode="sparse")
            assert_same(got, sparse_oracle(notes, q, k))
            docs = notes.similarity_search(q, k, retrieval_mode="sparse")
            assert docs == [d for d, _ in got]
    # documents that share no term with the query are not returned
    assert notes.similarity_search("zzz qqq", 5, retrieval_mode="sparse") == []
    (doc,) = notes.similarity_search("yeast", 5, retrieval_mode="sparse")
    assert doc == Document(NOTES[9][1], metadata=NOTES[9][2], id="bread")


def test_sparse_mode_does_not_embed_the_query():
    emb = BagOfWords()
    store = notes_store(emb)
    store.similarity_search("capital", 3, retrieval_mode="sparse")
    store.as_retriever(search_kwargs={"retrieval_mode": "sparse"}).invoke("capital")
    assert emb.queries == 0
    store.similarity_search("capital", 3, retrieval_mode="hybrid")
    assert emb.queries == 1


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.7, 0.3), (2.0, 0.5), (1.0, 0.0), (0.0, 1.0)])
def test_hybrid_mode_is_rrf_of_the_two_rankings(notes, weights):
    for q in QUERIES:
        for k in (1, 3, 5, 13):
            got = notes.similarity_search_with_score(q, k, retrieval_mode="hybrid",
                                                     hybrid_weights=weights)
            assert_same(got, hybrid_oracle(notes, q, k, weights))
            assert len(got) == k                  # every document is in the dense ranking


@pytest.mark.parametrize("kind", ["flat", "pq"])
def test_sparse_and_hybrid_against_the_oracles_on_a_larger_corpus(kind):
    # more documents than the rankings' depth (max(4k, 60)); many share terms; filters
    rng = np.random.default_rng(23)
    vocab = [f"w{i}" for i in range(150)]
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(3, 14)))) for _ in range(500)]
    emb = BagOfWords(dim=32)
    store = SutraVectorStore(":memory:", emb,
                             index_threshold=256 if kind == "pq" else 10**6)
    store.add_texts(texts, [{"g": i % 3} for i in range(500)], ids=[f"d{i:03d}" for i in range(500)])
    assert store.database.index_info["kind"] == kind
    for t in range(16):
        q = " ".join(rng.choice(vocab, size=3))
        k = (1, 5, 10, 20)[t % 4]
        weights = ((1.0, 1.0), (0.3, 0.7), (0.8, 0.2))[t % 3]
        flt = {"g": 1} if t % 2 else None
        got = store.similarity_search_with_score(q, k, filter=flt, retrieval_mode="hybrid",
                                                 hybrid_weights=weights)
        assert_same(got, hybrid_oracle(store, q, k, weights, flt))
        assert all(d.metadata["g"] == 1 for d, _ in got) if flt else True
        got = store.similarity_search_with_score(q, k, filter=flt, retrieval_mode="sparse")
        assert_same(got, sparse_oracle(store, q, k, flt))
    store.close()


def test_a_rare_query_word_lifts_its_only_document():
    # an embedding model that does not know the word "Mediterranean" (out of its
    # vocabulary, as a rare name or code often is): the dense ranking sees "capital"
    # only. The word occurs in one document.
    store = notes_store(BagOfWords(unknown=frozenset({"mediterranean"})))
    assert store.database.find_words("Mediterranean") == [store.database.get("nile").id]
    q = "capital Mediterranean"
    dense = ids_of(store.similarity_search(q, k=3))
    assert dense[:2] in (["paris", "berlin"], ["berlin", "paris"]) and "nile" not in dense
    assert ids_of(store.similarity_search(q, k=1, retrieval_mode="sparse")) == ["nile"]
    hybrid = ids_of(store.similarity_search(q, k=3, retrieval_mode="hybrid"))
    assert hybrid[2] == "nile"                    # in the top 3, where dense has it not
    # rank fusion is flat (1/61 vs 1/62 for the first two places): only a weight that
    # leans hard on the text ranking puts the word's document before both capitals
    leaning = ids_of(store.similarity_search(q, k=3, retrieval_mode="hybrid",
                                             hybrid_weights=(0.05, 1.0)))
    assert leaning[0] == "nile"
    store.close()


def test_filters_apply_inside_sparse_and_hybrid(notes):
    q = "capital carbon eggs heat"
    assert ids_of(notes.similarity_search(q, 1, retrieval_mode="sparse")) != ["bread"]
    for k in (1, 2, 4):
        got = notes.similarity_search_with_score(q, k, filter={"topic": "food"},
                                                 retrieval_mode="sparse")
        assert_same(got, sparse_oracle(notes, q, k, {"topic": "food"}))
        assert len(got) == min(k, 3)              # bread, omelette, pasta share a term
        got = notes.similarity_search_with_score(q, k, filter={"topic": "food"},
                                                 retrieval_mode="hybrid", hybrid_weights=(0.4, 0.6))
        assert_same(got, hybrid_oracle(notes, q, k, (0.4, 0.6), {"topic": "food"}))
        assert len(got) == k and all(d.metadata["topic"] == "food" for d, _ in got)
    flt = {"$and": [{"year": {"$gte": 2015}}, {"$text": "capital"}]}
    assert ids_of(notes.similarity_search("capital city", 5, filter=flt,
                                          retrieval_mode="hybrid")) == ["paris"]


def test_retrievers_and_store_modes(notes):
    q = "largest countries of the Mediterranean"
    kw = {"k": 3, "retrieval_mode": "hybrid", "hybrid_weights": (0.5, 1.0), "filter": {"topic": "geo"}}
    r = notes.as_retriever(search_kwargs=kw)
    want = notes.similarity_search(q, **kw)
    assert r.invoke(q) == want and asyncio.run(r.ainvoke(q)) == want
    assert ids_of(want) == [i for i, _ in hybrid_oracle(notes, q, 3, (0.5, 1.0), {"topic": "geo"})]
    sparse = notes.as_retriever(search_kwargs={"k": 2, "retrieval_mode": "sparse"})
    assert ids_of(sparse.invoke(q)) == [i for i, _ in sparse_oracle(notes, q, 2)]
    # a store whose mode is hybrid: similarity_search and as_retriever() use it, a call
    # may say otherwise
    hy = notes_store(retrieval_mode="hybrid", hybrid_weights=(1.0, 2.0))
    assert (hy.retrieval_mode, hy.hybrid_weights) == ("hybrid", (1.0, 2.0))
    assert "retrieval_mode='hybrid'" in repr(hy)
    assert ids_of(hy.as_retriever(search_kwargs={"k": 4}).invoke(q)) == \
        [i for i, _ in hybrid_oracle(hy, q, 4, (1.0, 2.0))]
    assert hy.similarity_search(q, 4, hybrid_weights=(1.0, 1.0)) == \
        notes.similarity_search(q, 4, retrieval_mode="hybrid")
    assert hy.similarity_search(q, 4, retrieval_mode="dense") == notes.similarity_search(q, 4)
    assert ids_of(asyncio.run(hy.asimilarity_search(q, 2))) == ids_of(hy.similarity_search(q, 2))
    # MMR and the searches by vector rank by embedding, whatever the store's mode
    assert hy.max_marginal_relevance_search(q, 3) == notes.max_marginal_relevance_search(q, 3)
    v = hy.embeddings.embed_query(q)
    assert hy.similarity_search_by_vector(v, 3) == notes.similarity_search_by_vector(v, 3)
    hy.close()
    # from_texts / from_documents take the mode like the constructor
    fs = SutraVectorStore.from_texts([t for _, t, _ in NOTES], BagOfWords(),
                                     ids=[i for i, *_ in NOTES], retrieval_mode="sparse")
    assert fs.retrieval_mode == "sparse"
    assert ids_of(fs.as_retriever().invoke("yeast")) == ["bread"]
    fs.close()


def test_retrieval_mode_enum_values_are_taken():
    class RetrievalMode(str, Enum):       # as langchain_qdrant.RetrievalMode
        DENSE = "dense"
        SPARSE = "sparse"
        HYBRID = "hybrid"

    store = notes_store(retrieval_mode=RetrievalMode.SPARSE)
    assert store.retrieval_mode == "sparse"
    assert ids_of(store.similarity_search("yeast")) == ["bread"]
    assert store.similarity_search("yeast heat", retrieval_mode=RetrievalMode.HYBRID) == \
        store.similarity_search("yeast heat", retrieval_mode="hybrid")
    store.close()


def test_relevance_scores_of_the_modes(notes):
    q = "yeast heat"
    for weights in ((1.0, 1.0), (0.5, 2.0)):
        rel = notes.similarity_search_with_relevance_scores(q, 5, retrieval_mode="hybrid",
                                                            hybrid_weights=weights)
        want = hybrid_oracle(notes, q, 5, weights)
        assert [d.id for d, _ in rel] == [i for i, _ in want]
        # the fused score over its largest value (first in both rankings)
        np.testing.assert_allclose([s for _, s in rel],
                                   [-s * 61 / sum(weights) for _, s in want], rtol=1e-9)
        assert rel[0][1] == pytest.approx(1.0)    # "bread" is first in both rankings
        assert all(0.0 <= s <= 1.0 for _, s in rel)
    thr = notes.as_retriever(search_type="similarity_score_threshold",
                             search_kwargs={"score_threshold": 0.9, "k": 5,
                                            "retrieval_mode": "hybrid"})
    assert ids_of(thr.invoke(q)) == ["bread", "omelette"]
    assert ids_of(asyncio.run(thr.ainvoke(q))) == ["bread", "omelette"]
    # dense relevance is unchanged
    assert notes.similarity_search_with_relevance_scores(q, 3, retrieval_mode="dense") == \
        notes.similarity_search_with_relevance_scores(q, 3)
    with pytest.raises(InvalidArgumentError, match="BM25"):
        notes.similarity_search_with_relevance_scores(q, 3, retrieval_mode="sparse")


def test_sparse_search_follows_writes_and_reopening(tmp_path):
    path = tmp_path / "kb"
    emb = BagOfWords()
    with SutraVectorStore.from_texts([t for _, t, _ in NOTES], emb, ids=[i for i, *_ in NOTES],
                                     path=path, retrieval_mode="sparse") as store:
        assert ids_of(store.similarity_search("Mediterranean")) == ["nile"]
        store.add_texts(["The Danube flows into the Black Sea."], ids=["nile"])    # replaced
        store.add_texts(["A cruise on the Mediterranean."], ids=["cruise"])
        store.delete(["paris"])
        assert ids_of(store.similarity_search("Mediterranean")) == ["cruise"]
        assert ids_of(store.similarity_search("Danube capital")) == ["nile", "berlin"]
    with SutraVectorStore(path, emb, mode="r", retrieval_mode="hybrid") as ro:
        assert ids_of(ro.similarity_search("Mediterranean", k=1)) == ["cruise"]
        assert ids_of(ro.similarity_search("capital", k=5, retrieval_mode="sparse")) == ["berlin"]


def test_keyword_and_hybrid_errors(notes):
    with pytest.raises(InvalidArgumentError, match="'dense' and 'sparse' here"):
        notes.similarity_search("x", retrieval_mode="text")
    with pytest.raises(InvalidArgumentError, match="retrieval_mode must be"):
        notes.similarity_search("x", retrieval_mode="keyword")
    with pytest.raises(InvalidArgumentError, match="retrieval_mode must be"):
        SutraVectorStore(":memory:", fake(), retrieval_mode="bm25")
    for bad in ((1.0,), (1.0, 2.0, 3.0), (-1.0, 1.0), (0.0, 0.0), (True, 1.0), "ab",
                (float("nan"), 1.0), (float("inf"), 1.0), None):
        with pytest.raises(InvalidArgumentError, match="hybrid_weights"):
            notes.similarity_search("x", retrieval_mode="hybrid", hybrid_weights=bad)
        with pytest.raises(InvalidArgumentError, match="hybrid_weights"):
            SutraVectorStore(":memory:", fake(), hybrid_weights=bad)
    with pytest.raises(InvalidArgumentError, match="exact tune the dense ranking"):
        notes.similarity_search("x", retrieval_mode="sparse", exact=True)
    with pytest.raises(InvalidArgumentError, match="unknown keyword arguments colour"):
        notes.similarity_search("x", retrieval_mode="sparse", colour="red")
    with pytest.raises(InvalidArgumentError, match="unknown keyword arguments colour"):
        notes.similarity_search("x", retrieval_mode="hybrid", colour="red")
    with pytest.raises(InvalidArgumentError, match="k must be"):
        notes.similarity_search("x", k=0, retrieval_mode="sparse")
    with pytest.raises(InvalidArgumentError, match="str query"):
        notes.similarity_search([1.0, 2.0], retrieval_mode="hybrid")    # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="only 'dense'"):
        notes.max_marginal_relevance_search("x", retrieval_mode="hybrid")
    with pytest.raises(InvalidArgumentError, match="unknown keyword arguments retrieval_mode"):
        notes.similarity_search_by_vector(notes.embeddings.embed_query("x"), retrieval_mode="sparse")
    # the dense ranking's options tune the dense side of a hybrid search
    a = notes.similarity_search_with_score("yeast heat", 4, retrieval_mode="hybrid", exact=True)
    assert a == notes.similarity_search_with_score("yeast heat", 4, retrieval_mode="hybrid")
    assert notes.max_marginal_relevance_search("x", 2, retrieval_mode="dense",
                                               hybrid_weights=(1, 2)) == \
        notes.max_marginal_relevance_search("x", 2)


def test_module_doctests():
    import doctest

    import sutradb.integrations.langchain as lc
    res = doctest.testmod(lc, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 5 and res.failed == 0


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
