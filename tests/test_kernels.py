"""Every kernel of _pq.pyx and _core.pyx against its NumPy oracle (sutradb._reference).

Integer-valued inputs make float32 sums exact whatever their order, so for them the
kernels must agree with the oracles bit for bit, ties included; real-valued inputs
are compared with a tolerance.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from sutradb import _reference as R
from sutradb.simd import core as _core, pq as _pq
from sutradb.index.pq import pack4, unpack4

# every test here runs once per SIMD level this CPU supports (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("kernel_level")

THREADS = [1, 2]


@st.composite
def pq_problem(draw, integer=True, nbits=None):
    """Codebooks (M, Ks, Ds), codes (n, W) and queries for the ADC kernels."""
    nbits = draw(st.sampled_from([4, 8])) if nbits is None else nbits
    Ks = 1 << nbits
    M = draw(st.integers(1, 40))
    Ds = draw(st.integers(1, 4))
    n = draw(st.integers(0, 300))
    nq = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if integer:
        cb = rng.integers(-4, 5, (M, Ks, Ds)).astype(np.float32)
        q = rng.integers(-4, 5, (nq, M * Ds)).astype(np.float32)
    else:
        cb = rng.standard_normal((M, Ks, Ds)).astype(np.float32)
        q = rng.standard_normal((nq, M * Ds)).astype(np.float32)
    codes = rng.integers(0, Ks, (n, M)).astype(np.uint8)
    packed = pack4(codes) if nbits == 4 else codes
    return cb, codes, packed, q, nbits


@given(pq_problem(integer=False), st.sampled_from([0, 1]))
def test_distance_tables_match_oracle(p, metric):
    cb, _, _, q, _ = p
    got = _core.distance_tables(q, cb, metric, 1)
    np.testing.assert_allclose(got, R.distance_tables(q, cb, metric), rtol=1e-5, atol=1e-4)


@given(pq_problem(integer=True), st.sampled_from([0, 1]), st.integers(1, 40),
       st.booleans(), st.sampled_from(THREADS))
def test_adc_topk_exact_on_integer_tables(p, metric, k, use_mask, threads):
    cb, codes, packed, q, nbits = p
    tables = R.distance_tables(q, cb, metric)
    mask = None
    if use_mask:
        mask = (np.random.default_rng(len(codes)).random(len(codes)) < 0.6).astype(np.uint8)
    D, I = _core.adc_topk(tables, packed, k, mask, threads)
    Dr, Ir = R.adc_topk(tables, packed, k, mask)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr.astype(np.float32))


@given(pq_problem(integer=False), st.integers(1, 20))
def test_adc_topk_float_tables(p, k):
    cb, codes, packed, q, nbits = p
    tables = _core.distance_tables(q, cb, 0, 1)
    D, I = _core.adc_topk(tables, packed, k, None, 1)
    full = R.adc_distances(tables, packed)
    Dr, _ = R.topk(full, k)
    # the k best distances agree; every returned row's own distance is what is reported
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-4)
    for qi in range(len(q)):
        ok = I[qi] >= 0
        np.testing.assert_allclose(D[qi, ok], full[qi, I[qi, ok]], rtol=1e-5, atol=1e-4)
        assert len(set(I[qi, ok].tolist())) == ok.sum()


@given(pq_problem(integer=True))
def test_adc_distances_match_oracle(p):
    cb, codes, packed, q, nbits = p
    tables = R.distance_tables(q, cb, 0)
    np.testing.assert_array_equal(_core.adc_distances(tables, packed, 1),
                                  R.adc_distances(tables, packed).astype(np.float32))


def test_adc_topk_many_threads_single_query_split_is_deterministic():
    # enough rows that a single query is split across threads (MIN_ROWS_PER_THREAD)
    rng = np.random.default_rng(1)
    M = 12
    tables = rng.integers(0, 3, (1, M, 256)).astype(np.float32)   # many ties
    codes = rng.integers(0, 256, (70_000, M)).astype(np.uint8)
    res = [_core.adc_topk(tables, codes, 50, None, t) for t in (1, 2, 3, 4)]
    Dr, Ir = R.adc_topk(tables, codes, 50)
    for D, I in res:
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr.astype(np.float32))


def test_adc_topk_reads_memory_mapped_codes(tmp_path):
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (5000, 16)).astype(np.uint8)
    path = tmp_path / "codes.u8"
    codes.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=codes.shape)
    assert not mm.flags.writeable
    tables = rng.standard_normal((3, 16, 256)).astype(np.float32)
    D1, I1 = _core.adc_topk(tables, codes, 7, None, 1)
    D2, I2 = _core.adc_topk(tables, mm, 7, None, 2)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_adc_topk_rejects_inconsistent_shapes():
    t8 = np.zeros((1, 4, 256), np.float32)
    with pytest.raises(ValueError):
        _core.adc_topk(t8, np.zeros((3, 5), np.uint8), 1)
    with pytest.raises(ValueError):
        _core.adc_topk(np.zeros((1, 4, 16), np.float32), np.zeros((3, 4), np.uint8), 1)
    with pytest.raises(ValueError):
        _core.adc_topk(np.zeros((1, 4, 32), np.float32), np.zeros((3, 4), np.uint8), 1)
    with pytest.raises(ValueError):
        _core.adc_topk(t8, np.zeros((3, 4), np.uint8), 0)
    with pytest.raises(ValueError):
        _core.adc_topk(t8, np.zeros((3, 4), np.uint8), 1, np.ones(2, np.uint8))


@st.composite
def points(draw, integer=True):
    n = draw(st.integers(1, 200))
    d = draw(st.integers(1, 20))
    K = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if integer:
        X = rng.integers(-3, 4, (n, d)).astype(np.float32)
        C = rng.integers(-3, 4, (K, d)).astype(np.float32)
    else:
        X = rng.standard_normal((n, d)).astype(np.float32)
        C = rng.standard_normal((K, d)).astype(np.float32)
    return X, C


@given(points(integer=True), st.sampled_from(THREADS))
def test_assign_exact_on_integers(p, threads):
    X, C = p
    lab, sq = _pq.assign(X, C, threads)
    lr, sr = R.assign(X, C)
    np.testing.assert_array_equal(lab, lr)
    np.testing.assert_array_equal(sq, sr.astype(np.float32))


@given(points(integer=False))
def test_assign_picks_a_nearest_centre(p):
    X, C = p
    lab, sq = _pq.assign(X, C, 1)
    _, sr = R.assign(X, C)
    chosen = ((X.astype(np.float64) - C[lab].astype(np.float64)) ** 2).sum(1)
    np.testing.assert_allclose(chosen, sr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sq, sr, rtol=1e-3, atol=1e-3)


@given(points(integer=True))
def test_update_sums_and_counts(p):
    X, C = p
    lab, _ = _pq.assign(X, C, 1)
    sums, counts = _pq.update(X, lab, len(C))
    np.testing.assert_array_equal(counts, np.bincount(lab, minlength=len(C)))
    ref = np.zeros((len(C), X.shape[1]))
    np.add.at(ref, lab, X.astype(np.float64))
    np.testing.assert_array_equal(sums, ref)


@given(pq_problem(integer=True), st.sampled_from(THREADS))
def test_encode_exact_on_integers(p, threads):
    cb, codes, _, q, _ = p
    X = R.decode(codes, cb) + np.random.default_rng(0).integers(
        -1, 2, (len(codes), cb.shape[0] * cb.shape[2])).astype(np.float32)
    got = _pq.encode(np.ascontiguousarray(X, dtype=np.float32), cb, threads)
    ref, _ = R.encode(X, cb)
    np.testing.assert_array_equal(got, ref)


@given(pq_problem(integer=False))
def test_encode_picks_a_nearest_centroid(p):
    cb, codes, _, q, _ = p
    got = _pq.encode(q, cb, 1)
    _, best = R.encode(q, cb)
    M, Ks, Ds = cb.shape
    x = q.astype(np.float64).reshape(len(q), M, Ds)
    chosen = ((x - cb[np.arange(M), got.astype(np.intp)]) ** 2).sum(-1)
    np.testing.assert_allclose(chosen, best, rtol=1e-4, atol=1e-4)


@given(pq_problem(integer=False))
def test_decode_matches_oracle(p):
    cb, codes, packed, _, nbits = p
    np.testing.assert_array_equal(_pq.decode(codes, cb), R.decode(codes, cb))
    if nbits == 4:
        np.testing.assert_array_equal(unpack4(packed, cb.shape[0]), codes)


def test_decode_rejects_codes_beyond_ks():
    cb = np.zeros((2, 16, 3), np.float32)
    with pytest.raises(ValueError):
        _pq.decode(np.array([[0, 16]], np.uint8), cb)


@st.composite
def rerank_problem(draw):
    n = draw(st.integers(1, 120))
    d = draw(st.integers(1, 70))
    nq = draw(st.integers(1, 4))
    c = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    V = rng.integers(-8, 9, (n, d)).astype(np.float32)
    Q = rng.integers(-8, 9, (nq, d)).astype(np.float32)
    cand = np.stack([rng.permutation(np.arange(-1, n))[:c] for _ in range(nq)])
    if cand.shape[1] < c:
        cand = np.pad(cand, ((0, 0), (0, c - cand.shape[1])), constant_values=-1)
    return Q, V, np.ascontiguousarray(cand, dtype=np.int64)


@given(rerank_problem(), st.sampled_from([0, 1, 2]), st.integers(1, 12),
       st.sampled_from(["f32", "f16"]), st.sampled_from(THREADS))
def test_rerank_exact_on_integers(p, metric, k, dtype, threads):
    Q, V, cand = p
    vec = V if dtype == "f32" else V.astype(np.float16).view(np.uint16)
    D, I = _core.rerank(Q, vec, cand, k, metric, threads)
    Dr, Ir = R.rerank(Q, V, cand, k, metric)
    if metric == 2:   # a division: compare with a tolerance (ties may reorder)
        np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
        return
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr.astype(np.float32))


@st.composite
def pair_problem(draw):
    n = draw(st.integers(0, 60))
    d = draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    V = rng.integers(-8, 9, (n, d)).astype(np.float32)
    if n and draw(st.booleans()):
        V[rng.integers(0, n)] = 0                       # a zero row (cosine: distance 1)
    m = n + draw(st.integers(0, 10))                    # ids with no row: -1
    idrow = np.full(m, -1, np.int64)
    idrow[rng.permutation(m)[:n]] = rng.permutation(n)
    held = np.flatnonzero(idrow >= 0)
    p = draw(st.integers(0, 40)) if len(held) else 0
    pairs = rng.choice(held, (p, 2)) if p else np.zeros((0, 2), np.int64)
    return V, idrow, np.ascontiguousarray(pairs, dtype=np.int64)


@given(pair_problem(), st.sampled_from([0, 1, 2]), st.sampled_from(["f32", "f16"]),
       st.sampled_from(THREADS), st.booleans())
def test_pair_distances_match_oracle(p, metric, dtype, threads, split):
    V, idrow, pairs = p
    vec = V if dtype == "f32" else V.astype(np.float16).view(np.uint16)
    cut = len(vec) // 3                                   # one block, or two
    blocks = [vec[:cut], vec[cut:]] if split and len(vec) else [vec]
    sc = _core.PairDistances(blocks, idrow, metric)
    want = R.pair_distances(V, idrow, pairs, metric)
    got = sc.distances(pairs, threads)
    assert got.dtype == np.float32 and got.shape == (len(pairs),)
    if metric == 2:    # a division and square roots: float rounding
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:              # small integers: every sum is exact in float32
        np.testing.assert_array_equal(got, want.astype(np.float32))
    for (a, b), w in zip(pairs[:5].tolist(), got[:5].tolist()):
        assert sc.distance(a, b) == pytest.approx(w, rel=1e-6, abs=1e-6)
    missing = np.flatnonzero(idrow < 0)
    for bad in [-1, len(idrow)] + missing[:2].tolist():
        with pytest.raises(KeyError):
            sc.distance(bad, 0)
        with pytest.raises(KeyError):
            sc.distances(np.array([[0, bad]], np.int64))


def test_pair_distances_reject_rows_beyond_the_vectors():
    V = np.zeros((3, 4), np.float32)
    for bad in ([0, 3], [-2, 0]):
        with pytest.raises(ValueError):
            _core.PairDistances([V], np.array(bad, np.int64), 0)
        with pytest.raises(ValueError):
            _core.PairDistances([V[:1], V[1:]], np.array(bad, np.int64), 0)
    with pytest.raises(ValueError):
        _core.PairDistances([V], np.array([0], np.int64), 7)
    with pytest.raises(ValueError):
        _core.PairDistances([V, V[:, :2]], np.array([0], np.int64), 0)   # widths differ
    with pytest.raises(ValueError):
        _core.PairDistances([V, V.astype(np.float16).view(np.uint16)], np.array([0], np.int64), 0)
    with pytest.raises(ValueError):
        _core.PairDistances([], np.array([0], np.int64), 0)


@given(pq_problem(integer=True), st.sampled_from([0, 1]))
def test_sdc_matches_oracle(p, metric):
    cb, codes, _, _, _ = p
    if len(codes) < 2:
        return
    a, b = codes[:-1], codes[1:]
    tab = _core.sdc_tables(cb, metric)
    np.testing.assert_array_equal(_core.sdc(tab, np.ascontiguousarray(a), np.ascontiguousarray(b)),
                                  R.sdc(cb, a, b, metric).astype(np.float32))


def test_float16_conversion_covers_special_values():
    # finite values only: stored vectors are validated finite, and inf distances are padding
    special = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 6e-8, -6e-8, 1e-5, 0.333],
                       dtype=np.float16)
    V = special.reshape(-1, 1)
    Q = np.ones((1, 1), np.float32)
    cand = np.arange(len(V), dtype=np.int64)[None, :]
    D, I = _core.rerank(Q, V.view(np.uint16), cand, len(V), 1, 1)
    got = dict(zip(I[0].tolist(), (-D[0]).tolist()))
    for i, v in enumerate(special.astype(np.float32)):
        assert got[i] == v


def test_regression_assign_encode_thread_private_results():
    """Regression: results written through pointers inside a prange were shared
    between threads (Cython did not see them as assigned), so assign/encode with 2
    threads raced. Needs several chunks (CHUNK = 256 rows) to show."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((20_000, 4)).astype(np.float32)
    C = rng.standard_normal((256, 4)).astype(np.float32)
    l1, s1 = _pq.assign(X, C, 1)
    for _ in range(3):
        l2, s2 = _pq.assign(X, C, 2)
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(s1, s2)
    cb = rng.standard_normal((8, 256, 4)).astype(np.float32)
    Y = rng.standard_normal((20_000, 32)).astype(np.float32)
    e1 = _pq.encode(Y, cb, 1)
    for _ in range(3):
        np.testing.assert_array_equal(e1, _pq.encode(Y, cb, 2))


@given(pq_problem(integer=False, nbits=4), st.integers(1, 30), st.booleans(),
       st.sampled_from(THREADS))
def test_4bit_fast_scan_equals_plain_scan(p, k, use_mask, threads):
    """The quantised fast scan only prunes with a lower bound: its top-k must be
    exactly the plain float scan's (same distances, same rows, same ties)."""
    cb, codes, packed, q, _ = p
    tables = _core.distance_tables(q, cb, 0, 1)
    mask = None
    if use_mask:
        mask = (np.random.default_rng(k).random(len(packed)) < 0.5).astype(np.uint8)
    D1, I1 = _core.adc_topk(tables, packed, k, mask, threads, fastscan=True)
    D2, I2 = _core.adc_topk(tables, packed, k, mask, 1, fastscan=False)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


def test_4bit_fast_scan_many_rows_and_odd_widths():
    rng = np.random.default_rng(3)
    for M in (1, 2, 7, 8, 9, 15, 16, 17, 33, 48, 64):
        codes = pack4(rng.integers(0, 16, (1000 + M, M)).astype(np.uint8))
        # the same rows in a 70,000-row array: one query is split over threads
        big = np.concatenate([codes] * (70_000 // len(codes) + 1))
        t1 = rng.standard_normal((1, M, 16)).astype(np.float32)
        np.testing.assert_array_equal(_core.adc_topk(t1, big, 40, None, 2, fastscan=True)[1],
                                      _core.adc_topk(t1, big, 40, None, 1, fastscan=False)[1])
        for scale, nq in ((1.0, 3), (1e-3, 7), (1e4, 9)):   # query groups of 4 + a rest
            tables = (rng.standard_normal((nq, M, 16)) * scale).astype(np.float32)
            D1, I1 = _core.adc_topk(tables, codes, 25, None, 1, fastscan=True)
            D2, I2 = _core.adc_topk(tables, codes, 25, None, 1, fastscan=False)
            np.testing.assert_array_equal(I1, I2)
            np.testing.assert_array_equal(D1, D2)
        # constant tables: every distance ties, the smallest rows win
        D, I = _core.adc_topk(np.ones((1, M, 16), np.float32), codes, 5, None, 1)
        np.testing.assert_array_equal(I[0], np.arange(5))
