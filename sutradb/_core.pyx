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
bounded max-heap: no n-sized array is made per query. (Two alternatives were
measured slower on this project's machines and dropped: a uint8-quantised 8-bit
scan with two-register byte permutes, the 4-bit fast scan's scheme below with
256-entry tables, was throughput-bound on the permutes, about 10% faster at best;
and exact early abandoning of
rows, with tables shifted to be >= 0 and partial sums checked against the k-th
best, was measured slower here: the extra horizontal sum and branch per row cost
more than the third of the gathers it saves on MiniLM embeddings.) 4-bit codes are
scanned with uint8-quantised tables (AVX-512 VBMI byte permutes and VNNI sums over
16 rows at a time, as FAISS's fast scan does with shuffles) that bound each row's
distance from below; only rows that can still enter the top-k get their exact
float distance, from tables that fold each pair of 16-entry tables into one
256-entry table indexed by the whole packed byte (which is also the whole 4-bit
path on CPUs without those instructions).
"""

from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, int32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from libc.math cimport INFINITY, sqrtf, floor, floorf
from cython.parallel cimport prange, threadid

import numpy as np

cdef extern from "_simd.h" nogil:
    float sutra_dot_f32(const float *a, const float *b, Py_ssize_t d)
    float sutra_l2_f32(const float *a, const float *b, Py_ssize_t d)
    float sutra_dot_f16(const float *a, const uint16_t *b, Py_ssize_t d)
    float sutra_l2_f16(const float *a, const uint16_t *b, Py_ssize_t d)
    float sutra_dot_sq_f16(const float *a, const uint16_t *b, Py_ssize_t d, float *sq)
    float sutra_pair_dot_f16(const uint16_t *a, const uint16_t *b, Py_ssize_t d,
                             float *na, float *nb)
    float sutra_pair_l2_f16(const uint16_t *a, const uint16_t *b, Py_ssize_t d)
    void sutra_prefetch(const char *p, Py_ssize_t nbytes)
    void sutra_linear_row(const float *x, const float *CT, const float *base,
                          float alpha, Py_ssize_t K, Py_ssize_t d, float *out)
    void sutra_adc_rows(const float *T, const uint8_t *codes, Py_ssize_t W,
                        Py_ssize_t nrows, float *out)
    # 4-bit fast scan (AVX-512, AVX2 or the portable twin: see _simd.h)
    float sutra_q4_luts(const float *T, Py_ssize_t M, uint8_t *qlut, double *summin,
                        double *slack)
    unsigned sutra_q4_block16(const uint8_t *codes, Py_ssize_t W, const uint8_t *qlut,
                              Py_ssize_t G4, int32_t qthr)
    void sutra_q4_block16_multi(const uint8_t *codes, Py_ssize_t W, const uint8_t *qlut,
                                Py_ssize_t G4, const int32_t *qthr, unsigned *bits)
    unsigned sutra_q4_block16_blk(const uint8_t *blk, const uint8_t *qlut, Py_ssize_t G4,
                                  int32_t qthr)
    unsigned sutra_q4_sums16_blk(const uint8_t *blk, const uint8_t *qlut, Py_ssize_t G4,
                                 int32_t qthr, int32_t *out)
    void sutra_select_smallest(float *v, int64_t *ix, Py_ssize_t K, Py_ssize_t n)

cdef extern from "_simd.h" nogil:
    int sutra_ctz(unsigned x)
    void sutra_h2f_init()
    void sutra_set_adc_gather(int on)
    int sutra_get_adc_gather()
    Py_ssize_t sutra_q4_lut_bytes(Py_ssize_t G4)
    int SUTRA_QB
    int SUTRA_LEVEL
    bint SUTRA_FASTSCAN4_SIMD
    bint SUTRA_COMPILED_AVX2 "SUTRA_AVX2_ON"
    bint SUTRA_COMPILED_AVX512 "SUTRA_AVX512_ON"

cdef extern from "_cpu.h" nogil:
    unsigned sutra_cpu_features()
    int sutra_cpu_vendor()

#: rows ahead whose cache lines exact re-ranking requests early
DEF _PREFETCH = 4

#: the instruction-set features the CPU and OS support, as sutra_cpu_features's bits
_CPU_FEATURE_BITS = ("sse4.2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
                     "lzcnt", "movbe", "avx512f", "avx512dq", "avx512cd", "avx512bw",
                     "avx512vl", "avx512vbmi", "avx512vnni", "neon")


def cpu_features():
    """The instruction-set extensions this CPU and its operating system support.

    Returns
    -------
    frozenset of str
        Names such as ``"avx2"``, ``"fma"``, ``"avx512vbmi"`` (``cpuid`` checked
        against ``xgetbv``: a feature whose registers the OS does not save is
        absent). Empty on architectures other than x86 and arm64.
    """
    cdef unsigned f = sutra_cpu_features()
    return frozenset(name for i, name in enumerate(_CPU_FEATURE_BITS) if f & (1u << i))


sutra_h2f_init()     # float16 conversion table where the CPU has no instruction for it

#: the CPU's vendor ("intel", "amd" for AMD and Hygon's Zen cores, "" otherwise)
CPU_VENDOR = {1: "intel", 2: "amd"}.get(sutra_cpu_vendor(), "")
# 8-bit ADC row sums by AVX-512 gathers only where they are fast (see _simd.h)
sutra_set_adc_gather(CPU_VENDOR == "intel")


def adc_gather(on=None):
    """Whether 8-bit ADC row sums use AVX-512 gathers (only compiled in at the avx512
    level; chosen at import: on for Intel CPUs, off for AMD, whose gathers are slower
    than scalar loads). ``on`` switches it (tests and benchmarks; not while other
    threads search). Returns the state in force."""
    if on is not None:
        sutra_set_adc_gather(1 if on else 0)
    return bool(sutra_get_adc_gather())

#: the kernel level this module was compiled for (0 scalar, 1 avx2, 2 avx512, 3 native)
LEVEL = SUTRA_LEVEL
#: the SIMD paths of _simd.h compiled into this module
COMPILED_PATHS = tuple(name for name, on in (("avx512", SUTRA_COMPILED_AVX512),
                                             ("avx2", SUTRA_COMPILED_AVX2)) if on)

METRIC_L2 = 0
METRIC_IP = 1
#: the 4-bit fast scan's bounds are computed with SIMD at this level (AVX-512 VBMI +
#: VNNI or AVX2); the portable level computes the same bounds in plain C
HAVE_FASTSCAN4 = bool(SUTRA_FASTSCAN4_SIMD)
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


cdef bint _scan_layout(Py_ssize_t M, Py_ssize_t Ks, Py_ssize_t W, Py_ssize_t k) except -1:
    """Check what an ADC scan is given (k, and codes of W bytes per row for tables of
    M subspaces x Ks entries); returns whether the codes are packed 4-bit ones."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if Ks == 256:
        if W != M:
            raise ValueError(f"codes have {W} bytes per row, expected {M}")
        return False
    if Ks == 16:
        if W != (M + 1) // 2:
            raise ValueError(f"codes have {W} bytes per row, expected {(M + 1) // 2}")
        return True
    raise ValueError("tables must have 256 (8-bit) or 16 (4-bit) entries per subspace")


def _unit_outputs(Py_ssize_t nq, Py_ssize_t nsplit, Py_ssize_t k):
    """(D, I) outputs of a scan and the heaps of its work units, (nq * nsplit, k);
    with one unit per query the units' heaps are the outputs themselves."""
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    if nsplit == 1:
        return D, I, D, I
    return (D, I, np.empty((nq * nsplit, k), dtype=np.float32),
            np.empty((nq * nsplit, k), dtype=np.int64))


cdef void _merge_units(float[:, ::1] Dv, int64_t[:, ::1] Iv, float[:, ::1] ud,
                       int64_t[:, ::1] ui, Py_ssize_t nsplit, Py_ssize_t k,
                       int nthreads) noexcept:
    """Merge the ``nsplit`` unit heaps of each query, in unit order (so the result
    never depends on the thread count), into (Dv, Iv) and sort them ascending. With
    one unit per query the units are the outputs and only the sort remains."""
    cdef Py_ssize_t nq = Dv.shape[0], q, s, j
    if nsplit == 1:
        with nogil:
            for q in range(nq):
                _heap_sort(&Dv[q, 0], &Iv[q, 0], k)
        return
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


cdef inline int32_t _q4_threshold(float top, double summin, double slack, float a,
                                  Py_ssize_t M) noexcept nogil:
    """Largest quantised sum whose lower bound a * (sum - M/2) + summin can still
    be <= top (+ slack): rows above it cannot enter the heap."""
    cdef double x
    if top == INFINITY:
        return 2147483647
    x = (top - summin + slack) / a + 0.5 * M
    if x >= 2147483647.0:
        return 2147483647
    if x < 0:
        return -1
    return <int32_t> floor(x)


cdef inline void _offer_exact(const float *P, const uint8_t *codes, Py_ssize_t W,
                              Py_ssize_t row, float *hd, int64_t *hi, Py_ssize_t k,
                              float *top, int32_t *qthr, double summin, double slack,
                              float a, Py_ssize_t M) noexcept nogil:
    """Exact float ADC distance of one row (pair tables P), offered to the heap."""
    cdef float d
    sutra_adc_rows(P, codes + row * W, W, 1, &d)
    if d < top[0]:
        _heap_replace_top(hd, hi, k, d, row)
        top[0] = hd[0]
        qthr[0] = _q4_threshold(top[0], summin, slack, a, M)


cdef void _scan_unit_4bit_fast(const float *T_raw, Py_ssize_t nqb, Py_ssize_t M,
                               const uint8_t *codes, Py_ssize_t n, Py_ssize_t W,
                               Py_ssize_t row0, Py_ssize_t row1, const uint8_t *mask,
                               char *scratch, float *hd, int64_t *hi,
                               Py_ssize_t hstride, Py_ssize_t k) noexcept nogil:
    """4-bit scan of rows [row0, row1) for ``nqb <= SUTRA_QB`` consecutive queries
    (tables T_raw, one (M, 16) block per query) with quantised fast-scan bounds (see
    ``_simd.h``): blocks of 16 rows get lower bounds of their ADC distances from
    uint8 tables, the code gathers shared by the queries; only rows whose bound can
    beat a query's k-th best get their exact float distance (from the folded
    256-entry pair tables, exactly as the plain 4-bit path computes it). Rows the
    16-row gathers cannot cover safely (the tail) take the exact path. Query b's
    heap is (hd + b * hstride, hi + b * hstride)."""
    cdef Py_ssize_t G4 = (W + 3) // 4
    cdef Py_ssize_t qsz = sutra_q4_lut_bytes(G4)
    cdef float *P = <float *> scratch                                # SUTRA_QB * W * 256
    cdef uint8_t *qlut = <uint8_t *> (scratch + SUTRA_QB * W * 256 * sizeof(float))
    cdef double summin[4]
    cdef double slack[4]
    cdef float a[4]
    cdef float top[4]
    cdef int32_t qthr[4]
    cdef unsigned bits[4]
    cdef unsigned bb
    cdef Py_ssize_t r, j, row, b
    for b in range(SUTRA_QB):
        if b < nqb:
            _pair_tables(T_raw + b * M * 16, M, P + b * W * 256)
            a[b] = sutra_q4_luts(T_raw + b * M * 16, M, qlut + b * qsz, &summin[b], &slack[b])
            _heap_init(hd + b * hstride, hi + b * hstride, k)
            top[b] = INFINITY
            qthr[b] = _q4_threshold(top[b], summin[b], slack[b], a[b], M)
        else:                      # padding queries: same tables as query 0, ignored
            memcpy(qlut + b * qsz, qlut, qsz)
            qthr[b] = -1
    r = row0
    while r < row1:
        if r + 16 <= row1 and (r + 15) * W + 4 * G4 <= n * W:
            if nqb == 1:
                bits[0] = sutra_q4_block16(codes + r * W, W, qlut, G4, qthr[0])
            else:
                sutra_q4_block16_multi(codes + r * W, W, qlut, G4, qthr, bits)
            for b in range(nqb):
                bb = bits[b]
                j = 0
                while bb != 0:
                    if bb & 1:
                        row = r + j
                        if mask == NULL or mask[row] != 0:
                            _offer_exact(P + b * W * 256, codes, W, row, hd + b * hstride,
                                         hi + b * hstride, k, &top[b], &qthr[b],
                                         summin[b], slack[b], a[b], M)
                    bb = bb >> 1
                    j = j + 1
            r = r + 16
        else:
            if mask == NULL or mask[r] != 0:
                for b in range(nqb):
                    _offer_exact(P + b * W * 256, codes, W, r, hd + b * hstride,
                                 hi + b * hstride, k, &top[b], &qthr[b],
                                 summin[b], slack[b], a[b], M)
            r = r + 1


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
             Py_ssize_t k, const uint8_t[::1] mask=None, int nthreads=1,
             bint fastscan=True):
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
    fastscan : bool
        4-bit codes: use the quantised fast scan where the CPU has it (the
        default). The results are the same either way (kept to test and measure).

    Returns
    -------
    D : (nq, k) float32, ascending; ``inf`` where fewer than k rows qualified.
    I : (nq, k) int64 rows; ``-1`` with ``inf``.
    """
    cdef Py_ssize_t nq = tables.shape[0], M = tables.shape[1], Ks = tables.shape[2]
    cdef Py_ssize_t n = codes.shape[0], W = codes.shape[1]
    cdef bint four_bit
    four_bit = _scan_layout(M, Ks, W, k)
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

    D, I, unit_d_arr, unit_i_arr = _unit_outputs(nq, nsplit, k)
    if nq == 0:
        return D, I
    cdef float[:, ::1] Dv = D
    cdef int64_t[:, ::1] Iv = I
    cdef float[:, ::1] ud = unit_d_arr
    cdef int64_t[:, ::1] ui = unit_i_arr

    cdef const uint8_t *mask_p = &mask[0] if (mask is not None and n > 0) else NULL
    cdef const uint8_t *codes_p = &codes[0, 0] if (n > 0 and W > 0) else NULL
    cdef Py_ssize_t W_tab = M if not four_bit else (M + 1) // 2
    cdef Py_ssize_t u, q, r0, r1, s, j
    cdef float[:, ::1] sc
    cdef uint8_t[:, ::1] fsc_v
    cdef bint fast4 = fastscan and four_bit
    cdef Py_ssize_t nqg, qb, ng
    if fast4:
        # 4-bit fast scan: units are (group of up to SUTRA_QB queries, row range);
        # each thread needs SUTRA_QB pair tables and quantised tables.
        fbytes = SUTRA_QB * (W_tab * 256 * 4 + sutra_q4_lut_bytes((W_tab + 3) // 4))
        fscratch = np.empty((nthreads, fbytes), dtype=np.uint8)
        fsc_v = fscratch
        nqg = (nq + SUTRA_QB - 1) // SUTRA_QB
        if nqg < nthreads and n >= 2 * MIN_ROWS_PER_THREAD:
            nsplit = min((nthreads + nqg - 1) // nqg, n // MIN_ROWS_PER_THREAD)
        else:
            nsplit = 1
        rows_per = (n + nsplit - 1) // nsplit
        # unit results are laid out by (query, split) as in the plain path
        if nsplit == 1:
            unit_d_arr, unit_i_arr = D, I
        else:
            unit_d_arr = np.empty((nq * nsplit, k), dtype=np.float32)
            unit_i_arr = np.empty((nq * nsplit, k), dtype=np.int64)
        ud = unit_d_arr
        ui = unit_i_arr
        for u in prange(nqg * nsplit, nogil=True, num_threads=nthreads, schedule="dynamic"):
            qb = (u // nsplit) * SUTRA_QB
            s = u % nsplit
            ng = min(SUTRA_QB, nq - qb)
            r0 = s * rows_per
            r1 = min(n, r0 + rows_per)
            if codes_p == NULL:
                r1 = r0
            _scan_unit_4bit_fast(&tables[qb, 0, 0], ng, M, codes_p, n, W, r0, r1, mask_p,
                                 <char *> &fsc_v[threadid(), 0],
                                 &ud[qb * nsplit + s, 0], &ui[qb * nsplit + s, 0],
                                 nsplit * k, k)
    else:
        # Per thread: a folded 4-bit table (W_tab * 256 floats) and a block of sums.
        scratch = np.empty((nthreads, max(1, W_tab) * 256 + BLOCK), dtype=np.float32)
        sc = scratch
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
    _merge_units(Dv, Iv, ud, ui, nsplit, k, nthreads)
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
    cdef Py_ssize_t j, p, row_bytes = d * (2 if half else 4)
    cdef int64_t r
    cdef float dist, norm, sq
    _heap_init(hd, hi, k)
    # the candidates are random rows (often of a memory map): their cache lines are
    # requested _PREFETCH rows ahead so that the loads overlap with the arithmetic
    for p in range(min(nc, _PREFETCH)):
        r = cand[p]
        if 0 <= r < n:
            sutra_prefetch(vecs + r * row_bytes, row_bytes)
    for j in range(nc):
        if j + _PREFETCH < nc:
            r = cand[j + _PREFETCH]
            if 0 <= r < n:
                sutra_prefetch(vecs + r * row_bytes, row_bytes)
        r = cand[j]
        if r < 0 or r >= n:
            continue
        if half:
            if metric == 0:
                dist = sutra_l2_f16(q, (<const uint16_t *> vecs) + r * d, d)
            elif metric == 2:
                # cosine: the dot and the row's norm in one pass (the same sums)
                dist = -sutra_dot_sq_f16(q, (<const uint16_t *> vecs) + r * d, d, &sq)
                norm = sqrtf(sq)
                dist = dist / norm if norm > 0 else 0
            else:
                dist = -sutra_dot_f16(q, (<const uint16_t *> vecs) + r * d, d)
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


# ------------------------------------------------------------ IVF: coarse + lists
#
# Appended for the IVF-PQ index (``sutradb/index/ivf.py``); the functions above are
# unchanged. The codes of an IVF index are stored in list order: the rows of list
# ``l`` are ``codes[offsets[l]:offsets[l + 1]]`` and ``ids[r]`` is the caller's row
# id of list-ordered row ``r``. The distance tables are those of the raw query (PQ on
# raw vectors): one table per query serves every probed list.

cdef inline Py_ssize_t _q4_scratch_floats(Py_ssize_t W) noexcept nogil:
    """Floats of scratch the blocked 4-bit scan needs after its pair tables: the
    quantised tables of this level (``sutra_q4_lut_bytes``) and a row buffer."""
    cdef Py_ssize_t G4 = (W + 3) // 4
    return (sutra_q4_lut_bytes(G4) + 4 * G4 + 3) // 4


cdef inline bint _probed_rows(const int64_t *probes, const int64_t *offsets, Py_ssize_t p,
                              Py_ssize_t *r, Py_ssize_t *r1) noexcept nogil:
    """Rows [r, r1) of the list probed at position p of a query's probes; False when
    the slot is unused (-1) or the list is empty (shared by the IVF scan units)."""
    cdef int64_t l = probes[p]
    if l < 0:
        return False
    r[0] = offsets[l]
    r1[0] = offsets[l + 1]
    return r1[0] > r[0]


#: groups of 16 rows the approximate blocked scan requests ahead (within the list,
#: and of the next probed list when it starts)
DEF _Q4_PREFETCH = 8


cdef void _ivf_scan_unit_q4b_approx(const float *T_raw, Py_ssize_t M, const uint8_t *blk,
                                    Py_ssize_t W, const int64_t *offsets,
                                    const int64_t *probes, Py_ssize_t p0, Py_ssize_t p1,
                                    const int64_t *ids, const uint8_t *mask,
                                    Py_ssize_t nmask, float *scratch, float *hd, int64_t *hi,
                                    Py_ssize_t k) noexcept nogil:
    """The k best rows of the probed lists by (quantised sum, id) into the max-heap
    (hd, hi), hd holding the sums as floats (exact below 2^24: M * 255 <= 65535).
    scratch as in ``_ivf_scan_unit_q4b`` (only the quantised tables are used).

    The candidates collect in a buffer of 2k: when it is full, a quickselect keeps
    the k best and their worst becomes the bar a row must beat (cheaper than
    sifting a heap of k for each of the ~1,000 rows that improve it at 1M rows, kc
    200). Rows are dropped only when k rows already beat them, so the k kept are
    the k best, as a heap would keep them."""
    cdef Py_ssize_t G4 = (W + 3) // 4
    cdef Py_ssize_t gbytes = 64 * G4
    cdef uint8_t *qlut = <uint8_t *> (scratch + W * 256)
    cdef int32_t sums[16]
    cdef double summin = 0, slack = 0
    cdef int32_t qthr = 2147483647
    cdef unsigned bb, valid
    cdef Py_ssize_t p, r, r1, b, b0, b1, j, lo, hi_, row, nr, nr1, n = 0, cap = 2 * k
    cdef int64_t rid, ti = -1
    cdef float d, tv = INFINITY
    cdef float *bd = <float *> malloc(cap * sizeof(float))
    cdef int64_t *bi = <int64_t *> malloc(cap * sizeof(int64_t))
    _heap_init(hd, hi, k)
    if bd == NULL or bi == NULL:
        free(bd)
        free(bi)
        _ivf_scan_unit_q4b_approx_heap(T_raw, M, blk, W, offsets, probes, p0, p1, ids, mask,
                                       nmask, scratch, hd, hi, k)
        return
    sutra_q4_luts(T_raw, M, qlut, &summin, &slack)
    for p in range(p0, p1):
        if not _probed_rows(probes, offsets, p, &r, &r1):
            continue
        # the next probed list's first groups: its lines arrive while this one is scanned
        if p + 1 < p1 and _probed_rows(probes, offsets, p + 1, &nr, &nr1):
            sutra_prefetch(<const char *> (blk + (nr >> 4) * gbytes),
                           min(_Q4_PREFETCH, ((nr1 - 1) >> 4) - (nr >> 4) + 1) * gbytes)
        b0 = r >> 4
        b1 = (r1 - 1) >> 4
        for b in range(b0, b1 + 1):
            if b + _Q4_PREFETCH <= b1:
                sutra_prefetch(<const char *> (blk + (b + _Q4_PREFETCH) * gbytes), gbytes)
            lo = max(r - 16 * b, 0)
            hi_ = min(r1 - 16 * b, 16)
            valid = ((<unsigned> 1 << hi_) - <unsigned> 1) & ~((<unsigned> 1 << lo) - <unsigned> 1)
            bb = sutra_q4_sums16_blk(blk + b * gbytes, qlut, G4, qthr, sums) & valid
            while bb != 0:
                j = sutra_ctz(bb)
                bb = bb & (bb - <unsigned> 1)
                row = 16 * b + j
                rid = ids[row]
                d = <float> sums[j]
                if not _after(tv, ti, d, rid):
                    continue
                if mask != NULL and (rid >= nmask or mask[rid] == 0):
                    continue
                bd[n] = d
                bi[n] = rid
                n += 1
                if n == cap:
                    n = _keep_best(bd, bi, n, k, &tv, &ti)
                    qthr = <int32_t> tv
    if n > k:
        n = _keep_best(bd, bi, n, k, &tv, &ti)
    for j in range(n):
        _heap_push(hd, hi, k, bd[j], bi[j])
    free(bd)
    free(bi)


cdef Py_ssize_t _keep_best(float *bd, int64_t *bi, Py_ssize_t n, Py_ssize_t k,
                           float *tv, int64_t *ti) noexcept nogil:
    """Move the k best (d, id) of the n > k in (bd, bi) to the front; (tv, ti) := the
    worst of them. Returns k."""
    cdef Py_ssize_t j
    sutra_select_smallest(bd, bi, n, k)
    tv[0] = bd[0]
    ti[0] = bi[0]
    for j in range(1, k):
        if _after(bd[j], bi[j], tv[0], ti[0]):
            tv[0] = bd[j]
            ti[0] = bi[j]
    return k


cdef void _ivf_scan_unit_q4b_approx_heap(const float *T_raw, Py_ssize_t M,
                                         const uint8_t *blk, Py_ssize_t W,
                                         const int64_t *offsets, const int64_t *probes,
                                         Py_ssize_t p0, Py_ssize_t p1, const int64_t *ids,
                                         const uint8_t *mask, Py_ssize_t nmask,
                                         float *scratch, float *hd, int64_t *hi,
                                         Py_ssize_t k) noexcept nogil:
    """``_ivf_scan_unit_q4b_approx`` with a heap of k instead of the buffer (the
    same result; used when the buffer cannot be allocated)."""
    cdef Py_ssize_t G4 = (W + 3) // 4
    cdef Py_ssize_t gbytes = 64 * G4
    cdef uint8_t *qlut = <uint8_t *> (scratch + W * 256)
    cdef int32_t sums[16]
    cdef double summin = 0, slack = 0
    cdef int32_t qthr = 2147483647
    cdef unsigned bb, valid
    cdef Py_ssize_t p, r, r1, b, j, lo, hi_, row
    cdef int64_t rid
    cdef float d
    sutra_q4_luts(T_raw, M, qlut, &summin, &slack)
    _heap_init(hd, hi, k)
    for p in range(p0, p1):
        if not _probed_rows(probes, offsets, p, &r, &r1):
            continue
        for b in range(r >> 4, ((r1 - 1) >> 4) + 1):
            lo = max(r - 16 * b, 0)
            hi_ = min(r1 - 16 * b, 16)
            valid = ((<unsigned> 1 << hi_) - <unsigned> 1) & ~((<unsigned> 1 << lo) - <unsigned> 1)
            bb = sutra_q4_sums16_blk(blk + b * gbytes, qlut, G4, qthr, sums) & valid
            while bb != 0:
                j = sutra_ctz(bb)
                bb = bb & (bb - <unsigned> 1)
                row = 16 * b + j
                rid = ids[row]
                d = <float> sums[j]
                if not _after(hd[0], hi[0], d, rid):
                    continue
                if mask != NULL and (rid >= nmask or mask[rid] == 0):
                    continue
                _heap_replace_top(hd, hi, k, d, rid)
                if hd[0] != INFINITY:
                    qthr = <int32_t> hd[0]


cdef void _ivf_scan_unit_q4b(const float *T_raw, Py_ssize_t M, const uint8_t *blk,
                             Py_ssize_t W, const int64_t *offsets, const int64_t *probes,
                             Py_ssize_t p0, Py_ssize_t p1, const int64_t *ids,
                             const uint8_t *mask, Py_ssize_t nmask, float *scratch,
                             float *hd, int64_t *hi, Py_ssize_t k, bint fast,
                             bint approx=False) noexcept nogil:
    """``_ivf_scan_unit`` for 4-bit codes stored blocked (``index.ivf.BlockedCodes``): the
    list-ordered rows in groups of 16, each group as ceil(W / 4) runs of 64 bytes
    (run g: dword g of the 16 rows). A list covers the groups of its rows (the
    first and last may be shared with the neighbouring lists: the other rows' bits
    are dropped). ``fast``: the quantised bounds of whole groups decide which rows
    get their exact float distance; else every row of the list does. The exact
    distance of a row is computed from its W bytes copied out of the group, by the
    same call as for unblocked codes, so the result equals the plain scan's
    bit for bit. scratch: W * 256 floats of pair tables, then sutra_q4_lut_bytes(G4)
    bytes of quantised tables and a 4 * G4-byte row buffer (_q4b_scratch_floats).

    ``approx``: the candidates are the k best by (quantised sum, id) instead, their
    "distances" the sums as floats (exact integers): no pair tables and no exact
    float distances, for searches that re-rank their candidates anyway (the sums
    are the same integers at every level, so are the candidates)."""
    if approx:
        _ivf_scan_unit_q4b_approx(T_raw, M, blk, W, offsets, probes, p0, p1, ids, mask,
                                  nmask, scratch, hd, hi, k)
        return
    cdef Py_ssize_t G4 = (W + 3) // 4
    cdef Py_ssize_t gbytes = 64 * G4
    cdef float *P = scratch
    cdef uint8_t *qlut = <uint8_t *> (scratch + W * 256)
    cdef uint32_t *rowbuf = <uint32_t *> (qlut + sutra_q4_lut_bytes(G4))
    cdef const uint8_t *grp
    cdef double summin = 0, slack = 0
    cdef float a = 1, d
    cdef int32_t qthr = 2147483647
    cdef unsigned bb, valid
    cdef Py_ssize_t p, r, r1, b, b1, j, g, lo, hi_, row
    cdef int64_t rid
    _pair_tables(T_raw, M, P)
    if fast:
        a = sutra_q4_luts(T_raw, M, qlut, &summin, &slack)
    _heap_init(hd, hi, k)
    if fast:
        qthr = _q4_threshold(hd[0], summin, slack, a, M)
    for p in range(p0, p1):
        if not _probed_rows(probes, offsets, p, &r, &r1):
            continue
        b1 = (r1 - 1) >> 4
        for b in range(r >> 4, b1 + 1):
            lo = max(r - 16 * b, 0)
            hi_ = min(r1 - 16 * b, 16)
            valid = ((<unsigned> 1 << hi_) - <unsigned> 1) & ~((<unsigned> 1 << lo) - <unsigned> 1)
            grp = blk + b * gbytes
            if fast:
                bb = sutra_q4_block16_blk(grp, qlut, G4, qthr) & valid
            else:
                bb = valid
            while bb != 0:
                j = sutra_ctz(bb)
                bb = bb & (bb - <unsigned> 1)
                row = 16 * b + j
                rid = ids[row]
                if mask != NULL and (rid >= nmask or mask[rid] == 0):
                    continue
                for g in range(G4):
                    rowbuf[g] = (<const uint32_t *> (grp + 64 * g))[j]
                sutra_adc_rows(P, <const uint8_t *> rowbuf, W, 1, &d)
                if d <= hd[0]:
                    _heap_push(hd, hi, k, d, rid)
                    if fast:
                        qthr = _q4_threshold(hd[0], summin, slack, a, M)


cdef void _ivf_scan_unit(const float *T_raw, bint four_bit, Py_ssize_t M,
                         const uint8_t *codes, Py_ssize_t W, const int64_t *offsets,
                         const int64_t *probes, Py_ssize_t p0, Py_ssize_t p1,
                         const int64_t *ids, const uint8_t *mask, Py_ssize_t nmask,
                         float *scratch, float *hd, int64_t *hi,
                         Py_ssize_t k, bint fast=False, bint blocked=False,
                         bint approx=False) noexcept nogil:
    """One query over probed lists probes[p0:p1]; leaves its top-k (by distance,
    then caller id: a total order, so the result does not depend on how the lists
    are split into units) in (hd, hi) as a max-heap. Rows whose id has mask 0 (or
    lies outside the mask) are skipped. ``blocked`` (4-bit codes only): the codes
    are stored in groups of 16 rows and scanned by ``_ivf_scan_unit_q4b``, with the
    quantised fast-scan bounds if ``fast`` and compiled in (same result), or, with
    ``approx``, ranked by the quantised sums alone (``_ivf_scan_unit_q4b_approx``)."""
    cdef const float *T = T_raw
    cdef float *sums = scratch + W * 256
    cdef Py_ssize_t p, r, r1, j, nb
    cdef int64_t rid
    if blocked:
        _ivf_scan_unit_q4b(T_raw, M, codes, W, offsets, probes, p0, p1, ids, mask, nmask,
                           scratch, hd, hi, k, fast, approx)
        return
    if four_bit:
        _pair_tables(T_raw, M, scratch)
        T = scratch
    _heap_init(hd, hi, k)
    for p in range(p0, p1):
        if not _probed_rows(probes, offsets, p, &r, &r1):
            continue
        while r < r1:
            nb = min(BLOCK, r1 - r)
            sutra_adc_rows(T, codes + r * W, W, nb, sums)
            for j in range(nb):
                if sums[j] <= hd[0]:
                    rid = ids[r + j]
                    if mask != NULL and (rid >= nmask or mask[rid] == 0):
                        continue
                    _heap_push(hd, hi, k, sums[j], rid)
            r = r + nb


cdef Py_ssize_t _blocked_width(Py_ssize_t rows, Py_ssize_t width, Py_ssize_t M,
                               Py_ssize_t Ks, Py_ssize_t n) except -1:
    """Check blocked 4-bit codes of n rows ((ceil(n / 16) * 16, 4 * ceil(W / 4))
    bytes); returns W, the bytes of one unblocked code."""
    cdef Py_ssize_t W = (M + 1) // 2
    if Ks != 16:
        raise ValueError("blocked codes are 4-bit codes (tables of 16 entries)")
    if width != 4 * ((W + 3) // 4) or rows != 16 * ((n + 15) // 16):
        raise ValueError(f"blocked codes of {n} rows must be ({16 * ((n + 15) // 16)}, "
                         f"{4 * ((W + 3) // 4)}) bytes, got ({rows}, {width})")
    return W


def ivf_adc_topk(const float[:, :, ::1] tables, const uint8_t[:, ::1] codes,
                 const int64_t[::1] offsets, const int64_t[:, ::1] probes,
                 const int64_t[::1] ids, Py_ssize_t k, const uint8_t[::1] mask=None,
                 int nthreads=1, bint fastscan=True, bint blocked=False, bint approx=False):
    """Top-k by ADC distance over the probed lists of an inverted file.

    Parameters
    ----------
    tables : (nq, M, Ks) float32 distance tables (Ks 256: 8-bit, 16: 4-bit codes)
    codes : (n, W) uint8 in list order (may be a read-only memory map)
    offsets : (nlist + 1,) int64, non-decreasing, offsets[0] == 0, offsets[-1] == n
    probes : (nq, nprobe) int64 list numbers per query; -1 entries are skipped
    ids : (n,) int64 caller row id of every list-ordered row (reported in I and
        used to look up the mask)
    k : int >= 1
    mask : (N,) uint8 indexed by id, or None: ids with 0 (or >= N) are skipped
    nthreads : int. Units are (query, range of its probes); results do not depend
        on the thread count (the heaps order by (distance, id), a total order).
    blocked : bool
        4-bit codes stored in groups of 16 rows (``BlockedCodes``): ``codes`` is then
        (ceil(n / 16) * 16, 4 * ceil(W / 4)) and ``n`` is the length of ``ids``.
        Same result as the unblocked codes.
    fastscan : bool
        Blocked codes: use the quantised fast scan when it is compiled in
        (``HAVE_FASTSCAN4``); the result is the same either way.
    approx : bool
        Blocked codes: the top-k by (quantised sum, id) instead of by ADC distance
        (candidates for re-ranking; D then holds the integer sums as floats). The
        same at every level and thread count. Ignored for unblocked codes.

    Returns
    -------
    D : (nq, k) float32 ascending (inf-padded), I : (nq, k) int64 ids (-1-padded)
    """
    cdef Py_ssize_t nq = tables.shape[0], M = tables.shape[1], Ks = tables.shape[2]
    cdef Py_ssize_t n = codes.shape[0], W = codes.shape[1]
    cdef Py_ssize_t nlist = offsets.shape[0] - 1, nprobe = probes.shape[1]
    cdef bint four_bit
    cdef Py_ssize_t l, q, j, u, s, p0, p1
    cdef bint bad = False
    if blocked:
        W = _blocked_width(codes.shape[0], codes.shape[1], M, Ks, ids.shape[0])
        n = ids.shape[0]
    four_bit = _scan_layout(M, Ks, W, k)
    if nlist < 1 or offsets[0] != 0 or offsets[nlist] != n:
        raise ValueError("offsets must start at 0 and end at the number of code rows")
    if ids.shape[0] != n:
        raise ValueError("one id per code row")
    if probes.shape[0] != nq:
        raise ValueError("one row of probes per query")
    with nogil:
        for l in range(nlist):
            if offsets[l + 1] < offsets[l]:
                bad = True
        for q in range(nq):
            for j in range(nprobe):
                if probes[q, j] >= nlist:
                    bad = True
    if bad:
        raise ValueError("offsets decrease or a probe is out of range")
    nthreads = max(1, nthreads)
    cdef Py_ssize_t nsplit = 1
    if nq < nthreads and nprobe > 1:
        nsplit = min((nthreads + nq - 1) // nq, nprobe)
    cdef Py_ssize_t per = (nprobe + nsplit - 1) // nsplit
    D, I, unit_d_arr, unit_i_arr = _unit_outputs(nq, nsplit, k)
    if nq == 0:
        return D, I
    cdef float[:, ::1] Dv = D
    cdef int64_t[:, ::1] Iv = I
    cdef float[:, ::1] ud = unit_d_arr
    cdef int64_t[:, ::1] ui = unit_i_arr
    cdef const uint8_t *mask_p = &mask[0] if (mask is not None and mask.shape[0] > 0) else NULL
    cdef Py_ssize_t nmask = mask.shape[0] if mask is not None else 0
    cdef const uint8_t *codes_p = &codes[0, 0] if (n > 0 and W > 0) else NULL
    cdef const int64_t *ids_p = &ids[0] if n > 0 else NULL
    cdef const int64_t *probes_p = &probes[0, 0] if nprobe > 0 else NULL
    cdef Py_ssize_t W_tab = M if not four_bit else (M + 1) // 2
    if mask is not None and mask.shape[0] == 0:
        # an empty mask keeps nothing
        D[:] = np.inf
        I[:] = -1
        return D, I
    scratch = np.empty((nthreads, max(1, W_tab) * 256 + BLOCK + _q4_scratch_floats(W_tab)),
                       dtype=np.float32)
    cdef float[:, ::1] sc = scratch
    for u in prange(nq * nsplit, nogil=True, num_threads=nthreads, schedule="dynamic"):
        q = u // nsplit
        s = u % nsplit
        p0 = s * per
        p1 = min(nprobe, p0 + per)
        if codes_p == NULL:
            p1 = p0
        _ivf_scan_unit(&tables[q, 0, 0], four_bit, M, codes_p, W, &offsets[0],
                       probes_p + q * nprobe, p0, p1, ids_p, mask_p, nmask,
                       &sc[threadid(), 0], &ud[u, 0], &ui[u, 0], k, fastscan, blocked,
                       approx)
    _merge_units(Dv, Iv, ud, ui, nsplit, k, nthreads)
    return D, I


cdef extern from "_simd.h" nogil:
    void sutra_panel_dots_i8(const uint8_t *x, const int8_t *P, Py_ssize_t K, Py_ssize_t D4,
                             int32_t *out)
    void sutra_panel_rows_f16(const float *x, const uint16_t *P, const float *base,
                              float alpha, Py_ssize_t K, Py_ssize_t d, float *out)


def coarse_panels_f16(const float[:, ::1] centres):
    """float16 panels of the centres for ``coarse_probes_f16``: (ceil(K / 16), d, 16)
    uint16 (float16 bits), panel p holding centres 16p .. 16p + 15 (zero padded)."""
    C = np.asarray(centres)
    K, d = C.shape
    NP = (K + 15) // 16
    pad = np.zeros((NP * 16, d), dtype=np.float16)
    pad[:K] = C
    return np.ascontiguousarray(pad.reshape(NP, 16, d).transpose(0, 2, 1)).view(np.uint16)


cdef void _coarse_one_f16(const float *q, const uint16_t *P, const float *cn, Py_ssize_t K,
                          Py_ssize_t d, Py_ssize_t nprobe, float *buf, int64_t *ix,
                          int64_t *out) noexcept nogil:
    cdef Py_ssize_t c
    sutra_panel_rows_f16(q, P, cn, -2.0, K, d, buf)
    for c in range(K):
        ix[c] = c
    sutra_select_smallest(buf, ix, K, nprobe)
    for c in range(nprobe):
        out[c] = ix[c]


def coarse_probes_f16(const float[:, ::1] queries, const uint16_t[:, :, ::1] panels,
                      const float[::1] cn, Py_ssize_t nprobe, int nthreads=1):
    """The ``nprobe`` coarse centres with the smallest ``||c||^2 - 2 q.c`` (ties: the
    smaller centre), the dot products taken with float16 centres
    (``coarse_panels_f16``); ``cn`` are the float32 squared norms. Returns
    (nq, nprobe) int64, in no particular order within a row."""
    cdef Py_ssize_t nq = queries.shape[0], d = queries.shape[1], K = cn.shape[0]
    if panels.shape[1] != d or panels.shape[2] != 16 or panels.shape[0] != (K + 15) // 16:
        raise ValueError("panels do not match the queries and norms")
    if nprobe < 1 or nprobe > K:
        raise ValueError("nprobe must be in [1, K]")
    nthreads = max(1, min(nthreads, nq))
    P = np.empty((nq, nprobe), dtype=np.int64)
    if nq == 0:
        return P
    buf = np.empty((nthreads, K), dtype=np.float32)
    ixb = np.empty((nthreads, K), dtype=np.int64)
    cdef float[:, ::1] b = buf
    cdef int64_t[:, ::1] ib = ixb
    cdef int64_t[:, ::1] Pv = P
    cdef Py_ssize_t q
    for q in prange(nq, nogil=True, num_threads=nthreads, schedule="static"):
        _coarse_one_f16(&queries[q, 0], &panels[0, 0, 0], &cn[0], K, d, nprobe,
                        &b[threadid(), 0], &ib[threadid(), 0], &Pv[q, 0])
    return P


def coarse_panels_i8(const float[:, ::1] centres):
    """int8 panels of the centres for the single-query coarse search
    (``sutra_panel_dots_i8``): each centre scaled by 127 / its largest absolute
    value and rounded. Returns (panels (ceil(K / 16), ceil(d / 4), 64) int8, cinv (K,)
    float32 = 1 / that scale, csum (K,) int32 = the sum of the centre's int8 values)."""
    C = np.asarray(centres, dtype=np.float32)
    K, d = C.shape
    NP, D4 = (K + 15) // 16, (d + 3) // 4
    mx = np.abs(C).max(axis=1) if d > 0 else np.zeros(K, np.float32)
    scale = np.where(mx > 0, 127.0 / np.where(mx > 0, mx, 1), 1.0).astype(np.float32)
    C8 = np.clip(np.rint(C * scale[:, None]), -127, 127).astype(np.int8)
    pad = np.zeros((NP * 16, D4 * 4), dtype=np.int8)
    pad[:K, :d] = C8
    panels = np.ascontiguousarray(pad.reshape(NP, 16, D4, 4).transpose(0, 2, 1, 3)
                                  .reshape(NP, D4, 64))
    cinv = (1.0 / scale.astype(np.float64)).astype(np.float32)
    return panels, cinv, C8.astype(np.int32).sum(axis=1).astype(np.int32)


cdef void _coarse_one_i8(const float *q, const int8_t *P8, const float *cinv,
                         const int32_t *csum, const float *cn, Py_ssize_t K, Py_ssize_t d,
                         Py_ssize_t nprobe, uint8_t *q8, float *buf, int64_t *ix) noexcept nogil:
    """The nprobe smallest ||c||^2 - 2 q.c into ix[0:nprobe], the dot products from the
    int8 panels and the query scaled to int8 (+ 128 as uint8). buf: K floats, q8:
    4 * ceil(d / 4) bytes."""
    cdef Py_ssize_t j, c, D4 = (d + 3) // 4
    cdef float mx = 0, v, sc, f
    cdef int32_t *dots = <int32_t *> buf
    for j in range(d):
        v = q[j] if q[j] >= 0 else -q[j]
        if v > mx:
            mx = v
    sc = 127.0 / mx if mx > 0 else 1.0
    for j in range(d):
        v = floorf(q[j] * sc + 0.5)
        v = 127 if v > 127 else (-127 if v < -127 else v)
        q8[j] = <uint8_t> (<int32_t> v + 128)
    for j in range(d, 4 * D4):
        q8[j] = 128
    sutra_panel_dots_i8(q8, P8, K, D4, dots)
    f = 2.0 / sc
    for c in range(K):
        # in place: the int32 dot of centre c becomes its float distance
        buf[c] = cn[c] - (f * cinv[c]) * <float> (dots[c] - 128 * csum[c])
        ix[c] = c
    sutra_select_smallest(buf, ix, K, nprobe)


def coarse_probes_i8(const float[:, ::1] queries, const int8_t[:, :, ::1] panels,
                     const float[::1] cinv, const int32_t[::1] csum, const float[::1] cn,
                     Py_ssize_t nprobe, int nthreads=1):
    """``coarse_probes_f16`` with the int8 panels of ``coarse_panels_i8`` (a quarter of
    the float32 centres' bytes; the dot products are exact integers at every level).
    Returns (nq, nprobe) int64, in no particular order within a row."""
    cdef Py_ssize_t nq = queries.shape[0], d = queries.shape[1], K = cn.shape[0]
    if (panels.shape[0] != (K + 15) // 16 or panels.shape[1] != (d + 3) // 4
            or panels.shape[2] != 64 or cinv.shape[0] != K or csum.shape[0] != K):
        raise ValueError("panels do not match the queries and norms")
    if nprobe < 1 or nprobe > K:
        raise ValueError("nprobe must be in [1, K]")
    nthreads = max(1, min(nthreads, nq))
    P = np.empty((nq, nprobe), dtype=np.int64)
    if nq == 0:
        return P
    buf = np.empty((nthreads, K), dtype=np.float32)
    ixb = np.empty((nthreads, K), dtype=np.int64)
    q8b = np.empty((nthreads, 4 * ((d + 3) // 4)), dtype=np.uint8)
    cdef float[:, ::1] b = buf
    cdef int64_t[:, ::1] ib = ixb
    cdef uint8_t[:, ::1] q8 = q8b
    cdef int64_t[:, ::1] Pv = P
    cdef Py_ssize_t q, j
    cdef int t
    for q in prange(nq, nogil=True, num_threads=nthreads, schedule="static"):
        t = threadid()
        _coarse_one_i8(&queries[q, 0], &panels[0, 0, 0], &cinv[0], &csum[0], &cn[0], K, d,
                       nprobe, &q8[t, 0], &b[t, 0], &ib[t, 0])
        for j in range(nprobe):
            Pv[q, j] = ib[t, j]
    return P


cdef void _ivf_one(const float *q, const uint16_t *panels, const float *ccn, Py_ssize_t K,
                   Py_ssize_t d, Py_ssize_t nprobe, const float *CT, const float *cn,
                   Py_ssize_t M, Py_ssize_t Ks, Py_ssize_t Ds, int tmetric,
                   const uint8_t *codes, Py_ssize_t W, const int64_t *offsets,
                   const int64_t *ids, const uint8_t *mask, Py_ssize_t nmask,
                   const char *vecs, bint half, Py_ssize_t nvec, int rmetric,
                   const float *zeros, Py_ssize_t kc, Py_ssize_t k,
                   float *fbuf, int64_t *ibuf, float *cd, int64_t *ci,
                   float *outd, int64_t *outi, bint fast, bint blocked,
                   const int8_t *p8, const float *cinv8, const int32_t *csum8, uint8_t *q8,
                   bint approx) noexcept nogil:
    """The whole IVF search of one query: coarse probes (float16 panels), the
    query's ADC table, the scan of the probed lists into a heap of kc candidates,
    then (vecs != NULL) the exact re-rank of those into the k results. fbuf holds
    max(K, M * Ks + W * 256 + BLOCK + Ks + _q4_scratch_floats(W)) floats, ibuf
    max(K, nprobe) int64. p8 != NULL: the coarse search takes the int8 panels
    (``_coarse_one_i8``, q8 its query bytes) instead of the float16 ones. approx: the
    kc candidates of blocked codes by their quantised sums (re-ranked searches)."""
    cdef Py_ssize_t j
    cdef float *T = fbuf
    cdef float *scan_scratch = fbuf + M * Ks
    cdef float *tbase = fbuf + M * Ks + W * 256 + BLOCK
    # coarse: distances in fbuf[0:K], selected ids in ibuf[0:nprobe]
    if p8 != NULL:
        _coarse_one_i8(q, p8, cinv8, csum8, ccn, K, d, nprobe, q8, fbuf, ibuf)
    else:
        sutra_panel_rows_f16(q, panels, ccn, -2.0, K, d, fbuf)
        for j in range(K):
            ibuf[j] = j
        sutra_select_smallest(fbuf, ibuf, K, nprobe)
    # the table overwrites fbuf (the probes live in ibuf)
    _tables_one(q, CT, cn, M, Ks, Ds, tmetric, tbase, T)
    if vecs == NULL:
        _ivf_scan_unit(T, Ks == 16, M, codes, W, offsets, ibuf, 0, nprobe, ids, mask,
                       nmask, scan_scratch, outd, outi, k, fast, blocked)
        _heap_sort(outd, outi, k)
        return
    _ivf_scan_unit(T, Ks == 16, M, codes, W, offsets, ibuf, 0, nprobe, ids, mask,
                   nmask, scan_scratch, cd, ci, kc, fast, blocked, approx)
    _rerank_one(q, vecs, half, d, nvec, ci, kc, rmetric, zeros, outd, outi, k)


def ivf_search(const float[:, ::1] queries, const uint16_t[:, :, ::1] panels,
               const float[::1] ccn, Py_ssize_t nprobe, const float[:, :, ::1] CT,
               const float[:, ::1] cn, int tmetric, const uint8_t[:, ::1] codes,
               const int64_t[::1] offsets, const int64_t[::1] ids, Py_ssize_t kc,
               Py_ssize_t k, const uint8_t[::1] mask=None, vectors=None, int rmetric=0,
               int nthreads=1, bint fastscan=True, bint blocked=False, panels8=None,
               bint approx=False):
    """Fused IVF search (one kernel call per batch, parallel over queries): per query
    ``coarse_probes_f16`` -> ``distance_tables_t`` -> ``ivf_adc_topk`` over the probes
    with ``kc`` candidates -> ``rerank`` of them against ``vectors`` (float32 or
    float16 bits as uint16; None: no re-rank, the ADC top-k is returned). Same
    results as those calls made one after the other.

    ``CT``/``cn``: the quantizer's ``table_operands``; ``tmetric`` the table metric;
    ``rmetric`` the re-rank metric (METRIC_L2 / METRIC_IP / METRIC_COS);
    ``fastscan`` and ``blocked`` as in ``ivf_adc_topk``; ``approx`` (blocked codes,
    with ``vectors``): the ``kc`` candidates by their quantised sums
    (``ivf_adc_topk(..., approx=True)``). ``panels8``: ``coarse_panels_i8``'s
    (panels, cinv, csum) for an int8 coarse search (``coarse_probes_i8``) instead of
    the float16 ``panels`` (which may then be None).
    Returns D (nq, k) float32, I (nq, k) int64 (ids).
    """
    cdef Py_ssize_t nq = queries.shape[0], d = queries.shape[1], K = ccn.shape[0]
    cdef Py_ssize_t M = CT.shape[0], Ds = CT.shape[1], Ks = CT.shape[2]
    cdef Py_ssize_t n = codes.shape[0], W = codes.shape[1], nlist = offsets.shape[0] - 1
    cdef Py_ssize_t l, q, nvec = 0
    cdef bint bad = False, half = False
    cdef const float[:, ::1] v32
    cdef const uint16_t[:, ::1] v16
    cdef const char *vp = NULL
    cdef const int8_t[:, :, ::1] p8v
    cdef const float[::1] c8i
    cdef const int32_t[::1] c8s
    cdef const int8_t *p8p = NULL
    cdef const float *c8ip = NULL
    cdef const int32_t *c8sp = NULL
    if panels8 is not None:
        p8v, c8i, c8s = panels8
        if (p8v.shape[0] != (K + 15) // 16 or p8v.shape[1] != (d + 3) // 4
                or p8v.shape[2] != 64 or c8i.shape[0] != K or c8s.shape[0] != K):
            raise ValueError("int8 panels do not match the queries and norms")
        p8p = &p8v[0, 0, 0]
        c8ip = &c8i[0]
        c8sp = &c8s[0]
    if k < 1 or kc < k:
        raise ValueError("need 1 <= k <= kc")
    cdef const uint16_t *p16 = NULL
    if panels8 is None:
        if (panels is None or panels.shape[1] != d or panels.shape[2] != 16
                or panels.shape[0] != (K + 15) // 16):
            raise ValueError("panels do not match the queries and norms")
        p16 = &panels[0, 0, 0]
    if nlist != K or nprobe < 1 or nprobe > K:
        raise ValueError("offsets must have nlist + 1 entries and 1 <= nprobe <= nlist")
    if M * Ds != d or cn.shape[0] != M or cn.shape[1] != Ks:
        raise ValueError("table operands do not match the queries")
    if blocked:
        W = _blocked_width(codes.shape[0], codes.shape[1], M, Ks, ids.shape[0])
        n = ids.shape[0]
    elif Ks == 256:
        if W != M:
            raise ValueError("codes do not match the quantizer")
    elif Ks == 16:
        if W != (M + 1) // 2:
            raise ValueError("codes do not match the quantizer")
    else:
        raise ValueError("Ks must be 16 or 256")
    if ids.shape[0] != n or offsets[0] != 0 or offsets[nlist] != n:
        raise ValueError("offsets/ids do not describe the codes")
    with nogil:
        for l in range(nlist):
            if offsets[l + 1] < offsets[l]:
                bad = True
    if bad:
        raise ValueError("offsets decrease")
    if vectors is not None:
        if vectors.dtype == np.uint16:
            half = True
            v16 = vectors
            nvec = v16.shape[0]
            if v16.shape[1] != d:
                raise ValueError("vectors and queries disagree on the dimension")
            vp = <const char *> &v16[0, 0] if nvec > 0 else NULL
        else:
            v32 = vectors
            nvec = v32.shape[0]
            if v32.shape[1] != d:
                raise ValueError("vectors and queries disagree on the dimension")
            vp = <const char *> &v32[0, 0] if nvec > 0 else NULL
        if vp == NULL:
            raise ValueError("no vectors to re-rank against")
    nthreads = max(1, min(nthreads, nq))
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    if nq == 0:
        return D, I
    if n == 0 or (mask is not None and mask.shape[0] == 0):
        D[:] = np.inf
        I[:] = -1
        return D, I
    cdef Py_ssize_t W_tab = M if Ks == 256 else (M + 1) // 2
    cdef Py_ssize_t nf = max(K, M * Ks + max(1, W_tab) * 256 + BLOCK + Ks
                             + _q4_scratch_floats(W_tab))
    fb = np.empty((nthreads, nf), dtype=np.float32)
    ib = np.empty((nthreads, K), dtype=np.int64)
    cdb = np.empty((nthreads, kc), dtype=np.float32)
    cib = np.empty((nthreads, kc), dtype=np.int64)
    zeros = np.zeros(d, dtype=np.float32)
    cdef float[:, ::1] fbv = fb
    cdef int64_t[:, ::1] ibv = ib
    cdef float[:, ::1] cdv = cdb
    cdef int64_t[:, ::1] civ = cib
    q8b = np.empty((nthreads, 4 * ((d + 3) // 4)), dtype=np.uint8)
    cdef uint8_t[:, ::1] q8v = q8b
    cdef const float[::1] zv = zeros
    cdef float[:, ::1] Dv = D
    cdef int64_t[:, ::1] Iv = I
    cdef const uint8_t *mask_p = &mask[0] if mask is not None else NULL
    cdef Py_ssize_t nmask = mask.shape[0] if mask is not None else 0
    cdef int t
    for q in prange(nq, nogil=True, num_threads=nthreads, schedule="dynamic"):
        t = threadid()
        _ivf_one(&queries[q, 0], p16, &ccn[0], K, d, nprobe,
                 &CT[0, 0, 0], &cn[0, 0], M, Ks, Ds, tmetric, &codes[0, 0], W,
                 &offsets[0], &ids[0], mask_p, nmask, vp, half, nvec, rmetric, &zv[0],
                 kc, k, &fbv[t, 0], &ibv[t, 0], &cdv[t, 0], &civ[t, 0],
                 &Dv[q, 0], &Iv[q, 0], fastscan, blocked, p8p, c8ip, c8sp, &q8v[t, 0],
                 approx and blocked)
    return D, I


# ---------------------------------------------------------- distances of stored pairs

cdef float _pair(const char *pa, const char *pb, bint half, Py_ssize_t d,
                 int metric) noexcept nogil:
    """Exact distance of the rows at pa, pb: squared L2, -dot, or 1 - cos (1 with a
    zero row)."""
    cdef float dot, na = 0, nb = 0
    if half:
        if metric == 0:
            return sutra_pair_l2_f16(<const uint16_t *> pa, <const uint16_t *> pb, d)
        dot = sutra_pair_dot_f16(<const uint16_t *> pa, <const uint16_t *> pb, d, &na, &nb)
    else:
        if metric == 0:
            return sutra_l2_f32(<const float *> pa, <const float *> pb, d)
        dot = sutra_dot_f32(<const float *> pa, <const float *> pb, d)
        if metric == 2:
            na = sutra_dot_f32(<const float *> pa, <const float *> pa, d)
            nb = sutra_dot_f32(<const float *> pb, <const float *> pb, d)
    if metric == 1:
        return -dot
    na = sqrtf(na) * sqrtf(nb)
    return 1.0 - dot / na if na > 0 else 1.0


cdef class PairDistances:
    """Exact distances between stored rows looked up by id, with O(1) set-up.

    Parameters
    ----------
    blocks : sequence of arrays
        The rows in order, in one or two blocks (a memory-mapped segment and the
        rows of the log, say), each (n_i, d) float32 or (n_i, d) uint16 holding
        float16 bits (``arr.view(np.uint16)``), all of one kind; read in place and
        kept referenced.
    idrow : (m,) int64
        id -> row (``-1``: no such id); rows must be below the blocks' total or -1
        (checked here).
    metric : METRIC_L2, METRIC_IP or METRIC_COS
        Squared L2, ``-dot``, or ``1 - cos`` (``1`` when a row is zero).

    Nothing per row is built: a pair costs two array reads and one pass over the two
    rows (float16 converted 8 lanes at a time where the CPU can). Safe to share
    between threads (no mutable state).
    """

    cdef object _keep
    cdef const char *p0
    cdef const char *p1
    cdef const int64_t *idrow
    cdef Py_ssize_t n0, n, d, m, row_bytes
    cdef bint half
    cdef int metric

    def __cinit__(self, blocks, const int64_t[::1] idrow, int metric):
        cdef const float[:, ::1] v32
        cdef const uint16_t[:, ::1] v16
        cdef Py_ssize_t j, nb, db
        cdef const char *ptr
        if metric not in (0, 1, 2):
            raise ValueError("metric must be METRIC_L2, METRIC_IP or METRIC_COS")
        blocks = list(blocks)
        if not 1 <= len(blocks) <= 2:
            raise ValueError("one or two blocks of rows")
        self.half = blocks[0].dtype == np.uint16
        self.n = self.d = 0
        self.p0 = self.p1 = NULL
        for j, b in enumerate(blocks):
            if (b.dtype == np.uint16) != self.half:
                raise ValueError("the blocks must all be float32 or all uint16")
            ptr = NULL
            if self.half:
                v16 = b
                nb, db = v16.shape[0], v16.shape[1]
                if nb > 0 and db > 0:
                    ptr = <const char *> &v16[0, 0]
            else:
                v32 = b
                nb, db = v32.shape[0], v32.shape[1]
                if nb > 0 and db > 0:
                    ptr = <const char *> &v32[0, 0]
            if j == 0:
                self.d = db
                self.p0 = ptr
                self.n0 = nb
            elif db != self.d:
                raise ValueError("the blocks disagree on the dimension")
            else:
                self.p1 = ptr
            self.n += nb
        if self.d == 0:
            self.n = 0
        self.row_bytes = self.d * (2 if self.half else 4)
        self.m = idrow.shape[0]
        for j in range(self.m):
            if idrow[j] < -1 or idrow[j] >= self.n:
                raise ValueError(f"idrow[{j}] = {idrow[j]} is not a row of the vectors")
        self.idrow = &idrow[0] if self.m > 0 else NULL
        self._keep = (blocks, idrow)
        self.metric = metric

    cdef inline const char *_row(self, int64_t r) noexcept nogil:
        if r < self.n0:
            return self.p0 + r * self.row_bytes
        return self.p1 + (r - self.n0) * self.row_bytes

    @property
    def n_ids(self):
        """Length of the id -> row table (ids at or past it are not held)."""
        return self.m

    def distance(self, int64_t a, int64_t b):
        """Distance between the rows of ids ``a`` and ``b``; KeyError for an id the
        table does not hold."""
        cdef int64_t ra, rb
        if not 0 <= a < self.m or not 0 <= b < self.m:
            raise KeyError(a if not 0 <= a < self.m else b)
        ra = self.idrow[a]
        rb = self.idrow[b]
        if ra < 0 or rb < 0:
            raise KeyError(a if ra < 0 else b)
        return _pair(self._row(ra), self._row(rb), self.half, self.d, self.metric)

    def distances(self, const int64_t[:, ::1] pairs, int nthreads=1):
        """(p,) float32 distances of the id pairs ``pairs`` (p, 2); KeyError naming the
        first id the table does not hold."""
        cdef Py_ssize_t p = pairs.shape[0], i
        cdef int64_t a, b
        if pairs.shape[1] != 2:
            raise ValueError("pairs must be (p, 2)")
        for i in range(p):
            a = pairs[i, 0]
            b = pairs[i, 1]
            if not 0 <= a < self.m or self.idrow[a] < 0:
                raise KeyError(a)
            if not 0 <= b < self.m or self.idrow[b] < 0:
                raise KeyError(b)
        out = np.empty(p, dtype=np.float32)
        cdef float[::1] ov = out
        if p == 0:
            return out
        for i in prange(p, nogil=True, num_threads=max(1, nthreads), schedule="static"):
            ov[i] = _pair(self._row(self.idrow[pairs[i, 0]]), self._row(self.idrow[pairs[i, 1]]),
                          self.half, self.d, self.metric)
        return out
