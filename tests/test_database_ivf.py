"""IVF lists inside the Database: the automatic lifecycle (exact -> PQ -> IVF), the
tail of rows added since the lists were laid out, folding, compaction (rows
renumbered under the lists), persistence, readers, tuning, drift, damage."""

from pathlib import Path

import numpy as np
import pytest

import sutradb
from sutradb import errors
from sutradb.index.ivf import BlockedCodes, exact_topk
from sutradb.index.vector import code_rows, default_pq_shape

SAMPLE = Path(sutradb.__file__).parent / "data" / "pypi-sample"


@pytest.fixture(scope="module")
def real():
    """2,000 real MiniLM vectors + 50 real queries (shipped with sutradb), and 6,000
    more vectors around them (a real vector + Gaussian noise, re-normalised), so the
    lists have some rows to partition."""
    X = np.load(SAMPLE / "base.f16.npy").astype(np.float32)
    Q = np.load(SAMPLE / "queries.f16.npy").astype(np.float32)
    rng = np.random.default_rng(7)
    extra = X[rng.integers(0, len(X), 6000)] + rng.normal(0, 0.03, (6000, X.shape[1])).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([X, extra]).astype(np.float32), Q


#: smaller quantizers than the default (16 bytes per vector instead of 48) keep
#: training fast in tests: the default 4-bit codes (blocked lists, fast scan) and 8-bit
#: codes (what databases made before 4-bit became the default hold)
@pytest.fixture(scope="module", params=[{"pq_m": 32}, {"pq_m": 16, "pq_nbits": 8}],
                ids=["4bit", "8bit"])
def fast(request):
    return dict(request.param, train_iters=6)


def recall(db, Q, k=10, **kw):
    _, Ie = db.search_vectors(Q, k, exact=True)
    _, I = db.search_vectors(Q, k, **kw)
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(I, Ie)])


def lists_consistent(db):
    """Every live row below `covered` is in exactly one list, with its own codes."""
    part = db._index.ivf
    s = db._store
    perm = part.ivf.perm
    assert len(np.unique(perm)) == len(perm)
    inl = np.zeros(part.covered, bool)
    inl[perm] = True
    assert not (s.live[:part.covered] & ~inl).any()
    np.testing.assert_array_equal(code_rows(part.codes), s.codes[perm])


def test_auto_moves_exact_pq_ivf(fast, real, tmp_path):
    X, Q = real
    p = str(tmp_path / "db")
    with sutradb.open(p, dim=384, **fast, index_threshold=1000, ivf_threshold=4000) as db:
        db.add_vectors(X[:900])
        assert db.index_info["kind"] == "flat"
        db.add_vectors(X[900:3000])
        assert db.index_info["kind"] == "pq"
        db.add_vectors(X[3000:5000])
        info = db.index_info
        assert info["kind"] == "ivf"
        assert info["list_rows"] == 5000 and info["tail_rows"] == 0
        assert 1 <= info["nprobe"] <= info["nlist"]
        assert info["tuned"]["recall"] >= 0.95 and info["tuned"]["queries"] == 200
        assert recall(db, Q) >= 0.9
        # every list probed: the re-ranked candidates of all lists, near-exact
        assert recall(db, Q, nprobe=info["nlist"]) >= 0.97
        lists_consistent(db)
        # 4-bit lists are stored blocked for the fast scan, 8-bit ones as rows
        assert isinstance(db._index.ivf.codes, BlockedCodes) == (info["nbits"] == 4)
        assert info["nbits"] == fast.get("pq_nbits", 4)
    with sutradb.open(p, "r") as db:
        assert db.index_info["kind"] == "ivf" and db.verify()["index"] == "ivf"
        assert recall(db, Q) >= 0.9


def test_tail_fold_and_single_query_paths(fast, real):
    X, Q = real
    db = sutradb.open(":memory:", dim=384, **fast, index="ivf", index_threshold=3000)
    db.add_vectors(X[:5000])
    info = db.index_info
    assert info["kind"] == "ivf" and info["tail_rows"] == 0
    # rows added later are found before any fold (the tail is scanned flat)
    new = db.add_vectors(X[5000:5100])
    assert db.index_info["tail_rows"] == 100
    for i in (0, 57, 99):
        D, I = db.search_vectors(X[5000 + i], k=1)
        assert I[0, 0] == new[i] and D[0, 0] == pytest.approx(0, abs=1e-3)
    # one query at a time gives what the batch gives (fused kernel vs batch path)
    D, I = db.search_vectors(Q[:8], k=10)
    for j in range(8):
        d1, i1 = db.search_vectors(Q[j], k=10)
        np.testing.assert_array_equal(i1[0], I[j])
        np.testing.assert_allclose(d1[0], D[j], rtol=1e-5, atol=1e-6)
    # results are sorted, and distances are exact after re-ranking
    assert (np.diff(D, axis=1) >= 0).all()
    V = db._store.vectors.astype(np.float32)
    rows = db._store.rows_of(I[0])
    np.testing.assert_allclose(D[0], 1 - V[rows] @ (Q[0] / np.linalg.norm(Q[0])), atol=2e-3)
    # ADC distances only, still sorted
    D0, I0 = db.search_vectors(Q[:8], k=10, rerank=0)
    assert (I0 >= 0).all() and (np.diff(D0, axis=1) >= 0).all()
    # past 1/16 of the lists' rows (and 4096 rows) the tail is folded into the lists
    db.add_vectors(X[5100:8000])
    assert db.index_info["tail_rows"] == 3000         # below the fold size
    db.add_vectors(X[:1200])
    info = db.index_info
    assert info["tail_rows"] == 0 and info["list_rows"] == 9200
    assert info["coarse_drift"] is not None and info["drift"] is not None
    lists_consistent(db)
    assert recall(db, Q) >= 0.9
    with pytest.raises(errors.InvalidArgumentError):
        db.search_vectors(Q[0], nprobe=0)
    with pytest.raises(errors.InvalidArgumentError):
        db.search_vectors(Q[0], nprobe=1.5)


def test_where_and_deletes_inside_the_lists(fast, real):
    X, Q = real
    db = sutradb.open(":memory:", dim=384, **fast, index="ivf", index_threshold=2000)
    tags = [{"half": i % 2} for i in range(4000)]
    ids = db.add_vectors(X[:4000], metadata=tags)
    assert db.index_info["kind"] == "ivf"
    D, I = db.search_vectors(Q, k=10, where={"half": 1})
    assert (I >= 0).all() and (I % 2 == 1).all()
    db.delete(ids[:2000].tolist())
    D, I = db.search_vectors(Q, k=10, nprobe=db.index_info["nlist"])
    assert (I >= 2000).all()
    # the exact neighbours among what is left
    gt = exact_topk(Q, db._store.vectors, 10, "cosine", mask=db._store.live)
    got = db._store.rows_of(I.ravel()).reshape(I.shape)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), gt.tolist())]) >= 0.98


def test_compaction_renumbers_the_lists(fast, real, tmp_path):
    X, Q = real
    p = str(tmp_path / "db")
    db = sutradb.open(p, dim=384, **fast, index="ivf", index_threshold=3000)
    db.add_vectors(X[:6000])
    assert db.index_info["list_rows"] == 6000          # upkeep on first use: the lists
    db.add_vectors(X[6000:6500])                       # a tail
    before = recall(db, Q)
    db.delete(list(range(0, 6000, 2)))
    db.compact()
    info = db.index_info
    assert db._store.n_rows == 3500
    assert info["list_rows"] == 3000 and info["tail_rows"] == 500
    lists_consistent(db)
    assert recall(db, Q) >= 0.9 and before >= 0.9
    # compaction the storage engine starts by itself inside a commit
    db._store._checkpoint_bytes = 1
    db._store._compact_min_rows = 1
    db.delete(list(range(1, 4000, 2)))
    assert db._store.n_rows < 3500
    lists_consistent(db)
    assert recall(db, Q) >= 0.9
    assert db.verify()["index"] == "ivf"
    db.close()
    with sutradb.open(p) as db:
        lists_consistent(db)
        assert recall(db, Q) >= 0.9


def test_reader_refresh_sees_new_lists(fast, real, tmp_path):
    X, Q = real
    p = str(tmp_path / "db")
    w = sutradb.open(p, dim=384, **fast, index_threshold=1000, ivf_threshold=3000)
    w.add_vectors(X[:2000])
    r = sutradb.open(p, "r")
    assert r.index_info["kind"] == "flat"      # the writer trains on first use, not in the commit
    assert w.index_info["kind"] == "pq"        # (its first search or index_info)
    assert r.refresh() and r.index_info["kind"] == "pq"
    w.add_vectors(X[2000:4000])
    assert w.index_info["kind"] == "ivf"
    assert r.refresh() and r.index_info["kind"] == "ivf"
    assert recall(r, Q) >= 0.9
    w.close()
    r.close()


def test_build_index_kinds_and_sticky_options(fast, real, tmp_path):
    X, Q = real
    p = str(tmp_path / "db")
    with sutradb.open(p, dim=384, **fast, index_threshold=1000, ivf_threshold=0) as db:
        db.add_vectors(X[:4000])
        assert db.index_info["kind"] == "pq"           # ivf_threshold=0: never by itself
        codes = db._store.codes.copy()
        db.build_index(kind="ivf", nlist=40)
        info = db.index_info
        assert info["kind"] == "ivf" and info["nlist"] == 40
        np.testing.assert_array_equal(db._store.codes, codes)   # lists only: no re-encoding
        db.build_index(m=24)                            # retrain: lists kept, new codes
        assert db.index_info["kind"] == "ivf" and db.index_info["m"] == 24
        assert db.index_info["nlist"] == 40              # nlist given once is kept
        lists_consistent(db)
        db.build_index(kind="pq")
        assert db.index_info["kind"] == "pq"
        db.add_vectors(X[4000:8000])
        assert db.index_info["kind"] == "pq"             # kind given once is kept
        with pytest.raises(errors.InvalidArgumentError):
            db.build_index(kind="hnsw")
        with pytest.raises(errors.InvalidArgumentError):
            db.build_index(nlist=0)
        with pytest.raises(errors.InvalidArgumentError):
            db.build_index(kind="pq", nlist=40)
        assert db.index_info["kind"] == "pq"
        # regression (issue 17): nlist without kind was ignored when the size chose flat PQ
        db.build_index(nlist=50)
        assert db.index_info["kind"] == "ivf" and db.index_info["nlist"] == 50
        lists_consistent(db)
        db.build_index(kind="pq")
    with sutradb.open(p) as db:
        assert db.index_info["kind"] == "pq"
    with pytest.raises(errors.InvalidArgumentError):
        sutradb.open(":memory:", index="hnsw")
    with pytest.raises(errors.InvalidArgumentError):
        sutradb.open(":memory:", target_recall=1.5)


def test_flat_option_never_trains(fast, real):
    X, _ = real
    db = sutradb.open(":memory:", dim=384, **fast, index="flat", index_threshold=100)
    db.add_vectors(X[:1000])
    assert db.index_info["kind"] == "flat"


def test_tune_on_own_queries(fast, real):
    X, Q = real
    db = sutradb.open(":memory:", dim=384, **fast, index="ivf", index_threshold=3000)
    db.add_vectors(X[:6000])
    r = sutradb.tune(db, Q, target_recall=0.9)
    assert r["reached"] and r["recall"] >= 0.9 and r["qps"] > 0
    assert {"nprobe", "rerank", "recall", "qps"} <= set(r["grid"][0])
    # the chosen setting reproduces the recall it reported
    assert recall(db, Q, nprobe=r["nprobe"], rerank=r["rerank"]) == pytest.approx(r["recall"])
    r2 = db.tune(Q, target_recall=0.9, save=True)
    assert db.index_info["nprobe"] == r2["nprobe"]
    assert db.index_info["tuned"]["source"] == "tune"
    # an unreachable target: the best setting, flagged
    r3 = db.tune(Q[:5], target_recall=1.0, nprobes=[1], reranks=[10])
    assert r3["reached"] is (r3["recall"] >= 1.0)
    with pytest.raises(errors.InvalidArgumentError):
        db.tune(Q, target_recall=0)
    flat = sutradb.open(":memory:", dim=384)
    flat.add_vectors(X[:50])
    with pytest.raises(errors.InvalidArgumentError):
        flat.tune(Q)


def test_damaged_lists_are_corruption(fast, real, tmp_path):
    """A damaged index is CorruptDatabaseError (decoded on the first search, and by
    verify()), never a crash in a kernel."""
    from sutradb.index.vector import decode_index, encode_index
    X, _ = real
    db = sutradb.open(":memory:", dim=384, **fast, index="ivf", index_threshold=2000)
    db.add_vectors(X[:3000])
    db.index_info                                       # the lists (built on first use)
    part = db._index.ivf
    blob, arrays = encode_index(db._index.pq, part)
    n = db._store.n_rows
    decode_index(blob, arrays, "x", n)                  # intact
    bad = dict(arrays, ivf_perm=arrays["ivf_perm"].copy())
    bad["ivf_perm"][0] = -5
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, bad, "x", n)
    bad = dict(arrays, ivf_offsets=arrays["ivf_offsets"][::-1].copy())
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, bad, "x", n)
    bad = dict(arrays, ivf_codes=arrays["ivf_codes"][:-1])
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, bad, "x", n)
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, arrays, "x", n - 10)         # lists name rows that are not there
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob[:-7], arrays, "x", n)
    bad = dict(arrays, ivf_centroids=arrays["ivf_centroids"].copy())
    bad["ivf_centroids"][3, 7] = np.nan
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, bad, "x", n)
    bad = dict(arrays, ivf_centroids=arrays["ivf_centroids"][:-1])
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, bad, "x", n)
    missing = {k: v for k, v in arrays.items() if k != "ivf_codes"}
    with pytest.raises(errors.CorruptDatabaseError):
        decode_index(blob, missing, "x", n)
    # the layout tag: unknown, or not the one the codes were written in
    import msgpack
    d = msgpack.unpackb(blob, raw=False)
    for layout in ("zigzag", "rows" if d["codes_layout"] == "blocked16" else "blocked16"):
        with pytest.raises(errors.CorruptDatabaseError):
            decode_index(msgpack.packb(dict(d, codes_layout=layout), use_bin_type=True),
                         arrays, "x", n)


def test_damaged_index_file_never_crashes(fast, real, tmp_path):
    """Bytes of the stored index file flipped at seeded places: opening, searching and
    verify() either work or raise CorruptDatabaseError (verify always notices)."""
    import glob
    import shutil
    X, Q = real
    src = str(tmp_path / "src")
    with sutradb.open(src, dim=384, **fast, index="ivf", index_threshold=2000) as db:
        db.add_vectors(X[:3000])
    (index_file,) = glob.glob(src + "/*.index")
    size = len(open(index_file, "rb").read())
    rng = np.random.default_rng(3)
    for trial, pos in enumerate(rng.integers(64, size, 40).tolist()):
        dst = str(tmp_path / f"t{trial}")
        shutil.copytree(src, dst)
        f = dst + "/" + index_file.rsplit("/", 1)[1]
        with open(f, "r+b") as fh:
            fh.seek(pos)
            b = fh.read(1)
            fh.seek(pos)
            fh.write(bytes([b[0] ^ 0xFF]))
        try:
            with sutradb.open(dst, "r") as db:
                D, I = db.search_vectors(Q[:5], k=10)
                assert I.shape == (5, 10)
        except errors.CorruptDatabaseError:
            pass
        with pytest.raises(errors.CorruptDatabaseError):
            with sutradb.open(dst, "r") as db:
                db.verify()
        shutil.rmtree(dst)


def test_drift_tracks_the_quantisation_error_of_added_vectors(fast, real):
    """``index_info["drift"]``: ~1 for more vectors like the training ones, large for
    vectors the codebooks were not trained on; a large batch is measured on a sample
    whose estimate matches the full batch's error."""
    X, _ = real
    db = sutradb.open(":memory:", dim=X.shape[1], index="pq", index_threshold=5000, **fast)
    db.add_vectors(X[:5000])                            # the quantizer trains here
    assert db.index_info["drift"] is None               # nothing added since training
    batch = X[5000:8000]
    extra = batch[np.random.default_rng(1).integers(0, len(batch), 9000)]
    extra = extra + np.random.default_rng(2).normal(0, 0.01, extra.shape).astype(np.float32)
    db.add_vectors(extra)                               # 9,000 rows: a sampled estimate
    info = db.index_info
    pq = db._index.pq
    U = extra / np.linalg.norm(extra, axis=1, keepdims=True)
    exact = float(((pq.decode(pq.encode(U)) - U) ** 2).sum(axis=1).mean())
    assert info["drift"] == pytest.approx(exact / info["training_error"], rel=0.1)
    assert 0.5 < info["drift"] < 2.0
    # vectors from elsewhere (random directions): far from the codebooks
    G = np.random.default_rng(3).normal(size=(3000, X.shape[1])).astype(np.float32)
    db.add_vectors(G)
    d2 = db.index_info["drift"]                         # the mean over all 12,000 added
    g_drift = (d2 * 12000 - info["drift"] * 9000) / 3000
    Gu = G / np.linalg.norm(G, axis=1, keepdims=True)
    g_exact = float(((pq.decode(pq.encode(Gu)) - Gu) ** 2).sum(axis=1).mean())
    assert g_drift == pytest.approx(g_exact / info["training_error"], rel=1e-3)
    assert g_drift > 1.2 * info["drift"]         # coarse 4-bit codes: 1.32x here


def test_default_quantizer_shape():
    """One code byte per 8 dimensions; 4-bit codes when vectors are stored (every
    search re-ranks), 8-bit without them (the ADC distance is the answer)."""
    assert default_pq_shape(384, "float16") == (96, 4)
    assert default_pq_shape(384, "float32") == (96, 4)
    assert default_pq_shape(384, None) == (48, 8)
    assert default_pq_shape(384, "float16", nbits=8) == (48, 8)
    assert default_pq_shape(384, None, m=24, nbits=4) == (24, 4)
    assert default_pq_shape(10, "float16") == (5, 4)       # 2 dimensions per subspace
    db = sutradb.open(":memory:", dim=16, vector_dtype=None, index_threshold=300)
    db.add_vectors(np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32))
    assert (db.index_info["m"], db.index_info["nbits"]) == (2, 8)
