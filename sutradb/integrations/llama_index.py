"""A sutradb database as a LlamaIndex vector store: :class:`SutraVectorStore`.

>>> from sutradb.integrations.llama_index import SutraVectorStore   # doctest: +SKIP
>>> store = SutraVectorStore("notes.sutra")                         # doctest: +SKIP

Needs ``llama-index-core`` (``pip install "sutradb[llama-index]"``); importing this
module imports it (about a second: LlamaIndex imports its whole core package), while
``import sutradb`` never does. See ``docs/llama-index.md``.

How nodes are stored
--------------------
One node is one concept:

* ``key``: the node id (``node.node_id``), sutradb's unique primary key, so adding a
  node whose id is stored already replaces it (:meth:`~sutradb.Database.upsert`);
* ``text``: the node's text (``node.get_content(metadata_mode=MetadataMode.NONE)``),
  in sutradb's word index (``$text`` filters) and its term postings (the BM25
  ranking of ``TEXT_SEARCH`` and ``HYBRID`` queries);
* ``vector``: ``node.embedding``;
* ``metadata``: the node's own metadata as top-level fields (filterable, nested dicts
  and lists included), plus what LlamaIndex's
  :func:`~llama_index.core.vector_stores.utils.node_to_metadata_dict` adds to rebuild
  the node (``_node_content``: the node as JSON without its text and embedding,
  ``_node_type``) and to delete by document (``ref_doc_id``, with its copies
  ``doc_id`` and ``document_id``, as every LlamaIndex store writes them), and
  ``_node_id`` (the node id again: ``where`` filters see metadata only, and a query
  restricted to ``node_ids`` filters on it). These names shadow user metadata fields
  of the same names in filters (the rebuilt node keeps the user's values).

Concepts that another program stored without these fields (``sutradb.open(...)``
then ``add_vectors``) come back from queries as ``TextNode`` objects whose id is the
concept's key (or its sutradb id as a string), with its text and metadata.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..database import Concept, Database, Hit, open as _open
from ..errors import DimensionError, MissingDependencyError

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode, TextNode
    from llama_index.core.vector_stores.types import (BasePydanticVectorStore, FilterCondition,
                                                      FilterOperator, MetadataFilter,
                                                      MetadataFilters, VectorStoreQuery,
                                                      VectorStoreQueryMode,
                                                      VectorStoreQueryResult)
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as e:        # pragma: no cover - the extra is installed in the tests
    raise MissingDependencyError(
        f"sutradb.integrations.llama_index needs llama-index-core ({e}): "
        "pip install 'sutradb[llama-index]'") from e

__all__ = ["SutraVectorStore", "filters_to_where"]

#: The metadata field holding the node id (``where`` filters cannot name keys).
NODE_ID_FIELD = "_node_id"
#: The metadata field holding the id of the node's source document.
REF_DOC_ID_FIELD = "ref_doc_id"
#: Arguments of :meth:`SutraVectorStore.query` passed on to :meth:`sutradb.Database.search`.
SEARCH_KWARGS = ("rerank", "nprobe", "exact")


# ---------------------------------------------------------------------- filters

def _contains(key: str, value: Any) -> dict[str, Any]:
    return {key: {"$contains": value}}


def _values(f: MetadataFilter) -> list[Any]:
    v = f.value
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _leaf(f: MetadataFilter) -> dict[str, Any]:
    """One :class:`MetadataFilter` as a sutradb ``where`` condition."""
    op, key, value = f.operator, f.key, f.value
    simple = {FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
              FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte"}
    if op in simple:
        return {key: {simple[op]: value}}
    if op == FilterOperator.IN:
        return {key: {"$in": _values(f)}}
    if op == FilterOperator.NIN:
        return {key: {"$nin": _values(f)}}
    if op == FilterOperator.CONTAINS:
        return _contains(key, value)
    if op in (FilterOperator.ANY, FilterOperator.ALL):
        # LlamaIndex's own semantics: each value is an element of a list field (or a
        # substring of a str field), for any / all of the values
        subs = [_contains(key, v) for v in _values(f)]
        if not subs:
            raise ValueError(f"filter on {key!r}: {op.name} needs at least one value")
        return subs[0] if len(subs) == 1 else {"$or" if op == FilterOperator.ANY else "$and": subs}
    if op == FilterOperator.TEXT_MATCH:
        if not isinstance(value, str):
            raise ValueError(f"filter on {key!r}: TEXT_MATCH takes a str, got {value!r}")
        return _contains(key, value)
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{key: {"$exists": False}}, {key: None}, {key: ""}, {key: []}]}
    raise NotImplementedError(
        f"filter on {key!r}: the operator {op.name} has no sutradb equivalent (sutradb's "
        "substring match, TEXT_MATCH, is case-sensitive; its $text filter, passed as "
        "query(..., where={'$text': ...}), matches the words of the text case-insensitively)")


def filters_to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex metadata filters as a sutradb ``where`` filter.

    Parameters
    ----------
    filters : MetadataFilters or None
        Filters on metadata fields (a key with dots is a path into nested dicts, as in
        sutradb's filters), combined with ``AND``, ``OR`` or ``NOT`` (none of them
        holds), nested to any depth.

    Returns
    -------
    dict or None
        The filter (:mod:`sutradb.index.filters`), or None when there is nothing to
        filter (no filters).

    Raises
    ------
    NotImplementedError
        ``TEXT_MATCH_INSENSITIVE`` (sutradb has no case-insensitive substring match),
        or an operator or condition this module does not know.
    ValueError
        An ill-typed value (``TEXT_MATCH`` with a non-str; ``ANY`` / ``ALL`` with no
        value). sutradb itself rejects what its filters cannot hold
        (:class:`~sutradb.errors.InvalidArgumentError`, when the filter is used).

    Notes
    -----
    ``EQ`` ``NE`` ``GT`` ``GTE`` ``LT`` ``LTE`` ``IN`` ``NIN`` map to ``$eq`` ``$ne``
    ``$gt`` ``$gte`` ``$lt`` ``$lte`` ``$in`` ``$nin``; ``CONTAINS`` and ``TEXT_MATCH``
    to ``$contains`` (an element of a list field, or a substring of a str field);
    ``ANY`` / ``ALL`` to an ``$or`` / ``$and`` of ``$contains``; ``IS_EMPTY`` to a
    missing field, ``None``, ``""`` or ``[]``. sutradb's rules apply: a list field
    matches ``EQ`` when one of its elements does, comparisons hold between numbers or
    between strings only, and a missing field matches only ``NE`` / ``NIN``.

    Examples
    --------
    >>> from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
    >>> filters_to_where(MetadataFilters(filters=[
    ...     MetadataFilter(key="year", value=2000, operator=">="),
    ...     MetadataFilter(key="lang", value=["en", "fr"], operator="in")]))
    {'$and': [{'year': {'$gte': 2000}}, {'lang': {'$in': ['en', 'fr']}}]}
    """
    if filters is None or not filters.filters:
        return None
    return _group(filters)


def _group(filters: MetadataFilters) -> dict[str, Any]:
    subs = [_group(f) if isinstance(f, MetadataFilters) else _leaf(f) for f in filters.filters]
    if not subs:
        return {}                       # an empty nested group matches everything
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return subs[0] if len(subs) == 1 else {"$and": subs}
    if cond == FilterCondition.OR:
        return subs[0] if len(subs) == 1 else {"$or": subs}
    if cond == FilterCondition.NOT:
        return {"$not": subs[0] if len(subs) == 1 else {"$or": subs}}
    raise NotImplementedError(f"filter condition {cond!r} is not supported (AND, OR, NOT)")


def _and(*wheres: dict[str, Any] | None) -> dict[str, Any] | None:
    parts = [w for w in wheres if w is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


# ---------------------------------------------------------------------- similarities

def _cosine(d: float) -> float:
    return 1.0 - d


def _dot(d: float) -> float:
    return -d


def _neg_euclidean(d: float) -> float:
    return -math.sqrt(max(d, 0.0))


#: sutradb distance (ascending) -> LlamaIndex similarity (higher is better), per metric:
#: the values of ``llama_index.core.base.embeddings.base.similarity`` in the mode of the
#: same name (cosine; dot product; minus the Euclidean distance)
SIMILARITY: dict[str, Callable[[float], float]] = {
    "cosine": _cosine, "ip": _dot, "l2": _neg_euclidean}


# ---------------------------------------------------------------------- the store

class SutraVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store kept in a sutradb database.

    Nodes are stored as concepts keyed by their node id, with their text, embedding
    and metadata (see :mod:`sutradb.integrations.llama_index`); the store keeps the
    text (``stores_text = True``), so an index needs no document store:
    ``VectorStoreIndex.from_vector_store(store, embed_model=...)`` on a database
    reopened later answers as the index that filled it did. Queries rank by
    embedding (``DEFAULT``), by BM25 over the texts (``TEXT_SEARCH``, ``SPARSE``) or
    by both fused (``HYBRID``): see :meth:`query`.

    Parameters
    ----------
    path_or_db : str, os.PathLike or sutradb.Database
        A database directory (created when missing), ``":memory:"`` (the default: a
        database without files), or an open :class:`~sutradb.Database` (the caller
        keeps owning it: :meth:`close` leaves it open).
    dim : int, optional
        The embedding dimension; by default fixed by the first nodes added (or the
        stored database's).
    metric : {"cosine", "ip", "l2"}
        The distance of a new database (default ``"cosine"``); an existing one keeps
        its own. Similarities are the cosine, the dot product, or minus the Euclidean
        distance.
    **open_kwargs
        Passed on to :func:`sutradb.open` (``mode``, ``vector_dtype``,
        ``durability``, ...). Not with a Database.

    Attributes
    ----------
    stores_text : bool
        True: nodes come back whole from :meth:`query` and :meth:`get_nodes`.
    flat_metadata : bool
        False: metadata may hold nested dicts and lists (sutradb filters reach into
        them by dotted paths).

    Examples
    --------
    >>> from llama_index.core.schema import TextNode
    >>> store = SutraVectorStore(":memory:")
    >>> store.add([TextNode(id_="a", text="alpha", embedding=[1.0, 0.0]),
    ...            TextNode(id_="b", text="beta", embedding=[0.0, 1.0])])
    ['a', 'b']
    >>> from llama_index.core.vector_stores.types import VectorStoreQuery
    >>> res = store.query(VectorStoreQuery(query_embedding=[0.9, 0.1], similarity_top_k=1))
    >>> res.ids, res.nodes[0].text
    (['a'], 'alpha')
    """

    stores_text: bool = True
    flat_metadata: bool = False

    _db: Database = PrivateAttr()
    _owns_db: bool = PrivateAttr(default=False)

    def __init__(self, path_or_db: str | os.PathLike[str] | Database = ":memory:", *,
                 dim: int | None = None, metric: str | None = None,
                 **open_kwargs: Any) -> None:
        super().__init__()
        if isinstance(path_or_db, Database):
            if dim is not None or metric is not None or open_kwargs:
                raise TypeError("dim, metric and open arguments go with a path, not an open "
                                "Database")
            if path_or_db.closed:
                raise ValueError("the database is closed")
            self._db = path_or_db
            self._owns_db = False
        else:
            if metric is not None:
                open_kwargs["metric"] = metric
            self._db = _open(path_or_db, dim=dim, **open_kwargs)
            self._owns_db = True

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises the store under."""
        return "SutraVectorStore"

    @property
    def client(self) -> Database:
        """The :class:`sutradb.Database` (for everything sutradb does beyond this
        interface: ``find``, ``count``, links, ``export``...)."""
        return self._db

    # ------------------------------------------------------------------ writes

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes with their embeddings, in one transaction.

        Parameters
        ----------
        nodes : sequence of BaseNode
            Each with an embedding (``node.embedding``) of the store's dimension. A
            node id that is stored already is replaced (text, metadata, embedding);
            when a node id appears twice in ``nodes`` the last one is kept.

        Returns
        -------
        list of str
            The node ids, in the order of ``nodes``.

        Raises
        ------
        ValueError
            A node without an embedding.
        sutradb.errors.DimensionError, sutradb.errors.InvalidArgumentError
            An embedding of another dimension or with NaN, metadata that sutradb cannot
            hold: nothing of the call is stored.
        """
        _no_kwargs("add", add_kwargs)
        nodes = list(nodes)
        if not nodes:
            return []
        last = {n.node_id: j for j, n in enumerate(nodes)}
        keep = [nodes[j] for j in sorted(last.values())]
        vectors = []
        for n in keep:
            if n.embedding is None:
                raise ValueError(f"node {n.node_id!r} has no embedding (embed the nodes first, "
                                 "or add them through a VectorStoreIndex with an embed_model)")
            vectors.append(n.embedding)
        try:
            V = np.asarray(vectors, dtype=np.float32)
        except ValueError:
            raise DimensionError("the nodes' embeddings have different lengths") from None
        if V.ndim != 2:
            raise DimensionError(f"embeddings must be lists of numbers, got shape {V.shape}")
        texts = []
        metadata = []
        for n in keep:
            text = n.get_content(metadata_mode=MetadataMode.NONE)
            texts.append(text if text else None)
            md = node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata)
            md[NODE_ID_FIELD] = n.node_id
            metadata.append(md)
        self._db.upsert(V, keys=[n.node_id for n in keep], texts=texts, metadata=metadata)
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of a document (whose ``ref_doc_id`` is this id).

        Parameters
        ----------
        ref_doc_id : str
            The source document's id (``"None"`` names the nodes without one, as in
            every LlamaIndex store).
        """
        _no_kwargs("delete", delete_kwargs)
        self._db.delete(where={REF_DOC_ID_FIELD: {"$eq": ref_doc_id}})

    def delete_nodes(self, node_ids: list[str] | None = None,
                     filters: MetadataFilters | None = None, **delete_kwargs: Any) -> None:
        """Delete nodes by id, by filter, or those of the ids that match the filters,
        in one transaction.

        Parameters
        ----------
        node_ids : list of str, optional
            Ids that are not stored are passed over.
        filters : MetadataFilters, optional
            As in :meth:`query`.

        Raises
        ------
        ValueError
            Neither ``node_ids`` nor ``filters`` (:meth:`clear` deletes everything).
        """
        _no_kwargs("delete_nodes", delete_kwargs)
        where = filters_to_where(filters)
        if node_ids is None:
            if filters is None:
                raise ValueError("delete_nodes needs node_ids or filters (clear() deletes "
                                 "every node)")
            self._db.delete(where=where if where is not None else {})
            return
        keys = self._stored_keys(node_ids)
        if keys:
            self._db.delete(keys, where=where)

    def clear(self) -> None:
        """Delete every concept of the database."""
        self._db.delete(where={})

    # ------------------------------------------------------------------ reads

    def get_nodes(self, node_ids: list[str] | None = None,
                  filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Stored nodes by id and/or filter, with their embeddings.

        Parameters
        ----------
        node_ids : list of str, optional
            The nodes to return, in this order (ids not stored are passed over).
        filters : MetadataFilters, optional
            Only the nodes that match. Without either argument: every node, in the
            order they were first added.

        Returns
        -------
        list of BaseNode
            With ``embedding`` set to the stored vector (in its stored precision,
            float16 by default) when the database keeps vectors.
        """
        where = filters_to_where(filters)
        db = self._db
        if node_ids is None:
            concepts = db.find(where if where is not None else {})
        else:
            concepts = db.get_many(self._stored_keys(node_ids))
            if where is not None:
                match = set(db.find_ids(where).tolist())
                concepts = [c for c in concepts if c.id in match]
        out = []
        for c in concepts:
            node = _to_node(c)
            if c.vector is not None:
                node.embedding = np.asarray(c.vector, dtype=np.float32).tolist()
            out.append(node)
        return out

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The nodes nearest to a query embedding, best matching a query text (BM25),
        or both fused.

        Parameters
        ----------
        query : VectorStoreQuery
            ``mode`` picks the ranking:

            * ``DEFAULT``: the ``similarity_top_k`` nodes nearest to
              ``query_embedding``;
            * ``TEXT_SEARCH`` (and ``SPARSE``, its synonym here, as in LlamaIndex's
              Postgres store): the ``sparse_top_k`` (default ``similarity_top_k``)
              nodes whose text best matches ``query_str``, ranked by BM25
              (:meth:`sutradb.Database.search_text`). No embedding is needed. Nodes
              that share no term with the query are not returned;
            * ``HYBRID``: the vector ranking of ``query_embedding`` and the BM25
              ranking of ``query_str`` fused by reciprocal rank
              (:meth:`sutradb.Database.search` with ``mode="hybrid"``), weighted by
              ``alpha`` as LlamaIndex defines it (1 for the vector search alone, 0
              for the text search alone): weights ``(alpha, 1 - alpha)``, ``(1, 1)``
              when ``alpha`` is None. ``hybrid_top_k`` (default
              ``similarity_top_k``) nodes come back; each ranking is taken to
              sutradb's depth ``max(4 * k, 60)``. Nodes that only a ranking of
              weight 0 found are left out, so ``alpha=1`` is the vector ranking and
              ``alpha=0`` the BM25 ranking.

            ``filters`` (see :func:`filters_to_where`) apply inside every ranking;
            ``node_ids`` and ``doc_ids`` restrict the search to those nodes / to the
            nodes of those documents (an empty list restricts nothing:
            ``VectorStoreIndex.as_retriever`` passes one). From an index:
            ``index.as_retriever(vector_store_query_mode="hybrid", alpha=0.5)``.
        **kwargs
            ``where``: a sutradb filter (:mod:`sutradb.index.filters`: ``$text``,
            ``$exists``, ``$not``... anything its language has) that must hold as
            well; ``rerank``, ``nprobe``, ``exact``: as in
            :meth:`sutradb.Database.search`, for the vector ranking (``DEFAULT`` and
            ``HYBRID``). From a retriever:
            ``index.as_retriever(vector_store_kwargs={"where": ...})``.

        Returns
        -------
        VectorStoreQueryResult
            ``nodes`` (whole, without embeddings), ``similarities`` and ``ids`` (node
            ids), best first. The similarities are higher-is-better: for ``DEFAULT``
            the cosine for a cosine database, the dot product for ``"ip"``, minus
            the Euclidean distance for ``"l2"``; for ``TEXT_SEARCH`` the BM25 score;
            for ``HYBRID`` the fused score ``sum_i w_i / (60 + rank_i)``. The
            filter is applied inside the search, so when at least top-k nodes match
            (and, for a text search, share a term with the query) that many come
            back.

        Raises
        ------
        NotImplementedError
            Another mode (``MMR``, ``SEMANTIC_HYBRID``...), or a filter operator
            sutradb has no equivalent for.
        ValueError
            No ``query_embedding`` (``DEFAULT``, ``HYBRID``), no ``query_str``
            (``TEXT_SEARCH``, ``HYBRID``), or an ``alpha`` outside ``[0, 1]``.
        TypeError
            An unknown keyword argument, or ``rerank`` / ``nprobe`` / ``exact`` with a
            text search (it has no vector ranking to tune).
        """
        unknown = set(kwargs) - {"where", *SEARCH_KWARGS}
        if unknown:
            raise TypeError(f"query got unexpected arguments {sorted(unknown)} (it takes "
                            f"where, {', '.join(SEARCH_KWARGS)})")
        where = _and(filters_to_where(query.filters),
                     {REF_DOC_ID_FIELD: {"$in": list(query.doc_ids)}} if query.doc_ids else None,
                     {NODE_ID_FIELD: {"$in": list(query.node_ids)}} if query.node_ids else None,
                     kwargs.get("where"))
        search = {k: kwargs[k] for k in SEARCH_KWARGS if k in kwargs}
        mode = query.mode
        if mode == VectorStoreQueryMode.DEFAULT:
            return self._dense_query(query, where, search)
        if mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
            return self._text_query(query, where, search)
        if mode == VectorStoreQueryMode.HYBRID:
            return self._hybrid_query(query, where, search)
        raise NotImplementedError(
            f"SutraVectorStore answers the query modes DEFAULT (dense vectors), "
            f"TEXT_SEARCH and SPARSE (BM25) and HYBRID (both, fused), not "
            f"{getattr(mode, 'value', mode)!r}")

    def _dense_query(self, query: VectorStoreQuery, where: dict[str, Any] | None,
                     search: dict[str, Any]) -> VectorStoreQueryResult:
        if query.query_embedding is None:
            raise ValueError("the query has no query_embedding (DEFAULT mode searches by "
                             "embedding)")
        q = np.asarray(query.query_embedding, dtype=np.float32)
        hits = self._db.search(q, k=query.similarity_top_k, where=where, **search)
        to_sim = SIMILARITY[self._db.metric]
        return _result(hits, [to_sim(float(h.distance)) for h in hits])

    def _text_query(self, query: VectorStoreQuery, where: dict[str, Any] | None,
                    search: dict[str, Any]) -> VectorStoreQueryResult:
        mode = getattr(query.mode, "value", query.mode)
        if search:
            raise TypeError(f"{', '.join(sorted(search))} tune the vector search; a "
                            f"{mode!r} query ranks texts only")
        if not isinstance(query.query_str, str) or not query.query_str:
            raise ValueError(f"the query has no query_str (a {mode!r} query ranks the "
                             "nodes' texts against it)")
        k = query.sparse_top_k or query.similarity_top_k
        hits = self._db.search_text(query.query_str, k, where=where)
        return _result(hits, [h.score for h in hits])

    def _hybrid_query(self, query: VectorStoreQuery, where: dict[str, Any] | None,
                      search: dict[str, Any]) -> VectorStoreQueryResult:
        if query.query_embedding is None:
            raise ValueError("the query has no query_embedding (HYBRID mode fuses the "
                             "vector ranking with the text ranking)")
        if not isinstance(query.query_str, str) or not query.query_str:
            raise ValueError("the query has no query_str (HYBRID mode fuses the vector "
                             "ranking with the text ranking)")
        alpha = query.alpha
        if alpha is None:
            weights = (1.0, 1.0)
        elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1] (1: the vector search "
                             f"alone, 0: the text search alone), got {alpha!r}")
        else:
            weights = (float(alpha), 1.0 - float(alpha))
        k = query.hybrid_top_k or query.similarity_top_k
        q = np.asarray(query.query_embedding, dtype=np.float32)
        hits = self._db.search(query.query_str, k, where=where, mode="hybrid", vector=q,
                               weights=weights, **search)
        # a node that only a ranking of weight 0 found has a fused score of 0
        hits = [h for h in hits if h.score > 0]
        return _result(hits, [h.score for h in hits])

    # ------------------------------------------------------------------ the rest

    def _stored_keys(self, node_ids: Sequence[str]) -> list[str]:
        """The distinct ids of ``node_ids`` that are stored, in order."""
        db = self._db
        return [k for k in dict.fromkeys(node_ids) if isinstance(k, str) and k in db]

    def close(self) -> None:
        """Close the database if the store opened it (idempotent); a Database given to
        the constructor stays open."""
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> SutraVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _no_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"{method} got unexpected arguments {sorted(kwargs)}")


def _result(hits: Sequence[Hit], similarities: list[float]) -> VectorStoreQueryResult:
    nodes = [_to_node(h.concept) for h in hits]
    return VectorStoreQueryResult(nodes=nodes, similarities=similarities,
                                  ids=[n.node_id for n in nodes])


def _to_node(c: Concept) -> BaseNode:
    """The node a concept holds: rebuilt from LlamaIndex's fields, or a TextNode of a
    concept stored without them."""
    md = c.metadata
    if "_node_content" in md:
        node = metadata_dict_to_node(md, text=c.text)
    else:
        node = TextNode(id_=c.key if c.key is not None else str(c.id), text=c.text or "",
                        metadata=md)
    return node
