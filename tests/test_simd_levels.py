"""Runtime SIMD dispatch: every compiled level gives the same results as the portable
one on real data, the loader never picks a level the CPU cannot run, and forcing one
fails clearly.

tests/test_kernels.py and tests/test_ivf.py already run every kernel against its NumPy
oracle once per level (the ``kernel_level`` fixture of conftest.py); here the levels
are compared with each other on the bundled real sample (MiniLM embeddings), where
float sums are not exact, so "the same" means: the same ids, distances equal to float
rounding, and where two ids swap places their distances tie within that rounding.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sutradb import simd
from sutradb.errors import UnsupportedCPUError
from sutradb.index.ivf import BlockedCodes, IVFIndex
from sutradb.index.pq import ProductQuantizer

SAMPLE = Path(__file__).resolve().parent.parent / "sutradb" / "data" / "pypi-sample"
LEVELS = simd.supported_levels()
OTHERS = [lv for lv in LEVELS if lv != "scalar"]
RTOL, ATOL = 2e-5, 2e-5


@pytest.fixture(scope="module")
def data():
    base = np.load(SAMPLE / "base.f16.npy").astype(np.float32)
    queries = np.load(SAMPLE / "queries.f16.npy").astype(np.float32)
    return base, queries


def assert_same_topk(D1, I1, D2, I2):
    """Same top-k up to float rounding: distances close, and every id that differs
    sits where the two distances it swapped with are equal within rounding."""
    np.testing.assert_allclose(D1, D2, rtol=RTOL, atol=ATOL)
    for q in range(I1.shape[0]):
        bad = np.flatnonzero(I1[q] != I2[q])
        for j in bad:
            # an id out of place must be tied with its counterpart (a rounding swap)
            assert abs(float(D1[q, j]) - float(D2[q, j])) <= ATOL + RTOL * abs(float(D1[q, j]))
            gone = set(I1[q]) ^ set(I2[q])
            if gone:         # a different id entered: only at a tie with the k-th
                kth = max(float(D1[q, -1]), float(D2[q, -1]))
                for i in gone:
                    pos = np.flatnonzero(I1[q] == i) if i in I1[q] else np.flatnonzero(I2[q] == i)
                    d = float((D1 if i in I1[q] else D2)[q, pos[0]])
                    assert abs(d - kth) <= ATOL + RTOL * abs(kth), (q, i, d, kth)


def test_loader_picks_the_best_supported_level():
    assert simd.level in LEVELS
    assert "scalar" in LEVELS                      # the portable level runs anywhere
    if not os.environ.get("SUTRADB_SIMD"):
        assert simd.level == LEVELS[0]
    for lv in LEVELS:                               # best first, by the fixed order
        assert simd.LEVELS.index(lv) >= simd.LEVELS.index(LEVELS[0])
    core, pq = simd.load(simd.level)
    assert core is simd.core and pq is simd.pq


def test_levels_require_what_their_flags_enable():
    info = simd.build_info()["levels"]
    assert info["scalar"]["requires"] == [] or "avx" not in info["scalar"]["requires"]
    if "avx2" in info:
        assert {"avx2", "fma", "f16c"} <= set(info["avx2"]["requires"])
        assert not any(f.startswith("avx512") for f in info["avx2"]["requires"])
    if "avx512" in info:
        assert {"avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512vnni"} <= \
            set(info["avx512"]["requires"])


def test_cpu_without_a_feature_never_gets_the_level(monkeypatch):
    # an AVX2-only CPU (a typical desktop): avx512 must not be offered, nor loaded
    monkeypatch.setattr(simd, "_CPU", frozenset(f for f in simd._CPU if not f.startswith("avx512")))
    monkeypatch.setattr(simd, "_loaded", {"scalar": simd._loaded["scalar"]})
    assert "avx512" not in simd.supported_levels()
    if "avx512" in simd.build_info()["levels"]:
        with pytest.raises(UnsupportedCPUError, match="avx512"):
            simd.load("avx512")
    # a CPU with no extension at all (x86-64 baseline): scalar only
    monkeypatch.setattr(simd, "_CPU", frozenset())
    assert simd.supported_levels() == ("scalar",)


def test_unknown_level_is_a_clear_error():
    with pytest.raises(UnsupportedCPUError, match="unknown SIMD level"):
        simd.load("sse9")


@pytest.mark.parametrize("forced", LEVELS)
def test_forced_level_is_used(forced):
    out = subprocess.run([sys.executable, "-c", "import sutradb.simd as s; print(s.level, s.core.__name__)"],
                         env={**os.environ, "SUTRADB_SIMD": forced}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [forced, f"sutradb._levels.{forced}._core"]


def test_forcing_an_unavailable_level_fails_at_import():
    # what a child process can run (under a CPU emulator it may differ from ours)
    env = {k: v for k, v in os.environ.items() if k != "SUTRADB_SIMD"}
    child = subprocess.run([sys.executable, "-c", "import sutradb.simd as s; print(*s.supported_levels())"],
                           env=env, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    unavailable = [lv for lv in simd.LEVELS if lv not in child.stdout.split()]
    for forced in unavailable + ["bogus"]:
        out = subprocess.run([sys.executable, "-c", "import sutradb"],
                             env={**os.environ, "SUTRADB_SIMD": forced}, capture_output=True, text=True)
        assert out.returncode != 0
        assert "UnsupportedCPUError" in out.stderr and forced in out.stderr


def test_show_config_reports_levels_and_choice(capsys):
    simd.show_config()
    text = capsys.readouterr().out
    assert f"active level:    {simd.level}" in text
    for lv in simd.build_info()["levels"]:
        assert lv in text
    c = simd.config()
    assert c["active_level"] == simd.level and set(c["supported_levels"]) == set(LEVELS)


def test_scalar_level_has_no_avx_instructions():
    """The portable level must run on any x86-64 CPU: its machine code may not touch
    a ymm/zmm register (AVX), nor the avx2 level a zmm one (AVX-512)."""
    if shutil.which("objdump") is None or simd.build_info()["machine"] != "x86_64":
        pytest.skip("needs objdump and an x86-64 build")
    forbidden = {"scalar": ("%ymm", "%zmm", "{vex}"), "avx2": ("%zmm",)}
    for lv, regs in forbidden.items():
        if lv not in simd.build_info()["levels"]:
            continue
        core, pq = simd.load("scalar")          # import-safe; we only read the files
        pkg = Path(core.__file__).parent.parent / lv
        for so in pkg.glob("*.so"):
            asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)],
                                 capture_output=True, text=True).stdout
            assert asm, so
            for r in regs:
                assert r not in asm, f"{so.name} ({lv}) uses {r}"
            if lv == "scalar":
                assert " vmov" not in asm and " vfmadd" not in asm, so.name


# ------------------------------------------------------- same results at every level

@pytest.mark.parametrize("level", OTHERS)
@pytest.mark.parametrize("nbits", [8, 4])
def test_flat_pq_levels_agree(level, nbits, data):
    base, queries = data
    ref_core, ref_pq = simd.load("scalar")
    core, pq = simd.load(level)
    M = 48 if nbits == 8 else 96
    quant = ProductQuantizer(384, M, nbits=nbits, metric="l2", seed=3).fit(base[:1500], iters=8)
    cb = quant.codebooks
    codes_ref = ref_pq.encode(base, cb, 1)[0]
    codes = pq.encode(base, cb, 2)[0]
    # encoding picks the nearest centroid: equal but where two centroids tie
    diff = np.argwhere(codes != codes_ref)
    assert len(diff) <= 0.0005 * codes.size, len(diff)
    packed = quant.encode(base)
    ops = ref_core.table_operands(cb)
    for metric in (ref_core.METRIC_L2, ref_core.METRIC_IP):
        T_ref = ref_core.distance_tables_t(queries, *ops, metric, 1)
        T = core.distance_tables_t(queries, *core.table_operands(cb), metric, 2)
        np.testing.assert_allclose(T, T_ref, rtol=1e-4, atol=1e-5)
        for fast in (True, False):
            D1, I1 = ref_core.adc_topk(T_ref, packed, 10, None, 1, fastscan=fast)
            D2, I2 = core.adc_topk(T_ref, packed, 10, None, 2, fastscan=fast)
            assert_same_topk(D1, I1, D2, I2)   # sums in another order: rounding only
        np.testing.assert_allclose(ref_core.adc_distances(T_ref, packed, 1),
                                   core.adc_distances(T_ref, packed, 2), rtol=RTOL, atol=ATOL)
        sd_ref = ref_core.sdc_tables(cb, metric)
        np.testing.assert_allclose(core.sdc_tables(cb, metric), sd_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", OTHERS)
def test_rerank_levels_agree(level, data):
    base, queries = data
    ref_core, _ = simd.load("scalar")
    core, _ = simd.load(level)
    rng = np.random.default_rng(5)
    cand = rng.integers(0, len(base), (len(queries), 200)).astype(np.int64)
    for vecs in (base, base.astype(np.float16).view(np.uint16)):
        for metric in (ref_core.METRIC_L2, ref_core.METRIC_IP, ref_core.METRIC_COS):
            D1, I1 = ref_core.rerank(queries, vecs, cand, 10, metric, 1)
            D2, I2 = core.rerank(queries, vecs, cand, 10, metric, 2)
            assert_same_topk(D1, I1, D2, I2)


@pytest.mark.parametrize("level", OTHERS)
def test_pair_distances_levels_agree(level, data):
    base, _ = data
    ref_core, _ = simd.load("scalar")
    core, _ = simd.load(level)
    rng = np.random.default_rng(6)
    idrow = rng.permutation(len(base)).astype(np.int64)
    pairs = rng.integers(0, len(base), (2000, 2)).astype(np.int64)
    for vecs in (base, base.astype(np.float16).view(np.uint16)):
        blocks = [vecs[:700], vecs[700:]]
        for metric in (ref_core.METRIC_L2, ref_core.METRIC_IP, ref_core.METRIC_COS):
            d1 = ref_core.PairDistances(blocks, idrow, metric).distances(pairs, 1)
            d2 = core.PairDistances(blocks, idrow, metric).distances(pairs, 2)
            np.testing.assert_allclose(d1, d2, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("level", OTHERS)
def test_kmeans_assign_levels_agree(level, data):
    base, _ = data
    _, ref_pq = simd.load("scalar")
    _, pq = simd.load(level)
    rng = np.random.default_rng(2)
    for d in (4, 8, 16, 384):
        X = np.ascontiguousarray(base[:, :d]) if d < 384 else base
        C = np.ascontiguousarray(X[rng.choice(len(X), 64, replace=False)] + 0.01)
        l1, s1 = ref_pq.assign(X, C, 1)
        l2, s2 = pq.assign(X, C, 2)
        np.testing.assert_allclose(s1, s2, rtol=1e-4, atol=1e-5)
        # a label may differ only where two centres are equally near within rounding
        for i in np.flatnonzero(l1 != l2):
            d1 = ((X[i] - C[l1[i]]) ** 2).sum()
            d2 = ((X[i] - C[l2[i]]) ** 2).sum()
            assert abs(d1 - d2) <= 1e-4 * max(1.0, d1)


@pytest.mark.parametrize("level", OTHERS)
@pytest.mark.parametrize("nbits", [8, 4])
def test_ivf_levels_agree(level, nbits, data):
    base, queries = data
    ref_core, _ = simd.load("scalar")
    core, _ = simd.load(level)
    M = 48 if nbits == 8 else 96
    quant = ProductQuantizer(384, M, nbits=nbits, metric="ip", seed=1).fit(base, iters=6)
    ivf = IVFIndex(384, nlist=32, metric="ip", seed=1).fit(base, iters=5)
    ivf.build(ivf.assign(base))
    codes = ivf.list_order(quant.encode(base))
    panels = ref_core.coarse_panels_f16(ivf.centroids.astype(np.float32))
    np.testing.assert_array_equal(core.coarse_panels_f16(ivf.centroids.astype(np.float32)), panels)
    cn = np.ascontiguousarray(ivf._cn, dtype=np.float32)
    for nprobe in (1, 4, 32):
        P1 = ref_core.coarse_probes_f16(queries, panels, cn, nprobe, 1)
        P2 = core.coarse_probes_f16(queries, panels, cn, nprobe, 2)
        if nprobe == 32:
            np.testing.assert_array_equal(np.sort(P1, 1), np.sort(P2, 1))
        else:
            assert (P1 == P2).mean() > 0.98     # rounding may swap a tied boundary list
        T = ref_core.distance_tables_t(queries, *quant._table_ops, quant._adc_metric, 1)
        layouts = [(codes, False)]
        if nbits == 4:
            layouts.append((BlockedCodes.from_rows(codes).data, True))
        for arr, blocked in layouts:
            for fast in (True, False):
                D1, I1 = ref_core.ivf_adc_topk(T, arr, ivf.offsets, P1, ivf.perm, 10, None, 1,
                                               fastscan=fast, blocked=blocked)
                D2, I2 = core.ivf_adc_topk(T, arr, ivf.offsets, P1, ivf.perm, 10, None, 2,
                                           fastscan=fast, blocked=blocked)
                assert_same_topk(D1, I1, D2, I2)
        if nbits == 4:
            # quantised-sum candidates: the same integers, so the same rows, everywhere
            blk = BlockedCodes.from_rows(codes).data
            D1, I1 = ref_core.ivf_adc_topk(T, blk, ivf.offsets, P1, ivf.perm, 30, None, 1,
                                           blocked=True, approx=True)
            D2, I2 = core.ivf_adc_topk(T, blk, ivf.offsets, P1, ivf.perm, 30, None, 2,
                                       blocked=True, approx=True)
            np.testing.assert_array_equal(I1, I2)
            np.testing.assert_array_equal(D1, D2)
    # int8 coarse panels: the same bytes, the same integer dot products
    p8 = ref_core.coarse_panels_i8(ivf.centroids.astype(np.float32))
    for a, b in zip(p8, core.coarse_panels_i8(ivf.centroids.astype(np.float32))):
        np.testing.assert_array_equal(a, b)
    for nprobe in (1, 4, 32):
        P1 = ref_core.coarse_probes_i8(queries, *p8, cn, nprobe, 1)
        P2 = core.coarse_probes_i8(queries, *p8, cn, nprobe, 2)
        if nprobe == 32:
            np.testing.assert_array_equal(np.sort(P1, 1), np.sort(P2, 1))
        else:                    # (float rounding of the scaled sums may swap a near-tie)
            assert (np.sort(P1, 1) == np.sort(P2, 1)).mean() > 0.98


def test_cli_info_build_reports_the_active_level(tmp_path):
    import json
    r = subprocess.run([sys.executable, "-m", "sutradb", "info", "--build", "--json"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["active_level"] == simd.level and c["build"]["levels"].keys() == simd.build_info()["levels"].keys()
    r = subprocess.run([sys.executable, "-m", "sutradb", "info", "--build"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and f"active level:    {simd.level}" in r.stdout


@pytest.mark.parametrize("level", LEVELS)
def test_adc_gather_and_scalar_rows_agree(level, data):
    """The 8-bit ADC row sums by AVX-512 gathers (Intel) and by scalar loads (AMD and
    every other level) give the same top-k."""
    base, queries = data
    core, _ = simd.load(level)
    quant = ProductQuantizer(384, 48, nbits=8, metric="ip", seed=4).fit(base, iters=4)
    codes = quant.encode(base)
    T = core.distance_tables_t(queries, *quant._table_ops, quant._adc_metric, 1)
    before = core.adc_gather()
    try:
        core.adc_gather(True)
        D1, I1 = core.adc_topk(T, codes, 10, None, 1)
        had_gather = core.adc_gather()
        core.adc_gather(False)
        assert not core.adc_gather()
        D2, I2 = core.adc_topk(T, codes, 10, None, 1)
    finally:
        core.adc_gather(before)
    assert had_gather == ("avx512" in core.COMPILED_PATHS)
    assert_same_topk(D1, I1, D2, I2)
    assert before == (had_gather and core.CPU_VENDOR == "intel")
