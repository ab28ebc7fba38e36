"""The IVF-PQ index: NumPy oracles, determinism, masks, persistence, recall on the
bundled real sample (sutradb/data/pypi-sample: 2,000 MiniLM embeddings)."""

from pathlib import Path

import msgpack
import numpy as np
import pytest

from sutradb import _reference as R
from sutradb.simd import core as _core
from sutradb.errors import (CorruptDatabaseError, DimensionError, InvalidArgumentError,
                            NotTrainedError)
from sutradb.index.ivf import BlockedCodes, IVFIndex, default_nlist, exact_topk, tune
from sutradb.index.pq import ProductQuantizer

# every test here runs once per SIMD level this CPU supports (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("kernel_level")

SAMPLE = Path(__file__).resolve().parent.parent / "sutradb" / "data" / "pypi-sample"


@pytest.fixture(scope="module")
def sample():
    base16 = np.load(SAMPLE / "base.f16.npy")
    queries = np.load(SAMPLE / "queries.f16.npy").astype(np.float32)
    gt = np.load(SAMPLE / "gt.i32.npy")
    return base16, queries, gt


@pytest.fixture(scope="module")
def pq(sample):
    return ProductQuantizer(384, 48, metric="cosine", seed=0).fit(sample[0], iters=4)


@pytest.fixture(scope="module")
def ivf(sample):
    base16 = sample[0]
    ivf = IVFIndex(384, metric="cosine", seed=0).fit(base16, iters=6, threads=1)
    return ivf.build(ivf.assign(base16))


@pytest.fixture(scope="module")
def codes(pq, sample):
    return pq.encode(sample[0])


def normalised(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle_scan(pq, queries, codes, lists_of_query, list_ids, k, mask=None):
    """NumPy: ADC distances of every row, restricted to the probed lists (and the
    mask), top-k with ties to the smaller row."""
    Q = normalised(queries).astype(np.float32)
    tables = R.distance_tables(Q, pq.codebooks, R.L2)
    full = R.adc_distances(tables, codes).astype(np.float64)
    keep = np.zeros(full.shape, bool)
    for i, probes in enumerate(lists_of_query):
        keep[i] = np.isin(list_ids, probes)
    if mask is not None:
        keep &= mask[None, :]
    full[~keep] = np.inf
    Ds, Is = [], []
    for row in full:
        o = np.lexsort((np.arange(len(row)), row))[:k]
        Is.append(np.where(np.isfinite(row[o]), o, -1))
        Ds.append(row[o])
    return np.array(Ds), np.array(Is)


# ------------------------------------------------------------------- training

def test_default_nlist():
    assert default_nlist(1) == 1
    assert default_nlist(2000) == 125                  # bounded by n // 16
    assert default_nlist(100_000) == 1265              # ~4 sqrt(n)
    assert default_nlist(10**12) == 65536


def test_fit_shapes_and_lists(ivf, sample):
    assert ivf.nlist == 125 and ivf.centroids.shape == (125, 384)
    assert ivf.centroids.dtype == np.float32
    n = len(sample[0])
    assert ivf.ntotal == n
    assert sorted(ivf.perm.tolist()) == list(range(n))
    assert ivf.offsets[0] == 0 and ivf.offsets[-1] == n
    assert (np.diff(ivf.offsets) >= 0).all()
    assert np.isfinite(ivf.training_error_)


def test_assign_equals_brute_force(ivf, sample):
    X = normalised(sample[0])
    C = ivf.centroids.astype(np.float64)
    d = (C * C).sum(1)[None, :] - 2 * X @ C.T
    lab = ivf.assign(sample[0])
    assert lab.dtype == np.int32 and lab.shape == (len(X),)
    chosen = d[np.arange(len(X)), lab]
    # the nearest centre, up to float32 rounding of near-ties
    assert (chosen <= d.min(1) + 1e-5).all()
    assert (lab == d.argmin(1)).mean() > 0.995


def test_lists_hold_their_rows_in_id_order(ivf, sample):
    lab = ivf.assign(sample[0])
    for l in range(ivf.nlist):
        rows = ivf.perm[ivf.offsets[l]:ivf.offsets[l + 1]]
        assert (lab[rows] == l).all()
        assert (np.diff(rows) > 0).all()


def test_fit_deterministic_across_threads(sample):
    a = IVFIndex(384, nlist=40, metric="cosine", seed=5).fit(sample[0], iters=3, threads=1)
    b = IVFIndex(384, nlist=40, metric="cosine", seed=5).fit(sample[0], iters=3, threads=2)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assign(sample[0], threads=1), b.assign(sample[0], threads=2))
    c = IVFIndex(384, nlist=40, metric="cosine", seed=6).fit(sample[0], iters=3, threads=1)
    assert not np.array_equal(a.centroids, c.centroids)


# --------------------------------------------------------------------- search

def test_full_probe_equals_flat_adc(ivf, pq, codes, sample):
    """nprobe = nlist: the candidate set is the flat ADC scan's, bit for bit."""
    q = sample[1][:10]
    lc = ivf.list_order(codes)
    D, I = ivf.search(q, lc, pq, k=50, nprobe=ivf.nlist, threads=1)
    Df, If = pq.search(q, codes, k=50, threads=1)
    np.testing.assert_array_equal(I, If)
    np.testing.assert_array_equal(D, Df)


def test_full_probe_equals_flat_adc_4bit(sample):
    pq4 = ProductQuantizer(384, 48, nbits=4, metric="cosine", seed=0).fit(sample[0], iters=3)
    c4 = pq4.encode(sample[0])
    ivf = IVFIndex(384, nlist=30, metric="cosine").fit(sample[0], iters=3)
    ivf.build(ivf.assign(sample[0]))
    D, I = ivf.search(sample[1][:8], ivf.list_order(c4), pq4, k=20, nprobe=30)
    Df, If = pq4.search(sample[1][:8], c4, k=20)
    np.testing.assert_array_equal(I, If)
    np.testing.assert_allclose(D, Df, rtol=1e-6, atol=1e-6)


# ------------------------------------------------- 4-bit codes: the fast scans

@pytest.mark.parametrize("W", [1, 3, 6, 24, 48])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100])
def test_block_codes_round_trip(n, W):
    rng = np.random.default_rng(n * 100 + W)
    c = rng.integers(0, 256, (n, W), dtype=np.uint8)
    b = BlockedCodes.from_rows(c)
    g4 = (W + 3) // 4
    assert b.data.shape == (16 * ((n + 15) // 16), 4 * g4) and b.shape == (n, W)
    np.testing.assert_array_equal(b.rows(), c)
    # the layout: group r // 16, run g (dword g of the 16 rows), row r % 16
    flat = b.data.reshape(-1)
    for r in range(n):
        for j in range(W):
            g, o = divmod(j, 4)
            assert flat[(r // 16) * 64 * g4 + g * 64 + (r % 16) * 4 + o] == c[r, j]


@pytest.fixture(scope="module")
def four_bit_setup(sample):
    """4-bit quantizers of three code widths (48, 6 and 3 bytes: W % 4 == 0 and not)
    over 1,990 rows (a partial last group), in 150 small lists (groups shared by
    several lists)."""
    x = sample[0][:1990]
    ivf = IVFIndex(384, nlist=150, metric="cosine", seed=3).fit(x, iters=3)
    ivf.build(ivf.assign(x))
    out = {}
    for m in (96, 12, 6):
        pq4 = ProductQuantizer(384, m, nbits=4, metric="cosine", seed=0).fit(x, iters=3)
        out[m] = (pq4, ivf.list_order(pq4.encode(x)))
    return x, ivf, out


@pytest.mark.parametrize("m", [96, 12, 6])
@pytest.mark.parametrize("nq", [1, 3, 40])        # 1/3: the fused kernel; 40: BLAS probes
def test_4bit_fast_scans_equal_plain_scan(four_bit_setup, sample, m, nq):
    """The blocked layout and the quantised bounds change nothing: every combination
    of (rows | blocked) x (fast | plain) returns the plain scan's top-k bit for bit,
    with and without a mask and re-ranking, on one and two threads."""
    x, ivf, by_m = four_bit_setup
    pq4, lc = by_m[m]
    blk = BlockedCodes.from_rows(lc)
    q = np.vstack([sample[1]] * 2)[:nq]
    Qn = normalised(q).astype(np.float32)
    mask = np.random.default_rng(m).random(len(x)) < 0.4
    v16 = x.view(np.uint16)
    for nprobe, kc in ((1, 10), (9, 60), (150, 200)):
        for msk in (None, mask.astype(np.uint8)):
            for vec in (None, v16):
                ref = None
                for codes, blocked in ((lc, False), (blk.data, True)):
                    for fast in (False, True):
                        for threads in (1, 2):
                            got = _core.ivf_search(
                                Qn, ivf._P16, ivf._cn, nprobe, *pq4._table_ops,
                                pq4._adc_metric, codes, ivf.offsets, ivf.perm,
                                kc if vec is not None else 10, 10, msk, vec,
                                _core.METRIC_COS, threads, fastscan=fast, blocked=blocked)
                            if ref is None:
                                ref = got
                                continue
                            np.testing.assert_array_equal(got[1], ref[1])
                            np.testing.assert_array_equal(got[0], ref[0])
        # the unfused path (tables + ivf_adc_topk) over the same probes
        P = ivf.probes(Qn, nprobe)
        tables = _core.distance_tables_t(Qn, *pq4._table_ops, pq4._adc_metric, 1)
        for msk in (None, mask.astype(np.uint8)):
            ref = _core.ivf_adc_topk(tables, lc, ivf.offsets, P, ivf.perm, 25, msk, 1,
                                     fastscan=False)
            for codes, blocked in ((lc, False), (blk.data, True)):
                for fast in (False, True):
                    got = _core.ivf_adc_topk(tables, codes, ivf.offsets, P, ivf.perm, 25,
                                             msk, 2, fastscan=fast, blocked=blocked)
                    np.testing.assert_array_equal(got[1], ref[1])
                    np.testing.assert_array_equal(got[0], ref[0])
    # the public search takes BlockedCodes and gives the unblocked codes' results
    # without re-ranking; re-ranked, its candidates are the best by quantised sums
    for kw in ({}, {"mask": mask}):
        a = ivf.search(q, lc, pq4, k=10, nprobe=12, **kw)
        b = ivf.search(q, blk, pq4, k=10, nprobe=12, **kw)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    for msk in (None, mask):
        b = ivf.search(q, blk, pq4, k=10, nprobe=12, rerank=50, vectors=x, mask=msk)
        P = ivf.probes(Qn, 12)
        _, C = _core.ivf_adc_topk(tables, blk.data, ivf.offsets, P, ivf.perm, 50,
                                  None if msk is None else msk.view(np.uint8), 1,
                                  blocked=True, approx=True)
        D, I = _core.rerank(Qn, x.view(np.uint16), C, 10, _core.METRIC_COS, 1)
        np.testing.assert_array_equal(b[1], I)
        # (the public search normalises the query in float32: last-bit differences)
        np.testing.assert_allclose(b[0], np.where(I >= 0, D + 1.0, D), rtol=1e-6)


def quantised_sums_oracle(T, codes):
    """NumPy twin of the fast scan's integer sums: each (M, 16) table of T (the
    kernel's float32 tables) quantised to uint8 with one scale (the largest table
    range / 255), shifted by its minimum."""
    mn = T.min(axis=2, keepdims=True)
    a = ((T.max(axis=2) - T.min(axis=2)).max(axis=1) / np.float32(255)).astype(np.float32)
    q = np.clip(np.rint((T - mn) / a[:, None, None]), 0, 255).astype(np.int64)
    M = T.shape[1]
    sub = np.zeros((codes.shape[0], M), np.int64)
    sub[:, 0::2] = codes[:, :(M + 1) // 2] & 15
    sub[:, 1::2] = (codes[:, :M // 2] >> 4)
    return np.stack([qi[np.arange(M), sub].sum(axis=1) for qi in q])    # (nq, n)


@pytest.mark.parametrize("m", [96, 12, 6])
def test_approx_candidates_are_the_quantised_top(four_bit_setup, sample, m):
    """approx=True: the k candidates are the k smallest (quantised sum, id) of the
    probed rows (mask applied), the same on one and two threads, fused or not."""
    x, ivf, by_m = four_bit_setup
    pq4, lc = by_m[m]
    blk = BlockedCodes.from_rows(lc)
    q = sample[1][:5]
    Qn = normalised(q).astype(np.float32)
    T = _core.distance_tables_t(Qn, *pq4._table_ops, pq4._adc_metric, 1)
    np.testing.assert_allclose(T, R.distance_tables(Qn, pq4.codebooks, R.L2), rtol=1e-5,
                               atol=1e-6)
    sums = quantised_sums_oracle(T, lc)                     # list order
    mask = np.random.default_rng(m).random(len(x)) < 0.5
    list_of_row = np.repeat(np.arange(ivf.nlist), np.diff(ivf.offsets))
    for nprobe, kc in ((1, 10), (9, 60), (150, 200)):
        P = ivf.probes(Qn, nprobe)
        for msk in (None, mask):
            m8 = None if msk is None else msk.astype(np.uint8)
            ref = None
            for threads in (1, 2):
                D, I = _core.ivf_adc_topk(T, blk.data, ivf.offsets, P, ivf.perm, kc, m8,
                                          threads, blocked=True, approx=True)
                if ref is None:
                    ref = (D, I)
                np.testing.assert_array_equal(I, ref[1])
                np.testing.assert_array_equal(D, ref[0])
            for i in range(len(Qn)):
                keep = np.isin(list_of_row, P[i])
                if msk is not None:
                    keep &= msk[ivf.perm]
                ids, sm = ivf.perm[keep], sums[i][keep]
                o = np.lexsort((ids, sm))[:kc]
                want_i = np.full(kc, -1, np.int64)
                want_d = np.full(kc, np.inf, np.float32)
                want_i[:len(o)], want_d[:len(o)] = ids[o], sm[o]
                np.testing.assert_array_equal(I[i], want_i)
                np.testing.assert_array_equal(D[i], want_d)
            # the fused kernel (int8 coarse probes, the same as ivf.probes) re-ranks them
            Df, If = _core.ivf_search(Qn, None, ivf._cn, nprobe, *pq4._table_ops,
                                      pq4._adc_metric, blk.data, ivf.offsets, ivf.perm, kc,
                                      10, m8, x.view(np.uint16), _core.METRIC_COS, 2,
                                      blocked=True, panels8=ivf._P8, approx=True)
            Dr, Ir = _core.rerank(Qn, x.view(np.uint16), ref[1], 10, _core.METRIC_COS, 1)
            np.testing.assert_array_equal(If, Ir)
            np.testing.assert_array_equal(Df, Dr)


def test_int8_coarse_probes(ivf, sample):
    """The int8 panels pick the nearest centres up to their rounding (exact integer
    dot products: every level gives the same lists)."""
    Qn = normalised(sample[1]).astype(np.float32)
    C = ivf.centroids.astype(np.float64)
    d = (C * C).sum(1)[None, :] - 2 * Qn.astype(np.float64) @ C.T
    for nprobe in (1, 8, 40, ivf.nlist):
        P = _core.coarse_probes_i8(Qn, *ivf._P8, ivf._cn, nprobe, 2)
        np.testing.assert_array_equal(P, _core.coarse_probes_i8(Qn, *ivf._P8, ivf._cn, nprobe, 1))
        assert P.shape == (len(Qn), nprobe)
        exact = np.argsort(d, axis=1, kind="stable")[:, :nprobe]
        same = np.mean([len(set(a) & set(b)) / nprobe for a, b in zip(P.tolist(), exact.tolist())])
        assert same > 0.97
        # whatever is picked is within int8 rounding of the nprobe-th distance
        kth = np.sort(d, axis=1)[:, nprobe - 1]
        assert (np.take_along_axis(d, P, 1) <= kth[:, None] + 0.02).all()
        assert (np.sort(P, 1)[:, 1:] != np.sort(P, 1)[:, :-1]).all()


def test_blocked_codes_errors(four_bit_setup, pq, sample):
    x, ivf, by_m = four_bit_setup
    pq4, lc = by_m[96]
    blk = ivf.list_order(pq4.encode(x), blocked=True)
    assert isinstance(blk, BlockedCodes) and blk.shape == lc.shape
    np.testing.assert_array_equal(blk.rows(), lc)
    q = sample[1][:2]
    with pytest.raises(DimensionError):            # 8-bit quantizer, 4-bit blocked codes
        ivf.search(q, blk, pq)
    with pytest.raises(DimensionError):            # another width
        ivf.search(q, blk, by_m[12][0])
    with pytest.raises(DimensionError):
        BlockedCodes(blk.data[:-16], blk.n, blk.width)
    with pytest.raises(DimensionError):
        BlockedCodes(blk.data.astype(np.int16), blk.n, blk.width)
    # the kernel checks the blocked shape against the ids itself
    tables = np.zeros((1, 96, 16), np.float32)
    P = np.zeros((1, 1), np.int64)
    with pytest.raises(ValueError):
        _core.ivf_adc_topk(tables, blk.data[:-16], ivf.offsets, P, ivf.perm, 5, blocked=True)
    with pytest.raises(ValueError):
        _core.ivf_adc_topk(np.zeros((1, 48, 256), np.float32), blk.data, ivf.offsets, P,
                           ivf.perm, 5, blocked=True)


@pytest.mark.parametrize("nq", [1, 7, 40])       # 40 queries: the BLAS coarse path
def test_partial_probe_equals_oracle(ivf, pq, codes, sample, nq):
    rng = np.random.default_rng(nq)
    q = np.vstack([sample[1], sample[1][:nq] + 0.01 * rng.standard_normal((nq, 384))])[:nq]
    q = q.astype(np.float32)
    lc = ivf.list_order(codes)
    lab = ivf.assign(sample[0])
    nprobe = 9
    Qn = normalised(q).astype(np.float32)
    P = ivf.probes(Qn, nprobe)
    assert P.shape == (nq, nprobe)
    # the probes are the nearest lists (up to float16 rounding of near-ties)
    C = ivf.centroids.astype(np.float64)
    cd = (C * C).sum(1)[None, :] - 2 * normalised(q) @ C.T
    kth = np.sort(cd, axis=1)[:, nprobe - 1]
    assert (np.take_along_axis(cd, P, 1) <= kth[:, None] + 2e-3).all()
    assert all(len(set(row)) == nprobe for row in P.tolist())
    D, I = ivf.search(q, lc, pq, k=15, nprobe=nprobe, threads=1)
    Do, Io = oracle_scan(pq, q, codes, P, lab, 15)
    np.testing.assert_array_equal(I, Io)
    np.testing.assert_allclose(D, 0.5 * Do, rtol=1e-4, atol=1e-5)


def test_threads_do_not_change_results(ivf, pq, codes, sample):
    lc = ivf.list_order(codes)
    base16 = sample[0]
    for q in (sample[1][:1], sample[1][:3], np.vstack([sample[1]] * 2)):
        for kw in ({}, {"rerank": 40, "vectors": base16}):
            a = ivf.search(q, lc, pq, k=10, nprobe=20, threads=1, **kw)
            b = ivf.search(q, lc, pq, k=10, nprobe=20, threads=2, **kw)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_mask_honoured_inside_scan(ivf, pq, codes, sample):
    rng = np.random.default_rng(1)
    mask = rng.random(len(sample[0])) < 0.3
    q = sample[1][:6]
    lc = ivf.list_order(codes)
    lab = ivf.assign(sample[0])
    P = ivf.probes(normalised(q).astype(np.float32), 12)
    D, I = ivf.search(q, lc, pq, k=20, nprobe=12, mask=mask, threads=1)
    assert mask[I[I >= 0]].all()
    Do, Io = oracle_scan(pq, q, codes, P, lab, 20, mask=mask)
    np.testing.assert_array_equal(I, Io)
    # uint8 masks and re-ranking too
    D2, I2 = ivf.search(q, lc, pq, k=5, nprobe=12, mask=mask.astype(np.uint8),
                        rerank=30, vectors=sample[0])
    assert mask[I2[I2 >= 0]].all()
    # nothing allowed: all padding
    D3, I3 = ivf.search(q, lc, pq, k=5, nprobe=12, mask=np.zeros(len(mask), bool))
    assert (I3 == -1).all() and np.isinf(D3).all()


def test_rerank_equals_exact_rerank_of_candidates(ivf, pq, codes, sample):
    q = sample[1][:5]
    lc = ivf.list_order(codes)
    _, cand = ivf.search(q, lc, pq, k=40, nprobe=16)
    D, I = ivf.search(q, lc, pq, k=10, nprobe=16, rerank=40, vectors=sample[0])
    Dr, Ir = R.rerank(normalised(q).astype(np.float32), sample[0].astype(np.float32), cand,
                      10, R.COS)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr + 1.0, rtol=1e-4, atol=1e-4)
    # float32 vectors give the same ranking
    D32, I32 = ivf.search(q, lc, pq, k=10, nprobe=16, rerank=40,
                          vectors=sample[0].astype(np.float32))
    np.testing.assert_array_equal(I, I32)


def test_recall_on_real_sample(ivf, pq, codes, sample):
    base16, queries, gt = sample
    lc = ivf.list_order(codes)
    # measured: nprobe 40 of 125 lists re-ranking 100 candidates gives 0.952, all
    # lists 1.0, ADC alone 0.708
    _, I = ivf.search(queries, lc, pq, k=10, nprobe=40, rerank=100, vectors=base16)
    recall = np.mean([len(set(a) & set(b[:10])) / 10 for a, b in zip(I, gt)])
    assert recall >= 0.93, recall
    _, I = ivf.search(queries, lc, pq, k=10, nprobe=ivf.nlist, rerank=100, vectors=base16)
    assert np.mean([len(set(a) & set(b[:10])) / 10 for a, b in zip(I, gt)]) >= 0.99
    _, Ia = ivf.search(queries, lc, pq, k=10, nprobe=40)          # ADC only: lower
    recall_adc = np.mean([len(set(a) & set(b[:10])) / 10 for a, b in zip(Ia, gt)])
    assert recall_adc < recall


def test_single_query_shapes(ivf, pq, codes, sample):
    lc = ivf.list_order(codes)
    D1, I1 = ivf.search(sample[1][0], lc, pq, k=3, nprobe=5)
    D2, I2 = ivf.search(sample[1][:1], lc, pq, k=3, nprobe=5)
    assert I1.shape == (1, 3) and I1.dtype == np.int64 and D1.dtype == np.float32
    np.testing.assert_array_equal(I1, I2)
    D3, I3 = ivf.search(sample[1][0].astype(np.float16), lc, pq, k=3, nprobe=5)
    np.testing.assert_array_equal(I1, I3)


def test_padding_when_few_rows(sample, pq):
    x = sample[0][:64]
    ivf = IVFIndex(384, nlist=4, metric="cosine").fit(x, iters=2)
    ivf.build(ivf.assign(x))
    D, I = ivf.search(sample[1][:2], ivf.list_order(pq.encode(x)), pq, k=80, nprobe=1)
    assert (I[:, -1] == -1).all() and np.isinf(D[:, -1]).all()
    assert ((I >= 0).sum(1) == [np.diff(ivf.offsets)[p].sum() for p in
                                ivf.probes(normalised(sample[1][:2]).astype(np.float32), 1)[:, 0]]).all()


def test_l2_and_ip_metrics(sample):
    rng = np.random.default_rng(0)
    x = (sample[0].astype(np.float32) * rng.uniform(0.5, 2, (len(sample[0]), 1))).astype(np.float32)
    for metric in ("l2", "ip"):
        pq = ProductQuantizer(384, 24, metric=metric).fit(x, iters=2)
        ivf = IVFIndex(384, nlist=20, metric=metric).fit(x, iters=3)
        ivf.build(ivf.assign(x))
        c = pq.encode(x)
        D, I = ivf.search(sample[1][:4], ivf.list_order(c), pq, k=10, nprobe=20)
        Df, If = pq.search(sample[1][:4], c, k=10)
        np.testing.assert_array_equal(I, If)
        D, I = ivf.search(sample[1][:4], ivf.list_order(c), pq, k=5, nprobe=20, rerank=200,
                          vectors=x)
        gt = exact_topk(sample[1][:4], x, 5, metric)
        assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(I, gt)]) >= 0.8


# ------------------------------------------------------------------- add/append

def test_add_equals_build(sample, pq, codes):
    x = sample[0]
    ivf = IVFIndex(384, nlist=30, metric="cosine", seed=2).fit(x, iters=3)
    lab = ivf.assign(x)
    full = IVFIndex.from_dict(ivf.to_dict()).build(lab)
    inc = IVFIndex.from_dict(ivf.to_dict()).build(lab[:1200])
    lc = inc.list_order(codes[:1200])
    src = inc.add(lab[1200:1700])
    lc = inc.extend_codes(lc, codes[1200:1700], src)
    src = inc.add(lab[1700:])
    lc = inc.extend_codes(lc, codes[1700:], src)
    np.testing.assert_array_equal(inc.perm, full.perm)
    np.testing.assert_array_equal(inc.offsets, full.offsets)
    np.testing.assert_array_equal(lc, full.list_order(codes))
    # add() on an index without lists starts them
    empty = IVFIndex.from_dict(ivf.to_dict())
    empty.add(lab)
    np.testing.assert_array_equal(empty.perm, full.perm)


# ---------------------------------------------------------------- persistence

def test_round_trip(ivf, pq, codes, sample):
    blob = msgpack.packb(ivf.to_dict(), use_bin_type=True)
    back = IVFIndex.from_dict(msgpack.unpackb(blob, raw=False))
    np.testing.assert_array_equal(back.centroids, ivf.centroids)
    np.testing.assert_array_equal(back.perm, ivf.perm)
    lc = ivf.list_order(codes)
    a = ivf.search(sample[1], lc, pq, k=10, nprobe=8, rerank=50, vectors=sample[0])
    b = back.search(sample[1], lc, pq, k=10, nprobe=8, rerank=50, vectors=sample[0])
    np.testing.assert_array_equal(a[1], b[1])
    # without the lists: centres only; set_lists installs them
    c = IVFIndex.from_dict(ivf.to_dict(lists=False))
    assert c.perm is None and c.is_trained
    c.set_lists(ivf.perm.copy(), ivf.offsets.copy())
    np.testing.assert_array_equal(c.search(sample[1], lc, pq, k=10, nprobe=8)[1],
                                  ivf.search(sample[1], lc, pq, k=10, nprobe=8)[1])
    u = IVFIndex.from_dict(IVFIndex(384, metric="l2").to_dict())
    assert not u.is_trained and u.metric == "l2"


def _damaged(d, key, fn):
    d = dict(d)
    d[key] = fn(d[key])
    return d


@pytest.mark.parametrize("damage", [
    lambda d: _damaged(d, "centroids", lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:]),
    lambda d: _damaged(d, "centroids", lambda b: b[:-4]),
    lambda d: _damaged(d, "perm", lambda b: b[:16] + bytes([b[16] ^ 4]) + b[17:]),
    lambda d: _damaged(d, "offsets", lambda b: b[:-8]),
    lambda d: _damaged(d, "format", lambda v: "sutradb-pq"),
    lambda d: _damaged(d, "version", lambda v: 99),
    lambda d: _damaged(d, "dim", lambda v: "x"),
    lambda d: _damaged(d, "metric", lambda v: "hamming"),
    lambda d: {k: v for k, v in d.items() if k != "centroids"},
    lambda d: _damaged(d, "centroids", lambda b: "not bytes"),
    "not a dict",
])
def test_damaged_dict_is_corrupt(ivf, damage):
    d = damage if isinstance(damage, str) else damage(ivf.to_dict())
    with pytest.raises(CorruptDatabaseError):
        IVFIndex.from_dict(d, source="test")


def test_damaged_lists_with_valid_crc(ivf):
    import zlib
    d = ivf.to_dict()
    perm = np.frombuffer(d["perm"], "<i8").copy()
    perm[1] = perm[0]                                        # duplicate id
    d["perm"] = perm.tobytes()
    d["perm_crc32"] = zlib.crc32(d["perm"])
    with pytest.raises(CorruptDatabaseError):
        IVFIndex.from_dict(d)
    d = ivf.to_dict()
    off = np.frombuffer(d["offsets"], "<i8").copy()
    off[3], off[4] = off[4] + 1, off[3]                       # decreasing
    d["offsets"] = off.tobytes()
    d["offsets_crc32"] = zlib.crc32(d["offsets"])
    with pytest.raises(CorruptDatabaseError):
        IVFIndex.from_dict(d)


# ---------------------------------------------------------------------- errors

def test_errors(ivf, pq, codes, sample):
    lc = ivf.list_order(codes)
    q = sample[1][:2]
    with pytest.raises(NotTrainedError):
        IVFIndex(384).assign(sample[0])
    with pytest.raises(NotTrainedError):
        IVFIndex.from_dict(ivf.to_dict(lists=False)).search(q, lc, pq)
    with pytest.raises(InvalidArgumentError):
        IVFIndex(384, metric="hamming")
    with pytest.raises(InvalidArgumentError):
        IVFIndex(384, nlist=0)
    with pytest.raises(InvalidArgumentError):
        IVFIndex(384, nlist=5000).fit(sample[0])           # fewer rows than lists
    with pytest.raises(DimensionError):
        ivf.assign(sample[0][:, :100])
    with pytest.raises(DimensionError):
        ivf.search(q, lc[:100], pq)
    with pytest.raises(DimensionError):
        ivf.search(q[:, :10], lc, pq)
    with pytest.raises(InvalidArgumentError):
        ivf.search(q, lc, pq, nprobe=0)
    with pytest.raises(InvalidArgumentError):
        ivf.search(q, lc, pq, k=0)
    with pytest.raises(InvalidArgumentError):
        ivf.search(q, lc, pq, rerank=-1, vectors=sample[0])
    with pytest.raises(InvalidArgumentError):
        ivf.search(np.full((1, 384), np.nan, np.float32), lc, pq)
    with pytest.raises(InvalidArgumentError):
        ivf.search(q, lc, ProductQuantizer(384, 48, metric="l2").fit(sample[0][:300], iters=1))
    with pytest.raises(InvalidArgumentError):
        ivf.search(q, lc, pq, vectors=sample[0].astype(np.int8))
    with pytest.raises(InvalidArgumentError):
        ivf.build(np.array([0, ivf.nlist]))
    # the kernel's own memory-safety checks
    tables = np.zeros((1, 48, 256), np.float32)
    off = ivf.offsets.copy()
    off[5] = off[6] + 1
    with pytest.raises(ValueError):
        _core.ivf_adc_topk(tables, lc, off, np.zeros((1, 1), np.int64), ivf.perm, 5)
    with pytest.raises(ValueError):
        _core.ivf_adc_topk(tables, lc, ivf.offsets, np.full((1, 1), ivf.nlist, np.int64),
                           ivf.perm, 5)


# ----------------------------------------------------------------------- tune

def test_tune_reaches_target(ivf, pq, codes, sample):
    base16, queries, gt = sample
    lc = ivf.list_order(codes)
    res = tune(ivf, pq, queries, lc, base16, k=10, target_recall=0.9,
               nprobes=(4, 8, 16, 32, 64), reranks=(20, 100))
    assert res["reached"] and res["recall"] >= 0.9
    assert res["qps"] > 0 and {"nprobe", "rerank"} <= set(res)
    # the brute-force ground truth agrees with the shipped one
    mine = exact_topk(queries, base16, 10, "cosine")
    assert np.mean([len(set(a) & set(b[:10])) / 10 for a, b in zip(mine, gt)]) >= 0.98
    impossible = tune(ivf, pq, queries[:5], lc, base16, k=10, target_recall=1.0,
                      nprobes=(1,), reranks=(10,))
    assert not impossible["reached"]
