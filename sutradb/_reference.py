"""NumPy oracles for every kernel of ``_pq.pyx`` and ``_core.pyx``.

Slow, obvious, float64 where it matters: the tests compare the kernels against
these on hypothesis-generated arrays. Conventions are the kernels' (see
``sutradb/_core.pyx``): metric 0 is squared L2, metric 1 the negated inner
product; results ascend and ties go to the smaller row.
"""

from __future__ import annotations

import numpy as np

L2, IP, COS = 0, 1, 2


def distance_tables(queries: np.ndarray, codebooks: np.ndarray, metric: int) -> np.ndarray:
    """(nq, M, Ks): per subspace, the squared distance (or negated dot) of the query's
    sub-vector to every centroid."""
    M, Ks, Ds = codebooks.shape
    q = queries.astype(np.float64).reshape(len(queries), M, 1, Ds)
    cb = codebooks.astype(np.float64)[None]
    if metric == L2:
        t = ((q - cb) ** 2).sum(-1)
    else:
        t = -(q * cb).sum(-1)
    return t.astype(np.float32)


def unpack4(packed: np.ndarray, M: int) -> np.ndarray:
    out = np.empty((packed.shape[0], 2 * packed.shape[1]), dtype=np.uint8)
    out[:, 0::2] = packed & 15
    out[:, 1::2] = packed >> 4
    return out[:, :M]


def adc_distances(tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(nq, n) ADC distances: nanopq's ``sum(dtable[range(M), codes], axis=1)``."""
    nq, M, Ks = tables.shape
    if Ks == 16:
        codes = unpack4(codes, M)
    t = tables.astype(np.float64)
    return np.stack([t[q][np.arange(M), codes].sum(axis=1) for q in range(nq)]).reshape(nq, len(codes))


def topk(dist: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise k smallest of (nq, n) distances, ties to the smaller row, padded
    with (inf, -1); rows where ``mask`` is false are excluded."""
    nq, n = dist.shape
    D = np.full((nq, k), np.inf, dtype=np.float64)
    I = np.full((nq, k), -1, dtype=np.int64)
    rows = np.arange(n) if mask is None else np.flatnonzero(np.asarray(mask) != 0)
    for q in range(nq):
        d = dist[q, rows]
        order = np.lexsort((rows, d))[:k]
        D[q, :len(order)] = d[order]
        I[q, :len(order)] = rows[order]
    return D, I


def adc_topk(tables: np.ndarray, codes: np.ndarray, k: int,
             mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    return topk(adc_distances(tables, codes), k, mask)


def encode(X: np.ndarray, codebooks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid per subspace (first on ties) and its squared distance,
    computed directly in float64: (codes (n, M) uint8, sqdist (n, M))."""
    M, Ks, Ds = codebooks.shape
    x = X.astype(np.float64).reshape(len(X), M, 1, Ds)
    d = ((x - codebooks.astype(np.float64)[None]) ** 2).sum(-1)      # (n, M, Ks)
    codes = d.argmin(-1)
    return codes.astype(np.uint8), np.take_along_axis(d, codes[..., None], -1)[..., 0]


def decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    M, Ks, Ds = codebooks.shape
    return codebooks[np.arange(M), codes.astype(np.intp)].reshape(len(codes), M * Ds)


def assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (first on ties) and squared distance, float64."""
    d = ((X.astype(np.float64)[:, None, :] - centers.astype(np.float64)[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    return lab.astype(np.int32), d[np.arange(len(X)), lab]


def exact_distances(queries: np.ndarray, vectors: np.ndarray, metric: int) -> np.ndarray:
    q = queries.astype(np.float64)
    v = vectors.astype(np.float64)
    if metric == L2:
        return ((q[:, None, :] - v[None]) ** 2).sum(-1)
    if metric == COS:
        norms = np.linalg.norm(v, axis=1)
        return -(q @ v.T) / np.where(norms > 0, norms, np.inf)
    return -(q @ v.T)


def pair_distances(vectors: np.ndarray, idrow: np.ndarray, pairs: np.ndarray, metric: int) -> np.ndarray:
    """Distances of the rows of the id pairs (``idrow``: id -> row): squared L2,
    ``-dot``, or ``1 - cos`` (``1`` when a row is zero), in float64."""
    a = vectors[idrow[pairs[:, 0]]].astype(np.float64)
    b = vectors[idrow[pairs[:, 1]]].astype(np.float64)
    if metric == L2:
        return ((a - b) ** 2).sum(1)
    dot = (a * b).sum(1)
    if metric == COS:
        nn = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.where(nn > 0, 1.0 - dot / np.where(nn > 0, nn, 1.0), 1.0)
    return -dot


def rerank(queries: np.ndarray, vectors: np.ndarray, candidates: np.ndarray, k: int,
           metric: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among each query's candidate rows (out-of-range rows ignored)."""
    nq = len(queries)
    D = np.full((nq, k), np.inf)
    I = np.full((nq, k), -1, dtype=np.int64)
    n = len(vectors)
    for q in range(nq):
        rows = np.array([r for r in candidates[q] if 0 <= r < n], dtype=np.int64)
        if len(rows) == 0:
            continue
        d = exact_distances(queries[q:q + 1], vectors[rows], metric)[0]
        order = np.lexsort((rows, d))[:k]
        D[q, :len(order)] = d[order]
        I[q, :len(order)] = rows[order]
    return D, I


def sdc(codebooks: np.ndarray, a: np.ndarray, b: np.ndarray, metric: int) -> np.ndarray:
    """Distance between the reconstructions of code pairs."""
    xa, xb = decode(a, codebooks).astype(np.float64), decode(b, codebooks).astype(np.float64)
    if metric == L2:
        return ((xa - xb) ** 2).sum(1)
    return -(xa * xb).sum(1)
