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
  when the database keeps them (``rerank=0`` returns ADC distances).

Search parameters are arguments of each call, never state of the index, so threads
may search one index with different parameters at once.
"""

from __future__ import annotations

import msgpack
import numpy as np

from ..errors import CorruptDatabaseError, InvalidArgumentError
from .flat import FlatVectors, flat_search
from .pq import ProductQuantizer, default_threads, exact_rerank

__all__ = ["VectorIndex", "default_m", "default_rerank", "encode_quantizer", "decode_quantizer"]

#: Up to this many queries, exact search runs the exact kernel over the stored vectors;
#: larger batches use BLAS on a float32 copy (:mod:`sutradb.index.flat`).
SMALL_BATCH = 16



def default_m(dim: int) -> int:
    """Subspaces of the default quantizer: 8 dimensions each when possible (48 bytes
    per 384-d vector), else the closest divisor of ``dim``."""
    for ds in (8, 4, 12, 6, 16, 2, 3, 5, 7, 1):
        if dim % ds == 0 and dim // ds <= 512:
            return dim // ds
    return dim  # pragma: no cover - ds=1 always divides


def default_rerank(k: int) -> int:
    """Candidates kept by the ADC scan for exact re-ranking when a call does not say:
    ``max(8 * k, 100)`` (recall@10 >= 0.95 on 384-d sentence embeddings with the
    default quantizer; see docs/user-guide.md, "Search tuning")."""
    return max(8 * k, 100)


def encode_quantizer(pq: ProductQuantizer) -> bytes:
    """The index blob the database stores: msgpack of ``pq.to_dict()``."""
    return msgpack.packb({"kind": "pq", "pq": pq.to_dict()}, use_bin_type=True)


def decode_quantizer(blob: bytes, source: str) -> ProductQuantizer:
    """Inverse of :func:`encode_quantizer` (explicit msgpack limits, no ext types)."""
    try:
        d = msgpack.unpackb(blob, raw=False, strict_map_key=True, max_ext_len=0,
                            max_bin_len=len(blob), max_str_len=1 << 16,
                            max_array_len=1 << 16, max_map_len=1 << 10)
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        raise CorruptDatabaseError(f"{source}: index blob is not valid msgpack ({e})") from None
    if not isinstance(d, dict) or d.get("kind") != "pq":
        raise CorruptDatabaseError(f"{source}: unknown index kind")
    pq = ProductQuantizer.from_dict(d.get("pq"), source=source)
    if not pq.is_trained:
        raise CorruptDatabaseError(f"{source}: the stored quantizer has no codebooks")
    return pq


class VectorIndex:
    """How a database answers vector queries (see the module docstring).

    Parameters
    ----------
    dim : int
    metric : {"l2", "ip", "cosine"}
    pq : ProductQuantizer, optional
        The trained quantizer (None: exact search only).
    """

    __slots__ = ("dim", "metric", "pq")

    def __init__(self, dim: int, metric: str, pq: ProductQuantizer | None = None):
        self.dim = dim
        self.metric = metric
        self.pq = pq

    @property
    def trained(self) -> bool:
        return self.pq is not None

    def search(self, Q: np.ndarray, k: int, *, mask, codes=None, vectors=None,
               flat: "callable | None" = None, rerank: int | None = None,
               exact: bool = False, threads: int | None = None):
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
            rerank = default_rerank(k)
        elif isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
            raise InvalidArgumentError(f"rerank must be an integer >= 0, got {rerank!r}")
        pq = self.pq
        if codes is None or codes.shape[0] == 0:
            return (np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64))
        use_rerank = rerank > 0 and vectors is not None
        kc = max(k, int(rerank)) if use_rerank else k
        # the quantizer's public search: distance tables + the ADC scan, mask inside
        D, I = pq.search(Q, codes, k=kc, mask=mask, threads=threads)
        if use_rerank:
            return exact_rerank(Q, vectors, I, k, self.metric, threads)
        return D, I

    def sdc_pairs(self, codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
        """Symmetric PQ distances of code pairs (the database without full vectors)."""
        return self.pq.sdc(codes_a, codes_b)
