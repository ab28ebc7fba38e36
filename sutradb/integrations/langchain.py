"""A LangChain vector store over a sutradb database: :class:`SutraVectorStore`.

A LangChain :class:`~langchain_core.documents.Document` is stored as one sutradb
concept:

=====================  ===============================================================
LangChain              sutradb
=====================  ===============================================================
``Document.id``        the concept's ``key`` (unique str). Documents added without an
                       id get a new ``uuid4`` string; adding a document whose id is
                       stored already replaces it (:meth:`sutradb.Database.upsert`:
                       the concept keeps its int id)
``page_content``       ``text`` (indexed for ``$text`` filters and ``find_words``)
``metadata``           ``metadata`` (what msgpack holds: str keys; None, bool, int,
                       float, str, bytes, lists, dicts)
the embedding          ``vector``: ``embed_documents`` of the store's ``Embeddings``
                       (queries: ``embed_query``)
``filter=``            ``where=``: sutradb's MongoDB-style filters
=====================  ===============================================================

Retrieval modes (``retrieval_mode=``, langchain-qdrant's names): ``"dense"`` (the
default) ranks by embedding, ``"sparse"`` by BM25 over the stored texts
(:meth:`sutradb.Database.search_text`), ``"hybrid"`` fuses both rankings by
reciprocal rank (:meth:`sutradb.Database.search` with ``mode="hybrid"``). A store
setting, overridable per call: see :class:`SutraVectorStore`.

Scores: :meth:`SutraVectorStore.similarity_search_with_score` returns the database's
distance (lower is nearer): ``1 - cos`` for the default ``metric="cosine"``, ``-dot``
for ``"ip"``, squared L2 for ``"l2"``; minus the BM25 score in ``"sparse"`` mode and
minus the fused score in ``"hybrid"`` mode. The relevance scores of
``similarity_search_with_relevance_scores`` are in ``[0, 1]``, higher is nearer.

``langchain-core`` is imported with this module (``pip install "sutradb[langchain]"``);
``import sutradb`` does not import it. The user guide page is ``docs/langchain.md``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..database import Concept, Database, Hit
from ..database import open as _open_database
from ..errors import (
    ClosedError,
    DuplicateKeyError,
    EmbedderError,
    InvalidArgumentError,
    MissingDependencyError,
    NotFoundError,
)

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise MissingDependencyError(
        "sutradb.integrations.langchain needs langchain-core: pip install "
        "'sutradb[langchain]' (or pip install langchain-core)") from e

if TYPE_CHECKING:
    import numpy.typing as npt
    from typing_extensions import Self

__all__ = ["SutraVectorStore"]

#: Keyword arguments of the searches passed on to :meth:`sutradb.Database.search`.
SEARCH_OPTIONS = ("rerank", "nprobe", "exact")
#: The retrieval modes: the values of langchain-qdrant's ``RetrievalMode``.
RETRIEVAL_MODES = ("dense", "sparse", "hybrid")
#: Keyword arguments that choose the ranking of a query's search.
MODE_OPTIONS = ("retrieval_mode", "hybrid_weights")
#: The rank constant of the fused ranking (:func:`sutradb.index.bm25.rrf`'s ``c``).
RRF_C = 60.0


# --------------------------------------------------------------------------- helpers

def _no_more(kwargs: Mapping[str, Any], what: str, known: Sequence[str] = ()) -> None:
    """InvalidArgumentError naming the keyword arguments ``what`` does not take."""
    if kwargs:
        hint = f" (it takes {', '.join(known)})" if known else ""
        raise InvalidArgumentError(f"{what}: unknown keyword arguments "
                                   f"{', '.join(sorted(kwargs))}{hint}")


def _check_ids(ids: Iterable[Any], what: str) -> list[str]:
    """``ids`` as a list of str (a single str is refused: it would be taken as a
    sequence of one-character ids)."""
    if isinstance(ids, (str, bytes)):
        raise InvalidArgumentError(f"{what} takes a list of ids (wrap a single id in a list)")
    out = list(ids)
    for i in out:
        if not isinstance(i, str):
            raise InvalidArgumentError(f"{what}: a document id must be a str, not "
                                       f"{type(i).__name__}")
    return out


def _where(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``filter=`` argument as sutradb's ``where=`` (an empty filter is no filter)."""
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidArgumentError(
            f"filter must be a dict in sutradb's where= dialect (e.g. {{'lang': 'en'}}, "
            f"{{'year': {{'$gte': 2000}}}}), not {type(filter).__name__}")
    return dict(filter) or None


def _check_mode(mode: Any) -> str:
    """A retrieval mode as its str value (a str enum such as
    ``langchain_qdrant.RetrievalMode`` is taken by value)."""
    value = getattr(mode, "value", mode)
    if isinstance(value, str) and value in RETRIEVAL_MODES:
        return value
    hint = (" (sutradb's Database.search modes 'vector' and 'text' are 'dense' and "
            "'sparse' here)" if value in ("vector", "text") else "")
    raise InvalidArgumentError(f"retrieval_mode must be 'dense', 'sparse' or 'hybrid', not "
                               f"{mode!r}{hint}")


def _check_weights(weights: Any) -> tuple[float, float]:
    """``hybrid_weights`` as two floats >= 0, not both 0."""
    try:
        wd, ws = weights
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"hybrid_weights must be two numbers (dense, sparse), "
                                   f"got {weights!r}") from None
    for w in (wd, ws):
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(w) < float("inf"):
            raise InvalidArgumentError(f"hybrid_weights must be two finite numbers >= 0, "
                                       f"got {weights!r}")
    if float(wd) + float(ws) <= 0.0:
        raise InvalidArgumentError("hybrid_weights must not both be 0")
    return float(wd), float(ws)


def _document(c: Concept) -> Document:
    """The LangChain document of a stored concept (``id``: its key)."""
    # the concepts of get_many and search are decoded for the call: their metadata
    # dicts are not shared with the database's caches
    return Document(page_content=c.text if c.text is not None else "",
                    metadata=c.metadata or {}, id=c.key)


def _cosine_relevance(distance: float) -> float:
    """``1 - cos`` -> the cosine similarity, clipped to ``[0, 1]``."""
    return min(1.0, max(0.0, 1.0 - distance))


def _ip_relevance(distance: float) -> float:
    """``-dot`` -> the inner product, clipped to ``[0, 1]`` (the cosine similarity of
    unit-length embeddings)."""
    return min(1.0, max(0.0, -distance))


def _l2_relevance(distance: float) -> float:
    """Squared L2 distance -> ``1 / (1 + d)``, in ``(0, 1]``."""
    return 1.0 / (1.0 + max(0.0, distance))


_RELEVANCE: dict[str, Callable[[float], float]] = {
    "cosine": _cosine_relevance, "ip": _ip_relevance, "l2": _l2_relevance}


# --------------------------------------------------------------------------- the store

class SutraVectorStore(VectorStore):
    """A LangChain vector store kept in a sutradb database.

    Parameters
    ----------
    path_or_database : str, os.PathLike or Database
        A database directory (created when it does not exist) or ``":memory:"``,
        opened with :func:`sutradb.open`; or a :class:`sutradb.Database` that is open
        already (the store then does not close it).
    embedding : langchain_core.embeddings.Embeddings
        Embeds the documents (``embed_documents``) and the queries (``embed_query``).
        Its vectors must keep the dimension of the database: a new database takes
        the dimension of the first vectors added, so nothing is embedded to find it.
    retrieval_mode : {"dense", "sparse", "hybrid"}
        How :meth:`similarity_search` (and so ``as_retriever()``) ranks the documents
        for a query, unless a call says otherwise: ``"dense"`` (the default) by the
        query's embedding; ``"sparse"`` by BM25 over the documents' ``page_content``
        (keyword search: documents that share no term with the query are not
        returned, and the query is not embedded); ``"hybrid"`` both rankings, each to
        depth ``max(4k, 60)``, fused by weighted reciprocal rank,
        ``w_dense / (60 + rank_dense) + w_sparse / (60 + rank_sparse)``. A member of
        ``langchain_qdrant.RetrievalMode`` is taken by its value.
    hybrid_weights : (float, float)
        ``(w_dense, w_sparse)`` of ``"hybrid"`` searches (default ``(1.0, 1.0)``),
        >= 0 and not both 0.
    **open_options
        Passed to :func:`sutradb.open` with a path: ``mode``, ``metric`` (default
        ``"cosine"``; an existing database keeps its own), ``vector_dtype``,
        ``durability``, ``index_threshold``, ``text_tokenizer`` (the stop words and
        stemmer of the ``"sparse"`` ranking, set when the database is created)... Not
        allowed with a Database.

    Raises
    ------
    InvalidArgumentError
        ``embedding`` is not a LangChain ``Embeddings``, open options come with a
        Database, an option of :func:`sutradb.open` is wrong, or a bad
        ``retrieval_mode`` / ``hybrid_weights``.
    ClosedError
        The database given is closed.

    Notes
    -----
    Every write (:meth:`add_texts`, :meth:`add_documents`, :meth:`delete`) is one
    sutradb transaction: on an error nothing of the call is stored. The store is as
    thread-safe as the database, so the async methods of LangChain's base class
    (which run the sync ones in an executor) are safe to use concurrently.

    Keyword and hybrid search follow the convention most LangChain vector stores with
    a keyword ranking share: the ranking is a setting of the store, named as
    langchain-qdrant names it (``QdrantVectorStore(..., retrieval_mode=
    RetrievalMode.HYBRID)``; Elasticsearch's ``strategy=``, Azure AI Search's
    ``search_type=`` and langchain-postgres's ``hybrid_search_config=`` are store
    settings too), so ``similarity_search`` and ``as_retriever()`` use it unchanged.
    As in Azure AI Search's ``similarity_search(..., search_type=...)``, a call may
    override it: ``retrieval_mode=`` and ``hybrid_weights=`` keyword arguments of
    the query searches, also in ``as_retriever(search_kwargs={...})``, so one store
    serves dense, keyword and hybrid retrievers. The fusion is the weighted
    reciprocal rank fusion of LangChain's ``EnsembleRetriever`` (``weights=`` there,
    ``c=60``), computed inside the database under one read lock. The searches by
    vector and maximal marginal relevance rank by embedding only.

    Examples
    --------
    >>> from langchain_core.embeddings import DeterministicFakeEmbedding
    >>> from sutradb.integrations.langchain import SutraVectorStore
    >>> store = SutraVectorStore(":memory:", DeterministicFakeEmbedding(size=8))
    >>> store.add_texts(["a cat", "a dog"], [{"n": 1}, {"n": 2}], ids=["c", "d"])
    ['c', 'd']
    >>> store.similarity_search("a cat", k=1)[0].id
    'c'
    >>> store.similarity_search("dog", k=2, retrieval_mode="sparse")[0].id
    'd'
    >>> store.close()
    """

    def __init__(self, path_or_database: str | os.PathLike[str] | Database,
                 embedding: Embeddings, *, retrieval_mode: str = "dense",
                 hybrid_weights: tuple[float, float] = (1.0, 1.0),
                 **open_options: Any) -> None:
        if not (callable(getattr(embedding, "embed_documents", None))
                and callable(getattr(embedding, "embed_query", None))):
            raise InvalidArgumentError(
                f"embedding must be a LangChain Embeddings (with embed_documents and "
                f"embed_query), not {type(embedding).__name__}")
        self._retrieval_mode = _check_mode(retrieval_mode)
        self._hybrid_weights = _check_weights(hybrid_weights)
        if isinstance(path_or_database, Database):
            if open_options:
                raise InvalidArgumentError(
                    f"open options ({', '.join(sorted(open_options))}) are for a path; "
                    f"this database is open already")
            if path_or_database.closed:
                raise ClosedError("the database is closed")
            self._db = path_or_database
            self._owns = False
        elif isinstance(path_or_database, (str, os.PathLike)):
            self._db = _open_database(path_or_database, **open_options)
            self._owns = True
        else:
            raise InvalidArgumentError(
                f"path_or_database must be a path, ':memory:' or a sutradb.Database, not "
                f"{type(path_or_database).__name__}")
        self._embedding = embedding

    # ------------------------------------------------------------------ properties

    @property
    def embeddings(self) -> Embeddings:
        """The ``Embeddings`` of the documents and the queries."""
        return self._embedding

    @property
    def retrieval_mode(self) -> str:
        """The store's ranking of query searches: ``"dense"``, ``"sparse"`` or
        ``"hybrid"`` (a call's ``retrieval_mode=`` overrides it)."""
        return self._retrieval_mode

    @property
    def hybrid_weights(self) -> tuple[float, float]:
        """``(w_dense, w_sparse)`` of the store's hybrid searches (a call's
        ``hybrid_weights=`` overrides them)."""
        return self._hybrid_weights

    @property
    def database(self) -> Database:
        """The :class:`sutradb.Database` the documents are kept in (for what the
        LangChain interface has no method for: ``find``, ``count``, ``compact``,
        ``verify``, ``tune``...)."""
        return self._db

    def close(self) -> None:
        """Close the database if the store opened it (from a path); a database given
        to the store open stays open. Idempotent."""
        if self._owns:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        mode = "" if self._retrieval_mode == "dense" else f" retrieval_mode={self._retrieval_mode!r}"
        return f"<SutraVectorStore {self._db!r}{mode}>"

    # ------------------------------------------------------------------ writes

    def add_texts(self, texts: Iterable[str],
                  metadatas: Sequence[Mapping[str, Any] | None] | None = None, *,
                  ids: Sequence[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Embed texts and store them, in one transaction.

        Parameters
        ----------
        texts : iterable of str
            The documents' contents (embedded with ``embed_documents``).
        metadatas : sequence of (dict or None), optional
            One per text.
        ids : sequence of (str or None), optional
            One per text: the document ids (sutradb keys). A new ``uuid4`` string is
            made for each None, and for every text when ``ids`` is not given. An id
            that is stored already is replaced: its text, metadata and vector.
        **kwargs
            ``batch_size`` (int): texts per ``embed_documents`` call (default: all
            in one call). Nothing else.

        Returns
        -------
        list of str
            The ids of the texts, in order.

        Raises
        ------
        InvalidArgumentError
            The lengths of ``metadatas`` or ``ids`` differ from that of ``texts``; a
            text or an id is not a str; a metadata value msgpack cannot hold.
        DuplicateKeyError
            An id appears twice in the call.
        DimensionError
            The embeddings do not have the dimension of the database.
        EmbedderError
            ``embed_documents`` returned another number of vectors than of texts, or
            rows of different lengths.
        ReadOnlyError
            The database is open read-only.
        """
        batch_size = kwargs.pop("batch_size", None)
        _no_more(kwargs, "add_texts", ("batch_size",))
        if isinstance(texts, (str, bytes)):
            raise InvalidArgumentError("add_texts takes a list of texts (wrap a single text "
                                       "in a list)")
        texts = list(texts)
        n = len(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"a text must be a str, not {type(t).__name__}")
        if metadatas is not None and len(metadatas) != n:
            raise InvalidArgumentError(f"{len(metadatas)} metadatas for {n} texts")
        if ids is not None:
            if isinstance(ids, (str, bytes)):
                raise InvalidArgumentError("ids is a list with one id per text")
            if len(ids) != n:
                raise InvalidArgumentError(f"{len(ids)} ids for {n} texts")
            keys = [str(uuid.uuid4()) if i is None else i for i in ids]
            _check_ids(keys, "add_texts")
            if len(set(keys)) != n:
                dup = next(k for k in keys if keys.count(k) > 1)
                raise DuplicateKeyError(f"id {dup!r} appears twice")
        else:
            keys = [str(uuid.uuid4()) for _ in range(n)]
        mds = None if metadatas is None else [None if m is None else dict(m) for m in metadatas]
        if n == 0:
            return []
        self._db.upsert(self._embed_documents(texts, batch_size), keys=keys, texts=texts,
                        metadata=mds)
        return keys

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed documents and store them, in one transaction.

        Parameters
        ----------
        documents : list of Document
            Their ``page_content``, ``metadata`` and ``id``; a document without an id
            gets a new ``uuid4`` string (the documents are not changed).
        **kwargs
            ``ids`` (a list, one per document): ids that take precedence over the
            documents' own; ``batch_size`` as in :meth:`add_texts`.

        Returns
        -------
        list of str
            The ids of the documents, in order.

        Raises
        ------
        InvalidArgumentError, DuplicateKeyError, DimensionError, EmbedderError, ReadOnlyError
            As in :meth:`add_texts`: nothing is stored.
        """
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return self.add_texts([d.page_content for d in documents],
                              [d.metadata for d in documents], ids=ids, **kwargs)

    def _embed_documents(self, texts: list[str], batch_size: Any) -> np.ndarray:
        """The ``(n, dim)`` float32 embeddings of ``texts``, checked."""
        n = len(texts)
        if batch_size is None:
            step = n
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        else:
            step = batch_size
        rows: list[Sequence[float]] = []
        for s0 in range(0, n, step):
            rows.extend(self._embedding.embed_documents(texts[s0:s0 + step]))
        if len(rows) != n:
            raise EmbedderError(f"embed_documents returned {len(rows)} vectors for {n} texts")
        try:
            V = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise EmbedderError(f"embed_documents returned vectors that are not one (n, dim) "
                                f"array of numbers: {e}") from None
        if V.ndim != 2:
            raise EmbedderError(f"embed_documents returned an array of shape {V.shape}, "
                                f"not (n, dim)")
        return V

    def delete(self, ids: Sequence[str] | None = None, *,
               filter: Mapping[str, Any] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id, or those that match a filter, in one transaction.

        Parameters
        ----------
        ids : sequence of str, optional
            Document ids; ids that are not stored are skipped (no error).
        filter : dict, optional
            A ``where=`` filter (see :meth:`similarity_search`): with ``ids``, those of
            the ids that match; alone, every document that matches (``filter={}``
            deletes them all).

        Returns
        -------
        bool
            True.

        Raises
        ------
        InvalidArgumentError
            Neither ``ids`` nor ``filter`` (LangChain's base class says ``ids=None``
            deletes everything; here that takes ``filter={}``), an id that is not a
            str, a bad filter.
        ReadOnlyError
            The database is open read-only.
        """
        _no_more(kwargs, "delete", ("ids", "filter"))
        where = _where(filter)          # None for no filter and for {}
        if ids is None:
            if filter is None:
                raise InvalidArgumentError("delete needs ids, or filter= (filter={} deletes "
                                           "every document)")
            self._db.delete(where=where or {})
            return True
        keys = list(dict.fromkeys(_check_ids(ids, "delete")))
        if keys:
            self._db.delete(keys, where=where, missing_ok=True)     # one transaction
        return True

    # ------------------------------------------------------------------ reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids.

        Parameters
        ----------
        ids : sequence of str

        Returns
        -------
        list of Document
            In the order of ``ids``, each document once (a repeated id is returned
            once); ids that are not stored are left out, without an error.

        Raises
        ------
        InvalidArgumentError
            An id is not a str.
        """
        keys = list(dict.fromkeys(_check_ids(ids, "get_by_ids")))
        db = self._db
        present = [k for k in keys if k in db]
        try:
            concepts = db.get_many(present)
        except NotFoundError:         # deleted by another thread since: one by one
            concepts = []
            for k in present:
                try:
                    concepts.append(db.get(k))
                except NotFoundError:
                    pass
        return [_document(c) for c in concepts]

    def _search(self, embedding: Sequence[float] | npt.ArrayLike, k: int,
                filter: Mapping[str, Any] | None, kwargs: dict[str, Any], what: str,
                known: Sequence[str] = ()) -> list[Hit]:
        """The hits of a query vector (``kwargs``: the search options)."""
        if isinstance(embedding, (str, bytes)):
            raise InvalidArgumentError(f"{what} takes an embedding (a list of floats), not a "
                                       f"str")
        opts = {name: kwargs.pop(name) for name in SEARCH_OPTIONS if name in kwargs}
        _no_more(kwargs, what, ("filter",) + SEARCH_OPTIONS + tuple(known))
        return self._db.search(embedding, k, where=_where(filter), **opts)

    def _mode(self, kwargs: dict[str, Any]) -> tuple[str, tuple[float, float]]:
        """The retrieval mode and hybrid weights of a call (popped from ``kwargs``;
        the store's own when not given)."""
        mode = _check_mode(kwargs.pop("retrieval_mode", self._retrieval_mode))
        weights = _check_weights(kwargs.pop("hybrid_weights", self._hybrid_weights))
        return mode, weights

    def _query_hits(self, query: str, k: int, filter: Mapping[str, Any] | None,
                    kwargs: dict[str, Any], mode: str, weights: tuple[float, float],
                    what: str) -> list[Hit]:
        """The hits of a query text in a retrieval mode (``kwargs``: the search
        options left)."""
        if not isinstance(query, str):
            raise InvalidArgumentError(f"{what} takes a str query, not {type(query).__name__} "
                                       f"(similarity_search_by_vector takes an embedding)")
        if mode == "dense":
            return self._search(self._embedding.embed_query(query), k, filter, kwargs, what,
                                MODE_OPTIONS)
        where = _where(filter)
        if mode == "sparse":
            if kwargs:
                tuning = sorted(set(kwargs) & set(SEARCH_OPTIONS))
                if tuning:
                    raise InvalidArgumentError(
                        f"{what}: {', '.join(tuning)} tune the dense ranking; "
                        f"retrieval_mode='sparse' has none")
                _no_more(kwargs, what, ("filter",) + MODE_OPTIONS)
            return self._db.search_text(query, k, where=where)
        opts = {name: kwargs.pop(name) for name in SEARCH_OPTIONS if name in kwargs}
        _no_more(kwargs, what, ("filter",) + SEARCH_OPTIONS + MODE_OPTIONS)
        return self._db.search(query, k, where=where, mode="hybrid",
                               vector=self._embedding.embed_query(query), weights=weights,
                               **opts)

    def similarity_search_with_score_by_vector(
            self, embedding: Sequence[float] | npt.ArrayLike, k: int = 4,
            filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to an embedding, with their distances.

        Parameters
        ----------
        embedding : sequence of float
            A query vector of the database's dimension.
        k : int >= 1
        filter : dict, optional
            As in :meth:`similarity_search`.
        **kwargs
            The search options of :meth:`similarity_search` (``rerank``, ``nprobe``,
            ``exact``): a search by vector ranks by embedding only, whatever the
            store's ``retrieval_mode``.

        Returns
        -------
        list of (Document, float)
            Nearest first; the float is the database's distance (lower is nearer; see
            :meth:`similarity_search_with_score`).
        """
        hits = self._search(embedding, k, filter, kwargs,
                            "similarity_search_with_score_by_vector")
        return [(_document(h.concept), float(h.distance)) for h in hits]

    def similarity_search_with_score(
            self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None,
            **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to a query, with their distances.

        Parameters
        ----------
        query : str
            Embedded with ``embed_query``.
        k : int >= 1
        filter : dict, optional
            As in :meth:`similarity_search`.
        **kwargs
            As in :meth:`similarity_search`.

        Returns
        -------
        list of (Document, float)
            Best first. The float is sutradb's ``Hit.distance``, lower is better in
            every mode. ``"dense"``: the database's distance, ``1 - cos`` in
            ``[0, 2]`` for ``metric="cosine"`` (the default), ``-dot`` for ``"ip"``,
            the squared L2 distance for ``"l2"``, computed from the stored vectors
            (float16 by default: about three significant digits). ``"sparse"``: minus
            the BM25 score. ``"hybrid"``: minus the fused score.
            :meth:`similarity_search_with_relevance_scores` turns dense and hybrid
            ones into a score in ``[0, 1]``, higher is nearer.
        """
        mode, weights = self._mode(kwargs)
        hits = self._query_hits(query, k, filter, kwargs, mode, weights,
                                "similarity_search")
        return [(_document(h.concept), float(h.distance)) for h in hits]

    def similarity_search_by_vector(
            self, embedding: Sequence[float] | npt.ArrayLike, k: int = 4,
            filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to an embedding.

        Parameters
        ----------
        embedding : sequence of float
            A query vector of the database's dimension.
        k : int >= 1
        filter : dict, optional
            As in :meth:`similarity_search`.
        **kwargs
            The search options of :meth:`similarity_search` (``rerank``, ``nprobe``,
            ``exact``): a search by vector ranks by embedding only, whatever the
            store's ``retrieval_mode``.

        Returns
        -------
        list of Document
            Nearest first.
        """
        hits = self._search(embedding, k, filter, kwargs, "similarity_search_by_vector")
        return [_document(h.concept) for h in hits]

    def similarity_search(self, query: str, k: int = 4,
                          filter: Mapping[str, Any] | None = None,
                          **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to a query.

        Parameters
        ----------
        query : str
            Embedded with ``embed_query`` (not in ``"sparse"`` mode); its terms are
            the keywords of the ``"sparse"`` and ``"hybrid"`` rankings.
        k : int >= 1
            How many documents (fewer when fewer are stored or match the filter; in
            ``"sparse"`` mode, fewer when fewer share a term with the query).
        filter : dict, optional
            Metadata conditions, sutradb's ``where=`` dialect (MongoDB style, as
            Chroma's ``where``): ``{"lang": "en"}`` (equality; a list field holds the
            value), ``{"year": {"$gte": 2000, "$lt": 2010}}``, ``$eq``, ``$ne``,
            ``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$contains``,
            ``$all``, ``$exists``, ``$not``, dotted paths into nested dicts, ``$and``
            / ``$or`` / ``$not`` of filters, and ``{"$text": "words"}`` (the
            ``page_content`` holds every word). Applied inside the search: ``k``
            matching documents come back when ``k`` match. See
            :mod:`sutradb.index.filters`.
        **kwargs
            ``retrieval_mode``: ``"dense"``, ``"sparse"`` or ``"hybrid"`` for this
            call (default: the store's, see :class:`SutraVectorStore`);
            ``hybrid_weights``: ``(w_dense, w_sparse)`` for this call. Search options
            of the dense ranking (:meth:`sutradb.Database.search_vectors`):
            ``rerank``, ``nprobe``, ``exact``. From a retriever:
            ``as_retriever(search_kwargs={"k": 4, "retrieval_mode": "hybrid"})``.

        Returns
        -------
        list of Document
            Best first, each with its ``id``.

        Raises
        ------
        InvalidArgumentError
            ``k`` is not an int >= 1, a bad filter (an unknown operator, a value of
            the wrong type), a bad ``retrieval_mode`` or ``hybrid_weights``, a search
            option with ``retrieval_mode="sparse"``, an unknown keyword argument.
        DimensionError
            The query embedding does not have the dimension of the database.
        """
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Distance -> relevance in ``[0, 1]``, higher is nearer: for ``"cosine"`` the
        cosine similarity clipped at 0; for ``"ip"`` the inner product clipped to
        ``[0, 1]`` (the cosine of unit-length embeddings); for ``"l2"``
        ``1 / (1 + squared distance)``."""
        return _RELEVANCE[self._db.metric]

    def _similarity_search_with_relevance_scores(
            self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Documents with relevance scores in ``[0, 1]`` (what
        ``similarity_search_with_relevance_scores`` and retrievers with
        ``search_type="similarity_score_threshold"`` use).

        ``"dense"``: :meth:`_select_relevance_score_fn` of the distance.
        ``"hybrid"``: the fused score over its largest possible value,
        ``(w_dense + w_sparse) / 61`` (first in both rankings), so 1 for a document
        ranked first by both. ``"sparse"`` raises :class:`InvalidArgumentError`: BM25
        scores have no upper bound to scale by.
        """
        filter = kwargs.pop("filter", None)
        mode, weights = self._mode(kwargs)
        if mode == "sparse":
            raise InvalidArgumentError(
                "relevance scores in [0, 1] need a bounded score: dense and hybrid "
                "searches have one, BM25 scores do not (similarity_search_with_score "
                "returns minus the BM25 score)")
        hits = self._query_hits(query, k, filter, kwargs, mode, weights,
                                "similarity_search_with_relevance_scores")
        if mode == "dense":
            fn = self._select_relevance_score_fn()
            return [(_document(h.concept), fn(float(h.distance))) for h in hits]
        best = sum(weights) / (RRF_C + 1.0)
        return [(_document(h.concept), min(1.0, max(0.0, float(h.score) / best))) for h in hits]

    async def _asimilarity_search_with_relevance_scores(
            self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """:meth:`_similarity_search_with_relevance_scores` in an executor."""
        return await run_in_executor(None, self._similarity_search_with_relevance_scores,
                                     query, k, **kwargs)

    def max_marginal_relevance_search_by_vector(
            self, embedding: Sequence[float] | npt.ArrayLike, k: int = 4, fetch_k: int = 20,
            lambda_mult: float = 0.5, filter: Mapping[str, Any] | None = None,
            **kwargs: Any) -> list[Document]:
        """Documents near an embedding and different from each other (maximal
        marginal relevance).

        The ``fetch_k`` nearest documents (that match ``filter``) are fetched with
        their stored vectors; then ``k`` of them are picked one at a time, each the
        one that maximises ``lambda_mult * sim(query) - (1 - lambda_mult) *
        max sim(picked)`` (cosine similarities, whatever the database's metric:
        LangChain's :func:`~langchain_core.vectorstores.utils.maximal_marginal_relevance`).

        Parameters
        ----------
        embedding : sequence of float
            A query vector of the database's dimension.
        k : int >= 1
            How many documents.
        fetch_k : int >= 1
            Candidates (at least ``k`` are fetched).
        lambda_mult : float in [0, 1]
            1 ranks by similarity to the query only; 0 by diversity only.
        filter : dict, optional
            As in :meth:`similarity_search`.
        **kwargs
            Search options as in :meth:`similarity_search`; ``retrieval_mode`` may
            only be ``"dense"`` (the store's own mode is not used: the candidates
            are the nearest by embedding).

        Returns
        -------
        list of Document
            In the order they were picked (the nearest first).

        Raises
        ------
        InvalidArgumentError
            ``k`` or ``fetch_k`` is not an int >= 1, ``lambda_mult`` is outside
            ``[0, 1]``, or the database keeps no full vectors
            (``vector_dtype=None``); the errors of :meth:`similarity_search`.
        """
        for name, v in (("k", k), ("fetch_k", fetch_k)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidArgumentError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float)) \
                or not 0.0 <= lambda_mult <= 1.0:
            raise InvalidArgumentError(f"lambda_mult must be a number in [0, 1], got "
                                       f"{lambda_mult!r}")
        # the candidates are the nearest by embedding, whatever the store's mode
        mode = _check_mode(kwargs.pop("retrieval_mode", "dense"))
        _check_weights(kwargs.pop("hybrid_weights", self._hybrid_weights))
        if mode != "dense":
            raise InvalidArgumentError(
                f"max_marginal_relevance_search ranks by the embeddings: "
                f"retrieval_mode={mode!r} has no meaning there (only 'dense')")
        hits = self._search(embedding, max(int(k), int(fetch_k)), filter, kwargs,
                            "max_marginal_relevance_search", MODE_OPTIONS)
        if not hits:
            return []
        vectors = [h.concept.vector for h in hits]
        if any(v is None for v in vectors):
            raise InvalidArgumentError(
                "max_marginal_relevance_search needs the stored vectors; this database "
                "keeps PQ codes only (vector_dtype=None)")
        V = np.stack(vectors).astype(np.float32)  # type: ignore[arg-type]  # checked: no None
        q = np.asarray(embedding, dtype=np.float32)
        picked = maximal_marginal_relevance(q, V.tolist(), lambda_mult=float(lambda_mult),
                                            k=int(k))
        return [_document(hits[i].concept) for i in picked]

    def max_marginal_relevance_search(
            self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
            filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """Documents near a query and different from each other (maximal marginal
        relevance): :meth:`max_marginal_relevance_search_by_vector` of
        ``embed_query(query)``.

        Parameters
        ----------
        query : str
        k, fetch_k, lambda_mult, filter, **kwargs
            As in :meth:`max_marginal_relevance_search_by_vector`.

        Returns
        -------
        list of Document
        """
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter, **kwargs)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, path: str | os.PathLike[str] | None = None,
                   database: Database | None = None, **kwargs: Any) -> Self:
        """A store holding ``texts``: opens (or takes) the database, then
        :meth:`add_texts`.

        Parameters
        ----------
        texts : list of str
        embedding : Embeddings
        metadatas : list of dict, optional
        ids : list of str, optional
            As in :meth:`add_texts`.
        path : str or os.PathLike, optional
            The database directory (default ``":memory:"``).
        database : Database, optional
            An open database instead of ``path``.
        **kwargs
            ``batch_size`` for :meth:`add_texts`; ``retrieval_mode`` and
            ``hybrid_weights`` of the store; the rest are options of
            :func:`sutradb.open` (with ``path``).

        Returns
        -------
        SutraVectorStore

        Raises
        ------
        InvalidArgumentError
            Both ``path`` and ``database``; the errors of the constructor and of
            :meth:`add_texts` (then a database the call opened is closed again).
        """
        if path is not None and database is not None:
            raise InvalidArgumentError("from_texts takes path= or database=, not both")
        add_kwargs = {"batch_size": kwargs.pop("batch_size")} if "batch_size" in kwargs else {}
        store = cls(database if database is not None else (":memory:" if path is None else path),
                    embedding, **kwargs)
        try:
            store.add_texts(texts, metadatas, ids=ids, **add_kwargs)
        except BaseException:
            store.close()
            raise
        return store
