"""sutradb.integrations.llama_index: the vector store used through llama-index-core's own
VectorStoreIndex and retrievers, and directly, on a small offline corpus.

Oracles: the nodes each filter selects, worked out by hand and checked against
LlamaIndex's own reference filter function (``build_metadata_filter_fn``, what its
in-memory store runs), and brute-force NumPy similarities for the rankings. Nothing here downloads anything: sockets are refused, and LlamaIndex's
default tokenizer (tiktoken, which the VectorStoreIndex constructor resolves) is
replaced by a whitespace split.
"""

from __future__ import annotations

import asyncio
import doctest
import re
import socket
import subprocess
import sys
import zlib

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

import llama_index.core  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.schema import (MetadataMode, NodeRelationship, RelatedNodeInfo,  # noqa: E402
                                     TextNode)
from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator,  # noqa: E402
                                                  MetadataFilter, MetadataFilters,
                                                  VectorStoreQuery, VectorStoreQueryMode)

import sutradb  # noqa: E402
from sutradb.index.bm25 import rrf  # noqa: E402
from sutradb.integrations import llama_index as li  # noqa: E402
from sutradb.integrations.llama_index import SutraVectorStore, filters_to_where  # noqa: E402


# --------------------------------------------------------------------- offline guard

@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network; LlamaIndex's tokenizer is not loaded."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(llama_index.core, "global_tokenizer", str.split)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------- the corpus

STOP = {"the", "a", "an", "of", "in", "is", "and", "at", "to", "into", "from", "over",
        "their", "only", "about", "because", "most"}


class HashEmbedding(BaseEmbedding):
    """A deterministic bag-of-words embedding: each word (but a few stop words) adds
    +-1 to one of ``dim`` coordinates chosen by its CRC-32."""

    dim: int = 256

    def vector(self, text: str) -> list[float]:
        v = np.zeros(self.dim)
        for w in re.findall(r"\w+", text.lower()):
            if w in STOP:
                continue
            h = zlib.crc32(w.encode())
            v[h % self.dim] += 1.0 if (h >> 8) & 1 else -1.0
        return v.tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.vector(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self.vector(query)


# (node id, document, text, metadata): fields missing on purpose here and there
CORPUS = [
    ("paris", "doc-geo", "Paris is the capital and largest city of France.",
     {"topic": "geography", "year": 2019, "rating": 4.5, "tags": ["europe", "city"],
      "source": "World Atlas", "subtitle": "capital"}),
    ("berlin", "doc-geo", "Berlin became the capital of reunified Germany in 1990.",
     {"topic": "geography", "year": 1990, "rating": 4.0, "tags": ["europe", "history"],
      "source": "World Atlas"}),
    ("tokyo", "doc-geo", "Tokyo is the most populous metropolitan area in the world.",
     {"topic": "geography", "year": 2021, "rating": 3.5, "tags": ["asia", "city"],
      "source": "Census Notes"}),
    ("nile", "doc-geo", "The Nile flows north through eleven countries into the Mediterranean.",
     {"topic": "geography", "year": 2015, "tags": ["africa", "river"], "source": "World Atlas"}),
    ("boil", "doc-sci", "Water boils at one hundred degrees Celsius at sea level.",
     {"topic": "science", "year": 2010, "rating": 5.0, "tags": ["physics"],
      "source": "Science Daily"}),
    ("photo", "doc-sci", "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
     {"topic": "science", "year": 2012, "rating": 4.8, "tags": ["biology"],
      "source": "Science Daily"}),
    ("dna", "doc-sci", "DNA carries the genetic instructions of living organisms.",
     {"topic": "science", "year": 2003, "rating": 4.2, "tags": ["biology", "genetics"],
      "source": "Science Daily"}),
    ("light", "doc-sci", "Light from the Sun reaches the Earth in about eight minutes.",
     {"topic": "science", "year": 2018, "rating": 3.9, "tags": ["physics", "astronomy"],
      "source": "Sky Notes"}),
    ("bread", "doc-food", "Bread dough rises because yeast produces carbon dioxide.",
     {"topic": "cooking", "year": 2020, "rating": 4.1, "tags": ["baking"],
      "source": "Kitchen Notes", "subtitle": ""}),
    ("omelette", "doc-food", "A French omelette is cooked quickly over medium heat.",
     {"topic": "cooking", "year": 2022, "rating": 3.2, "tags": ["eggs", "france"],
      "source": "Kitchen Notes", "subtitle": None}),
    ("pasta", "doc-food", "Fresh pasta needs only flour, eggs and a pinch of salt.",
     {"topic": "cooking", "year": 2017, "rating": 4.6, "tags": [], "source": "Kitchen Notes"}),
    ("tomato", "doc-food", "Slow roasting tomatoes concentrates their sweetness.",
     {"topic": "cooking", "year": 2016, "rating": 2.9, "source": "Kitchen Notes"}),
]
IDS = [c[0] for c in CORPUS]
META = {c[0]: c[3] for c in CORPUS}
DOCS = {c[0]: c[1] for c in CORPUS}


def make_nodes() -> list[TextNode]:
    # the text alone is embedded (by default LlamaIndex embeds the metadata too)
    return [TextNode(id_=nid, text=text, metadata=dict(md), excluded_embed_metadata_keys=list(md),
                     relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)})
            for nid, doc, text, md in CORPUS]


EMB = HashEmbedding()


def embedded(text_of_node: TextNode) -> np.ndarray:
    """What VectorStoreIndex embeds for a node (its text with its metadata)."""
    return np.asarray(EMB.vector(text_of_node.get_content(metadata_mode=MetadataMode.EMBED)))


def cosines(q: np.ndarray, V: np.ndarray) -> np.ndarray:
    return (V @ q) / (np.linalg.norm(V, axis=1) * np.linalg.norm(q))


@pytest.fixture
def index():
    store = SutraVectorStore(":memory:")
    ctx = StorageContext.from_defaults(vector_store=store)
    idx = VectorStoreIndex(make_nodes(), storage_context=ctx, embed_model=EMB)
    yield idx
    store.close()


def retrieve_ids(idx, query: str, k: int = len(CORPUS), **kw) -> list[str]:
    return [r.node.node_id for r in idx.as_retriever(similarity_top_k=k, **kw).retrieve(query)]


# --------------------------------------------------------------------- through the index

def test_retriever_ranks_by_cosine_and_returns_whole_nodes(index):
    got = index.as_retriever(similarity_top_k=3).retrieve("What is the capital of France?")
    assert [r.node.node_id for r in got][0] == "paris"
    # the scores are the cosines of the embeddings VectorStoreIndex computed (stored
    # as float16: close, not equal), nearest first, and the ranking is the oracle's
    nodes = make_nodes()
    V = np.stack([embedded(n) for n in nodes])
    q = np.asarray(EMB.vector("What is the capital of France?"))
    cos = cosines(q, V)
    order = np.argsort(-cos, kind="stable")
    assert len(got) == 3
    for r in got:
        assert r.score == pytest.approx(cos[IDS.index(r.node.node_id)], abs=2e-3)
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)
    assert {r.node.node_id for r in got} <= {IDS[j] for j in order[:4]}   # ties within 2e-3
    # the node comes back whole: text, metadata, document, relationships
    top = got[0].node
    assert top.text == CORPUS[0][2]
    assert top.metadata == CORPUS[0][3]
    assert top.ref_doc_id == "doc-geo"
    assert top.relationships[NodeRelationship.SOURCE].node_id == "doc-geo"


def test_index_and_store_agree_on_what_is_stored(index):
    db = index.vector_store.client
    assert isinstance(db, sutradb.Database) and len(db) == len(CORPUS)
    assert sorted(c.key for c in db.find({})) == sorted(IDS)
    c = db.get("nile")
    assert c.text == CORPUS[3][2]
    # user metadata is filterable at the top level, beside LlamaIndex's own fields
    assert {k: c.metadata[k] for k in META["nile"]} == META["nile"]
    assert c.metadata["ref_doc_id"] == "doc-geo" and c.metadata["_node_id"] == "nile"
    assert db.count({"source": "World Atlas"}) == 3


def test_async_retrieve(index):
    got = asyncio.run(index.as_retriever(similarity_top_k=2).aretrieve("Water boils at sea level"))
    assert got[0].node.node_id == "boil"


# --------------------------------------------------------------------- filters

def F(key, value, op="=="):
    return MetadataFilter(key=key, value=value, operator=op)


def AND(*fl):
    return MetadataFilters(filters=list(fl))


def S(names):
    return set(names.split())


# filter -> the nodes that match, worked out by hand from the corpus (LlamaIndex's
# semantics; test_expected_sets_are_llama_index_semantics checks them against its
# reference filter function)
CASES = {
    "eq": (AND(F("topic", "science")), S("boil photo dna light")),
    "ne": (AND(F("rating", 4.0, "!=")), set(IDS) - {"berlin"}),   # nile has no rating
    "gt": (AND(F("rating", 4.2, ">")), S("paris boil photo pasta")),
    "gte": (AND(F("rating", 4.2, ">=")), S("paris boil photo dna pasta")),
    "lt": (AND(F("year", 2010, "<")), S("berlin dna")),
    "lte": (AND(F("year", 2010, "<=")), S("berlin dna boil")),
    "in": (AND(F("topic", ["science", "cooking"], "in")),
           S("boil photo dna light bread omelette pasta tomato")),
    "nin": (AND(F("source", ["World Atlas", "Science Daily"], "nin")),
            S("tokyo light bread omelette pasta tomato")),
    "contains": (AND(F("tags", "city", "contains")), S("paris tokyo")),
    "any": (AND(F("tags", ["biology", "eggs"], "any")), S("photo dna omelette")),
    "all": (AND(F("tags", ["physics", "astronomy"], "all")), S("light")),
    "text_match": (AND(F("source", "Notes", "text_match")),
                   S("tokyo light bread omelette pasta tomato")),
    "is_empty list": (AND(F("tags", None, "is_empty")), S("pasta tomato")),
    "is_empty str": (AND(F("subtitle", None, "is_empty")), set(IDS) - {"paris"}),
    "gt str": (AND(F("source", "Science", ">")), S("paris berlin nile boil photo dna light")),
    "and": (AND(F("topic", "geography"), F("year", 2000, ">")), S("paris tokyo nile")),
    "and float int": (AND(F("rating", 4, ">="), F("year", 2015.5, "<")),
                      S("berlin boil photo dna")),
    "or": (MetadataFilters(filters=[F("topic", "cooking"), F("rating", 4.5, ">=")],
                           condition=FilterCondition.OR),
           S("bread omelette pasta tomato paris boil photo")),
    "not": (MetadataFilters(filters=[F("topic", "cooking"), F("year", 2015, "<")],
                            condition=FilterCondition.NOT), S("paris tokyo nile light")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_filter_through_the_retriever(index, name):
    filters, want = CASES[name]
    assert 0 < len(want) < len(CORPUS), "a case must select some nodes and not all"
    got = retrieve_ids(index, "capital city water", filters=filters)
    assert set(got) == want
    assert len(got) == len(want)


def _reference():
    """LlamaIndex's reference filter function (its in-memory store's), when the
    installed version has today's semantics (missing fields match NE / NIN, NOT is
    known: from llama-index-core 0.14.23 or so), else None."""
    try:
        from llama_index.core.vector_stores.utils import build_metadata_filter_fn
        probe = build_metadata_filter_fn(lambda _: {}, MetadataFilters(
            filters=[F("x", 1, "!=")], condition=FilterCondition.NOT))
        if probe("n"):              # NOT of a NE that a missing field matches: False
            return None
    except (ImportError, ValueError):
        return None
    return build_metadata_filter_fn


@pytest.mark.parametrize("name", list(CASES))
def test_expected_sets_are_llama_index_semantics(name):
    fn = _reference()
    if fn is None:
        pytest.skip("this llama-index-core's reference filter function predates the "
                    "semantics of the expected sets")
    filters, want = CASES[name]
    match = fn(lambda nid: META[nid], filters)
    assert {nid for nid in IDS if match(nid)} == want


def test_nested_filters(index):
    # (geography AND year > 2000) OR (science AND rating >= 4.8), then NOT of a group
    geo = MetadataFilters(filters=[F("topic", "geography"), F("year", 2000, ">")])
    sci = MetadataFilters(filters=[F("topic", "science"), F("rating", 4.8, ">=")])
    both = MetadataFilters(filters=[geo, sci], condition=FilterCondition.OR)
    want = S("paris tokyo nile") | S("boil photo")
    assert set(retrieve_ids(index, "anything", filters=both)) == want
    # AND of a nested OR with a leaf; NOT of a nested group
    tagged = MetadataFilters(filters=[both, F("tags", "city", "contains")])
    assert set(retrieve_ids(index, "anything", filters=tagged)) == {"paris", "tokyo"}
    neither = MetadataFilters(filters=[both], condition=FilterCondition.NOT)
    assert set(retrieve_ids(index, "anything", filters=neither)) == set(IDS) - want


def test_filtered_top_k_is_the_nearest_that_match(index):
    filters = MetadataFilters(filters=[F("topic", "geography", "!=")])
    q = "carbon dioxide water"
    got = index.as_retriever(similarity_top_k=2, filters=filters).retrieve(q)
    nodes = [n for n in make_nodes() if n.metadata["topic"] != "geography"]
    cos = cosines(np.asarray(EMB.vector(q)), np.stack([embedded(n) for n in nodes]))
    best = np.argsort(-cos, kind="stable")
    assert cos[best[1]] - cos[best[2]] > 0.01        # the top 2 are clear of the rest
    assert {r.node.node_id for r in got} == {nodes[best[0]].node_id, nodes[best[1]].node_id}


def test_filters_to_where_shapes():
    assert filters_to_where(None) is None
    assert filters_to_where(MetadataFilters(filters=[])) is None
    assert filters_to_where(MetadataFilters(filters=[F("a", 1)])) == {"a": {"$eq": 1}}
    assert filters_to_where(MetadataFilters(filters=[F("a", 1), F("b", [2, 3], "nin")],
                                            condition="or")) == \
        {"$or": [{"a": {"$eq": 1}}, {"b": {"$nin": [2, 3]}}]}
    assert filters_to_where(MetadataFilters(filters=[F("a", 1)], condition="not")) == \
        {"$not": {"a": {"$eq": 1}}}
    # IN with one value, not a list: a list of one
    assert filters_to_where(MetadataFilters(filters=[F("a", "x", "in")])) == {"a": {"$in": ["x"]}}


def test_unsupported_operators_and_modes_say_so(index):
    store = index.vector_store
    q = EMB.vector("capital")
    with pytest.raises(NotImplementedError, match="TEXT_MATCH_INSENSITIVE"):
        store.query(VectorStoreQuery(query_embedding=q, filters=MetadataFilters(
            filters=[F("source", "notes", "text_match_insensitive")])))
    for mode in (VectorStoreQueryMode.MMR, VectorStoreQueryMode.SEMANTIC_HYBRID):
        with pytest.raises(NotImplementedError, match="DEFAULT"):
            store.query(VectorStoreQuery(query_embedding=q, query_str="capital", mode=mode))
    with pytest.raises(ValueError, match="query_embedding"):
        store.query(VectorStoreQuery(query_str="capital"))
    with pytest.raises(TypeError, match="nprob"):
        store.query(VectorStoreQuery(query_embedding=q), nprob=4)
    with pytest.raises(ValueError, match="TEXT_MATCH takes a str"):
        filters_to_where(MetadataFilters(filters=[F("source", ["a"], "text_match")]))


def test_sutradb_where_from_a_retriever(index):
    # the whole sutradb filter language through vector_store_kwargs: $text (word
    # index), $exists, combined with LlamaIndex filters
    got = retrieve_ids(index, "anything", vector_store_kwargs={"where": {"$text": "capital"}})
    assert set(got) == {"paris", "berlin"}
    got = retrieve_ids(index, "anything", filters=MetadataFilters(filters=[F("year", 2000, ">")]),
                       vector_store_kwargs={"where": {"rating": {"$exists": False}}})
    assert got == ["nile"]
    got = retrieve_ids(index, "anything", vector_store_kwargs={"where": {"$text": "capital"},
                                                               "exact": True})
    assert set(got) == {"paris", "berlin"}


# --------------------------------------------------------------------- deletes, reads

def test_delete_ref_doc(index):
    store = index.vector_store
    index.delete_ref_doc("doc-geo")
    left = {n for n in IDS if DOCS[n] != "doc-geo"}
    assert len(store.client) == len(left) == 8
    assert set(retrieve_ids(index, "capital of France")) == left
    store.delete("no-such-doc")                       # nothing to delete: no error
    assert len(store.client) == 8


def test_query_restricted_to_node_ids_and_doc_ids(index):
    store = index.vector_store
    q = EMB.vector("capital of France")
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=10,
                                       node_ids=["berlin", "pasta", "not-stored"]))
    assert set(res.ids) == {"berlin", "pasta"}
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=10,
                                       doc_ids=["doc-food"]))
    assert set(res.ids) == {n for n in IDS if DOCS[n] == "doc-food"}
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=10, doc_ids=["doc-food"],
                                       filters=MetadataFilters(filters=[F("rating", 4, ">")])))
    assert set(res.ids) == {"bread", "pasta"}
    # an empty list restricts nothing (as_retriever passes one for a store with text)
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3, node_ids=[]))
    assert res.ids[0] == "paris" and len(res.ids) == 3


def test_index_nodes_and_as_retrievers_node_ids(index):
    # as_retriever() restricts queries to the index struct's node ids: for a store
    # that keeps text, only the IndexNodes / ImageNodes inserted (docs/llama-index.md)
    from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
    from llama_index.core.schema import IndexNode

    assert retrieve_ids(index, "capital of France", k=2) == ["paris", "berlin"]
    index.insert_nodes([IndexNode(id_="sub", text="capital of France in summary",
                                  index_id="other")])
    assert retrieve_ids(index, "capital of France", k=3) == ["sub"]
    got = VectorIndexRetriever(index, similarity_top_k=3, node_ids=None).retrieve(
        "capital of France")
    assert [r.node.node_id for r in got] == ["sub", "paris", "berlin"]
    assert isinstance(got[0].node, IndexNode) and got[0].node.index_id == "other"


def test_get_nodes_delete_nodes_clear():
    store = SutraVectorStore(":memory:", vector_dtype="float32")
    nodes = make_nodes()
    rng = np.random.default_rng(3)
    V = rng.standard_normal((len(nodes), 8)).astype(np.float32)
    for n, v in zip(nodes, V):
        n.embedding = v.tolist()
    assert store.add(nodes) == IDS
    got = store.get_nodes(node_ids=["tomato", "nope", "paris", "tomato"])
    assert [n.node_id for n in got] == ["tomato", "paris"]
    assert got[0].text == CORPUS[11][2] and got[0].metadata == CORPUS[11][3]
    assert got[1].embedding == V[0].tolist()          # float32 storage: exact
    science = MetadataFilters(filters=[F("topic", "science")])
    assert [n.node_id for n in store.get_nodes(filters=science)] == ["boil", "photo", "dna", "light"]
    assert [n.node_id for n in store.get_nodes(["dna", "paris"], filters=science)] == ["dna"]
    assert [n.node_id for n in store.get_nodes()] == IDS

    store.delete_nodes(["paris", "nope"])
    assert "paris" not in store.client and len(store.client) == 11
    store.delete_nodes(["boil", "berlin"], filters=science)     # only the ids that match
    assert "boil" not in store.client and "berlin" in store.client
    store.delete_nodes(filters=MetadataFilters(filters=[F("topic", "cooking")]))
    assert sorted(c.key for c in store.client.find({})) == \
        sorted(["berlin", "tokyo", "nile", "photo", "dna", "light"])
    store.delete_nodes([])                                       # nothing named
    assert len(store.client) == 6
    with pytest.raises(ValueError, match="clear"):
        store.delete_nodes()
    store.clear()
    assert len(store.client) == 0 and store.get_nodes() == []


def test_add_replaces_a_node_with_the_same_id(index):
    store = index.vector_store
    new = TextNode(id_="paris", text="Paris hosted the Olympic Games in 2024.",
                   metadata={"topic": "sport", "year": 2024})
    index.insert_nodes([new])
    assert len(store.client) == len(CORPUS)
    assert store.client.get("paris").text == new.text
    assert retrieve_ids(index, "Olympic Games", k=1) == ["paris"]
    assert store.get_nodes(["paris"])[0].metadata == {"topic": "sport", "year": 2024}
    # the same id twice in one call: the last one is kept
    a = TextNode(id_="x", text="first", embedding=[1.0] * EMB.dim)
    b = TextNode(id_="x", text="second", embedding=[2.0] * EMB.dim)
    assert store.add([a, b]) == ["x", "x"]
    assert store.client.get("x").text == "second"


def test_add_is_one_transaction():
    store = SutraVectorStore(":memory:")
    store.add([TextNode(id_="a", text="a", embedding=[1.0, 0.0, 0.0])])
    bad_dim = [TextNode(id_="b", text="b", embedding=[0.0, 1.0, 0.0]),
               TextNode(id_="c", text="c", embedding=[0.0, 1.0])]
    with pytest.raises(sutradb.errors.DimensionError):
        store.add(bad_dim)
    wrong_dim = [TextNode(id_="b", text="b", embedding=[0.0, 1.0, 0.0]),
                 TextNode(id_="c", text="c", embedding=[0.0, 1.0, 0.0, 0.0])][::-1]
    with pytest.raises(sutradb.errors.DimensionError):
        store.add(wrong_dim)
    no_emb = [TextNode(id_="b", text="b", embedding=[0.0, 1.0, 0.0]), TextNode(id_="c", text="c")]
    with pytest.raises(ValueError, match="'c' has no embedding"):
        store.add(no_emb)
    nan = [TextNode(id_="b", text="b", embedding=[0.0, 1.0, 0.0]),
           TextNode(id_="c", text="c", embedding=[float("nan"), 1.0, 0.0])]
    with pytest.raises(sutradb.errors.InvalidArgumentError):
        store.add(nan)
    assert [c.key for c in store.client.find({})] == ["a"]
    with pytest.raises(TypeError):
        store.add(no_emb[:1], batch=2)


# --------------------------------------------------------------------- direct query vs NumPy

@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_query_against_numpy_oracle(metric):
    rng = np.random.default_rng(11)
    n, dim = 40, 16
    V = rng.standard_normal((n, dim)).astype(np.float32)
    store = SutraVectorStore(":memory:", metric=metric, vector_dtype="float32")
    nodes = [TextNode(id_=f"n{i:02d}", text=f"node {i}", embedding=V[i].tolist(),
                     metadata={"parity": i % 2, "i": i}) for i in range(n)]
    store.add(nodes)
    for trial in range(10):
        q = rng.standard_normal(dim).astype(np.float32)
        if metric == "cosine":
            sim = cosines(q.astype(np.float64), V.astype(np.float64))
        elif metric == "ip":
            sim = V.astype(np.float64) @ q
        else:
            sim = -np.linalg.norm(V.astype(np.float64) - q, axis=1)
        k = 1 + trial % 7
        filt = trial % 2 == 1
        cand = np.arange(n) if not filt else np.arange(1, n, 2)
        best = cand[np.argsort(-sim[cand], kind="stable")[:k]]
        res = store.query(VectorStoreQuery(
            query_embedding=q.tolist(), similarity_top_k=k,
            filters=MetadataFilters(filters=[F("parity", 1)]) if filt else None))
        assert res.ids == [f"n{i:02d}" for i in best]
        assert [nd.node_id for nd in res.nodes] == res.ids
        np.testing.assert_allclose(res.similarities, sim[best], rtol=1e-4, atol=1e-4)


def test_float16_storage_against_oracle_on_stored_vectors():
    # the default storage is float16: the ranking is exact over the stored vectors
    rng = np.random.default_rng(5)
    V = rng.standard_normal((30, 12)).astype(np.float32)
    store = SutraVectorStore(":memory:")
    store.add([TextNode(id_=str(i), text="t", embedding=V[i].tolist()) for i in range(30)])
    H = V.astype(np.float16).astype(np.float64)
    q = rng.standard_normal(12)
    sim = cosines(q, H)
    best = np.argsort(-sim, kind="stable")[:5]
    res = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5))
    assert res.ids == [str(i) for i in best]
    np.testing.assert_allclose(res.similarities, sim[best], atol=1e-3)


# --------------------------------------------------------------------- persistence

def test_persistence_through_a_new_index(tmp_path):
    path = tmp_path / "notes.sutra"
    store = SutraVectorStore(path)
    assert store.client.dim is None                  # fixed by the first nodes
    idx = VectorStoreIndex(make_nodes(), storage_context=StorageContext.from_defaults(
        vector_store=store), embed_model=EMB)
    q = "the capital of reunified Germany"
    before = [(r.node.node_id, r.score) for r in idx.as_retriever(similarity_top_k=3).retrieve(q)]
    assert before[0][0] == "berlin"
    store.close()
    assert store.client.closed

    again = SutraVectorStore(str(path))
    assert again.client.dim == EMB.dim and len(again.client) == len(CORPUS)
    idx2 = VectorStoreIndex.from_vector_store(again, embed_model=EMB)
    after = [(r.node.node_id, r.score) for r in idx2.as_retriever(similarity_top_k=3).retrieve(q)]
    assert after == before
    food = MetadataFilters(filters=[F("topic", "cooking")])
    assert set(retrieve_ids(idx2, q, filters=food)) == {n for n in IDS if DOCS[n] == "doc-food"}
    # writes after reopening persist too
    idx2.insert_nodes([TextNode(id_="rome", text="Rome is the capital of Italy.",
                                metadata={"topic": "geography"})])
    idx2.delete_ref_doc("doc-sci")
    again.close()
    with SutraVectorStore(path, mode="r") as ro:
        assert len(ro.client) == len(CORPUS) + 1 - 4
        idx3 = VectorStoreIndex.from_vector_store(ro, embed_model=EMB)
        assert retrieve_ids(idx3, "capital of Italy", k=1) == ["rome"]
        with pytest.raises(sutradb.errors.ReadOnlyError):
            ro.add([TextNode(id_="z", text="z", embedding=[0.0] * EMB.dim)])
    assert ro.client.closed


def test_a_database_given_stays_the_callers(tmp_path):
    db = sutradb.open(tmp_path / "db", dim=3)
    with SutraVectorStore(db) as store:
        assert store.client is db
        store.add([TextNode(id_="a", text="alpha", embedding=[1.0, 0.0, 0.0])])
    assert not db.closed and db.get("a").text == "alpha"
    with pytest.raises(TypeError):
        SutraVectorStore(db, dim=3)
    db.close()
    with pytest.raises(ValueError, match="closed"):
        SutraVectorStore(db)


def test_concepts_stored_without_llama_index(tmp_path):
    # a database filled by sutradb directly: its concepts come back as TextNodes
    db = sutradb.open(":memory:")
    db.add_vectors(np.eye(3, dtype=np.float32), texts=["x axis", "y axis", None],
                   metadata=[{"axis": "x"}, {"axis": "y"}, None], keys=["kx", None, "kz"])
    store = SutraVectorStore(db)
    res = store.query(VectorStoreQuery(query_embedding=[0.1, 1.0, 0.0], similarity_top_k=3))
    assert res.ids == ["1", "kx", "kz"]
    assert res.nodes[0].text == "y axis" and res.nodes[0].metadata == {"axis": "y"}
    assert res.nodes[2].text == "" and res.nodes[2].metadata == {}
    assert res.similarities[0] == pytest.approx(1.0 / np.sqrt(1.01), abs=1e-3)


# --------------------------------------------------------------------- text and hybrid search
#
# Oracles: Database.search_text for TEXT_SEARCH (ids, order, scores), and
# sutradb.index.bm25.rrf of the separate vector ranking (Database.search) and BM25
# ranking (Database.search_text), each to depth max(4k, 60), for HYBRID.

QUERIES = ["capital Mediterranean", "carbon dioxide Celsius", "eggs and the Nile",
           "Which capital is metropolitan?", "water carbon sugar", "sweetness of tomatoes",
           "no word of this query is stored zzz", "capital"]


def query_vector(q: str) -> np.ndarray:
    """The query embedding a retriever computes (its aggregate of one string)."""
    return np.asarray(EMB.get_agg_embedding_from_queries([q]), dtype=np.float32)


def text_oracle(db, q, k, where=None):
    return [(h.concept.key, h.score) for h in db.search_text(q, k, where=where)]


def hybrid_oracle(db, q, k, weights=(1.0, 1.0), where=None):
    depth = max(4 * k, 60)
    dense = [h.concept.key for h in db.search(query_vector(q), depth, where=where)]
    text = [h.concept.key for h in db.search_text(q, depth, where=where)]
    return [(i, s) for i, s in rrf([dense, text], weights, k) if s > 0]


def scored(results) -> list[tuple[str, float]]:
    return [(r.node.node_id, r.score) for r in results]


def assert_same(got, want):
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)


def test_text_search_through_the_retriever_is_search_text(index):
    db = index.vector_store.client
    for q in QUERIES:
        for k in (1, 3, 12):
            r = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=k)
            got = r.retrieve(q)
            assert_same(scored(got), text_oracle(db, q, k))
            # SPARSE is the same BM25 ranking (as in LlamaIndex's Postgres store)
            sp = index.as_retriever(vector_store_query_mode="sparse", similarity_top_k=k)
            assert_same(scored(sp.retrieve(q)), text_oracle(db, q, k))
    # nodes that share no term with the query are not returned
    assert index.as_retriever(vector_store_query_mode="text_search").retrieve("zzz qqq") == []
    got = index.as_retriever(vector_store_query_mode="text_search",
                             similarity_top_k=12).retrieve("yeast")
    assert [r.node.node_id for r in got] == ["bread"]
    # the node comes back whole
    assert got[0].node.text == CORPUS[8][2] and got[0].node.metadata == CORPUS[8][3]
    assert got[0].node.ref_doc_id == "doc-food"


def test_text_search_top_k_is_sparse_top_k(index):
    db = index.vector_store.client
    r = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=1,
                           sparse_top_k=4)
    got = r.retrieve("capital city water")
    assert len(got) == 4
    assert_same(scored(got), text_oracle(db, "capital city water", 4))


def test_text_search_needs_no_embedding(index):
    store = index.vector_store
    res = store.query(VectorStoreQuery(query_str="capital", similarity_top_k=5,
                                       mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert set(res.ids) == {"paris", "berlin"}
    assert res.similarities == [s for _, s in text_oracle(store.client, "capital", 5)]
    # a plain str is a mode too (VectorStoreQueryMode is a str enum)
    res2 = store.query(VectorStoreQuery(query_str="capital", similarity_top_k=5, mode="text_search"))
    assert res2.ids == res.ids


@pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 0.5, 0.8, 1.0])
def test_hybrid_through_the_retriever_is_rrf_of_the_two_rankings(index, alpha):
    db = index.vector_store.client
    weights = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    for q in QUERIES:
        for k in (1, 3, 5, 12):
            r = index.as_retriever(vector_store_query_mode="hybrid", alpha=alpha,
                                   similarity_top_k=k)
            got = scored(r.retrieve(q))
            want = hybrid_oracle(db, q, k, weights)
            assert_same(got, want)
            if alpha is None or 0 < alpha < 1:
                assert len(got) == k          # every node is in the vector ranking


def test_hybrid_alpha_one_is_the_vector_ranking_and_zero_the_text_ranking(index):
    for q in QUERIES:
        dense = retrieve_ids(index, q, k=5)
        hy1 = retrieve_ids(index, q, k=5, vector_store_query_mode="hybrid", alpha=1.0)
        assert hy1 == dense
        text = retrieve_ids(index, q, k=5, vector_store_query_mode="text_search")
        hy0 = retrieve_ids(index, q, k=5, vector_store_query_mode="hybrid", alpha=0.0)
        assert hy0 == text                    # fewer than 5 when fewer share a term


def test_hybrid_top_k(index):
    db = index.vector_store.client
    r = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=2, hybrid_top_k=5)
    got = scored(r.retrieve("carbon dioxide Celsius"))
    assert len(got) == 5
    assert_same(got, hybrid_oracle(db, "carbon dioxide Celsius", 5))


def test_a_rare_query_word_lifts_its_only_node(index):
    # "Mediterranean" occurs in the text of one node, the Nile's; the vector ranking
    # (the toy embedding also embeds the metadata) puts two capitals before it
    db = index.vector_store.client
    assert db.find_words("Mediterranean") == [db.get("nile").id]
    q = "capital Mediterranean"
    dense = retrieve_ids(index, q, k=3)
    assert dense.index("nile") == 2
    text = retrieve_ids(index, q, k=3, vector_store_query_mode="text_search")
    assert text[0] == "nile"
    hybrid = retrieve_ids(index, q, k=3, vector_store_query_mode="hybrid")
    assert hybrid.index("nile") == 1          # lifted above a capital the text ranks lower
    leaning_text = retrieve_ids(index, q, k=3, vector_store_query_mode="hybrid", alpha=0.25)
    assert leaning_text[0] == "nile"
    assert retrieve_ids(index, q, k=3, vector_store_query_mode="hybrid", alpha=0.9)[0] == "paris"


def test_filters_apply_inside_text_and_hybrid_search(index):
    db = index.vector_store.client
    cooking = MetadataFilters(filters=[F("topic", "cooking")])
    where = filters_to_where(cooking)
    q = "capital carbon eggs heat of the Nile"
    # unfiltered, the best text matches are not cooking nodes
    assert retrieve_ids(index, q, k=2, vector_store_query_mode="text_search")[0] != "bread"
    for k in (1, 2, 4):
        got = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=k,
                                 filters=cooking).retrieve(q)
        assert_same(scored(got), text_oracle(db, q, k, where))
        assert all(r.node.metadata["topic"] == "cooking" for r in got)
        assert len(got) == min(k, 3)          # bread, omelette, pasta share a term with q
        got = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=k,
                                 alpha=0.4, filters=cooking).retrieve(q)
        assert_same(scored(got), hybrid_oracle(db, q, k, (0.4, 0.6), where))
        assert len(got) == k and all(r.node.metadata["topic"] == "cooking" for r in got)
    # sutradb's own where= and the node / document restrictions, in both modes
    sub = {"$text": "capital"}
    got = retrieve_ids(index, "capital city", vector_store_query_mode="hybrid",
                       vector_store_kwargs={"where": sub})
    assert set(got) == {"paris", "berlin"}
    store = index.vector_store
    res = store.query(VectorStoreQuery(query_str="capital carbon", similarity_top_k=10,
                                       mode="text_search", doc_ids=["doc-food"]))
    assert res.ids == ["bread"]
    res = store.query(VectorStoreQuery(query_str="capital carbon", similarity_top_k=10,
                                       query_embedding=query_vector("capital carbon").tolist(),
                                       mode="hybrid", node_ids=["berlin", "photo", "tomato"]))
    assert set(res.ids) == {"berlin", "photo", "tomato"}


def test_hybrid_against_rrf_on_a_larger_corpus():
    # more nodes than the rankings' depth (max(4k, 60)), words drawn from a small
    # vocabulary so that many nodes share terms; filters on a field
    rng = np.random.default_rng(17)
    vocab = [f"w{i}" for i in range(120)]
    nodes = []
    for i in range(400):
        words = rng.choice(vocab, size=int(rng.integers(3, 12)), p=None)
        nodes.append(TextNode(id_=f"n{i:03d}", text=" ".join(words), metadata={"g": i % 3},
                              excluded_embed_metadata_keys=["g"]))
    store = SutraVectorStore(":memory:")
    idx = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                           embed_model=EMB)
    db = store.client
    g1 = MetadataFilters(filters=[F("g", 1)])
    for t in range(12):
        q = " ".join(rng.choice(vocab, size=3))
        k = (1, 5, 10, 20)[t % 4]
        alpha = (None, 0.3, 0.7)[t % 3]
        weights = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
        filt = t % 2 == 1
        r = idx.as_retriever(vector_store_query_mode="hybrid", alpha=alpha, similarity_top_k=k,
                             filters=g1 if filt else None)
        want = hybrid_oracle(db, q, k, weights, filters_to_where(g1) if filt else None)
        assert_same(scored(r.retrieve(q)), want)
        r = idx.as_retriever(vector_store_query_mode="text_search", similarity_top_k=k,
                             filters=g1 if filt else None)
        assert_same(scored(r.retrieve(q)),
                    text_oracle(db, q, k, filters_to_where(g1) if filt else None))
    store.close()


def test_text_and_hybrid_query_errors(index):
    store = index.vector_store
    q = query_vector("capital").tolist()
    with pytest.raises(ValueError, match="query_str"):
        store.query(VectorStoreQuery(query_embedding=q, mode="text_search"))
    with pytest.raises(ValueError, match="query_str"):
        store.query(VectorStoreQuery(query_embedding=q, mode="hybrid"))
    with pytest.raises(ValueError, match="query_embedding"):
        store.query(VectorStoreQuery(query_str="capital", mode="hybrid"))
    for alpha in (1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            store.query(VectorStoreQuery(query_embedding=q, query_str="capital",
                                         mode="hybrid", alpha=alpha))
    with pytest.raises(TypeError, match="exact"):
        store.query(VectorStoreQuery(query_str="capital", mode="text_search"), exact=True)
    # the vector search options tune the vector side of a hybrid search
    a = store.query(VectorStoreQuery(query_embedding=q, query_str="capital", mode="hybrid",
                                     similarity_top_k=4), exact=True)
    b = store.query(VectorStoreQuery(query_embedding=q, query_str="capital", mode="hybrid",
                                     similarity_top_k=4))
    assert a.ids == b.ids


def test_async_text_and_hybrid_retrieve(index):
    for mode in ("text_search", "hybrid"):
        r = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=3, alpha=0.3)
        got = asyncio.run(r.aretrieve("capital Mediterranean"))
        assert scored(got) == scored(r.retrieve("capital Mediterranean"))


def test_text_search_follows_writes_and_reopening(tmp_path):
    path = tmp_path / "kb"
    store = SutraVectorStore(path)
    idx = VectorStoreIndex(make_nodes(), storage_context=StorageContext.from_defaults(
        vector_store=store), embed_model=EMB)
    assert retrieve_ids(idx, "Mediterranean", vector_store_query_mode="text_search") == ["nile"]
    idx.insert_nodes([TextNode(id_="med", text="A cruise on the Mediterranean Sea.")])
    idx.delete_ref_doc("doc-geo")
    assert retrieve_ids(idx, "Mediterranean", vector_store_query_mode="text_search") == ["med"]
    store.close()
    with SutraVectorStore(path, mode="r") as ro:
        idx2 = VectorStoreIndex.from_vector_store(ro, embed_model=EMB)
        assert retrieve_ids(idx2, "Mediterranean capital",
                            vector_store_query_mode="text_search") == ["med"]
        assert retrieve_ids(idx2, "Mediterranean", k=2, vector_store_query_mode="hybrid")[0] == "med"


# --------------------------------------------------------------------- the module

def test_doctests():
    res = doctest.testmod(li, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 5 and res.failed == 0


def test_import_sutradb_does_not_import_llama_index():
    code = ("import sys, sutradb, sutradb.integrations; "
            "assert not any(m.startswith('llama_index') for m in sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
