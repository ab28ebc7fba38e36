# cython: language_level=3
"""Product-quantizer training and encoding kernels.

The Lloyd iteration is split as in scikit-learn's ``_k_means_lloyd.pyx``: Python
(``sutradb/index/pq.py``) drives the iterations, validates inputs, seeds the
k-means++ initialisation and re-seeds empty clusters; the kernels here do the
O(n * K * d) work without the GIL:

* ``assign``: nearest centre of every row (blocked ``||c||^2 - 2 x.c`` form over a
  transposed centre matrix, so the inner loop runs over centres and vectorises),
  parallel over fixed-size row chunks;
* ``update``: new centres as the mean of their rows, accumulated in float64 in row
  order (deterministic, whatever the thread count);
* ``encode``: the same nearest-centre search per subspace, parallel over rows,
  writing (n, M) uint8 codes; ``decode`` the inverse lookup.

Every result is independent of ``nthreads``: rows are assigned independently, and
every reduction runs in a fixed order.
"""

from libc.stdint cimport uint8_t, int32_t, int64_t
from libc.math cimport INFINITY
from cython.parallel cimport prange, threadid

import numpy as np

# Rows per parallel chunk (fixed: results must not depend on the thread count).
DEF CHUNK = 256


cdef extern from "_simd.h" nogil:
    Py_ssize_t sutra_nearest(const float *x, const float *CT, const float *cn,
                             Py_ssize_t K, Py_ssize_t d, float *best)
    void sutra_nearest2(const float *x0, const float *x1, const float *CT,
                        const float *cn, Py_ssize_t K, Py_ssize_t d,
                        float *best0, Py_ssize_t *arg0, float *best1, Py_ssize_t *arg1)


cdef inline Py_ssize_t _nearest(const float *x, const float *CT, const float *cn,
                                Py_ssize_t K, Py_ssize_t d, float *buf,
                                float *best) noexcept nogil:
    """Index of the centre nearest to x (first one on ties) and, in ``best``, the
    value ``||c||^2 - 2 x.c`` for it.

    IN  x (d,), CT (d, K) transposed centres, cn (K,) squared centre norms
    ``buf`` is unused scratch kept for the signature (SIMD lives in _simd.h).
    """
    return sutra_nearest(x, CT, cn, K, d, best)


def assign(const float[:, ::1] X, const float[:, ::1] centers, int nthreads=1):
    """Nearest centre of each row.

    Parameters
    ----------
    X : (n, d) float32
    centers : (K, d) float32
    nthreads : int

    Returns
    -------
    labels : (n,) int32
    sqdist : (n,) float32, squared distance to that centre (clipped at 0)
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], K = centers.shape[0]
    if centers.shape[1] != d:
        raise ValueError("X and centers disagree on the dimension")
    if K < 1:
        raise ValueError("need at least one centre")
    nthreads = max(1, nthreads)
    CT_arr = np.ascontiguousarray(np.asarray(centers).T)
    cn_arr = np.einsum("ij,ij->i", np.asarray(centers), np.asarray(centers)).astype(np.float32)
    labels = np.empty(n, dtype=np.int32)
    sqdist = np.empty(n, dtype=np.float32)
    scratch = np.empty((nthreads, K), dtype=np.float32)
    cdef const float[:, ::1] CT = CT_arr
    cdef const float[::1] cn = cn_arr
    cdef int32_t[::1] lab = labels
    cdef float[::1] sq = sqdist
    cdef float[:, ::1] sc = scratch
    cdef Py_ssize_t nchunks = (n + CHUNK - 1) // CHUNK
    cdef Py_ssize_t ch, i, i1, j, a0, a1
    cdef float best, best1, xx
    if n == 0:
        return labels, sqdist
    for ch in prange(nchunks, nogil=True, num_threads=nthreads, schedule="static"):
        i1 = min(n, (ch + 1) * CHUNK)
        # assigned here so that Cython makes them thread-private (they are written
        # through pointers below, which it does not see as assignments)
        a0 = 0
        a1 = 0
        best = 0
        best1 = 0
        i = ch * CHUNK
        while i < i1:
            if i + 1 < i1:
                sutra_nearest2(&X[i, 0], &X[i + 1, 0], &CT[0, 0], &cn[0], K, d,
                               &best, &a0, &best1, &a1)
                lab[i] = <int32_t> a0
                lab[i + 1] = <int32_t> a1
                sq[i] = best
                sq[i + 1] = best1
                i = i + 2
            else:
                lab[i] = <int32_t> _nearest(&X[i, 0], &CT[0, 0], &cn[0], K, d,
                                            &sc[threadid(), 0], &best)
                sq[i] = best
                i = i + 1
        for i in range(ch * CHUNK, i1):
            xx = 0
            for j in range(d):
                xx = xx + X[i, j] * X[i, j]
            best = sq[i] + xx
            if best < 0:
                best = 0
            sq[i] = best
    return labels, sqdist


def update(const float[:, ::1] X, const int32_t[::1] labels, Py_ssize_t K):
    """Sums and counts of the rows of each cluster (float64, in row order).

    Returns
    -------
    sums : (K, d) float64
    counts : (K,) int64
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, j
    cdef int32_t c
    if labels.shape[0] != n:
        raise ValueError("one label per row")
    sums = np.zeros((K, d), dtype=np.float64)
    counts = np.zeros(K, dtype=np.int64)
    cdef double[:, ::1] S = sums
    cdef int64_t[::1] C = counts
    with nogil:
        for i in range(n):
            c = labels[i]
            if c < 0 or c >= K:
                continue
            C[c] += 1
            for j in range(d):
                S[c, j] += X[i, j]
    return sums, counts


def encode(const float[:, ::1] X, const float[:, :, ::1] codebooks, int nthreads=1):
    """Nearest centroid per subspace.

    Parameters
    ----------
    X : (n, M * Ds) float32
    codebooks : (M, Ks, Ds) float32, Ks <= 256

    Returns
    -------
    codes : (n, M) uint8
    """
    cdef Py_ssize_t n = X.shape[0], M = codebooks.shape[0]
    cdef Py_ssize_t Ks = codebooks.shape[1], Ds = codebooks.shape[2]
    if X.shape[1] != M * Ds:
        raise ValueError("X and codebooks disagree on the dimension")
    if Ks > 256 or Ks < 1:
        raise ValueError("Ks must be in [1, 256]")
    nthreads = max(1, nthreads)
    cb = np.asarray(codebooks)
    CT_arr = np.ascontiguousarray(cb.transpose(0, 2, 1))           # (M, Ds, Ks)
    cn_arr = np.ascontiguousarray(np.einsum("mkd,mkd->mk", cb, cb), dtype=np.float32)
    codes = np.empty((n, M), dtype=np.uint8)
    scratch = np.empty((nthreads, Ks), dtype=np.float32)
    cdef const float[:, :, ::1] CT = CT_arr
    cdef const float[:, ::1] cn = cn_arr
    cdef uint8_t[:, ::1] out = codes
    cdef float[:, ::1] sc = scratch
    cdef Py_ssize_t nchunks = (n + CHUNK - 1) // CHUNK
    cdef Py_ssize_t ch, i, i1, m, a0, a1
    cdef float best, best1
    if n == 0 or M == 0:
        return codes
    for ch in prange(nchunks, nogil=True, num_threads=nthreads, schedule="static"):
        i1 = min(n, (ch + 1) * CHUNK)
        a0 = 0          # thread-private (see assign)
        a1 = 0
        best = 0
        best1 = 0
        i = ch * CHUNK
        while i < i1:
            if i + 1 < i1:
                for m in range(M):
                    sutra_nearest2(&X[i, m * Ds], &X[i + 1, m * Ds], &CT[m, 0, 0],
                                   &cn[m, 0], Ks, Ds, &best, &a0, &best1, &a1)
                    out[i, m] = <uint8_t> a0
                    out[i + 1, m] = <uint8_t> a1
                i = i + 2
            else:
                for m in range(M):
                    out[i, m] = <uint8_t> _nearest(&X[i, m * Ds], &CT[m, 0, 0], &cn[m, 0],
                                                   Ks, Ds, &sc[threadid(), 0], &best)
                i = i + 1
    return codes


def decode(const uint8_t[:, ::1] codes, const float[:, :, ::1] codebooks):
    """Reconstruct vectors from (n, M) codes: ``x_hat[i, m*Ds:(m+1)*Ds] =
    codebooks[m, codes[i, m]]``. Codes out of range for Ks raise ValueError."""
    cdef Py_ssize_t n = codes.shape[0], M = codebooks.shape[0]
    cdef Py_ssize_t Ks = codebooks.shape[1], Ds = codebooks.shape[2]
    cdef Py_ssize_t i, m, j
    cdef uint8_t c
    cdef bint bad = False
    if codes.shape[1] != M:
        raise ValueError("codes must have M columns")
    out = np.empty((n, M * Ds), dtype=np.float32)
    cdef float[:, ::1] o = out
    with nogil:
        for i in range(n):
            for m in range(M):
                c = codes[i, m]
                if c >= Ks:
                    bad = True
                    c = 0
                for j in range(Ds):
                    o[i, m * Ds + j] = codebooks[m, c, j]
    if bad:
        raise ValueError(f"codes hold values >= Ks={Ks}")
    return out
