"""Search, filters, the word index and distances of a :class:`~sutradb.database.Database`.

Searches read under the read lock: the store's live mask, codes and vectors, and the
vector index (:class:`~sutradb.index.vector.VectorIndex`) of the last commit; a
``where`` filter is compiled (:mod:`sutradb.index.filters`) into a row mask from the
metadata and word indexes (built on first use, kept up to date by commits).
"""

from __future__ import annotations

import numpy as np

from ..errors import DimensionError, InvalidArgumentError, NotFoundError
from ..index.filters import compile_where
from ..index.flat import FlatVectors, pair_distances
from ..index.pq import check_k
from ..index.words import WordIndex
from .concepts import Hit
from .validation import check_query_rows

__all__ = ["SearchMixin", "DistanceTable", "NO_TABLE"]

_dot = np.dot


class DistanceTable:
    """What :meth:`Database.distance` and :meth:`Database.distances` look rows up
    in: a snapshot of the committed state, built by the first call after a write,
    dropped by the next commit (the database then holds :data:`NO_TABLE`).

    Parameters
    ----------
    rowmap : dict
        id -> live row (the database's row map: commits update it in place, so a
        row it names may be beyond this snapshot; lookups then miss).
    kind : {"cosine", "ip", "l2", "sdc", "none"}
        The metric (full vectors), ``"sdc"`` (PQ codes only) or ``"none"``.
    mat : (n_rows, dim) float32 or (n_rows, code_size) uint8, optional
        The prepared vectors (unit rows for cosine) or the codes.
    flat : FlatVectors, optional
        The vectors' :class:`~sutradb.index.flat.FlatVectors` (batched distances).
    pq : ProductQuantizer, optional
        The quantizer of the codes (``"sdc"``).
    idrow : (next_id,) int64, optional
        id -> row, -1 for none (dense ids only: an array lookup for batches).

    Attributes
    ----------
    rows : list of ndarray or None
        The rows of ``mat`` as views (a list is cheaper to index than the matrix),
        for the exact metrics.
    cosine, ip : bool
        The metric, for the single-pair path.
    """

    __slots__ = ("rowmap", "kind", "mat", "flat", "pq", "idrow", "rows", "cosine", "ip")

    def __init__(self, rowmap: dict, kind: str, mat=None, *, flat=None, pq=None, idrow=None):
        self.rowmap = rowmap
        self.kind = kind
        self.mat = mat
        self.flat = flat
        self.pq = pq
        self.idrow = idrow
        self.rows = list(mat) if kind in ("cosine", "ip", "l2") else None
        self.cosine = kind == "cosine"
        self.ip = kind == "ip"

    def sdc(self, ra, rb) -> np.ndarray:
        """PQ-symmetric distances of the rows ``ra[i]``, ``rb[i]`` (``"sdc"`` only)."""
        if self.kind != "sdc":
            raise InvalidArgumentError("the database keeps neither vectors nor codes yet")
        return self.pq.sdc(self.mat[ra], self.mat[rb])


#: No table (before the first distance call after a write): every lookup misses.
NO_TABLE = DistanceTable({}, "none")


class SearchMixin:
    """The search and distance methods of :class:`~sutradb.database.Database`; a
    mixin: they read the database's store, index and caches under its read lock."""

    def search_vectors(self, queries, k: int = 10, *, where=None, rerank: int | None = None,
                       nprobe: int | None = None, exact: bool = False,
                       threads: int | None = None):
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
        k = check_k(k)
        Q = check_query_rows(queries, self._meta["dim"], self._meta["metric"])
        with self._read:
            D, rows = self._search_rows(Q, k, where, rerank, exact, threads, nprobe)
            ids = self._store.ids
            I = np.where(rows >= 0, ids[np.maximum(rows, 0)] if len(ids) else -1, -1).astype(np.int64)
        return D, I

    def search(self, query, k: int = 10, *, where=None, rerank: int | None = None,
               nprobe: int | None = None, exact: bool = False) -> list[Hit]:
        """The k nearest concepts of one query.

        Parameters
        ----------
        query : (dim,) array_like or str
            A vector, or a text when the database has an embedder.
        k, where, rerank, nprobe, exact
            As in :meth:`search_vectors`.

        Returns
        -------
        list of Hit
            ``Hit(id, distance, concept)``, nearest first.
        """
        self._check_open()
        k = check_k(k)
        if isinstance(query, str):
            query = self._embed([query])[0]
        Q = check_query_rows(query, self._meta["dim"], self._meta["metric"], one=True)
        with self._read:
            D, rows = self._search_rows(Q, k, where, rerank, exact, None, nprobe)
            out = []
            ids = self._store.ids
            for d, r in zip(D[0].tolist(), rows[0].tolist()):
                if r < 0:
                    break
                c = self._concept_at(r)
                out.append(Hit(int(ids[r]), d, c))
        return out

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
            f = self._flat = FlatVectors(self._store.vectors, self._meta["metric"])
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
                items = md.items()
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

    # ------------------------------------------------------------------ distances

    def _build_dtable(self) -> DistanceTable:
        """The :class:`DistanceTable` of the committed state (under the read lock:
        no commit between reading the row map and the rows)."""
        with self._read:
            return self._build_dtable_locked()

    def _build_dtable_locked(self) -> DistanceTable:
        """:meth:`_build_dtable` for a caller that holds the read lock (readers do
        not nest)."""
        s = self._store
        rowmap = self._row_map()
        nxt = self._meta["next_id"]
        idrow = None
        if nxt <= 8 * len(rowmap) + 4096:          # dense ids: an array lookup
            idrow = np.full(nxt, -1, np.int64)
            if rowmap:
                live_rows = np.flatnonzero(s.live)
                idrow[s.ids[live_rows]] = live_rows
        if s.vectors is not None:
            fv = self._flat_vectors()
            t = DistanceTable(rowmap, self._meta["metric"], fv.mat, flat=fv, idrow=idrow)
        elif self._index.pq is not None:
            t = DistanceTable(rowmap, "sdc", np.ascontiguousarray(s.codes),
                              pq=self._index.pq, idrow=idrow)
        else:
            t = DistanceTable(rowmap, "none", idrow=idrow)
        self._dtable = t
        return t

    def distance(self, a, b) -> float:
        """Distance between two stored concepts (ids or keys): exact when the database
        keeps full vectors, PQ-symmetric otherwise. About a microsecond per call (the
        first call after a write builds a lookup table)."""
        # the fast path (full vectors): two dict and two list lookups and one dot
        # product; anything else (no table yet, codes only, a key, an unknown id, a
        # row beyond the table) takes _distance_other
        t = self._dtable
        rows = t.rows
        if rows is not None:
            rowmap = t.rowmap
            try:
                x = rows[rowmap[a]]
                y = rows[rowmap[b]]
            except (KeyError, TypeError, IndexError):
                return self._distance_slow(a, b)
            if t.cosine:
                return 1.0 - float(_dot(x, y))
            if t.ip:
                return -float(_dot(x, y))
            d = x - y
            return float(_dot(d, d))
        return self._distance_other(a, b)

    def _distance_other(self, a, b) -> float:
        """:meth:`distance` without a table of vectors: builds the table (the first
        call after a write), or PQ-symmetric distances."""
        t = self._dtable
        if t is NO_TABLE:
            self._check_open()
            t = self._build_dtable()
        rowmap, mat, kind = t.rowmap, t.mat, t.kind
        try:
            ra = rowmap[a]
            rb = rowmap[b]
            if ra >= len(mat) or rb >= len(mat):
                raise IndexError
        except (KeyError, TypeError, IndexError):
            return self._distance_slow(a, b)
        if kind == "cosine":
            return 1.0 - float(mat[ra] @ mat[rb])
        if kind == "ip":
            return -float(mat[ra] @ mat[rb])
        if kind == "l2":
            d = mat[ra] - mat[rb]
            return float(d @ d)
        return float(t.sdc([ra], [rb])[0])

    def _distance_slow(self, a, b):
        """:meth:`distance` of keys and ids the table does not hold: resolved (or
        NotFoundError) against a new table."""
        self._check_open()
        ia, ib = self._id_of(a), self._id_of(b)
        t = self._build_dtable()
        if ia not in t.rowmap or ib not in t.rowmap:     # pragma: no cover - raced a delete
            raise NotFoundError("id not in the database")
        return self.distance(ia, ib)

    def distances(self, pairs) -> np.ndarray:
        """Distances of many pairs of stored concepts.

        Parameters
        ----------
        pairs : (p, 2) array_like of ids

        Returns
        -------
        (p,) float32
        """
        self._check_open()
        P = np.asarray(pairs)
        if P.ndim != 2 or P.shape[1] != 2:
            raise DimensionError(f"pairs must be (p, 2), got shape {P.shape}")
        if P.size and P.dtype.kind not in "iu":
            raise InvalidArgumentError("pairs must hold integer ids")
        P = P.astype(np.int64, copy=False)
        # the table and the rows of one committed state: a commit between taking
        # the table and looking up ids beyond it would give rows it does not hold
        with self._read:
            t = self._dtable
            if t is NO_TABLE:
                t = self._build_dtable_locked()
            idrow = t.idrow
            if idrow is not None and (not P.size or (P.min() >= 0 and P.max() < len(idrow))):
                rows = idrow[P]
            else:
                rows = self._store.rows_of(P.ravel()).reshape(P.shape)
        if (rows < 0).any():
            bad = int(P[rows < 0][0])
            raise NotFoundError(f"id {bad} is not in the database")
        if t.kind in ("cosine", "ip", "l2"):
            return pair_distances(t.flat, rows[:, 0], rows[:, 1])
        return t.sdc(rows[:, 0], rows[:, 1])
