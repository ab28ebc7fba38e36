"""The public ProductQuantizer: contract, errors, determinism, persistence, quality."""

import numpy as np
import pytest

import sutradb
# every test here runs once per SIMD level this CPU supports (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("kernel_level")

from sutradb import ProductQuantizer, _reference as R
from sutradb.errors import (CorruptDatabaseError, DimensionError, InvalidArgumentError,
                            NotTrainedError, SutraError)


def clustered(n, dim, seed=0, centers=40):
    """Gaussian blobs: a PQ-friendly, non-trivial dataset."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32) * 3
    return (c[rng.integers(0, centers, n)] + rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered(3000, 32, seed=1)


@pytest.fixture(scope="module")
def trained(data):
    return ProductQuantizer(32, 8, nbits=8, metric="l2", seed=3).fit(data, iters=8)


def test_contract_shapes_and_types(trained, data):
    codes = trained.encode(data)
    assert codes.shape == (3000, 8) and codes.dtype == np.uint8
    x_hat = trained.decode(codes)
    assert x_hat.shape == (3000, 32) and x_hat.dtype == np.float32
    D, I = trained.search(data[:5], codes, k=7)
    assert D.shape == I.shape == (5, 7)
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert (np.diff(D, axis=1) >= 0).all()
    assert trained.codebooks.shape == (8, 256, 4)


def test_search_equals_oracle_adc(trained, data):
    codes = trained.encode(data)
    Q = data[:4] + 0.1
    D, I = trained.search(Q, codes, k=10, threads=1)
    tables = R.distance_tables(Q, trained.codebooks, R.L2)
    full = R.adc_distances(tables, codes)
    Dr, _ = R.topk(full, 10)
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-3)


def test_single_query_1d(trained, data):
    codes = trained.encode(data)
    D1, I1 = trained.search(data[0], codes, k=3)
    D2, I2 = trained.search(data[:1], codes, k=3)
    np.testing.assert_array_equal(I1, I2)


def test_padding_when_fewer_rows_than_k(trained, data):
    codes = trained.encode(data[:3])
    D, I = trained.search(data[:2], codes, k=5)
    assert (I[:, 3:] == -1).all() and np.isinf(D[:, 3:]).all()
    assert sorted(I[0, :3].tolist()) == [0, 1, 2]


def test_mask_excludes_rows(trained, data):
    codes = trained.encode(data)
    mask = np.zeros(len(codes), bool)
    mask[::3] = True
    D, I = trained.search(data[:6], codes, k=10, mask=mask)
    assert (I % 3 == 0).all()
    D_all, I_all = trained.search(data[:6], codes[::3], k=10)
    np.testing.assert_array_equal(I, I_all * 3)


@pytest.mark.parametrize("nbits", [4, 8])
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_recall_on_clustered_data(nbits, metric):
    x = clustered(4000, 32, seed=7)
    q = clustered(50, 32, seed=8)
    pq = ProductQuantizer(32, 16, nbits=nbits, metric=metric, seed=0).fit(x, iters=10)
    codes = pq.encode(x)
    assert codes.shape[1] == (16 if nbits == 8 else 8)
    D, I = pq.search(q, codes, k=10)
    xx = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    exact = R.exact_distances(qq, xx, R.L2 if metric == "l2" else R.IP)
    gt = np.argsort(exact, axis=1)[:, :10]
    recall = np.mean([len(set(I[i]) & set(gt[i])) / 10 for i in range(len(q))])
    # a quantizer that learned nothing scores ~0.003 here; PQ on blobs scores far above
    assert recall > (0.5 if nbits == 8 else 0.3), recall
    # re-ranking enough ADC candidates exactly recovers the true neighbours
    _, Ic = pq.search(q, codes, k=100 if nbits == 8 else 400)
    D2, I2 = pq.rerank(q, x, Ic, k=10)
    recall2 = np.mean([len(set(I2[i]) & set(gt[i])) / 10 for i in range(len(q))])
    assert recall2 > 0.9, recall2


def test_cosine_adc_distances_are_half_squared_l2_to_the_reconstruction():
    x = clustered(1000, 16, seed=2)
    pq = ProductQuantizer(16, 4, metric="cosine", seed=0).fit(x, iters=5)
    codes = pq.encode(x)
    q = x[:3]
    D, I = pq.search(q, codes, k=5)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rec = pq.decode(codes)
    for i in range(3):
        # ||q - x_hat||^2 / 2 (= 1 - cos(q, x_hat) when x_hat has unit norm)
        np.testing.assert_allclose(D[i], 0.5 * ((rec[I[i]] - qn[i]) ** 2).sum(1), atol=1e-4)
    # exact re-ranking reports the true cosine distance
    Dr, Ir = pq.rerank(q, x, I, k=5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(3):
        np.testing.assert_allclose(Dr[i], 1 - xn[Ir[i]] @ qn[i], atol=1e-5)


def test_rerank_float16_vectors(trained, data):
    codes = trained.encode(data)
    _, cand = trained.search(data[:3], codes, k=50)
    D32, I32 = trained.rerank(data[:3], data, cand, k=5)
    D16, I16 = trained.rerank(data[:3], data.astype(np.float16), cand, k=5)
    assert (I16[:, 0] == np.arange(3)).all() and (I32[:, 0] == np.arange(3)).all()


def test_sdc_is_distance_between_reconstructions(trained, data):
    codes = trained.encode(data[:20])
    d = trained.sdc(codes[:10], codes[10:])
    rec = trained.decode(codes)
    np.testing.assert_allclose(d, ((rec[:10] - rec[10:]) ** 2).sum(1), rtol=1e-4, atol=1e-3)


def test_same_seed_bit_identical_whatever_the_threads(data):
    a = ProductQuantizer(32, 8, seed=11).fit(data, iters=6, threads=1)
    b = ProductQuantizer(32, 8, seed=11).fit(data, iters=6, threads=2)
    c = ProductQuantizer(32, 8, seed=12).fit(data, iters=6, threads=1)
    assert a.codebooks.tobytes() == b.codebooks.tobytes()
    assert a.codebooks.tobytes() != c.codebooks.tobytes()
    np.testing.assert_array_equal(a.encode(data, threads=1), b.encode(data, threads=2))


@pytest.mark.parametrize("nbits", [8, 4])
def test_training_split_by_subspace_equals_one_fit(data, nbits):
    whole = ProductQuantizer(32, 8, nbits, seed=7).fit(data, max_train=1500, iters=4, threads=2)
    q = ProductQuantizer(32, 8, nbits, seed=7)
    kw = dict(max_train=1500, iters=4)
    parts = [q.fit_subspaces(data, 5, 8, threads=1, **kw), q.fit_subspaces(data, 0, 2, **kw),
             q.fit_subspaces(data, 2, 5, threads=2, **kw)]
    assert not q.is_trained                     # parts leave the quantizer as it was
    q.set_trained(parts)
    assert q.codebooks.tobytes() == whole.codebooks.tobytes()
    assert q.training_error_ == whole.training_error_ and q.fit_params_ == whole.fit_params_
    assert q.to_dict() == whole.to_dict()
    # parts that do not cover the subspaces once each, or that differ in training
    for bad in ([parts[0], parts[1]], [parts[1], parts[1], parts[2], parts[0]], []):
        with pytest.raises(InvalidArgumentError):
            ProductQuantizer(32, 8, nbits, seed=7).set_trained(bad)
    other = q.fit_subspaces(data, 0, 2, max_train=1000, iters=4)
    with pytest.raises(InvalidArgumentError):
        ProductQuantizer(32, 8, nbits, seed=7).set_trained([other, parts[2], parts[0]])
    for lo, hi in ((0, 0), (3, 2), (0, 9), (-1, 2)):
        with pytest.raises(InvalidArgumentError):
            q.fit_subspaces(data, lo, hi)


def test_max_train_samples_with_the_seed(data):
    a = ProductQuantizer(32, 8, seed=5).fit(data, max_train=1000, iters=3)
    b = ProductQuantizer(32, 8, seed=5).fit(data, max_train=1000, iters=3)
    assert a.fit_params_["n_train"] == 1000
    assert a.codebooks.tobytes() == b.codebooks.tobytes()


def test_progress_callback(data):
    seen = []
    ProductQuantizer(32, 4, seed=0).fit(data, iters=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_fit_reads_float16_memmap(tmp_path, data):
    path = tmp_path / "x.f16"
    data.astype(np.float16).tofile(path)
    mm = np.memmap(path, dtype=np.float16, mode="r", shape=data.shape)
    pq = ProductQuantizer(32, 8, seed=0).fit(mm, iters=2)
    assert pq.encode(mm).shape == (3000, 8)


def test_large_encode_is_batched_and_equal(trained):
    x = clustered(70_000, 32, seed=9)        # > one batch of 65,536 rows
    whole = trained.encode(x)
    parts = np.concatenate([trained.encode(x[:40_000]), trained.encode(x[40_000:])])
    np.testing.assert_array_equal(whole, parts)


def test_save_load_roundtrip(tmp_path, trained, data):
    path = tmp_path / "pq.msgpack"
    trained.save(path)
    loaded = ProductQuantizer.load(path)
    assert loaded.codebooks.tobytes() == trained.codebooks.tobytes()
    assert (loaded.dim, loaded.m, loaded.nbits, loaded.metric, loaded.seed) == (32, 8, 8, "l2", 3)
    np.testing.assert_array_equal(loaded.encode(data[:50]), trained.encode(data[:50]))
    assert b"pickle" not in path.read_bytes()


def test_damaged_file_raises_corrupt(tmp_path, trained):
    path = tmp_path / "pq.msgpack"
    trained.save(path)
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    trials = 0
    for pos in rng.choice(len(raw), size=60, replace=False):
        bad = bytearray(raw)
        bad[pos] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            pq = ProductQuantizer.load(path)
        except CorruptDatabaseError:
            trials += 1
            continue
        # a flip that leaves a valid file must leave the same codebooks (e.g. a
        # flip inside training_error, which the checksum does not cover)
        assert pq.codebooks.tobytes() == trained.codebooks.tobytes()
    for cut in (0, 1, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(bytes(raw[:cut]))
        with pytest.raises(CorruptDatabaseError):
            ProductQuantizer.load(path)
    assert trials > 40


def test_errors_are_clear(trained, data):
    with pytest.raises(DimensionError):
        ProductQuantizer(30, 7)
    with pytest.raises(ValueError):             # DimensionError is a ValueError
        ProductQuantizer(30, 7)
    with pytest.raises(InvalidArgumentError):
        ProductQuantizer(32, 8, nbits=6)
    with pytest.raises(InvalidArgumentError):
        ProductQuantizer(32, 8, metric="hamming")
    pq = ProductQuantizer(32, 8)
    with pytest.raises(NotTrainedError):
        pq.encode(data)
    with pytest.raises(NotTrainedError):
        pq.search(data[:1], np.zeros((1, 8), np.uint8))
    with pytest.raises(InvalidArgumentError):
        pq.fit(data[:10])                        # fewer rows than Ks
    with pytest.raises(InvalidArgumentError):
        pq.fit(np.zeros((0, 32), np.float32))
    bad = data[:300].copy()
    bad[5, 3] = np.nan
    with pytest.raises(InvalidArgumentError):
        pq.fit(bad)
    bad[5, 3] = np.inf
    with pytest.raises(InvalidArgumentError):
        trained.encode(bad)
    with pytest.raises(DimensionError):
        trained.encode(data[:, :16])
    codes = trained.encode(data[:100])
    with pytest.raises(InvalidArgumentError):
        trained.search(data[:1], codes, k=0)
    with pytest.raises(DimensionError):
        trained.search(data[:1], codes[:, :4])
    with pytest.raises(InvalidArgumentError):
        trained.search(data[:1], codes.astype(np.int32))
    with pytest.raises(DimensionError):
        trained.search(data[:1], codes, mask=np.ones(5, bool))
    with pytest.raises(InvalidArgumentError):
        trained.search(data[:1], codes, threads=0)
    with pytest.raises(InvalidArgumentError):
        trained.search([["a"] * 32], codes)
    with pytest.raises(InvalidArgumentError):
        trained.rerank(data[:1], data[:100], np.array([[1000]]))
    with pytest.raises(DimensionError):
        trained.decode(np.zeros((2, 3), np.uint8))
    for exc in (DimensionError, InvalidArgumentError, NotTrainedError, CorruptDatabaseError):
        assert issubclass(exc, SutraError)


def test_public_names():
    assert sutradb.ProductQuantizer is ProductQuantizer
    assert isinstance(sutradb.__version__, str)
    assert "untrained" in repr(ProductQuantizer(8, 2))
