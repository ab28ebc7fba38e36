/* Small inline helpers for the sutradb kernels (included by _core.pyx).
 *
 * Only what Cython cannot say well: float16 -> float32 conversion (F16C when the
 * compiler targets it, a portable bit-exact fallback otherwise) and the two dot /
 * squared-L2 loops over float32 and float16 rows used by exact re-ranking.
 * Nothing here allocates, touches Python or can fail.
 */
#ifndef SUTRADB_SIMD_H
#define SUTRADB_SIMD_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define SUTRA_ALWAYS_INLINE static __forceinline
#else
#define SUTRA_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

/* One source, several levels. setup.py compiles the kernels once per level, each
 * into its own extension module (sutradb/_levels/<level>/), with the level's
 * compiler flags; what the flags enable selects the paths below:
 *   SUTRA_LEVEL 2  avx512: x86-64-v4 + AVX-512 VBMI + VNNI (Ice Lake, Zen 4 and newer)
 *   SUTRA_LEVEL 1  avx2:   x86-64-v3 (AVX2, FMA, F16C: Haswell, Zen 1 and newer)
 *   SUTRA_LEVEL 0  scalar: the platform's baseline (SSE2 on x86-64, NEON on arm64)
 *   SUTRA_LEVEL 3  native: -march=native (opt-in, not redistributable)
 * sutradb/simd.py picks the best level the CPU supports at import. Every path has a
 * portable twin and gives the same results (tests/test_simd_levels.py). */
#ifndef SUTRA_LEVEL
#define SUTRA_LEVEL 0
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SUTRA_AVX2 1
#endif
#if defined(SUTRA_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512VBMI__) && defined(__AVX512VNNI__)
#define SUTRA_AVX512 1
#endif

#ifdef SUTRA_AVX2
#define SUTRA_AVX2_ON 1
#else
#define SUTRA_AVX2_ON 0
#endif
#ifdef SUTRA_AVX512
#define SUTRA_AVX512_ON 1
#else
#define SUTRA_AVX512_ON 0
#endif

/* index of the lowest set bit of x (x != 0) */
static inline int sutra_ctz(unsigned x)
{
#if defined(_MSC_VER) && !defined(__clang__)
    unsigned long i;
    _BitScanForward(&i, x);
    return (int)i;
#else
    return __builtin_ctz(x);
#endif
}

static inline float sutra_h2f_bits(uint16_t h)
{
#if defined(__F16C__)
    return _cvtsh_ss(h);
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    __fp16 v;                  /* arm64 converts half precision natively (fcvt) */
    memcpy(&v, &h, sizeof v);
    return (float)v;
#else
    /* IEEE 754 binary16 -> binary32, exact for every input (incl. subnormals, inf, nan). */
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {               /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) { mant <<= 1; exp--; }
            mant &= 0x3FFu;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

#if defined(__F16C__) || (defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__)))
static inline void sutra_h2f_init(void) {}
static inline float sutra_h2f(uint16_t h) { return sutra_h2f_bits(h); }
#else
/* Without a conversion instruction (the x86-64 baseline has none) one table of all
 * 65,536 values (256 KiB, filled once when the module is imported) replaces the bit
 * manipulation: the coarse scan and float16 re-ranking convert every element. */
static float sutra_h2f_tab[65536];
static inline void sutra_h2f_init(void)
{
    uint32_t h;
    for (h = 0; h < 65536; h++) sutra_h2f_tab[h] = sutra_h2f_bits((uint16_t)h);
}
static inline float sutra_h2f(uint16_t h) { return sutra_h2f_tab[h]; }
#endif

#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
/* The sum of the 8 lanes of (x + y), in one fixed order. */
static inline float sutra_hsum2_256(__m256 x, __m256 y)
{
    x = _mm256_add_ps(x, y);
    __m128 lo = _mm256_castps256_ps128(x), hi = _mm256_extractf128_ps(x, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    return _mm_cvtss_f32(lo);
}
#endif

/* sum_j a[j] * b[j], b float32 */
static inline float sutra_dot_f32(const float *a, const float *b, Py_ssize_t d)
{
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    Py_ssize_t j = 0;
    for (; j + 4 <= d; j += 4) {
        s0 += a[j] * b[j];
        s1 += a[j + 1] * b[j + 1];
        s2 += a[j + 2] * b[j + 2];
        s3 += a[j + 3] * b[j + 3];
    }
    for (; j < d; j++) s0 += a[j] * b[j];
    return (s0 + s1) + (s2 + s3);
}

/* sum_j (a[j] - b[j])^2, b float32 */
static inline float sutra_l2_f32(const float *a, const float *b, Py_ssize_t d)
{
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    Py_ssize_t j = 0;
    for (; j + 4 <= d; j += 4) {
        float t0 = a[j] - b[j], t1 = a[j + 1] - b[j + 1];
        float t2 = a[j + 2] - b[j + 2], t3 = a[j + 3] - b[j + 3];
        s0 += t0 * t0; s1 += t1 * t1; s2 += t2 * t2; s3 += t3 * t3;
    }
    for (; j < d; j++) { float t = a[j] - b[j]; s0 += t * t; }
    return (s0 + s1) + (s2 + s3);
}

/* The float16 variants convert 8 lanes at a time with F16C when available. */
static inline float sutra_dot_f16(const float *a, const uint16_t *b, Py_ssize_t d)
{
    Py_ssize_t j = 0;
    float s = 0.f;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; j + 16 <= d; j += 16) {
        __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j)));
        __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j + 8)));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), b0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), b1, acc1);
    }
    s = sutra_hsum2_256(acc0, acc1);
#endif
    for (; j < d; j++) s += a[j] * sutra_h2f(b[j]);
    return s;
}

/* sum_j a[j] * b[j] and (*sq) sum_j b[j]^2 in one pass over the float16 row b: the
 * same sums, in the same order, as sutra_dot_f16(a, b) and sutra_l2_f16(0, b). */
static inline float sutra_dot_sq_f16(const float *a, const uint16_t *b, Py_ssize_t d, float *sq)
{
    Py_ssize_t j = 0;
    float s = 0.f, n = 0.f;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 nrm0 = _mm256_setzero_ps(), nrm1 = _mm256_setzero_ps();
    const __m256 zero = _mm256_setzero_ps();
    for (; j + 16 <= d; j += 16) {
        __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j)));
        __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j + 8)));
        __m256 t0 = _mm256_sub_ps(zero, b0), t1 = _mm256_sub_ps(zero, b1);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), b0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), b1, acc1);
        nrm0 = _mm256_fmadd_ps(t0, t0, nrm0);
        nrm1 = _mm256_fmadd_ps(t1, t1, nrm1);
    }
    s = sutra_hsum2_256(acc0, acc1);
    n = sutra_hsum2_256(nrm0, nrm1);
#endif
    for (; j < d; j++) {
        float x = sutra_h2f(b[j]), t = 0.f - x;
        s += a[j] * x;
        n += t * t;
    }
    *sq = n;
    return s;
}

/* Two stored float16 rows a, b: returns sum_j a[j] * b[j] and sets (*na) sum a[j]^2,
 * (*nb) sum b[j]^2 (one pass; Database.distance for "ip" / "cosine"). */
static inline float sutra_pair_dot_f16(const uint16_t *a, const uint16_t *b, Py_ssize_t d,
                                       float *na, float *nb)
{
    Py_ssize_t j = 0;
    float s = 0.f, x2 = 0.f, y2 = 0.f;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
    const __m256 zero = _mm256_setzero_ps();
    __m256 acc = zero, aa = zero, bb = zero;
    for (; j + 8 <= d; j += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + j)));
        __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j)));
        acc = _mm256_fmadd_ps(x, y, acc);
        aa = _mm256_fmadd_ps(x, x, aa);
        bb = _mm256_fmadd_ps(y, y, bb);
    }
    s = sutra_hsum2_256(acc, zero);
    x2 = sutra_hsum2_256(aa, zero);
    y2 = sutra_hsum2_256(bb, zero);
#endif
    for (; j < d; j++) {
        float x = sutra_h2f(a[j]), y = sutra_h2f(b[j]);
        s += x * y;
        x2 += x * x;
        y2 += y * y;
    }
    *na = x2;
    *nb = y2;
    return s;
}

/* Two stored float16 rows: sum_j (a[j] - b[j])^2 (Database.distance for "l2"). */
static inline float sutra_pair_l2_f16(const uint16_t *a, const uint16_t *b, Py_ssize_t d)
{
    Py_ssize_t j = 0;
    float s = 0.f;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
    const __m256 zero = _mm256_setzero_ps();
    __m256 acc = zero;
    for (; j + 8 <= d; j += 8) {
        __m256 t = _mm256_sub_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + j))),
                                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j))));
        acc = _mm256_fmadd_ps(t, t, acc);
    }
    s = sutra_hsum2_256(acc, zero);
#endif
    for (; j < d; j++) {
        float t = sutra_h2f(a[j]) - sutra_h2f(b[j]);
        s += t * t;
    }
    return s;
}

/* Ask for the cache lines of a row that will be read soon (a hint; no effect on
 * results). */
static inline void sutra_prefetch(const char *p, Py_ssize_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    for (Py_ssize_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 1);
#else
    (void)p; (void)bytes;
#endif
}

static inline float sutra_l2_f16(const float *a, const uint16_t *b, Py_ssize_t d)
{
    Py_ssize_t j = 0;
    float s = 0.f;
#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; j + 16 <= d; j += 16) {
        __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + j),
                                  _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j))));
        __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + j + 8),
                                  _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + j + 8))));
        acc0 = _mm256_fmadd_ps(t0, t0, acc0);
        acc1 = _mm256_fmadd_ps(t1, t1, acc1);
    }
    s = sutra_hsum2_256(acc0, acc1);
#endif
    for (; j < d; j++) { float t = a[j] - sutra_h2f(b[j]); s += t * t; }
    return s;
}


/* Nearest centre of x among K centres given transposed (CT: d x K, row-major) with
 * squared norms cn: argmin_c cn[c] - 2 x.c (first index on ties); *best gets the
 * minimum value. Vectorised over centres (16 lanes with AVX-512, 8 with AVX2+FMA),
 * scalar otherwise; small d are specialised so the loop over d unrolls and the
 * broadcasts of x stay in registers. A given binary always gives the same answer. */
#if defined(__AVX512F__)
#define SUTRA_LANES 16
typedef __m512 sutra_vf;
typedef __m512i sutra_vi;
#define SUTRA_INIT_INDEX() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define SUTRA_SET1(v) _mm512_set1_ps(v)
#define SUTRA_SET1I(v) _mm512_set1_epi32(v)
#define SUTRA_LOAD(p) _mm512_loadu_ps(p)
#define SUTRA_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define SUTRA_ADDI(a, b) _mm512_add_epi32(a, b)
#define SUTRA_KEEP_MIN(acc, vbest, vbesti, vidx) do { \
        __mmask16 lt_ = _mm512_cmp_ps_mask(acc, vbest, _CMP_LT_OQ); \
        vbest = _mm512_mask_blend_ps(lt_, vbest, acc); \
        vbesti = _mm512_mask_blend_epi32(lt_, vbesti, vidx); } while (0)
#define SUTRA_STORE(p, v) _mm512_storeu_ps(p, v)
#define SUTRA_STOREI(p, v) _mm512_storeu_si512((void *)(p), v)
#elif defined(__AVX2__) && defined(__FMA__)
#define SUTRA_LANES 8
typedef __m256 sutra_vf;
typedef __m256i sutra_vi;
#define SUTRA_INIT_INDEX() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define SUTRA_SET1(v) _mm256_set1_ps(v)
#define SUTRA_SET1I(v) _mm256_set1_epi32(v)
#define SUTRA_LOAD(p) _mm256_loadu_ps(p)
#define SUTRA_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define SUTRA_ADDI(a, b) _mm256_add_epi32(a, b)
#define SUTRA_KEEP_MIN(acc, vbest, vbesti, vidx) do { \
        __m256 lt_ = _mm256_cmp_ps(acc, vbest, _CMP_LT_OQ); \
        vbest = _mm256_blendv_ps(vbest, acc, lt_); \
        vbesti = _mm256_blendv_epi8(vbesti, vidx, _mm256_castps_si256(lt_)); } while (0)
#define SUTRA_STORE(p, v) _mm256_storeu_ps(p, v)
#define SUTRA_STOREI(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#endif

#ifdef SUTRA_LANES
/* SIMD part over the first K - K % SUTRA_LANES centres; returns the lane-merged
 * minimum in *m and its index in *arg. `d` is a compile-time constant at the
 * specialised call sites below. */
SUTRA_ALWAYS_INLINE void
sutra_nearest_simd(const float *x, const float *CT, const float *cn,
                   Py_ssize_t K, const Py_ssize_t d, float *m, Py_ssize_t *arg)
{
    sutra_vf xb[64];
    Py_ssize_t c, j;
    for (j = 0; j < d && j < 64; j++) xb[j] = SUTRA_SET1(-2.f * x[j]);
    sutra_vf vbest = SUTRA_SET1(INFINITY);
    sutra_vi vidx = SUTRA_INIT_INDEX(), vbesti = SUTRA_SET1I(0);
    const sutra_vi step = SUTRA_SET1I(SUTRA_LANES);
    for (c = 0; c + SUTRA_LANES <= K; c += SUTRA_LANES) {
        /* two partial sums halve the FMA dependency chain */
        sutra_vf acc = SUTRA_LOAD(cn + c), acc1 = SUTRA_SET1(0.f);
        for (j = 0; j + 1 < d; j += 2) {
            acc = SUTRA_FMA(d <= 64 ? xb[j] : SUTRA_SET1(-2.f * x[j]),
                            SUTRA_LOAD(CT + j * K + c), acc);
            acc1 = SUTRA_FMA(d <= 64 ? xb[j + 1] : SUTRA_SET1(-2.f * x[j + 1]),
                             SUTRA_LOAD(CT + (j + 1) * K + c), acc1);
        }
        if (j < d)
            acc = SUTRA_FMA(d <= 64 ? xb[j] : SUTRA_SET1(-2.f * x[j]),
                            SUTRA_LOAD(CT + j * K + c), acc);
        acc = acc + acc1;
        SUTRA_KEEP_MIN(acc, vbest, vbesti, vidx);
        vidx = SUTRA_ADDI(vidx, step);
    }
#if SUTRA_LANES == 16
    /* branch-free lane merge: the minimum, then the smallest index holding it */
    float mn = _mm512_reduce_min_ps(vbest);
    __mmask16 eq = _mm512_cmp_ps_mask(vbest, _mm512_set1_ps(mn), _CMP_EQ_OQ);
    *m = mn;
    *arg = _mm512_mask_reduce_min_epi32(eq, vbesti);
#else
    float lb[SUTRA_LANES];
    int li[SUTRA_LANES];
    SUTRA_STORE(lb, vbest);
    SUTRA_STOREI(li, vbesti);
    *m = lb[0]; *arg = li[0];
    for (j = 1; j < SUTRA_LANES; j++)
        if (lb[j] < *m || (lb[j] == *m && li[j] < *arg)) { *m = lb[j]; *arg = li[j]; }
#endif
}
#endif

#if defined(__AVX512F__)
/* Two points at once: the centre loads are shared and the two dependency chains
 * interleave. Same results as two sutra_nearest_simd calls. */
SUTRA_ALWAYS_INLINE void
sutra_nearest2_simd(const float *x0, const float *x1, const float *CT, const float *cn,
                    Py_ssize_t K, const Py_ssize_t d, float *m0, Py_ssize_t *a0,
                    float *m1, Py_ssize_t *a1)
{
    __m512 xa[32], xb[32];
    Py_ssize_t c, j;
    for (j = 0; j < d; j++) { xa[j] = _mm512_set1_ps(-2.f * x0[j]); xb[j] = _mm512_set1_ps(-2.f * x1[j]); }
    __m512 best0 = _mm512_set1_ps(INFINITY), best1 = best0;
    __m512i vidx = SUTRA_INIT_INDEX(), bi0 = _mm512_set1_epi32(0), bi1 = bi0;
    const __m512i step = _mm512_set1_epi32(16);
    for (c = 0; c + 16 <= K; c += 16) {
        __m512 n = _mm512_loadu_ps(cn + c);
        __m512 p0 = n, q0 = _mm512_setzero_ps(), p1 = n, q1 = _mm512_setzero_ps();
        for (j = 0; j + 1 < d; j += 2) {
            __m512 ca = _mm512_loadu_ps(CT + j * K + c), cb = _mm512_loadu_ps(CT + (j + 1) * K + c);
            p0 = _mm512_fmadd_ps(xa[j], ca, p0);
            p1 = _mm512_fmadd_ps(xb[j], ca, p1);
            q0 = _mm512_fmadd_ps(xa[j + 1], cb, q0);
            q1 = _mm512_fmadd_ps(xb[j + 1], cb, q1);
        }
        if (j < d) {
            __m512 ca = _mm512_loadu_ps(CT + j * K + c);
            p0 = _mm512_fmadd_ps(xa[j], ca, p0);
            p1 = _mm512_fmadd_ps(xb[j], ca, p1);
        }
        p0 = _mm512_add_ps(p0, q0);
        p1 = _mm512_add_ps(p1, q1);
        SUTRA_KEEP_MIN(p0, best0, bi0, vidx);
        SUTRA_KEEP_MIN(p1, best1, bi1, vidx);
        vidx = _mm512_add_epi32(vidx, step);
    }
    float mn = _mm512_reduce_min_ps(best0);
    *m0 = mn;
    *a0 = _mm512_mask_reduce_min_epi32(_mm512_cmp_ps_mask(best0, _mm512_set1_ps(mn), _CMP_EQ_OQ), bi0);
    mn = _mm512_reduce_min_ps(best1);
    *m1 = mn;
    *a1 = _mm512_mask_reduce_min_epi32(_mm512_cmp_ps_mask(best1, _mm512_set1_ps(mn), _CMP_EQ_OQ), bi1);
}
#endif

static inline Py_ssize_t sutra_nearest(const float *x, const float *CT, const float *cn,
                                       Py_ssize_t K, Py_ssize_t d, float *best)
{
    Py_ssize_t c = 0, j, arg = -1;
    float m = 0.f;
#ifdef SUTRA_LANES
    if (K >= SUTRA_LANES) {
        switch (d) {   /* constant d: the loop over d unrolls, x stays in registers */
        case 2: sutra_nearest_simd(x, CT, cn, K, 2, &m, &arg); break;
        case 4: sutra_nearest_simd(x, CT, cn, K, 4, &m, &arg); break;
        case 8: sutra_nearest_simd(x, CT, cn, K, 8, &m, &arg); break;
        case 16: sutra_nearest_simd(x, CT, cn, K, 16, &m, &arg); break;
        case 32: sutra_nearest_simd(x, CT, cn, K, 32, &m, &arg); break;
        default: sutra_nearest_simd(x, CT, cn, K, d, &m, &arg); break;
        }
        c = K - K % SUTRA_LANES;
    }
#endif
    for (; c < K; c++) {
        float s = cn[c];
        for (j = 0; j < d; j++) s += -2.f * x[j] * CT[j * K + c];
        if (arg < 0 || s < m) { m = s; arg = c; }
    }
    *best = m;
    return arg;
}


/* ADC sums of `nrows` byte-code rows of width W against tables T (W, 256):
 * out[r] = sum_j T[j * 256 + codes[r * W + j]].
 * With AVX-512 one row can take ceil(W / 16) 16-lane gathers (code bytes widened to
 * 32-bit offsets in registers, so only the table is read through the load ports)
 * and one horizontal sum; elsewhere, and where gathers are slow, a scalar loop with
 * four partial sums. Gathers pay on Intel cores (measured on this project's earlier
 * Xeon) but not on AMD Zen 4, whose 16-lane gathers are slower than 16 scalar loads
 * (a 50,000-row 8-bit m = 48 scan: 1.34 ms gathered, 0.85 ms scalar, measured here):
 * the choice is made at import from the CPU vendor (sutra_set_adc_gather; results
 * equal to float rounding either way). */
static int sutra_adc_gather = 1;
static inline void sutra_set_adc_gather(int on) { sutra_adc_gather = on; }
static inline int sutra_get_adc_gather(void)
{
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    return sutra_adc_gather;
#else
    return 0;
#endif
}

static inline void sutra_adc_rows(const float *T, const uint8_t *codes, Py_ssize_t W,
                                  Py_ssize_t nrows, float *out)
{
    Py_ssize_t r, g;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (sutra_adc_gather) {
    const Py_ssize_t G = W / 16, rem = W % 16;
    const __m512i lane = _mm512_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792,
                                           2048, 2304, 2560, 2816, 3072, 3328, 3584, 3840);
    const __mmask16 remmask = (__mmask16)((1u << rem) - 1u);
    for (r = 0; r < nrows; r++) {
        const uint8_t *c = codes + r * W;
        const float *t = T;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        for (g = 0; g + 2 <= G; g += 2) {
            __m512i i0 = _mm512_add_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + 16 * g))), lane);
            __m512i i1 = _mm512_add_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + 16 * g + 16))), lane);
            acc0 = _mm512_add_ps(acc0, _mm512_i32gather_ps(i0, t, 4));
            acc1 = _mm512_add_ps(acc1, _mm512_i32gather_ps(i1, t + 4096, 4));
            t += 8192;
        }
        if (g < G) {
            __m512i i0 = _mm512_add_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + 16 * g))), lane);
            acc0 = _mm512_add_ps(acc0, _mm512_i32gather_ps(i0, t, 4));
            t += 4096;
        }
        if (rem) {
            __m512i i0 = _mm512_add_epi32(
                _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(remmask, c + 16 * G)), lane);
            acc1 = _mm512_add_ps(acc1, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), remmask,
                                                                i0, t, 4));
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
    return;
    }
#endif
    for (r = 0; r < nrows; r++) {
        const uint8_t *c = codes + r * W;
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        for (g = 0; g + 4 <= W; g += 4) {
            s0 += T[g * 256 + c[g]];
            s1 += T[(g + 1) * 256 + c[g + 1]];
            s2 += T[(g + 2) * 256 + c[g + 2]];
            s3 += T[(g + 3) * 256 + c[g + 3]];
        }
        for (; g < W; g++) s0 += T[g * 256 + c[g]];
        out[r] = (s0 + s1) + (s2 + s3);
    }
}


/* Nearest centres of two points (see sutra_nearest): identical results, faster on
 * AVX-512 for the small d of PQ subspaces. */
static inline void sutra_nearest2(const float *x0, const float *x1, const float *CT,
                                  const float *cn, Py_ssize_t K, Py_ssize_t d,
                                  float *best0, Py_ssize_t *arg0,
                                  float *best1, Py_ssize_t *arg1)
{
#if defined(__AVX512F__)
    if (K % 16 == 0 && d <= 32) {
        switch (d) {
        case 4: sutra_nearest2_simd(x0, x1, CT, cn, K, 4, best0, arg0, best1, arg1); return;
        case 8: sutra_nearest2_simd(x0, x1, CT, cn, K, 8, best0, arg0, best1, arg1); return;
        case 16: sutra_nearest2_simd(x0, x1, CT, cn, K, 16, best0, arg0, best1, arg1); return;
        default: sutra_nearest2_simd(x0, x1, CT, cn, K, d, best0, arg0, best1, arg1); return;
        }
    }
#endif
    *arg0 = sutra_nearest(x0, CT, cn, K, d, best0);
    *arg1 = sutra_nearest(x1, CT, cn, K, d, best1);
}


/* out[c] = base[c] + alpha * sum_j x[j] * CT[j * K + c] for c < K (CT: d x K):
 * one row of a distance table (L2: base = ||c||^2 + ||x||^2, alpha = -2;
 * inner product: base = 0, alpha = -1). Vectorised over c by the compiler. */
static inline void sutra_linear_row(const float *x, const float *CT, const float *base,
                                    float alpha, Py_ssize_t K, Py_ssize_t d, float *out)
{
    Py_ssize_t c, j;
    for (c = 0; c < K; c++) out[c] = 0.f;
    for (j = 0; j < d; j++) {
        const float xj = x[j];
        const float *row = CT + j * K;
        for (c = 0; c < K; c++) out[c] += xj * row[c];
    }
    for (c = 0; c < K; c++) out[c] = base[c] + alpha * out[c];
}



/* ------------------------------------------------------------------------------
 * 4-bit fast scan: AVX-512 (VBMI + VNNI), AVX2, and the portable twin.
 *
 * Each 16-entry table of a query is quantised to uint8 with one scale `a` for all
 * subspaces: q_s[c] = round((T_s[c] - min_s) / a). The quantised sums give a lower
 * bound of every row's exact ADC distance, LB = a * (sum_q - M/2) + sum_s min_s;
 * the caller computes the exact float distance only for rows whose bound can still
 * beat its k-th best, so the result is exactly the float ADC top-k whichever level
 * computed the bounds (they are the same integers at every level).
 *
 * Codes are read a group at a time: group g = dword g (4 code bytes = subspaces
 * 8g .. 8g + 7, two per byte) of 16 rows, 64 bytes, either gathered from row-major
 * codes or read from *blocked* codes, which store exactly those 64 bytes one
 * after the other (index.ivf.BlockedCodes).
 *   - AVX-512: the low and high nibbles index two 64-byte registers of tables
 *     (vpermb: 64 lookups in one instruction, byte j of every dword in table j)
 *     and vpdpbusd adds each row's 4 looked-up bytes into its int32 lane.
 *   - AVX2: vpshufb looks up 16 entries per 128-bit lane, one table per lane, so
 *     the group is first transposed (one vpshufb per 32 bytes, then dword
 *     unpacks and a qword permute) into two registers whose lanes each hold one
 *     code byte j of all 16 rows; four vpshufb with the tables of (byte j, low or
 *     high nibble) then do the 128 lookups, and vpmaddubsw adds them per row into
 *     16-bit sums (M * 255 <= 65535, see sutra_q4_luts). A NEON port is the same
 *     code with vqtbl1q_u8 for vpshufb (a 128-bit register = one AVX2 lane),
 *     vzip/vuzp for the transpose and vpadalq_u8 / vaddq_u16 for the sums.
 *   - portable: the same integer sums in plain C.
 *
 * Layout of `qlut`: 2 * G4 registers of 64 bytes, G4 = ceil(ceil(M/2) / 4);
 * register 2g holds the tables of subspaces 8g, 8g+2, 8g+4, 8g+6 (16 bytes each:
 * the low nibbles of code bytes 0..3 of the group), register 2g+1 those of 8g+1,
 * ..., 8g+7 (the high nibbles). Subspaces >= M have all-zero tables, so padding
 * nibbles (and the bytes of the next row that the last group's dword read may
 * touch when ceil(M/2) % 4 != 0) add nothing.
 * ---------------------------------------------------------------------------- */
#define SUTRA_QB 4
#if defined(SUTRA_AVX512) || defined(SUTRA_AVX2)
#define SUTRA_FASTSCAN4_SIMD 1
#else
#define SUTRA_FASTSCAN4_SIMD 0
#endif

/* The quantised tables in the register layout above. Returns the scale a (> 0);
 * *summin = sum of the per-subspace minima, *slack a bound of the float rounding in
 * the exact sums. Entries are at most 255, and at most floor(65535 / M) so that a
 * row's sum fits 16 bits (only M > 257 is affected). */
static inline float sutra_q4_luts_regs(const float *T, Py_ssize_t M, uint8_t *qlut,
                                       double *summin, double *slack)
{
    Py_ssize_t s, c;
    const Py_ssize_t G4 = ((M + 1) / 2 + 3) / 4;
    const float qmax = M > 257 ? (float)(65535 / M) : 255.f;
    float maxrange = 0.f;
    double smin = 0.0, sabs = 0.0;
    for (s = 0; s < M; s++) {
        float mn = T[s * 16], mx = T[s * 16];
        for (c = 1; c < 16; c++) {
            float v = T[s * 16 + c];
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
        if (mx - mn > maxrange) maxrange = mx - mn;
        smin += mn;
        sabs += fabs(mn) + fabs(mx);
    }
    float a = maxrange / qmax;
    if (!(a > 0.f)) a = 1.f;
    memset(qlut, 0, (size_t)(2 * G4 * 64));
    for (s = 0; s < M; s++) {
        const Py_ssize_t g = s / 8, within = s % 8, reg = 2 * g + (within & 1);
        uint8_t *dst = qlut + reg * 64 + 16 * (within >> 1);
        float mn = T[s * 16];
        for (c = 1; c < 16; c++) if (T[s * 16 + c] < mn) mn = T[s * 16 + c];
        for (c = 0; c < 16; c++) {
            float qv = nearbyintf((T[s * 16 + c] - mn) / a);
            dst[c] = (uint8_t)(qv < 0.f ? 0.f : (qv > qmax ? qmax : qv));
        }
    }
    *summin = smin;
    /* float sums of M terms: relative error well below 1e-5 of their magnitude,
     * plus the division's rounding in each quantised entry (<< a per term) */
    *slack = 1e-5 * (sabs + 1e-30) + 1e-3 * (double)a * (double)M;
    return a;
}

#if SUTRA_FASTSCAN4_SIMD
/* bytes of one query's quantised tables (the caller's scratch) */
#define SUTRA_Q4_LUT_BYTES(G4) ((Py_ssize_t)(G4) * 128)
static inline float sutra_q4_luts(const float *T, Py_ssize_t M, uint8_t *qlut,
                                  double *summin, double *slack)
{
    return sutra_q4_luts_regs(T, M, qlut, summin, slack);
}
#endif

#if defined(SUTRA_AVX512)

/* One group of 8 sub-codes of 16 rows: v holds dword g of each row; the low and high
 * nibbles index the group's two registers of quantised tables t (t + 64), byte j of
 * every dword looking in the j-th 16-byte table of its register, and vpdpbusd adds
 * the 4 looked-up bytes of each row into its 32-bit sums. */
SUTRA_ALWAYS_INLINE void
sutra_q4_group(__m512i v, const uint8_t *t, __m512i *acc0, __m512i *acc1)
{
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i sel = _mm512_set1_epi32(0x30201000);
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i lo = _mm512_or_si512(_mm512_and_si512(v, low4), sel);
    __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), sel);
    *acc0 = _mm512_dpbusd_epi32(*acc0, _mm512_permutexvar_epi8(
                lo, _mm512_loadu_si512((const void *)t)), ones);
    *acc1 = _mm512_dpbusd_epi32(*acc1, _mm512_permutexvar_epi8(
                hi, _mm512_loadu_si512((const void *)(t + 64))), ones);
}

/* Quantised sums of 16 consecutive rows (codes points at the first); returns the
 * bit mask of rows whose sum is <= qthr. Reads up to 4 * G4 bytes from the start
 * of the last row (the caller guarantees they are inside the array). */
static inline unsigned sutra_q4_block16(const uint8_t *codes, Py_ssize_t W,
                                        const uint8_t *qlut, Py_ssize_t G4,
                                        int32_t qthr)
{
    const __m512i rowoff = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)W));
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    Py_ssize_t g;
    for (g = 0; g < G4; g++)
        sutra_q4_group(_mm512_i32gather_epi32(
                           _mm512_add_epi32(rowoff, _mm512_set1_epi32((int)(4 * g))),
                           (const void *)codes, 1),
                       qlut + 128 * g, &acc0, &acc1);
    __m512i acc = _mm512_add_epi32(acc0, acc1);
    return (unsigned)_mm512_cmple_epi32_mask(acc, _mm512_set1_epi32(qthr));
}

/* sutra_q4_block16 over codes stored *blocked*: blk holds 16 rows as G4 runs of
 * 64 bytes, run g = dword g (bytes 4g .. 4g + 3) of rows 0..15 one after the other
 * (what the gather above assembles), so each group is one plain load. */
/* The 16 rows' quantised sums over a blocked group (one int32 lane per row). */
static inline __m512i sutra_q4_blk_sums512(const uint8_t *blk, const uint8_t *qlut,
                                           Py_ssize_t G4)
{
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    Py_ssize_t g;
    for (g = 0; g < G4; g++)
        sutra_q4_group(_mm512_loadu_si512((const void *)(blk + 64 * g)), qlut + 128 * g,
                       &acc0, &acc1);
    return _mm512_add_epi32(acc0, acc1);
}

static inline unsigned sutra_q4_block16_blk(const uint8_t *blk, const uint8_t *qlut,
                                            Py_ssize_t G4, int32_t qthr)
{
    return (unsigned)_mm512_cmple_epi32_mask(sutra_q4_blk_sums512(blk, qlut, G4),
                                             _mm512_set1_epi32(qthr));
}

/* The same for SUTRA_QB queries at once: the code gathers and nibble splits are
 * shared, each query only adds its two byte permutes and two dot-adds per group.
 * qlut holds the queries' tables one after the other (2 * G4 * 64 bytes each);
 * bits[b] gets query b's mask. */
static inline void sutra_q4_block16_multi(const uint8_t *codes, Py_ssize_t W,
                                          const uint8_t *qlut, Py_ssize_t G4,
                                          const int32_t *qthr, unsigned *bits)
{
    const __m512i rowoff = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)W));
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i sel = _mm512_set1_epi32(0x30201000);
    const __m512i ones = _mm512_set1_epi8(1);
    const Py_ssize_t stride = 2 * G4 * 64;
    __m512i acc[SUTRA_QB];
    Py_ssize_t g;
    int b;
    for (b = 0; b < SUTRA_QB; b++) acc[b] = _mm512_setzero_si512();
    for (g = 0; g < G4; g++) {
        __m512i v = _mm512_i32gather_epi32(_mm512_add_epi32(rowoff, _mm512_set1_epi32((int)(4 * g))),
                                           (const void *)codes, 1);
        __m512i lo = _mm512_or_si512(_mm512_and_si512(v, low4), sel);
        __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), sel);
        for (b = 0; b < SUTRA_QB; b++) {
            const uint8_t *t = qlut + b * stride + (2 * g) * 64;
            acc[b] = _mm512_dpbusd_epi32(acc[b], _mm512_permutexvar_epi8(
                         lo, _mm512_loadu_si512((const void *)t)), ones);
            acc[b] = _mm512_dpbusd_epi32(acc[b], _mm512_permutexvar_epi8(
                         hi, _mm512_loadu_si512((const void *)(t + 64))), ones);
        }
    }
    for (b = 0; b < SUTRA_QB; b++)
        bits[b] = (unsigned)_mm512_cmple_epi32_mask(acc[b], _mm512_set1_epi32(qthr[b]));
}

#elif defined(SUTRA_AVX2)

/* The 64 bytes of a group (A: rows 0-7, B: rows 8-15, dword per row) transposed
 * into c01 = [code byte 0 | code byte 1] and c23 = [byte 2 | byte 3] of the 16 rows,
 * each lane in the row order 0-3, 8-11, 4-7, 12-15. */
SUTRA_ALWAYS_INLINE void
sutra_q4_transpose_avx2(__m256i A, __m256i B, __m256i *c01, __m256i *c23)
{
    const __m256i tr = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    A = _mm256_shuffle_epi8(A, tr);        /* lane: byte 0 of its 4 rows, byte 1, ... */
    B = _mm256_shuffle_epi8(B, tr);
    *c01 = _mm256_permute4x64_epi64(_mm256_unpacklo_epi32(A, B), 0xD8);
    *c23 = _mm256_permute4x64_epi64(_mm256_unpackhi_epi32(A, B), 0xD8);
}

/* The group's 128 table lookups (tables t: see the qlut layout) added into the
 * 16-bit per-row sums: accA lanes hold rows 0-3, 8-11, accB rows 4-7, 12-15 (the
 * two lanes of each are added at the end). */
SUTRA_ALWAYS_INLINE void
sutra_q4_lookup_avx2(__m256i l01, __m256i l23, __m256i h01, __m256i h23, const uint8_t *t,
                     __m256i *accA, __m256i *accB)
{
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i x0 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)t), l01);
    __m256i x1 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 32)), l23);
    __m256i x2 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 64)), h01);
    __m256i x3 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 96)), h23);
    /* interleave two registers so that adjacent bytes belong to one row, then
     * vpmaddubsw adds each pair into the row's 16-bit lane (<= 510, exact) */
    *accA = _mm256_add_epi16(*accA, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(x0, x1), ones));
    *accB = _mm256_add_epi16(*accB, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(x0, x1), ones));
    *accA = _mm256_add_epi16(*accA, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(x2, x3), ones));
    *accB = _mm256_add_epi16(*accB, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(x2, x3), ones));
}

SUTRA_ALWAYS_INLINE void
sutra_q4_nibbles_avx2(__m256i c01, __m256i c23, __m256i *l01, __m256i *l23,
                      __m256i *h01, __m256i *h23)
{
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    *l01 = _mm256_and_si256(c01, low4);
    *l23 = _mm256_and_si256(c23, low4);
    *h01 = _mm256_and_si256(_mm256_srli_epi16(c01, 4), low4);
    *h23 = _mm256_and_si256(_mm256_srli_epi16(c23, 4), low4);
}

/* Mask (bit r: row r) of the rows whose unsigned 16-bit sum is <= qthr. */
SUTRA_ALWAYS_INLINE unsigned sutra_q4_mask_avx2(__m256i accA, __m256i accB, int32_t qthr)
{
    if (qthr < 0) return 0u;
    if (qthr >= 65535) return 0xFFFFu;
    const __m128i th = _mm_set1_epi16((short)(uint16_t)qthr);
    const __m128i order = _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
    __m128i sa = _mm_add_epi16(_mm256_castsi256_si128(accA), _mm256_extracti128_si256(accA, 1));
    __m128i sb = _mm_add_epi16(_mm256_castsi256_si128(accB), _mm256_extracti128_si256(accB, 1));
    __m128i la = _mm_cmpeq_epi16(_mm_max_epu16(sa, th), th);    /* sum <= qthr */
    __m128i lb = _mm_cmpeq_epi16(_mm_max_epu16(sb, th), th);
    __m128i p = _mm_shuffle_epi8(_mm_packs_epi16(la, lb), order);
    return (unsigned)_mm_movemask_epi8(p) & 0xFFFFu;
}

/* The quantised sums of a blocked group's 16 rows, as two 16-bit accumulators (accA:
 * rows 0-3, 8-11; accB: rows 4-7, 12-15; two partial sums per row, one per 128-bit
 * lane). */
static inline void sutra_q4_blk_acc_avx2(const uint8_t *blk, const uint8_t *qlut,
                                         Py_ssize_t G4, __m256i *accA, __m256i *accB)
{
    __m256i c01, c23, l01, l23, h01, h23;
    Py_ssize_t g;
    *accA = _mm256_setzero_si256();
    *accB = _mm256_setzero_si256();
    for (g = 0; g < G4; g++) {
        const uint8_t *run = blk + 64 * g;
        sutra_q4_transpose_avx2(_mm256_loadu_si256((const __m256i *)run),
                                _mm256_loadu_si256((const __m256i *)(run + 32)), &c01, &c23);
        sutra_q4_nibbles_avx2(c01, c23, &l01, &l23, &h01, &h23);
        sutra_q4_lookup_avx2(l01, l23, h01, h23, qlut + 128 * g, accA, accB);
    }
}

static inline unsigned sutra_q4_block16_blk(const uint8_t *blk, const uint8_t *qlut,
                                            Py_ssize_t G4, int32_t qthr)
{
    __m256i accA, accB;
    sutra_q4_blk_acc_avx2(blk, qlut, G4, &accA, &accB);
    return sutra_q4_mask_avx2(accA, accB, qthr);
}

SUTRA_ALWAYS_INLINE void
sutra_q4_gather_avx2(const uint8_t *codes, __m256i rowoff, Py_ssize_t W, Py_ssize_t g,
                     __m256i *c01, __m256i *c23)
{
    const __m256i off = _mm256_add_epi32(rowoff, _mm256_set1_epi32((int)(4 * g)));
    __m256i A = _mm256_i32gather_epi32((const int *)codes, off, 1);
    __m256i B = _mm256_i32gather_epi32((const int *)(codes + 8 * W), off, 1);
    sutra_q4_transpose_avx2(A, B, c01, c23);
}

static inline unsigned sutra_q4_block16(const uint8_t *codes, Py_ssize_t W,
                                        const uint8_t *qlut, Py_ssize_t G4,
                                        int32_t qthr)
{
    const __m256i rowoff = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                              _mm256_set1_epi32((int)W));
    __m256i accA = _mm256_setzero_si256(), accB = _mm256_setzero_si256();
    __m256i c01, c23, l01, l23, h01, h23;
    Py_ssize_t g;
    for (g = 0; g < G4; g++) {
        sutra_q4_gather_avx2(codes, rowoff, W, g, &c01, &c23);
        sutra_q4_nibbles_avx2(c01, c23, &l01, &l23, &h01, &h23);
        sutra_q4_lookup_avx2(l01, l23, h01, h23, qlut + 128 * g, &accA, &accB);
    }
    return sutra_q4_mask_avx2(accA, accB, qthr);
}

static inline void sutra_q4_block16_multi(const uint8_t *codes, Py_ssize_t W,
                                          const uint8_t *qlut, Py_ssize_t G4,
                                          const int32_t *qthr, unsigned *bits)
{
    const __m256i rowoff = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                              _mm256_set1_epi32((int)W));
    const Py_ssize_t stride = 2 * G4 * 64;
    __m256i accA[SUTRA_QB], accB[SUTRA_QB];
    __m256i c01, c23, l01, l23, h01, h23;
    Py_ssize_t g;
    int b;
    for (b = 0; b < SUTRA_QB; b++) accA[b] = accB[b] = _mm256_setzero_si256();
    for (g = 0; g < G4; g++) {
        sutra_q4_gather_avx2(codes, rowoff, W, g, &c01, &c23);
        sutra_q4_nibbles_avx2(c01, c23, &l01, &l23, &h01, &h23);
        for (b = 0; b < SUTRA_QB; b++)
            sutra_q4_lookup_avx2(l01, l23, h01, h23, qlut + b * stride + 128 * g,
                                 &accA[b], &accB[b]);
    }
    for (b = 0; b < SUTRA_QB; b++) bits[b] = sutra_q4_mask_avx2(accA[b], accB[b], qthr[b]);
}

#else   /* portable twin: the same integer sums, one row at a time */

/* Portable layout: for every code byte position p < 4 * G4 a 256-entry uint16 table
 * indexed by the whole byte (the sum of the byte's two quantised nibble entries: the
 * 4-bit pair trick of the float scan), then the register layout it is made from.
 * A row's bound then takes one lookup per code byte, from tables that fit L1. */
#define SUTRA_Q4_LUT_BYTES(G4) ((Py_ssize_t)(G4) * (4 * 256 * 2 + 128))
static inline float sutra_q4_luts(const float *T, Py_ssize_t M, uint8_t *qlut,
                                  double *summin, double *slack)
{
    const Py_ssize_t G4 = ((M + 1) / 2 + 3) / 4;
    uint16_t *pairs = (uint16_t *)qlut;
    const uint8_t *R = qlut + G4 * 4 * 256 * 2;
    Py_ssize_t g, j, c;
    float a = sutra_q4_luts_regs(T, M, (uint8_t *)R, summin, slack);
    for (g = 0; g < G4; g++)
        for (j = 0; j < 4; j++) {
            const uint8_t *lo = R + 128 * g + 16 * j, *hi = lo + 64;
            uint16_t *dst = pairs + (4 * g + j) * 256;
            for (c = 0; c < 256; c++) dst[c] = (uint16_t)(lo[c & 15] + hi[c >> 4]);
        }
    return a;
}

/* the sum of one row's looked-up entries; w(g) = its 4 code bytes of group g */
#define SUTRA_Q4_ROW_SUM(sum, P, G4, WPTR) do { \
        uint32_t s_ = 0; Py_ssize_t g_; \
        for (g_ = 0; g_ < (G4); g_++) { \
            const uint8_t *w_ = (WPTR); const uint16_t *t_ = (P) + 1024 * g_; \
            s_ += (uint32_t)t_[w_[0]] + t_[256 + w_[1]] + t_[512 + w_[2]] + t_[768 + w_[3]]; \
        } \
        (sum) = s_; } while (0)

static inline unsigned sutra_q4_block16_blk(const uint8_t *blk, const uint8_t *qlut,
                                            Py_ssize_t G4, int32_t qthr)
{
    const uint16_t *P = (const uint16_t *)qlut;
    unsigned bits = 0;
    uint32_t s;
    int r;
    if (qthr < 0) return 0u;
    for (r = 0; r < 16; r++) {
        SUTRA_Q4_ROW_SUM(s, P, G4, blk + 64 * g_ + 4 * r);
        if ((int64_t)s <= (int64_t)qthr) bits |= 1u << r;
    }
    return bits;
}

static inline unsigned sutra_q4_block16(const uint8_t *codes, Py_ssize_t W,
                                        const uint8_t *qlut, Py_ssize_t G4,
                                        int32_t qthr)
{
    const uint16_t *P = (const uint16_t *)qlut;
    unsigned bits = 0;
    uint32_t s;
    int r;
    if (qthr < 0) return 0u;
    for (r = 0; r < 16; r++) {
        SUTRA_Q4_ROW_SUM(s, P, G4, codes + r * W + 4 * g_);
        if ((int64_t)s <= (int64_t)qthr) bits |= 1u << r;
    }
    return bits;
}

static inline void sutra_q4_block16_multi(const uint8_t *codes, Py_ssize_t W,
                                          const uint8_t *qlut, Py_ssize_t G4,
                                          const int32_t *qthr, unsigned *bits)
{
    int b;
    for (b = 0; b < SUTRA_QB; b++)
        bits[b] = sutra_q4_block16(codes, W, qlut + b * SUTRA_Q4_LUT_BYTES(G4), G4, qthr[b]);
}
#endif

static inline Py_ssize_t sutra_q4_lut_bytes(Py_ssize_t G4) { return SUTRA_Q4_LUT_BYTES(G4); }

/* The quantised sums themselves (approximate candidates for re-ranked searches):
 * out[r] = row r's sum over blocked group blk (the same integers at every level);
 * returns the mask of rows whose sum is <= qthr. */
#if defined(SUTRA_AVX512)
static inline unsigned sutra_q4_sums16_blk(const uint8_t *blk, const uint8_t *qlut,
                                           Py_ssize_t G4, int32_t qthr, int32_t *out)
{
    const __m512i acc = sutra_q4_blk_sums512(blk, qlut, G4);
    _mm512_storeu_si512((void *)out, acc);
    return (unsigned)_mm512_cmple_epi32_mask(acc, _mm512_set1_epi32(qthr));
}
#elif defined(SUTRA_AVX2)
static inline unsigned sutra_q4_sums16_blk(const uint8_t *blk, const uint8_t *qlut,
                                           Py_ssize_t G4, int32_t qthr, int32_t *out)
{
    __m256i accA, accB;
    uint16_t sa[8], sb[8];
    unsigned bits = 0;
    int r;
    sutra_q4_blk_acc_avx2(blk, qlut, G4, &accA, &accB);
    /* accA: rows 0-3, 8-11 (two partial sums per row, one per 128-bit lane);
     * accB: rows 4-7, 12-15 */
    _mm_storeu_si128((__m128i *)sa, _mm_add_epi16(_mm256_castsi256_si128(accA),
                                                  _mm256_extracti128_si256(accA, 1)));
    _mm_storeu_si128((__m128i *)sb, _mm_add_epi16(_mm256_castsi256_si128(accB),
                                                  _mm256_extracti128_si256(accB, 1)));
    for (r = 0; r < 4; r++) {
        out[r] = sa[r];
        out[8 + r] = sa[4 + r];
        out[4 + r] = sb[r];
        out[12 + r] = sb[4 + r];
    }
    for (r = 0; r < 16; r++)
        if (out[r] <= qthr) bits |= 1u << r;
    return bits;
}
#else
static inline unsigned sutra_q4_sums16_blk(const uint8_t *blk, const uint8_t *qlut,
                                           Py_ssize_t G4, int32_t qthr, int32_t *out)
{
    const uint16_t *P = (const uint16_t *)qlut;
    unsigned bits = 0;
    uint32_t s;
    int r;
    for (r = 0; r < 16; r++) {
        SUTRA_Q4_ROW_SUM(s, P, G4, blk + 64 * g_ + 4 * r);
        out[r] = (int32_t)s;
        if ((int64_t)s <= (int64_t)qthr) bits |= 1u << r;
    }
    return bits;
}
#endif

/* int8 coarse search. P holds ceil(K / 16) panels of D4 runs of 64 bytes: run j of
 * panel p = dimensions 4j .. 4j + 3 of centres 16p .. 16p + 15 (4 bytes per centre,
 * int8, zero padded past K and past d). x holds the query as 4 * D4 uint8 (the
 * int8 value + 128; padding 128). out[c] = sum_j x[j] * centre_c[j] (int32, exact at
 * every level) for c < K. One query streams a quarter of the float32 centres' bytes
 * (half of the float16 panels'). */
static inline void sutra_panel_dots_i8(const uint8_t *x, const int8_t *P, Py_ssize_t K,
                                       Py_ssize_t D4, int32_t *out)
{
    const Py_ssize_t NP = (K + 15) / 16;
    Py_ssize_t p = 0, j, l;
    int32_t tmp[64];
#if defined(SUTRA_AVX512)
    for (; p + 4 <= NP; p += 4) {
        const int8_t *p0 = P + p * D4 * 64;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (j = 0; j < D4; j++) {
            int32_t w;
            memcpy(&w, x + 4 * j, 4);
            const __m512i xj = _mm512_set1_epi32(w);
            a0 = _mm512_dpbusd_epi32(a0, xj, _mm512_loadu_si512((const void *)(p0 + j * 64)));
            a1 = _mm512_dpbusd_epi32(a1, xj, _mm512_loadu_si512((const void *)(p0 + (D4 + j) * 64)));
            a2 = _mm512_dpbusd_epi32(a2, xj, _mm512_loadu_si512((const void *)(p0 + (2 * D4 + j) * 64)));
            a3 = _mm512_dpbusd_epi32(a3, xj, _mm512_loadu_si512((const void *)(p0 + (3 * D4 + j) * 64)));
        }
        _mm512_storeu_si512((void *)tmp, a0);
        _mm512_storeu_si512((void *)(tmp + 16), a1);
        _mm512_storeu_si512((void *)(tmp + 32), a2);
        _mm512_storeu_si512((void *)(tmp + 48), a3);
        for (l = 0; l < 64 && p * 16 + l < K; l++) out[p * 16 + l] = tmp[l];
    }
    for (; p < NP; p++) {
        const int8_t *p0 = P + p * D4 * 64;
        __m512i a0 = _mm512_setzero_si512();
        for (j = 0; j < D4; j++) {
            int32_t w;
            memcpy(&w, x + 4 * j, 4);
            a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(w),
                                     _mm512_loadu_si512((const void *)(p0 + j * 64)));
        }
        _mm512_storeu_si512((void *)tmp, a0);
        for (l = 0; l < 16 && p * 16 + l < K; l++) out[p * 16 + l] = tmp[l];
    }
#elif defined(SUTRA_AVX2)
    /* 16-bit products summed in pairs by vpmaddwd (exact; vpmaddubsw would saturate) */
    for (; p < NP; p++) {
        const int8_t *p0 = P + p * D4 * 64;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (j = 0; j < D4; j++) {
            int64_t w2;
            uint32_t w;
            memcpy(&w, x + 4 * j, 4);
            w2 = (int64_t)w | ((int64_t)w << 32);
            /* x bytes as 16-bit: the 4 query bytes repeated for 4 centres */
            const __m256i xq = _mm256_cvtepu8_epi16(_mm_set1_epi64x(w2));
            const __m256i c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p0 + j * 64)));
            const __m256i c1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p0 + j * 64 + 16)));
            const __m256i c2 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p0 + j * 64 + 32)));
            const __m256i c3 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p0 + j * 64 + 48)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xq, c0));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(xq, c1));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(xq, c2));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(xq, c3));
        }
        /* each centre's two pair-sums are adjacent int32 lanes: add them */
        _mm256_storeu_si256((__m256i *)tmp, a0);
        _mm256_storeu_si256((__m256i *)(tmp + 8), a1);
        _mm256_storeu_si256((__m256i *)(tmp + 16), a2);
        _mm256_storeu_si256((__m256i *)(tmp + 24), a3);
        for (l = 0; l < 16 && p * 16 + l < K; l++) out[p * 16 + l] = tmp[2 * l] + tmp[2 * l + 1];
    }
#else
    for (; p < NP; p++) {
        const int8_t *p0 = P + p * D4 * 64;
        int32_t acc[16];
        for (l = 0; l < 16; l++) acc[l] = 0;
        for (j = 0; j < D4; j++) {
            const int8_t *run = p0 + j * 64;
            const int32_t x0 = x[4 * j], x1 = x[4 * j + 1], x2 = x[4 * j + 2], x3 = x[4 * j + 3];
            for (l = 0; l < 16; l++)
                acc[l] += x0 * run[4 * l] + x1 * run[4 * l + 1] + x2 * run[4 * l + 2]
                          + x3 * run[4 * l + 3];
        }
        for (l = 0; l < 16 && p * 16 + l < K; l++) out[p * 16 + l] = acc[l];
    }
    (void)tmp;
#endif
}

/* ------------------------------------------------------------------------------
 * IVF helpers (appended for sutradb/index/ivf.py).
 * ---------------------------------------------------------------------------- */

/* Coarse distances from float16 centre panels: P holds ceil(K / 16) panels of
 * d x 16 float16 bits (panel p, row j: dimension j of centres 16p .. 16p + 15, zero
 * padded past K), so one query streams half the bytes of float32 centres, in
 * order. out[c] = base[c] + alpha * sum_j x[j] * centre_c[j] for c < K. With
 * AVX-512 four panels share each broadcast of x[j] and accumulate in registers. */
static inline void sutra_panel_rows_f16(const float *x, const uint16_t *P, const float *base,
                                        float alpha, Py_ssize_t K, Py_ssize_t d, float *out)
{
    const Py_ssize_t NP = (K + 15) / 16;
    Py_ssize_t p = 0, j, l;
#if defined(__AVX512F__)
    float tmp[64];
    for (; p + 4 <= NP; p += 4) {
        const uint16_t *p0 = P + p * d * 16, *p1 = p0 + d * 16, *p2 = p1 + d * 16, *p3 = p2 + d * 16;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (j = 0; j < d; j++) {
            const __m512 xj = _mm512_set1_ps(x[j]);
            a0 = _mm512_fmadd_ps(xj, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + j * 16))), a0);
            a1 = _mm512_fmadd_ps(xj, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p1 + j * 16))), a1);
            a2 = _mm512_fmadd_ps(xj, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p2 + j * 16))), a2);
            a3 = _mm512_fmadd_ps(xj, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p3 + j * 16))), a3);
        }
        _mm512_storeu_ps(tmp, a0);
        _mm512_storeu_ps(tmp + 16, a1);
        _mm512_storeu_ps(tmp + 32, a2);
        _mm512_storeu_ps(tmp + 48, a3);
        for (l = 0; l < 64 && p * 16 + l < K; l++)
            out[p * 16 + l] = base[p * 16 + l] + alpha * tmp[l];
    }
    for (; p < NP; p++) {
        const uint16_t *p0 = P + p * d * 16;
        __m512 a0 = _mm512_setzero_ps();
        for (j = 0; j < d; j++)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(x[j]),
                                 _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + j * 16))), a0);
        _mm512_storeu_ps(tmp, a0);
        for (l = 0; l < 16 && p * 16 + l < K; l++)
            out[p * 16 + l] = base[p * 16 + l] + alpha * tmp[l];
    }
#elif defined(SUTRA_AVX2)
    float tmp[32];
    for (; p + 2 <= NP; p += 2) {      /* two panels: four 8-lane accumulators */
        const uint16_t *p0 = P + p * d * 16, *p1 = p0 + d * 16;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (j = 0; j < d; j++) {
            const __m256 xj = _mm256_set1_ps(x[j]);
            a0 = _mm256_fmadd_ps(xj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p0 + j * 16))), a0);
            a1 = _mm256_fmadd_ps(xj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p0 + j * 16 + 8))), a1);
            a2 = _mm256_fmadd_ps(xj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p1 + j * 16))), a2);
            a3 = _mm256_fmadd_ps(xj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p1 + j * 16 + 8))), a3);
        }
        _mm256_storeu_ps(tmp, a0);
        _mm256_storeu_ps(tmp + 8, a1);
        _mm256_storeu_ps(tmp + 16, a2);
        _mm256_storeu_ps(tmp + 24, a3);
        for (l = 0; l < 32 && p * 16 + l < K; l++)
            out[p * 16 + l] = base[p * 16 + l] + alpha * tmp[l];
    }
    for (; p < NP; p++) {
        const uint16_t *p0 = P + p * d * 16;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (j = 0; j < d; j++) {
            const __m256 xj = _mm256_set1_ps(x[j]);
            a0 = _mm256_fmadd_ps(xj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p0 + j * 16))), a0);
            a1 = _mm256_fmadd_ps(xj, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p0 + j * 16 + 8))), a1);
        }
        _mm256_storeu_ps(tmp, a0);
        _mm256_storeu_ps(tmp + 8, a1);
        for (l = 0; l < 16 && p * 16 + l < K; l++)
            out[p * 16 + l] = base[p * 16 + l] + alpha * tmp[l];
    }
#else
    /* portable: the panel's 16 centres side by side, as the SIMD paths do, so the
     * compiler can vectorise the inner loop (NEON on arm64) */
    float acc[16];
    for (; p < NP; p++) {
        const uint16_t *p0 = P + p * d * 16;
        for (l = 0; l < 16; l++) acc[l] = 0.f;
        for (j = 0; j < d; j++) {
            const float xj = x[j];
            for (l = 0; l < 16; l++) acc[l] += xj * sutra_h2f(p0[j * 16 + l]);
        }
        for (l = 0; l < 16 && p * 16 + l < K; l++)
            out[p * 16 + l] = base[p * 16 + l] + alpha * acc[l];
    }
#endif
}

static inline int sutra_pair_less(float va, int64_t ia, float vb, int64_t ib)
{
    return va < vb || (va == vb && ia < ib);
}

/* Rearrange the pairs (v[t], ix[t]) so that the n smallest by (value, index) come
 * first (in no particular order): Hoare-partition quickselect, O(K) expected. The
 * indices are distinct, so the selected set is unique. */
static inline void sutra_select_smallest(float *v, int64_t *ix, Py_ssize_t K, Py_ssize_t n)
{
    Py_ssize_t lo = 0, hi = K - 1;
    if (n <= 0 || n >= K) return;
    while (lo < hi) {
        const Py_ssize_t mid = lo + (hi - lo) / 2;
        const float pv = v[mid];
        const int64_t pi = ix[mid];
        Py_ssize_t a = lo, b = hi;
        while (a <= b) {
            while (sutra_pair_less(v[a], ix[a], pv, pi)) a++;
            while (sutra_pair_less(pv, pi, v[b], ix[b])) b--;
            if (a <= b) {
                float tv = v[a]; v[a] = v[b]; v[b] = tv;
                int64_t ti = ix[a]; ix[a] = ix[b]; ix[b] = ti;
                a++; b--;
            }
        }
        if (n - 1 <= b) hi = b;
        else if (n - 1 >= a) lo = a;
        else break;
    }
}

#endif /* SUTRADB_SIMD_H */
