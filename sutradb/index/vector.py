"""The vector index of a database: exact while small, PQ + exact re-ranking after.

:class:`VectorIndex` decides how a query is answered from what the database hands it
(arrays only: stored codes, stored full vectors, a row mask; it never touches
storage):

* no quantizer yet (the database is below its training threshold) or ``exact=True``:
  exact search over the full vectors (the exact kernel ``_core.rerank`` over every
  unmasked row for a few queries, BLAS over a float32 copy for batches:
  :mod:`sutradb.index.flat`);
* a trained :class:`~sutradb.index.pq.ProductQuantizer`: the ADC scan of the codes
  (:meth:`ProductQuantizer.search`, the mask applied inside the scan) keeps
  ``max(k, rerank)`` candidates, which are re-ranked exactly against the full vectors
  when the database keeps them (``rerank=0`` returns ADC distances);
* a quantizer and an :class:`IVFPart` (large databases): the rows below
  ``covered`` are found through the inverted lists (:class:`~sutradb.index.ivf.IVFIndex`:
  ``nprobe`` lists scanned, candidates re-ranked), the rows added since (the *tail*)
  by the flat ADC scan, and the two exact top-k lists are merged;
* a filter's mask that keeps at most :data:`FILTERED_EXACT_ROWS` rows (a selective
  ``where`` filter) with the full vectors kept: the exact kernel over those rows only, which
  costs no more than the scans above and is exact (the lists of an IVF index hold
  few rows that pass such a filter, so the probed lists would miss neighbours).

Search parameters are arguments of each call, never state of the index, so threads
may search one index with different parameters at once.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, cast, overload

import msgpack
import numpy as np

from ..errors import CorruptDatabaseError, DimensionError, InvalidArgumentError
from .flat import FlatVectors, flat_search
from .ivf import BlockedCodes, IVFIndex, vectors_view
from .pq import ProductQuantizer, check_mask, default_threads, exact_rerank

__all__ = ["VectorIndex", "IVFPart", "default_m", "default_pq_shape", "default_rerank", "encode_quantizer",
           "decode_quantizer", "encode_index", "decode_index", "list_codes", "code_rows"]

#: Up to this many queries, exact search runs the exact kernel over the stored vectors;
#: larger batches use BLAS on a float32 copy (:mod:`sutradb.index.flat`).
SMALL_BATCH = 16

#: A mask that keeps at most this many rows is searched exactly over those rows (with
#: the full vectors; at 384 dimensions 4,096 rows cost about what the default IVF or
#: PQ search of 100,000 rows does, docs/benchmarks.md "bench_filters").
FILTERED_EXACT_ROWS = 4096



def default_m(dim: int, nbits: int = 8) -> int:
    """Subspaces of the default quantizer: one byte of code per 8 dimensions when
    possible (48 bytes per 384-d vector): 8 dimensions per subspace for 8-bit codes,
    4 for 4-bit codes; else the closest divisor of ``dim``."""
    order = (8, 4, 12, 6, 16, 2, 3, 5, 7, 1) if nbits == 8 else (4, 2, 8, 6, 3, 12, 5, 7, 1)
    for ds in order:
        if dim % ds == 0 and dim // ds <= 512:
            return dim // ds
    return dim  # pragma: no cover - ds=1 always divides


def default_pq_shape(dim: int, vector_dtype: str | None, m: int | None = None,
                     nbits: int | None = None) -> tuple[int, int]:
    """``(m, nbits)`` of a database's quantizer when its options leave them open.

    With stored vectors every search re-ranks its candidates exactly, so the codes
    only have to find them: 4-bit codes (twice the subspaces, the same bytes) are
    scanned several times faster (the fast scans) and re-rank to the same recall
    (PyPI MiniLM 100k: recall@10 0.9574 vs 0.9587 at nprobe 128 / 100 candidates).
    Without stored vectors the ADC distance is the answer, and 8-bit codes are the
    more accurate (recall@10 of the raw ADC 0.686 vs 0.670): ``nbits`` 8."""
    if nbits is None:
        nbits = 8 if vector_dtype is None else 4
    return int(m or default_m(dim, nbits)), int(nbits)


def default_rerank(k: int) -> int:
    """Candidates kept by the ADC scan for exact re-ranking when a call does not say:
    ``max(8 * k, 100)`` (recall@10 >= 0.95 on 384-d sentence embeddings with the
    default quantizer; see docs/user-guide.md, "Search tuning")."""
    return max(8 * k, 100)


class IVFPart:
    """The inverted-file part of a database index.

    Attributes
    ----------
    ivf : IVFIndex
        Coarse centres and the list layout; ``ivf.perm`` holds *row numbers*.
    codes : (len(perm), code_size) uint8 or BlockedCodes
        The PQ codes in list order (a view of the mapped index file); 4-bit codes
        are kept blocked for the fast scan (:func:`list_codes`).
    covered : int
        Rows below this number are in the lists or dead; rows from it on (added
        since the lists were laid out) are scanned flat.
    nprobe : int
        Lists scanned when a call does not say (chosen when the lists were built:
        the smallest that reaches the database's ``target_recall`` on held-out
        stored vectors).
    rerank_scale : int
        Calls that do not say ``rerank`` re-rank ``rerank_scale * default_rerank(k)``
        candidates (1 unless the quantizer needed more to reach the target).
    tuned : dict
        How ``nprobe`` was chosen (target, recall measured, queries).
    """

    __slots__ = ("ivf", "codes", "covered", "nprobe", "rerank_scale", "tuned")

    def __init__(self, ivf: IVFIndex, codes: np.ndarray | BlockedCodes, covered: int, nprobe: int,
                 tuned: dict[str, Any] | None = None, rerank_scale: int = 1) -> None:
        self.ivf = ivf
        self.codes = codes
        self.covered = int(covered)
        self.nprobe = int(nprobe)
        self.rerank_scale = int(rerank_scale)
        self.tuned = dict(tuned or {})


def list_codes(pq: ProductQuantizer, codes: np.ndarray) -> np.ndarray | BlockedCodes:
    """List-ordered ``codes`` as an IVF part keeps them: 4-bit codes blocked for the
    fast scan (:class:`~sutradb.index.ivf.BlockedCodes`), 8-bit codes as they are."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    return BlockedCodes.from_rows(codes) if pq.nbits == 4 else codes


def code_rows(codes: np.ndarray | BlockedCodes, start: int = 0, stop: int | None = None
              ) -> np.ndarray:
    """Rows ``start:stop`` (default all) of an IVF part's codes, as (n, code_size)
    rows (unblocked if need be)."""
    if isinstance(codes, BlockedCodes):
        return codes.rows(start, stop)
    return np.asarray(codes[start:stop])


def _unpack(blob: bytes, source: str) -> dict[str, Any]:
    try:
        d = msgpack.unpackb(blob, raw=False, strict_map_key=True, max_ext_len=0,
                            max_bin_len=len(blob), max_str_len=1 << 16,
                            max_array_len=1 << 16, max_map_len=1 << 10)
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        raise CorruptDatabaseError(f"{source}: index blob is not valid msgpack ({e})") from None
    if not isinstance(d, dict):
        raise CorruptDatabaseError(f"{source}: unknown index kind")
    return d


def encode_quantizer(pq: ProductQuantizer) -> bytes:
    """The index blob of a flat PQ index: msgpack of ``pq.to_dict()``."""
    return msgpack.packb({"kind": "pq", "pq": pq.to_dict()}, use_bin_type=True)


def decode_quantizer(blob: bytes, source: str, d: dict[str, Any] | None = None) -> ProductQuantizer:
    """The quantizer of an index blob (explicit msgpack limits, no ext types; ``d``:
    the blob already unpacked)."""
    if d is None:
        d = _unpack(blob, source)
    if d.get("kind") not in ("pq", "ivf-pq"):
        raise CorruptDatabaseError(f"{source}: unknown index kind")
    pq = ProductQuantizer.from_dict(d.get("pq"), source=source)  # type: ignore[arg-type]  # from_dict checks it
    if not pq.is_trained:
        raise CorruptDatabaseError(f"{source}: the stored quantizer has no codebooks")
    return pq


def encode_index(pq: ProductQuantizer, part: IVFPart | None = None
                 ) -> tuple[bytes, dict[str, Any]]:
    """``(blob, arrays)`` for the store: the quantizer and, with an IVF part, its
    centres and parameters in the blob and ``ivf_perm`` / ``ivf_offsets`` /
    ``ivf_codes`` as arrays (memory-mapped when read back)."""
    if part is None:
        return encode_quantizer(pq), {}
    ivf = part.ivf.to_dict(lists=False)
    del ivf["centroids"], ivf["centroids_crc32"]    # an array (mapped, not unpacked)
    blocked = isinstance(part.codes, BlockedCodes)
    d = {"kind": "ivf-pq", "pq": pq.to_dict(), "ivf": ivf,
         "covered": part.covered, "nprobe": part.nprobe, "rerank_scale": part.rerank_scale,
         "tuned": part.tuned, "codes_layout": "blocked16" if blocked else "rows"}
    arrays = {"ivf_centroids": part.ivf.centroids, "ivf_perm": part.ivf.perm,
              "ivf_offsets": part.ivf.offsets,
              "ivf_codes": part.codes.data if blocked else part.codes}
    return msgpack.packb(d, use_bin_type=True), arrays


@overload
def decode_index(blob: bytes, arrays: dict[str, Any], source: str, n_rows: int,
                 lazy: Literal[False] = False) -> tuple[ProductQuantizer, IVFPart | None]: ...
@overload
def decode_index(blob: bytes, arrays: dict[str, Any], source: str, n_rows: int,
                 lazy: bool) -> tuple[ProductQuantizer, IVFPart | Callable[[], IVFPart] | None]: ...


def decode_index(blob: bytes, arrays: dict[str, Any], source: str, n_rows: int, lazy: bool = False
                 ) -> tuple[ProductQuantizer, IVFPart | Callable[[], IVFPart] | None]:
    """Inverse of :func:`encode_index`: ``(pq, IVFPart or None)``; anything that does
    not fit (sizes, list layout, rows beyond ``n_rows``) raises
    :class:`~sutradb.errors.CorruptDatabaseError`. With ``lazy``, the IVF part is a
    callable that decodes and checks it (what opening a database defers to the first
    search)."""
    d = _unpack(blob, source)
    pq = decode_quantizer(blob, source, d)
    if d.get("kind") != "ivf-pq":
        return pq, None
    if lazy:
        return pq, lambda: _decode_part(d, pq, arrays, source, n_rows)
    return pq, _decode_part(d, pq, arrays, source, n_rows)


def _decode_part(d: dict[str, Any], pq: ProductQuantizer, arrays: dict[str, Any], source: str,
                 n_rows: int) -> IVFPart:
    ivf = IVFIndex.from_dict(d.get("ivf"), source=source)  # type: ignore[arg-type]  # from_dict checks it
    C = arrays.get("ivf_centroids")
    if (C is None or ivf.nlist is None or C.dtype != np.float32
            or C.shape != (ivf.nlist, ivf.dim) or ivf.dim != pq.dim or ivf.metric != pq.metric):
        raise CorruptDatabaseError(f"{source}: the IVF centres do not match the quantizer")
    if not np.isfinite(C).all():
        raise CorruptDatabaseError(f"{source}: the IVF centres hold NaN or infinite values")
    ivf._set_centroids(C)
    try:
        perm, offsets, codes = arrays["ivf_perm"], arrays["ivf_offsets"], arrays["ivf_codes"]
        covered, nprobe = int(d["covered"]), int(d["nprobe"])
        scale = int(d.get("rerank_scale", 1))
    except (KeyError, TypeError, ValueError):
        raise CorruptDatabaseError(f"{source}: the IVF lists are incomplete") from None
    layout = d.get("codes_layout", "rows")
    if layout == "blocked16" and pq.nbits == 4 and perm.ndim == 1:
        try:
            codes = BlockedCodes(codes, perm.shape[0], pq.code_size)
        except DimensionError:
            raise CorruptDatabaseError(f"{source}: the IVF lists do not fit the codes") from None
    elif (layout != "rows" or codes.dtype != np.uint8 or codes.ndim != 2
            or codes.shape[1] != pq.code_size or codes.shape[0] != perm.shape[0]):
        raise CorruptDatabaseError(f"{source}: the IVF lists do not fit the codes")
    if not 0 <= covered <= n_rows or not 1 <= nprobe <= ivf.nlist or not 1 <= scale <= 64:
        raise CorruptDatabaseError(f"{source}: the IVF lists do not fit the codes")
    try:
        ivf.set_lists(perm, offsets)
    except InvalidArgumentError as e:
        raise CorruptDatabaseError(f"{source}: damaged IVF lists ({e})") from None
    if perm.size and int(perm.max()) >= covered:
        raise CorruptDatabaseError(f"{source}: the IVF lists name rows beyond {covered}")
    tuned = d.get("tuned") if isinstance(d.get("tuned"), dict) else {}
    return IVFPart(ivf, codes, covered, nprobe, tuned, scale)


def _merge(D1: np.ndarray, I1: np.ndarray, D2: np.ndarray, I2: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The k best of two (nq, *) candidate lists (``inf`` / ``-1`` padded)."""
    D = np.concatenate([D1, D2], axis=1)
    I = np.concatenate([I1, I2], axis=1)
    o = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, o, axis=1), np.take_along_axis(I, o, axis=1)


class VectorIndex:
    """How a database answers vector queries (see the module docstring).

    Parameters
    ----------
    dim : int
    metric : {"l2", "ip", "cosine"}
    pq : ProductQuantizer, optional
        The trained quantizer (None: exact search only).
    """

    __slots__ = ("dim", "metric", "pq", "_ivf", "_load")

    def __init__(self, dim: int, metric: str, pq: ProductQuantizer | None = None,
                 ivf: IVFPart | Callable[[], IVFPart] | None = None) -> None:
        self.dim = dim
        self.metric = metric
        self.pq = pq
        # an IVFPart, or a callable that decodes it on first use (opening stays fast)
        self._ivf = ivf if not callable(ivf) else None
        self._load = ivf if callable(ivf) else None

    @property
    def ivf(self) -> "IVFPart | None":
        if self._load is not None:
            self._ivf = self._load()        # two threads may both decode: same result
            self._load = None
        return self._ivf

    @property
    def has_ivf(self) -> bool:
        """Whether there are IVF lists (without decoding them)."""
        return self._ivf is not None or self._load is not None

    @property
    def trained(self) -> bool:
        return self.pq is not None

    def search(self, Q: np.ndarray, k: int, *, mask: np.ndarray | None,
               codes: np.ndarray | None = None, vectors: np.ndarray | None = None,
               flat: Callable[[], FlatVectors] | None = None, rerank: int | None = None,
               exact: bool = False, threads: int | None = None, nprobe: int | None = None,
               filtered: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows for prepared queries ``Q`` ((nq, dim) float32, unit rows for
        cosine).

        Parameters
        ----------
        mask : (n,) bool, optional
            Rows to consider (live rows AND the filter).
        codes : (n, code_size) uint8, optional
            Stored PQ codes (required when a quantizer is trained).
        vectors : (n, dim) float16/float32, optional
            Stored full vectors (re-ranking, exact search).
        flat : callable, optional
            Returns a :class:`FlatVectors` of ``vectors`` (cached by the caller).
        rerank : int, optional
            Candidates re-ranked exactly (default :func:`default_rerank`); ``0``
            returns ADC distances.
        exact : bool
            Brute force over the full vectors even when a quantizer is trained.
        threads : int, optional
            Kernel threads (default: 1 for a single query, else all CPUs).
        nprobe : int, optional
            With IVF lists: lists scanned (default: the part's tuned ``nprobe``).
        filtered : bool
            ``mask`` holds a filter: when it keeps at most :data:`FILTERED_EXACT_ROWS`
            rows and ``vectors`` are given (and ``rerank`` is not 0), the search is
            exact over those rows.

        Returns
        -------
        D : (nq, k) float32, I : (nq, k) int64 rows (``-1`` padded)
        """
        nq = Q.shape[0]
        if threads is None:
            threads = 1 if nq <= 1 else default_threads()
        if self.pq is None or exact:
            if flat is None or vectors is None:
                raise InvalidArgumentError("exact search needs the full vectors, which this "
                                           "database does not keep")
            if nq <= SMALL_BATCH:
                # a few queries: the exact kernel straight over the stored (float16)
                # vectors, one thread, no float32 copy (BLAS gemv is slower here)
                n = vectors.shape[0]
                cand = np.flatnonzero(mask) if mask is not None else np.arange(n, dtype=np.int64)
                if len(cand) == 0:
                    return (np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64))
                cand = np.broadcast_to(cand.astype(np.int64, copy=False), (nq, len(cand)))
                return exact_rerank(Q, vectors, cand, k, self.metric, threads)
            return flat_search(flat(), Q, k, mask)
        if rerank is None:
            rerank = default_rerank(k) * (self.ivf.rerank_scale if self.ivf is not None else 1)
        elif isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
            raise InvalidArgumentError(f"rerank must be an integer >= 0, got {rerank!r}")
        pq = self.pq
        if codes is None or codes.shape[0] == 0:
            return (np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64))
        if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer))
                                   or nprobe < 1):
            raise InvalidArgumentError(f"nprobe must be an integer >= 1, got {nprobe!r}")
        use_rerank = rerank > 0 and vectors is not None
        if filtered and use_rerank and mask is not None:
            m = int(np.count_nonzero(mask))
            if m <= FILTERED_EXACT_ROWS:        # a selective filter: exact over its rows
                if m == 0:
                    return (np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64))
                cand = np.broadcast_to(np.flatnonzero(mask), (nq, m))
                return exact_rerank(Q, cast(np.ndarray, vectors), cand, k, self.metric, threads)
        kc = max(k, int(rerank)) if use_rerank else k
        part = self.ivf
        if part is None or part.covered == 0:
            return self._flat_pq(Q, codes, mask, vectors, k, kc, use_rerank, threads)
        # the lists: coarse probes, ADC scan of the probed lists, exact re-rank
        # arguments checked here and by the decoder: the lean entry of the lists' search
        D, I = part.ivf._search_prepared(
            Q, part.codes, pq, k, min(int(nprobe or part.nprobe), cast(int, part.ivf.nlist)), kc,
            vectors_view(vectors, Q.shape[1]) if use_rerank else None,  # type: ignore[arg-type]  # given
            check_mask(mask, mask.shape[0]) if mask is not None else None, threads)
        c = part.covered
        if codes.shape[0] > c:
            # the tail (rows added since the lists were laid out): the flat scan
            Dt, It = self._flat_pq(Q, codes[c:], mask[c:] if mask is not None else None,
                                   vectors, k, kc, False, threads)
            It = np.where(It >= 0, It + c, -1)
            if use_rerank:
                Dt, It = exact_rerank(Q, vectors, It, k, self.metric, threads)  # type: ignore[arg-type]  # given
            D, I = _merge(D, I, Dt, It, k)
        return D, I

    def _flat_pq(self, Q: np.ndarray, codes: np.ndarray, mask: np.ndarray | None,
                 vectors: np.ndarray | None, k: int, kc: int, use_rerank: bool,
                 threads: int) -> tuple[np.ndarray, np.ndarray]:
        # the quantizer's public search: distance tables + the ADC scan, mask inside
        D, I = cast(ProductQuantizer, self.pq).search(Q, codes, k=kc, mask=mask, threads=threads)
        if use_rerank:
            return exact_rerank(Q, vectors, I, k, self.metric, threads)  # type: ignore[arg-type]  # re-rank: vectors given
        return D, I

    def sdc_pairs(self, codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
        """Symmetric PQ distances of code pairs (the database without full vectors)."""
        return cast(ProductQuantizer, self.pq).sdc(codes_a, codes_b)   # trained
