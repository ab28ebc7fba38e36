"""Search, filters and the word index of a :class:`~sutradb.database.Database`
(distances between stored concepts: :mod:`.distances`).

Searches read under the read lock: the store's live mask, codes and vectors, and the
vector index (:class:`~sutradb.index.vector.VectorIndex`) of the last commit; a
``where`` filter is compiled (:mod:`sutradb.index.filters`) into a row mask from the
metadata and word indexes (built on first use, kept up to date by commits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidArgumentError
from ..index.bm25 import bm25_top, rrf
from ..index.filters import compile_where
from ..index.flat import FlatVectors
from ..index.pq import check_k
from ..index.words import WordIndex
from .concepts import Hit
from .validation import check_query_rows

#: Make a Hit without NamedTuple's argument handling.
_new_hit = tuple.__new__

if TYPE_CHECKING:
    import numpy.typing as npt

    from .state import DatabaseState as _Base
    from .state import Where
else:
    _Base = object

__all__ = ["SearchMixin"]


class SearchMixin(_Base):
    """The search and distance methods of :class:`~sutradb.database.Database`; a
    mixin: they read the database's store, index and caches under its read lock."""

    def search_vectors(self, queries: npt.ArrayLike, k: int = 10, *, where: Where | None = None,
                       rerank: int | None = None, nprobe: int | None = None, exact: bool = False,
                       threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest concepts of each query vector.

        Parameters
        ----------
        queries : (nq, dim) or (dim,) array_like
        k : int >= 1
        where : dict, optional
            A filter (see :mod:`sutradb.index.filters`), applied inside the scan: when
            at least k concepts match, k results come back. When at most
            :data:`~sutradb.index.vector.FILTERED_EXACT_ROWS` (4,096) concepts match
            and the database keeps full vectors, the search is exact over them.
        rerank : int, optional
            With a PQ index: candidates of the code scan re-ranked exactly (default
            ``max(8k, 100)``; 0 = PQ distances only). A per-call parameter.
        nprobe : int, optional
            With IVF lists (``index_info["kind"] == "ivf"``): lists scanned per query
            (default: the one chosen for ``target_recall`` when the lists were
            built, ``index_info["nprobe"]``; :func:`sutradb.tune` finds one for your
            own queries). Ignored by the other indexes. A per-call parameter.
        exact : bool
            Brute-force search over the full vectors.
        threads : int, optional
            Kernel threads (default 1 for one query, else all CPUs).

        Returns
        -------
        D : (nq, k) float32
            Distances, ascending (``inf`` padding).
        I : (nq, k) int64
            Ids (``-1`` padding).
        """
        self._check_open()
        self._catch_up()
        k = check_k(k)
        Q = check_query_rows(queries, self._meta["dim"], self._meta["metric"])
        with self._read:
            D, rows = self._search_rows(Q, k, where, rerank, exact, threads, nprobe)
            ids = self._store.ids
            I = np.where(rows >= 0, ids[np.maximum(rows, 0)] if len(ids) else -1, -1).astype(np.int64)
        return D, I

    def search(self, query: str | npt.ArrayLike, k: int = 10, *, where: Where | None = None,
               rerank: int | None = None, nprobe: int | None = None,
               exact: bool = False, mode: str = "vector", vector: npt.ArrayLike | None = None,
               weights: tuple[float, float] = (1.0, 1.0)) -> list[Hit]:
        """The k best concepts for one query: nearest vectors, best BM25 text match,
        or both fused.

        Parameters
        ----------
        query : (dim,) array_like or str
            A vector, or a text (embedded by the database's embedder for the vector
            side, unless ``vector`` is given; tokenised for the text side).
        k, where, rerank, nprobe, exact
            As in :meth:`search_vectors`; ``where`` applies inside both rankings.
        mode : {"vector", "text", "hybrid"}
            ``"vector"``: nearest vectors. ``"text"``: :meth:`search_text`.
            ``"hybrid"``: the vector and the BM25 rankings (each to depth
            ``max(4k, 60)``) fused by reciprocal rank,
            ``sum_i weights[i] / (60 + rank_i)``.
        vector : (dim,) array_like, optional
            The query vector of a hybrid search when the caller embeds the text
            itself (a database without an embedder).
        weights : (float, float)
            Weights of the vector and the text ranking in a hybrid search.

        Returns
        -------
        list of Hit
            ``Hit(id, distance, concept)``, best first. ``distance`` is the metric's
            distance for ``"vector"``, the negated BM25 score for ``"text"`` and the
            negated fused score for ``"hybrid"`` (``Hit.score`` is its negation:
            higher is better).
        """
        if mode == "text":
            if not isinstance(query, str):
                raise InvalidArgumentError("a text search takes a str query")
            return self.search_text(query, k, where=where)
        if mode == "hybrid":
            return self._search_hybrid(query, k, where, vector, weights, rerank, nprobe, exact)
        if mode != "vector":
            raise InvalidArgumentError(f"mode must be 'vector', 'text' or 'hybrid', not {mode!r}")
        self._check_open()
        self._catch_up()
        k = check_k(k)
        if vector is not None:
            query = vector
        if isinstance(query, str):
            query = self._embed([query])[0]
        Q = check_query_rows(query, self._meta["dim"], self._meta["metric"], one=True)
        with self._read:
            D, rows = self._search_rows(Q, k, where, rerank, exact, None, nprobe)
            R = rows[0].tolist()
            n = next((j for j, r in enumerate(R) if r < 0), len(R))   # fewer than k matched
            cs = self._concepts_at(R[:n])
        return [_new_hit(Hit, (c.id, d, c)) for d, c in zip(D[0].tolist(), cs)]

    def search_text(self, query: str, k: int = 10, *, where: Where | None = None,
                    k1: float = 1.2, b: float = 0.75) -> list[Hit]:
        """The k concepts whose texts best match ``query``, ranked by BM25.

        The texts' terms (:mod:`sutradb.text`: case-folded Unicode words, with the
        stop words and stemmer of the database's ``text_tokenizer``) are kept by the
        storage engine: committed and rolled back with the concepts, written to
        ``.terms`` files at checkpoints, opened without reading a text
        (:mod:`sutradb.storage.terms`). Scores are Lucene's BM25
        (:func:`sutradb.index.bm25.bm25_top`); a ``where`` filter selects which
        concepts may be returned, the statistics are those of all live concepts.

        Parameters
        ----------
        query : str
        k : int >= 1
        where : dict, optional
            A filter, as in :meth:`search_vectors`.
        k1, b : float
            BM25's term-frequency saturation (>= 0) and length normalisation ([0, 1]).

        Returns
        -------
        list of Hit
            ``Hit(id, distance, concept)`` best first, ``distance`` the negated BM25
            score (``Hit.score``: the score). Concepts that share no term with the
            query are not returned, so there may be fewer than ``k``.

        Examples
        --------
        >>> import sutradb
        >>> db = sutradb.open(":memory:", dim=2)
        >>> _ = db.add_vectors([[1, 0], [0, 1], [1, 1]],
        ...                    texts=["red apples", "green apples and pears", "a red car"])
        >>> [(h.concept.text, round(h.score, 3)) for h in db.search_text("red apples", k=2)]
        [('red apples', 0.495), ('a red car', 0.214)]
        """
        self._check_open()
        self._catch_up()
        k = check_k(k)
        if not isinstance(query, str):
            raise InvalidArgumentError(f"search_text takes a str query, not {type(query).__name__}")
        if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not 0 <= k1 < float("inf"):
            raise InvalidArgumentError(f"k1 must be a finite number >= 0, got {k1!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise InvalidArgumentError(f"b must be in [0, 1], got {b!r}")
        with self._read:
            rows, scores = self._text_rows(query, k, where, float(k1), float(b))
            cs = self._concepts_at(rows.tolist())
        return [_new_hit(Hit, (c.id, -sc, c)) for sc, c in zip(scores.tolist(), cs)]

    def _text_rows(self, query, k, where, k1=1.2, b=0.75):
        """(rows, BM25 scores) of the k best text matches (under the read lock)."""
        s = self._store
        tok = s.tokenizer
        counts = tok.query_term_counts(query)
        if not counts or not s.n_live:
            return np.zeros(0, np.int64), np.zeros(0)
        live = s.live
        n_live, avgdl = s.text_stats()
        mask = self._where_mask(where, live) if where is not None else None
        post = [s.postings(h) + (c,) for h, c in counts.items()]
        return bm25_top(post, s.doc_lengths(), live, n_live, avgdl, k, k1=k1, b=b, mask=mask)

    def _search_hybrid(self, query, k, where, vector, weights, rerank, nprobe, exact) -> list[Hit]:
        self._check_open()
        self._catch_up()
        k = check_k(k)
        if not isinstance(query, str):
            raise InvalidArgumentError("a hybrid search takes a str query (and vector= for the "
                                       "vector side when the database has no embedder)")
        try:
            wv, wt = (float(w) for w in weights)
        except (TypeError, ValueError):
            raise InvalidArgumentError("weights must be two numbers (vector, text)") from None
        if not (wv >= 0 and wt >= 0 and wv + wt > 0):
            raise InvalidArgumentError("weights must be >= 0 and not both 0")
        qv = self._embed([query])[0] if vector is None else vector
        Q = check_query_rows(qv, self._meta["dim"], self._meta["metric"], one=True)
        depth = max(4 * k, 60)
        with self._read:
            _, vrows = self._search_rows(Q, depth, where, rerank, exact, None, nprobe)
            trows, _ = self._text_rows(query, depth, where)
            vr = vrows[0][vrows[0] >= 0].tolist()
            fused = rrf([vr, trows.tolist()], [wv, wt], k)
            cs = self._concepts_at([r for r, _ in fused])
        return [_new_hit(Hit, (c.id, -sc, c)) for (_, sc), c in zip(fused, cs)]

    def _search_rows(self, Q, k, where, rerank, exact, threads, nprobe=None):
        s = self._store
        n = s.n_rows
        nq = Q.shape[0]
        if n == 0 or not self._meta["dim"]:
            return np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
        mask = s.live
        if where is not None:
            mask = self._where_mask(where, mask)
        vecs = s.vectors
        return self._index.search(Q, k, mask=mask, codes=s.codes if s.code_size else None,
                                  vectors=vecs, flat=self._flat_vectors if vecs is not None else None,
                                  rerank=rerank, exact=exact, threads=threads, nprobe=nprobe,
                                  filtered=where is not None)

    def _flat_vectors(self) -> FlatVectors:
        f = self._flat
        if f is None or f.mat.shape[0] != self._store.n_rows:
            f = self._flat = FlatVectors(self._store.vectors, self._meta["metric"])  # type: ignore[arg-type]  # flat search: vectors kept
        return f

    def _where_mask(self, where, live) -> np.ndarray:
        """The row mask of the live concepts that match ``where`` (under the read
        lock).

        Over the field indexes (:meth:`Filter.mask`: a mask over ids, read through
        the row -> id array), unless ids are so sparse (most deleted) that a mask
        over them would cost more than the predicate over the live concepts'
        metadata."""
        f = compile_where(where)
        texts = {}
        if f.text_queries:
            wi = self._word_index()
            texts = {q: wi.find(q) for q in f.text_queries}
        s = self._store
        n_ids = int(self._meta.get("next_id") or 0)
        if n_ids <= 32 * s.n_live + 65536:
            r = self._records
            # one slot more, False: an id at or above next_id (only in a damaged
            # database) is clipped to it
            idmask = f.mask(n_ids + 1, lambda path: r.field(path, s), texts)
            idmask[n_ids] = False
            mask = np.take(idmask, s.ids, mode="clip")
            mask &= live
            return mask
        return self._where_mask_scan(f, texts, live)

    def _where_mask_scan(self, f, texts, live) -> np.ndarray:
        """:meth:`_where_mask` as a predicate over the metadata of each candidate."""
        cand = f.candidates(texts)
        if f.uses_fields:
            md = self._meta_index()
            if cand is not None:
                items = ((i, md.get(i, {})) for i in cand)
            else:
                items = md.items()  # type: ignore[assignment]  # an iterable of (id, metadata) either way
            ids = f.select(items, texts)
        elif cand is not None:
            ids = [i for i in cand if f.match(i, {}, texts)]
        else:
            ids = [i for i in self._store.live_ids().tolist() if f.match(i, {}, texts)]
        mask = np.zeros(len(live), np.bool_)
        if ids:
            rows = self._store.rows_of(np.fromiter(ids, np.int64, len(ids)))
            mask[rows[rows >= 0]] = True
        return mask

    def _meta_index(self) -> dict:
        r = self._records
        return r.metadata if r.metadata is not None else r.build_metadata(self._store)

    def _word_index(self) -> WordIndex:
        r = self._records
        return r.words if r.words is not None else r.build_words(self._store)

    def find_words(self, words: str) -> list[int]:
        """Ids (sorted) of the concepts whose text holds every word of ``words``
        (case-insensitive; words are runs of letters, digits and ``_``)."""
        self._check_open()
        if not isinstance(words, str):
            raise InvalidArgumentError("find_words takes a str of words")
        with self._read:
            return sorted(self._word_index().find(words))
