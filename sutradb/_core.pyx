# cython: language_level=3
"""Quantized-distance kernels: distance tables, the ADC scan with top-k, exact
re-ranking and symmetric (code-to-code) distances.

These functions know nothing about storage or the Python-level classes of sutradb:
they take typed memoryviews (which may be read-only views of a memory map: nothing
is copied) and return NumPy arrays. Validation of shapes and values lives in the
Python callers (``sutradb/index/pq.py``); the ``def`` drivers here only check what
they must to stay memory-safe. The workers are ``noexcept nogil`` and run in
parallel with OpenMP over queries (or over row ranges of a single query).

Conventions (the names of the PQ paper and nanopq): ``M`` subspaces, ``Ks``
centroids per subspace, ``Ds = dim // M``; codes are ``(n, M)`` uint8 for 8-bit
PQ and ``(n, ceil(M / 2))`` uint8 for 4-bit PQ (subspace ``2j`` in the low nibble
of byte ``j``, subspace ``2j + 1`` in the high nibble).

Distances ascend (smaller is closer): ``METRIC_L2`` gives squared L2 distances,
``METRIC_IP`` the negated inner product. Ties are broken by the smaller row.

Conventions (the names of the PQ paper and nanopq): ``M`` subspaces, ``Ks``
centroids per subspace, ``Ds = dim // M``; codes are ``(n, M)`` uint8 for 8-bit
PQ and ``(n, ceil(M / 2))`` uint8 for 4-bit PQ (subspace ``2j`` in the low nibble
of byte ``j``, subspace ``2j + 1`` in the high nibble).

Distances ascend (smaller is closer): ``METRIC_L2`` gives squared L2 distances,
``METRIC_IP`` the negated inner product. Ties are broken by the smaller row.

The ADC scan sums table entries for a block of rows at a time (AVX-512 gathers
where the compiler targets them, see ``_simd.h``), then offers each sum to a
bounded max-heap: no n-sized array is made per query. (Exact early abandoning of
rows, with tables shifted to be >= 0 and partial sums checked against the k-th
best, was measured slower here: the extra horizontal sum and branch per row cost
more than the third of the gathers it saves on MiniLM embeddings.) 4-bit codes are
scanned by the same byte kernel after folding each pair of 16-entry tables into one
256-entry table indexed by the whole packed byte.
"""

from libc.stdint cimport uint8_t, uint16_t, int64_t
from libc.stdlib cimport malloc, free
from libc.math cimport INFINITY, sqrtf
from cython.parallel cimport prange, threadid

import numpy as np

cdef extern from "_simd.h" nogil:
    float sutra_dot_f32(const float *a, const float *b, Py_ssize_t d)
    float sutra_l2_f32(const float *a, const float *b, Py_ssize_t d)
    float sutra_dot_f16(const float *a, const uint16_t *b, Py_ssize_t d)
    float sutra_l2_f16(const float *a, const uint16_t *b, Py_ssize_t d)
    void sutra_linear_row(const float *x, const float *CT, const float *base,
                          float alpha, Py_ssize_t K, Py_ssize_t d, float *out)
    void sutra_adc_rows(const float *T, const uint8_t *codes, Py_ssize_t W,
                        Py_ssize_t nrows, float *out)

METRIC_L2 = 0
METRIC_IP = 1
METRIC_COS = 2     # re-ranking only: -dot(q, v) / ||v|| (q normalised by the caller)

# Rows a single query is split into when it runs on several threads: below this many
# rows per thread the split costs more than it saves.
DEF MIN_ROWS_PER_THREAD = 16384
# Rows whose ADC sums are computed before they are compared with the heap.
DEF BLOCK = 64


# --------------------------------------------------------------------------- heap

cdef inline bint _after(float da, int64_t ia, float db, int64_t ib) noexcept nogil:
    """True when (da, ia) ranks strictly after (db, ib): larger distance, or equal
    distance and larger row."""
    return da > db or (da == db and ia > ib)


cdef inline void _heap_replace_top(float *hd, int64_t *hi, Py_ssize_t k,
                                   float d, int64_t i) noexcept nogil:
    """Replace the root of the max-heap (hd, hi) of size k by (d, i) and sift down."""
    cdef Py_ssize_t pos = 0, child
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        if child + 1 < k and _after(hd[child + 1], hi[child + 1], hd[child], hi[child]):
            child += 1
        if _after(hd[child], hi[child], d, i):
            hd[pos] = hd[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hd[pos] = d
    hi[pos] = i


cdef inline void _heap_init(float *hd, int64_t *hi, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(k):
        hd[j] = INFINITY
        hi[j] = -1


cdef inline void _heap_push(float *hd, int64_t *hi, Py_ssize_t k,
                            float d, int64_t i) noexcept nogil:
    """Offer (d, i) to a full max-heap of size k (keeps the k best)."""
    if _after(hd[0], hi[0], d, i):
        _heap_replace_top(hd, hi, k, d, i)


cdef void _heap_sort(float *hd, int64_t *hi, Py_ssize_t k) noexcept nogil:
    """Sort a max-heap in place into ascending (d, i) order (heapsort)."""
    cdef Py_ssize_t size = k
    cdef float d
    cdef int64_t i
    while size > 1:
        d = hd[size - 1]
        i = hi[size - 1]
        hd[size - 1] = hd[0]
        hi[size - 1] = hi[0]
        size -= 1
        _heap_replace_top(hd, hi, size, d, i)


# ---------------------------------------------------------------- distance tables

cdef void _tables_one(const float *q, const float *CT, const float *cn, Py_ssize_t M,
                      Py_ssize_t Ks, Py_ssize_t Ds, int metric, float *base,
                      float *out) noexcept nogil:
    # IN  q (M * Ds), CT (M, Ds, Ks) transposed codebooks, cn (M, Ks) squared norms
    # OUT out (M, Ks); base (Ks,) scratch
    cdef Py_ssize_t m, c, j
    cdef float qq
    for m in range(M):
        if metric == 0:
            qq = 0
            for j in range(Ds):
                qq = qq + q[m * Ds + j] * q[m * Ds + j]
            for c in range(Ks):
                base[c] = cn[m * Ks + c] + qq
            sutra_linear_row(q + m * Ds, CT + m * Ds * Ks, base, -2.0, Ks, Ds, out + m * Ks)
            for c in range(Ks):          # rounding can leave tiny negatives
                if out[m * Ks + c] < 0:
                    out[m * Ks + c] = 0
        else:
            for c in range(Ks):
                base[c] = 0
            sutra_linear_row(q + m * Ds, CT + m * Ds * Ks, base, -1.0, Ks, Ds, out + m * Ks)


def table_operands(const float[:, :, ::1] codebooks):
    """What ``distance_tables_t`` needs from the codebooks, computed once per
    quantizer: the transposed codebooks (M, Ds, Ks) and their squared norms (M, Ks)."""
    cb = np.asarray(codebooks)
    return (np.ascontiguousarray(cb.transpose(0, 2, 1)),
            np.ascontiguousarray(np.einsum("mkd,mkd->mk", cb, cb), dtype=np.float32))


def distance_tables(const float[:, ::1] queries, const float[:, :, ::1] codebooks,
                    int metric, int nthreads=1):
    """Distance tables of a batch of queries against the codebooks.

    Parameters
    ----------
    queries : (nq, M * Ds) float32, C-contiguous
    codebooks : (M, Ks, Ds) float32, C-contiguous
    metric : METRIC_L2 (squared distance of each sub-vector to each centroid) or
        METRIC_IP (negated sub-vector dot products)
    nthreads : int

    Returns
    -------
    tables : (nq, M, Ks) float32
    """
    CT, cn = table_operands(codebooks)
    return distance_tables_t(queries, CT, cn, metric, nthreads)


def distance_tables_t(const float[:, ::1] queries, const float[:, :, ::1] CT,
                      const float[:, ::1] cn, int metric, int nthreads=1):
    """``distance_tables`` from precomputed ``table_operands`` (no per-call work on
    the codebooks: what a single-query search wants)."""
    cdef Py_ssize_t nq = queries.shape[0], M = CT.shape[0]
    cdef Py_ssize_t Ds = CT.shape[1], Ks = CT.shape[2]
    if queries.shape[1] != M * Ds:
        raise ValueError("queries and codebooks disagree on the dimension")
    if cn.shape[0] != M or cn.shape[1] != Ks:
        raise ValueError("norms do not match the codebooks")
    nthreads = max(1, min(nthreads, nq))
    out = np.empty((nq, M, Ks), dtype=np.float32)
    if nq == 0 or M == 0:
        return out
    scratch = np.empty((nthreads, Ks), dtype=np.float32)
    cdef float[:, ::1] sc = scratch
    cdef float[:, :, ::1] o = out
    cdef Py_ssize_t q
    if nthreads == 1:
        with nogil:
            for q in range(nq):
                _tables_one(&queries[q, 0], &CT[0, 0, 0], &cn[0, 0], M, Ks, Ds, metric,
                            &sc[0, 0], &o[q, 0, 0])
        return out
    for q in prange(nq, nogil=True, num_threads=nthreads, schedule="static"):
        _tables_one(&queries[q, 0], &CT[0, 0, 0], &cn[0, 0], M, Ks, Ds, metric,
                    &sc[threadid(), 0], &o[q, 0, 0])
    return out


# ------------------------------------------------------------------- the ADC scan

cdef void _pair_tables(const float *T, Py_ssize_t M, float *out) noexcept nogil:
    """4-bit PQ: fold the (M, 16) tables into ceil(M/2) tables of 256 entries indexed
    by a whole code byte (low nibble: subspace 2j, high nibble: 2j + 1), so packed
    4-bit codes are scanned by the byte kernel with half the lookups."""
    cdef Py_ssize_t j, b, M2 = (M + 1) // 2
    cdef const float *t0
    cdef const float *t1
    for j in range(M2):
        t0 = T + (2 * j) * 16
        if 2 * j + 1 < M:
            t1 = T + (2 * j + 1) * 16
            for b in range(256):
                out[j * 256 + b] = t0[b & 15] + t1[b >> 4]
        else:
            # odd M: the high nibble of the last byte is padding (0 in the codes we
            # write); whatever it holds, the entry scores the low nibble alone.
            for b in range(256):
                out[j * 256 + b] = t0[b & 15]


cdef void _scan_unit(const float *T_raw, bint four_bit, Py_ssize_t M,
                     const uint8_t *codes, Py_ssize_t W, Py_ssize_t row0,
                     Py_ssize_t row1, const uint8_t *mask, float *scratch,
                     float *hd, int64_t *hi, Py_ssize_t k) noexcept nogil:
    """One unit of work: one query over rows [row0, row1). Leaves the unit's top-k
    in (hd, hi) as a max-heap.

    Rows go by blocks of BLOCK: ``sutra_adc_rows`` sums their table entries
    (branch-free, SIMD gathers), then each sum is compared with the heap's top;
    rows arrive in increasing order, so a sum equal to the top loses the tie.
    """
    cdef const float *T = T_raw
    cdef float *sums = scratch + W * 256
    cdef Py_ssize_t r, j, nb
    cdef float top
    if four_bit:
        _pair_tables(T_raw, M, scratch)
        T = scratch
    _heap_init(hd, hi, k)
    top = hd[0]
    r = row0
    while r < row1:
        nb = min(BLOCK, row1 - r)
        sutra_adc_rows(T, codes + r * W, W, nb, sums)
        for j in range(nb):
            if sums[j] < top and (mask == NULL or mask[r + j] != 0):
                _heap_replace_top(hd, hi, k, sums[j], r + j)
                top = hd[0]
        r = r + nb


def adc_topk(const float[:, :, ::1] tables, const uint8_t[:, ::1] codes,
             Py_ssize_t k, const uint8_t[::1] mask=None, int nthreads=1):
    """Top-k rows of ``codes`` by asymmetric (ADC) distance for each query.

    Parameters
    ----------
    tables : (nq, M, Ks) float32
        Distance tables (``distance_tables``); ``Ks`` is 256 for 8-bit codes and 16
        for 4-bit codes.
    codes : (n, M) uint8 for Ks=256, (n, ceil(M/2)) uint8 (packed) for Ks=16
        May be a read-only memory map; it is read in place.
    k : int >= 1
    mask : (n,) uint8 or None
        Rows whose mask is 0 are skipped (deleted or filtered out).
    nthreads : int
        Threads: over queries, or over row ranges when there are fewer queries
        than threads. Results do not depend on it.

    Returns
    -------
    D : (nq, k) float32, ascending; ``inf`` where fewer than k rows qualified.
    I : (nq, k) int64 rows; ``-1`` with ``inf``.
    """
    cdef Py_ssize_t nq = tables.shape[0], M = tables.shape[1], Ks = tables.shape[2]
    cdef Py_ssize_t n = codes.shape[0], W = codes.shape[1]
    cdef bint four_bit
    if k < 1:
        raise ValueError("k must be >= 1")
    if Ks == 256:
        four_bit = False
        if W != M:
            raise ValueError(f"codes have {W} bytes per row, expected {M}")
    elif Ks == 16:
        four_bit = True
        if W != (M + 1) // 2:
            raise ValueError(f"codes have {W} bytes per row, expected {(M + 1) // 2}")
    else:
        raise ValueError("tables must have 256 (8-bit) or 16 (4-bit) entries per subspace")
    if mask is not None and mask.shape[0] != n:
        raise ValueError("mask must have one entry per row of codes")
    nthreads = max(1, nthreads)

    # Work units: each query, split into `nsplit` row ranges when queries are too
    # few to keep the threads busy. Each unit keeps its own heap; heaps are merged
    # in a fixed order, so results never depend on the thread count.
    cdef Py_ssize_t nsplit = 1
    if nq < nthreads and n >= 2 * MIN_ROWS_PER_THREAD:
        nsplit = min((nthreads + nq - 1) // nq, n // MIN_ROWS_PER_THREAD)
    cdef Py_ssize_t nunits = nq * nsplit
    cdef Py_ssize_t rows_per = (n + nsplit - 1) // nsplit if nsplit > 0 else n

    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    if nq == 0:
        return D, I
    cdef float[:, ::1] Dv = D
    cdef int64_t[:, ::1] Iv = I
    unit_d_arr = np.empty((nunits, k), dtype=np.float32)
    unit_i_arr = np.empty((nunits, k), dtype=np.int64)
    cdef float[:, ::1] ud = unit_d_arr
    cdef int64_t[:, ::1] ui = unit_i_arr

    cdef const uint8_t *mask_p = &mask[0] if (mask is not None and n > 0) else NULL
    cdef const uint8_t *codes_p = &codes[0, 0] if (n > 0 and W > 0) else NULL
    cdef Py_ssize_t W_tab = M if not four_bit else (M + 1) // 2
    cdef Py_ssize_t u, q, r0, r1, s, j
    # Per thread: a folded 4-bit table (W_tab * 256 floats) and a block of sums.
    scratch = np.empty((nthreads, max(1, W_tab) * 256 + BLOCK), dtype=np.float32)
    cdef float[:, ::1] sc = scratch

    for u in prange(nunits, nogil=True, num_threads=nthreads, schedule="dynamic"):
        q = u // nsplit
        s = u % nsplit
        r0 = s * rows_per
        r1 = min(n, r0 + rows_per)
        if codes_p == NULL:
            r1 = r0
        _scan_unit(&tables[q, 0, 0], four_bit, M, codes_p, W, r0, r1,
                   mask_p, &sc[threadid(), 0], &ud[u, 0], &ui[u, 0], k)

    # Merge the units of each query (in unit order) and sort.
    for q in prange(nq, nogil=True, num_threads=nthreads, schedule="static"):
        for j in range(k):
            Dv[q, j] = ud[q * nsplit, j]
            Iv[q, j] = ui[q * nsplit, j]
        for s in range(1, nsplit):
            for j in range(k):
                if ui[q * nsplit + s, j] >= 0:
                    _heap_push(&Dv[q, 0], &Iv[q, 0], k,
                               ud[q * nsplit + s, j], ui[q * nsplit + s, j])
        _heap_sort(&Dv[q, 0], &Iv[q, 0], k)
    return D, I


def adc_distances(const float[:, :, ::1] tables, const uint8_t[:, ::1] codes,
                  int nthreads=1):
    """Every ADC distance (no top-k): ``out[q, i] = sum_m tables[q, m, code[i, m]]``.

    Same table and code layouts as ``adc_topk``. Returns (nq, n) float32.
    """
    cdef Py_ssize_t nq = tables.shape[0], M = tables.shape[1], Ks = tables.shape[2]
    cdef Py_ssize_t n = codes.shape[0], W = codes.shape[1]
    cdef bint four_bit = Ks == 16
    if Ks not in (16, 256):
        raise ValueError("tables must have 256 (8-bit) or 16 (4-bit) entries per subspace")
    if W != (M if not four_bit else (M + 1) // 2):
        raise ValueError("codes do not match the tables")
    out = np.empty((nq, n), dtype=np.float32)
    cdef float[:, ::1] o = out
    cdef Py_ssize_t q, i, m
    cdef float s
    cdef uint8_t b
    if nq == 0 or n == 0:
        return out
    for q in prange(nq, nogil=True, num_threads=max(1, nthreads), schedule="static"):
        for i in range(n):
            s = 0
            if four_bit:
                for m in range(M):
                    b = codes[i, m // 2]
                    if m % 2 == 0:
                        s = s + tables[q, m, b & 15]
                    else:
                        s = s + tables[q, m, b >> 4]
            else:
                for m in range(M):
                    s = s + tables[q, m, codes[i, m]]
            o[q, i] = s
    return out


# -------------------------------------------------------------- exact re-ranking

cdef void _rerank_one(const float *q, const char *vecs, bint half, Py_ssize_t d,
                      Py_ssize_t n, const int64_t *cand, Py_ssize_t nc, int metric,
                      const float *zeros, float *hd, int64_t *hi,
                      Py_ssize_t k) noexcept nogil:
    # zeros: d zero floats (||v||^2 is the squared L2 distance of v to 0)
    cdef Py_ssize_t j
    cdef int64_t r
    cdef float dist, norm
    _heap_init(hd, hi, k)
    for j in range(nc):
        r = cand[j]
        if r < 0 or r >= n:
            continue
        if half:
            if metric == 0:
                dist = sutra_l2_f16(q, (<const uint16_t *> vecs) + r * d, d)
            else:
                dist = -sutra_dot_f16(q, (<const uint16_t *> vecs) + r * d, d)
                if metric == 2:
                    norm = sqrtf(sutra_l2_f16(zeros, (<const uint16_t *> vecs) + r * d, d))
                    dist = dist / norm if norm > 0 else 0
        else:
            if metric == 0:
                dist = sutra_l2_f32(q, (<const float *> vecs) + r * d, d)
            else:
                dist = -sutra_dot_f32(q, (<const float *> vecs) + r * d, d)
                if metric == 2:
                    norm = sqrtf(sutra_l2_f32(zeros, (<const float *> vecs) + r * d, d))
                    dist = dist / norm if norm > 0 else 0
        _heap_push(hd, hi, k, dist, r)
    _heap_sort(hd, hi, k)


def rerank(const float[:, ::1] queries, vectors, const int64_t[:, ::1] candidates,
           Py_ssize_t k, int metric, int nthreads=1):
    """Exact distances of each query to its candidate rows; the k best, sorted.

    Parameters
    ----------
    queries : (nq, d) float32
    vectors : (n, d) float32, or (n, d) uint16 holding float16 bits
        (``arr.view(np.uint16)``); may be a read-only memory map.
    candidates : (nq, c) int64 rows; entries outside [0, n) (e.g. -1) are ignored,
        each row should appear at most once per query.
    k : int >= 1
    metric : METRIC_L2, METRIC_IP, or METRIC_COS (``-dot(q, v) / ||v||``: the
        caller normalises the queries; stored vectors need not be normalised)

    Returns
    -------
    D : (nq, k) float32 ascending (inf-padded), I : (nq, k) int64 (-1-padded)
    """
    cdef const float[:, ::1] v32
    cdef const uint16_t[:, ::1] v16
    cdef bint half
    cdef const char *vp
    cdef Py_ssize_t n, d = queries.shape[1], nq = queries.shape[0]
    cdef Py_ssize_t nc = candidates.shape[1]
    if k < 1:
        raise ValueError("k must be >= 1")
    if candidates.shape[0] != nq:
        raise ValueError("one row of candidates per query")
    if vectors.dtype == np.uint16:
        half = True
        v16 = vectors
        n = v16.shape[0]
        if v16.shape[1] != d:
            raise ValueError("vectors and queries disagree on the dimension")
        vp = <const char *> &v16[0, 0] if n > 0 and d > 0 else NULL
    else:
        half = False
        v32 = vectors
        n = v32.shape[0]
        if v32.shape[1] != d:
            raise ValueError("vectors and queries disagree on the dimension")
        vp = <const char *> &v32[0, 0] if n > 0 and d > 0 else NULL
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    cdef float[:, ::1] Dv = D
    cdef int64_t[:, ::1] Iv = I
    cdef Py_ssize_t q
    if nq == 0:
        return D, I
    if vp == NULL:
        D[:] = np.inf
        I[:] = -1
        return D, I
    zeros = np.zeros(d, dtype=np.float32)
    cdef const float[::1] zv = zeros
    for q in prange(nq, nogil=True, num_threads=max(1, nthreads), schedule="static"):
        _rerank_one(&queries[q, 0], vp, half, d, n, &candidates[q, 0], nc, metric,
                    &zv[0], &Dv[q, 0], &Iv[q, 0], k)
    return D, I


# ---------------------------------------------------------- symmetric distances

def sdc_tables(const float[:, :, ::1] codebooks, int metric):
    """Centroid-to-centroid tables (M, Ks, Ks): squared L2 or negated dot products."""
    cdef Py_ssize_t M = codebooks.shape[0], Ks = codebooks.shape[1]
    cdef Py_ssize_t Ds = codebooks.shape[2]
    out = np.empty((M, Ks, Ks), dtype=np.float32)
    cdef float[:, :, ::1] o = out
    cdef Py_ssize_t m, a, b
    with nogil:
        for m in range(M):
            for a in range(Ks):
                for b in range(Ks):
                    if metric == 0:
                        o[m, a, b] = sutra_l2_f32(&codebooks[m, a, 0], &codebooks[m, b, 0], Ds)
                    else:
                        o[m, a, b] = -sutra_dot_f32(&codebooks[m, a, 0], &codebooks[m, b, 0], Ds)
    return out


def sdc(const float[:, :, ::1] tables, const uint8_t[:, ::1] a, const uint8_t[:, ::1] b):
    """Symmetric distances of code pairs: ``out[p] = sum_m tables[m, a[p, m], b[p, m]]``.

    ``a`` and ``b`` are unpacked (p, M) codes (4-bit codes unpacked first).
    """
    cdef Py_ssize_t M = tables.shape[0], Ks = tables.shape[1], p = a.shape[0]
    if b.shape[0] != p or a.shape[1] != M or b.shape[1] != M:
        raise ValueError("code pairs must both be (p, M)")
    out = np.empty(p, dtype=np.float32)
    cdef float[::1] o = out
    cdef Py_ssize_t i, m
    cdef float s
    cdef uint8_t ca, cb
    with nogil:
        for i in range(p):
            s = 0
            for m in range(M):
                ca = a[i, m]
                cb = b[i, m]
                if ca >= Ks or cb >= Ks:
                    s = INFINITY      # impossible code for these tables
                    break
                s = s + tables[m, ca, cb]
            o[i] = s
    return out
