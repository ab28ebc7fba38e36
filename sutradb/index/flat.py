"""Exact (brute-force) search and distances over stored full vectors.

:class:`FlatVectors` is a float32 copy of stored vectors prepared for a metric
(unit rows for ``"cosine"``, squared norms for ``"l2"``); :func:`flat_search` scans it
with BLAS in row blocks, skipping masked rows, and keeps the k best. This is what the
database uses while it is small (before a PQ index is trained) and for ``exact=True``
searches; :func:`pair_scorer` backs ``Database.distance``/``distances`` (exact
distances of stored rows by id, straight from the stored float16 or float32 rows).

Distances follow the quantizer's conventions: ``"l2"`` squared Euclidean, ``"ip"``
``-dot``, ``"cosine"`` ``1 - cos``; ascending; ``inf`` / ``-1`` pad missing results.
This module knows nothing of storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from .. import simd

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from .._levels.scalar._core import PairDistances

__all__ = ["FlatVectors", "flat_search", "pair_distances", "pair_scorer", "prepare_queries",
           "BLOCK_ROWS"]

BLOCK_ROWS = 1 << 15


def _unit(x: np.ndarray) -> None:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1.0
    x /= norms[:, None]


def prepare_queries(Q: np.ndarray, metric: str) -> np.ndarray:
    """float32 C-contiguous copy of validated queries, unit rows for cosine."""
    out = np.array(Q, dtype=np.float32, order="C", copy=True)
    if metric == "cosine" and out.size:
        _unit(out)
    return out


class FlatVectors:
    """float32 rows prepared for ``metric`` (a snapshot of the stored vectors).

    Parameters
    ----------
    vectors : (n, d) float16 or float32 array (e.g. a read-only memory map)
    metric : {"l2", "ip", "cosine"}

    Attributes
    ----------
    mat : (n, d) float32, read-only (unit rows for cosine)
    sqnorms : (n,) float32 or None (``"l2"`` only)
    """

    __slots__ = ("mat", "sqnorms", "metric")

    def __init__(self, vectors: np.ndarray, metric: str) -> None:
        n, d = vectors.shape
        mat = np.empty((n, d), np.float32)
        for s in range(0, n, BLOCK_ROWS):
            blk = mat[s:s + BLOCK_ROWS]
            blk[:] = vectors[s:s + BLOCK_ROWS]
            if metric == "cosine":
                _unit(blk)
        self.sqnorms = np.einsum("ij,ij->i", mat, mat) if metric == "l2" else None
        mat.setflags(write=False)
        self.mat = mat
        self.metric = metric

    @property
    def nbytes(self) -> int:
        return self.mat.nbytes + (self.sqnorms.nbytes if self.sqnorms is not None else 0)


def flat_search(fv: FlatVectors, Q: np.ndarray, k: int, mask: npt.ArrayLike | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query among the rows of ``fv`` where ``mask`` is true.

    Parameters
    ----------
    fv : FlatVectors
    Q : (nq, d) float32, prepared by :func:`prepare_queries`
    k : int >= 1
    mask : (n,) bool or uint8, optional

    Returns
    -------
    D : (nq, k) float32 ascending, ``inf``-padded; I : (nq, k) int64 rows, ``-1``-padded.
    Equal distances go to the smaller row.
    """
    nq = Q.shape[0]
    n = fv.mat.shape[0]
    bestD = np.full((nq, k), np.inf, np.float32)
    bestI = np.full((nq, k), -1, np.int64)
    if nq == 0 or n == 0:
        return bestD, bestI
    if mask is not None:
        mask = np.asarray(mask).astype(bool, copy=False)
    qn = np.einsum("ij,ij->i", Q, Q) if fv.metric == "l2" else None
    for s in range(0, n, BLOCK_ROWS):
        e = min(n, s + BLOCK_ROWS)
        S = Q @ fv.mat[s:e].T                      # (nq, b) dots
        if fv.metric == "cosine":
            D = 1.0 - S
        elif fv.metric == "ip":
            D = -S
        else:
            D = np.maximum(cast(np.ndarray, qn)[:, None] - 2.0 * S
                           + cast(np.ndarray, fv.sqnorms)[None, s:e], 0.0)
        D = D.astype(np.float32, copy=False)
        if mask is not None:
            m = mask[s:e]
            if not m.all():
                D[:, ~m] = np.inf
        rows = np.arange(s, e, dtype=np.int64)
        kk = min(k, e - s)
        if kk < e - s:
            part = np.argpartition(D, kk - 1, axis=1)[:, :kk]
            cd = np.take_along_axis(D, part, 1)
            ci = rows[part]
        else:
            cd, ci = D, np.broadcast_to(rows, D.shape)
        allD = np.concatenate([bestD, cd], axis=1)
        allI = np.concatenate([bestI, ci], axis=1)
        # order by (distance, row); missing rows (-1) last
        key_i = np.where(allI < 0, np.iinfo(np.int64).max, allI)
        o = np.lexsort((key_i, allD), axis=1)[:, :k]
        bestD = np.take_along_axis(allD, o, 1)
        bestI = np.take_along_axis(allI, o, 1)
    bad = ~np.isfinite(bestD)
    bestI[bad] = -1
    bestD[bad] = np.inf
    return np.ascontiguousarray(bestD), np.ascontiguousarray(bestI)


def pair_distances(fv: FlatVectors, ra: np.ndarray, rb: np.ndarray, block: int = 1024) -> np.ndarray:
    """Distances between rows ``ra[i]`` and ``rb[i]`` of ``fv``: (p,) float32.

    Small blocks keep the gathered rows in cache (memory bandwidth bounds this)."""
    p = len(ra)
    out = np.empty(p, np.float32)
    mat = fv.mat
    for s in range(0, p, block):
        A = mat[ra[s:s + block]]
        B = mat[rb[s:s + block]]
        dots = np.einsum("ij,ij->i", A, B)
        if fv.metric == "cosine":
            out[s:s + block] = 1.0 - dots
        elif fv.metric == "ip":
            out[s:s + block] = -dots
        else:
            sq = cast(np.ndarray, fv.sqnorms)          # set for "l2"
            out[s:s + block] = np.maximum(sq[ra[s:s + block]] + sq[rb[s:s + block]] - 2 * dots, 0)
    return out


def pair_scorer(blocks: Sequence[np.ndarray], idrow: np.ndarray, metric: int) -> PairDistances:
    """The exact pair kernel (``PairDistances`` of the active SIMD level) over the
    stored rows in one or two ``blocks`` (each (n_i, d) float16 or float32, read in
    place: a mapped segment and the log's rows, say) with the id -> row array
    ``idrow`` ((m,) int64, -1 for none). ``metric``: 0 squared L2, 1 ``-dot``,
    2 ``1 - cos``."""
    blocks = [b.view(np.uint16) if b.dtype == np.float16 else b for b in blocks]
    return simd.core.PairDistances(blocks, np.ascontiguousarray(idrow, dtype=np.int64), metric)
