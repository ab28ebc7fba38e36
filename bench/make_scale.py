"""Make a large, realistic benchmark set (1M, 10M, ... vectors) from a real one.

Issue 7 needs recall/QPS at 1M and 10M vectors of 384-d MiniLM sentence embeddings, but
the real set (``../shared/data/pypi-minilm-100k``) has 100,000. This script grows it,
seeded and streamed, into a directory laid out exactly like the real set, so every
benchmark that takes ``--data DIR`` (``bench/bench_ivf.py``, ...) runs on it unchanged:

    base.f16.npy     (n, 384) float16, unit norm    the corpus
    queries.f16.npy  (nq, 384) float16              the REAL queries of the source set
    gt.i32.npy       (nq, 100) int32                exact top-100 rows by cosine (= inner
                                                    product, on the float16 values as float32)
    gt_sim.f32.npy   (nq, 100) float32              their cosines (for statistics)
    origin.i32.npy   (n, 2) int32                   [anchor, dominant parent] real source rows
    meta.json, README.md                            generator, seed, parameters, timings, stats

Generator ("local Dirichlet mixture")
-------------------------------------
The real rows are all kept (at seeded random positions). Every other row is

    y = normalize( w_0 x_a + w_1 x_b1 + ... + w_m x_bm )
    w = Dirichlet(alpha, ..., alpha) + spread / sqrt(m+1) * (g - mean(g)),  g ~ N(0, I)

with ``a`` a uniformly random real row (the *anchor*, so the real density is preserved)
and ``b1..bm`` drawn (with replacement) from the ``k`` exact nearest real neighbours of
``a``: a random affine combination of a real vector and m of its neighbours (weights sum
to 1; the jitter lets some go negative), i.e. a new point on the local data manifold
spanned by real neighbours -- like the embedding of a text mixing a few related real
texts. Defaults k=64, m=8, alpha=1, spread=0.5. It is rounded to float16 like the real
vectors. ``origin.i32.npy`` keeps the anchor and the *dominant parent* (the vertex of
largest weight) of every row (a real row: itself).

Why this one: plain "copy + Gaussian noise" turns each real vector into a tight cluster
of near-duplicates (a query's top-10 is mostly copies of one vector: graph indexes get
pathologically hard, IVF easy), interpolation on one kNN edge is not much better, and
pure convex mixtures (spread 0) are pulled towards local centres: real rows then make
only 4-7 % of a query's top-10 although they are 10 % of the rows. With spread 0.5 they
make ~9 %: synthetic and real rows are nearly exchangeable as neighbours of a real
query. ``--validate`` re-runs the check that picked the parameters: grow a random 10k
(or 1k) subset of the real set back to 100k and compare, on the real queries, with the
real 100k (cosine of the 1st/10th neighbour, local intrinsic dimension, share of a top-10
sharing a source, share of real rows, and with ``--validate-hardness`` the recall of
fixed FAISS / hnswlib settings). docs/benchmarks.md ("Scale data sets") has the numbers.

Ground truth is computed in the same pass as the generation (each block of 65,536 rows
is generated, appended to the file, and scanned by all queries with one BLAS matmul,
keeping a running top-100 per query), so the base is written once and never read back.
Memory: the real set in float32 (150 MB), its kNN table, and a few blocks (~0.5 GB);
rows are appended with plain writes, so the written file is page cache, not RSS.

    .venv/bin/python bench/make_scale.py --n 1000000 --out /work/scale/minilm-1m   # ~5 min
    .venv/bin/python bench/make_scale.py --n 10000000 --out /work/scale/minilm-10m # ~12 min
    .venv/bin/python bench/make_scale.py --validate       # the realism check, ~2 min
    .venv/bin/python bench/make_scale.py --validate --validate-hardness --validate-seeds 10000

The output is written under ``OUT.partial`` and renamed to ``OUT`` at the end; an
existing complete ``OUT`` is left alone (the run is skipped), so re-running is safe. A
killed run resumes when started again with the same arguments: every 1,048,576 rows the
files are fsync'ed and the running top-100 saved (``checkpoint.*`` in ``OUT.partial``).
The rows depend only on (source, n, seed, k, m, alpha, spread): one RNG stream per
fixed block of rows, whatever the thread count or the interruptions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

BLOCK = 1 << 16            # rows per RNG stream / generation block (fixed: reproducibility)
CHECKPOINT_BLOCKS = 16     # a resumable checkpoint every 16 blocks (1,048,576 rows)
GT_K = 100
VERSION = 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, help="rows in the synthetic base (e.g. 1000000)")
    p.add_argument("--out", type=Path, help="output directory (created; must not exist "
                   "unless complete, then the run is skipped)")
    p.add_argument("--src", type=Path, default=None,
                   help="real set (default ../shared/data/pypi-minilm-100k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=1000, help="first N real queries (default 1000)")
    p.add_argument("--k", type=int, default=64, help="neighbour pool of an anchor (default 64)")
    p.add_argument("--m", type=int, default=8, help="neighbours mixed with the anchor (default 8)")
    p.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration (default 1)")
    p.add_argument("--spread", type=float, default=0.5,
                   help="zero-sum Gaussian jitter of the weights: lets a row leave the local "
                   "simplex (extrapolate) instead of being pulled to its centre (default 0.5)")
    p.add_argument("--no-real", action="store_true",
                   help="do not include the real rows (default: all real rows are kept)")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (default 2)")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines only")
    p.add_argument("--validate", action="store_true",
                   help="make nothing: grow random subsets of the real set back to its size "
                   "and print realism statistics against the real set")
    p.add_argument("--validate-seeds", type=int, nargs="+", default=[10000, 1000])
    p.add_argument("--validate-hardness", action="store_true",
                   help="with --validate: also recall of FAISS IVF-Flat/IVF-PQ and hnswlib at "
                   "fixed settings on each set (needs faiss + hnswlib; slow)")
    a = p.parse_args(argv)
    if not a.validate and (a.n is None or a.out is None):
        p.error("--n and --out are required (or --validate)")
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_v] = str(ARGS.threads)

import numpy as np  # noqa: E402

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent))
import common  # noqa: E402
from sutradb.distributed.manifest import file_sha256  # noqa: E402


# --------------------------------------------------------------------------- progress

class Bar:
    """A rich bar (common.Progress) on a TTY; otherwise a plain line every ~30 s with
    rate and ETA (so a log of a long run under nohup shows where it is)."""

    def __init__(self, prog: common.Progress, what: str, total: int, unit: str):
        self.prog, self.what, self.total, self.unit = prog, what, total, unit
        self.done, self.t0, self.last = 0, time.perf_counter(), 0.0
        self._cm = None

    def __enter__(self):
        if self.prog.rich:
            self._cm = self.prog.op(self.what, total=self.total, unit=self.unit)
            self._adv = self._cm.__enter__()
        else:
            print(f"{self.what}: {self.total:,} {self.unit}", flush=True)
        return self

    def advance(self, n: int):
        self.done += n
        if self._cm is not None:
            self._adv(n)
            return
        now = time.perf_counter() - self.t0
        if now - self.last >= 30 or self.done >= self.total:
            self.last = now
            rate = self.done / now if now > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"  {self.what}: {self.done:,}/{self.total:,} {self.unit} "
                  f"({100 * self.done / self.total:.0f}%), {rate:,.0f} {self.unit}/s, "
                  f"elapsed {now:.0f} s, eta {eta:.0f} s", flush=True)

    def __exit__(self, *exc):
        if self._cm is not None:
            self._cm.__exit__(*exc)
        return False


# --------------------------------------------------------------------------- pieces

def load_source(src: Path, nq: int):
    base = np.ascontiguousarray(np.load(src / "base.f16.npy").astype(np.float32))
    q16 = np.load(src / "queries.f16.npy")[:nq]
    return base, q16


def knn_table(x: np.ndarray, k: int, prog, rows: int = 512) -> np.ndarray:
    """Exact k nearest rows (by inner product, self excluded) of every row of ``x``,
    nearest first, by chunked BLAS; ties broken by lower row id."""
    n = len(x)
    out = np.empty((n, k), dtype=np.int32)
    with Bar(prog, f"kNN table of the real set (k={k})", n, "rows") as bar:
        for s in range(0, n, rows):
            e = min(n, s + rows)
            S = x[s:e] @ x.T
            S[np.arange(e - s), np.arange(s, e)] = -np.inf
            part = np.argpartition(S, -k, axis=1)[:, -k:]
            ps = np.take_along_axis(S, part, axis=1)
            order = np.lexsort((part, -ps), axis=1)
            out[s:e] = np.take_along_axis(part, order, axis=1)
            bar.advance(e - s)
    return out


def real_positions(n: int, n_real: int, seed: int) -> np.ndarray:
    """Row of the output holding real row j (seeded, uniform without replacement)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2 ** 31,)))
    return rng.choice(n, size=n_real, replace=False).astype(np.int64)


def make_block(b: int, start: int, stop: int, real: np.ndarray, nbr: np.ndarray,
               real_pos_sorted: np.ndarray, real_id_sorted: np.ndarray,
               seed: int, m: int, alpha: float, spread: float = 0.0):
    """Rows [start, stop) of the output as float16, with their [anchor, dominant parent].

    The block's RNG stream depends only on (seed, block number), so a block's rows are
    the same whatever else is generated."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b,)))
    rows = stop - start
    lo, hi = np.searchsorted(real_pos_sorted, [start, stop])
    is_real = np.zeros(rows, dtype=bool)
    is_real[real_pos_sorted[lo:hi] - start] = True
    syn = np.flatnonzero(~is_real)
    ns = len(syn)
    k = nbr.shape[1]
    a = rng.integers(0, len(real), ns)
    verts = np.empty((ns, m + 1), dtype=np.int64)
    verts[:, 0] = a
    if m:
        verts[:, 1:] = nbr[a[:, None], rng.integers(0, k, (ns, m))]
    w = rng.dirichlet(np.full(m + 1, alpha), ns).astype(np.float32)
    if spread > 0:                      # affine (sum 1), may leave the simplex
        g = rng.standard_normal((ns, m + 1), dtype=np.float32)
        w += (spread / np.sqrt(m + 1)) * (g - g.mean(axis=1, keepdims=True))
    y = w[:, :1] * real[verts[:, 0]]
    for j in range(1, m + 1):
        y += w[:, j:j + 1] * real[verts[:, j]]
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    out = np.empty((rows, real.shape[1]), dtype=np.float16)
    out[syn] = y
    origin = np.empty((rows, 2), dtype=np.int32)
    origin[syn, 0] = a
    origin[syn, 1] = verts[np.arange(ns), np.argmax(w, axis=1)]
    if hi > lo:
        rr = real_id_sorted[lo:hi]
        out[real_pos_sorted[lo:hi] - start] = real[rr]      # exact: real is f16 -> f32
        origin[real_pos_sorted[lo:hi] - start] = rr[:, None]
    return out, origin


class NpyWriter:
    """Append rows to a ``.npy`` file of known final shape, block after block.

    The header (and the full-size, sparse file) comes from ``open_memmap``; the rows are
    then written with plain sequential ``write`` calls rather than through a mapping of
    the whole file: written pages are ordinary page cache, not resident pages of this
    process, so its RSS (and its OOM-killer score) stays at a few hundred MB at 10M."""

    def __init__(self, path: Path, dtype, shape: tuple[int, int], resume_rows: int = 0):
        if resume_rows:                     # an interrupted run: append after its rows
            mm = np.load(path, mmap_mode="r")
            if mm.shape != tuple(shape) or mm.dtype != np.dtype(dtype):
                raise RuntimeError(f"{path}: cannot resume, shape {mm.shape} {mm.dtype}")
        else:
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        offset, self.shape, self.dtype = mm.offset, tuple(shape), np.dtype(dtype)
        del mm
        self.f = open(path, "r+b")
        self.rows = resume_rows
        self.f.seek(offset + resume_rows * self.dtype.itemsize * int(np.prod(shape[1:])))

    def sync(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        assert block.shape[1:] == self.shape[1:] and self.rows + len(block) <= self.shape[0]
        self.f.write(memoryview(block).cast("B"))
        self.rows += len(block)

    def close(self) -> None:
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.f.name}: wrote {self.rows} of {self.shape[0]} rows")
        self.f.close()


class TopK:
    """Running exact top-k (largest inner product) per query over streamed row blocks."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        nq = len(queries)
        self.sim = np.full((nq, k), -np.inf, dtype=np.float32)
        self.idx = np.full((nq, k), -1, dtype=np.int64)

    def add(self, block16: np.ndarray, start: int) -> None:
        S = self.q @ block16.astype(np.float32).T
        k = min(self.k, S.shape[1])
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        cs = np.concatenate([self.sim, np.take_along_axis(S, part, axis=1)], axis=1)
        ci = np.concatenate([self.idx, part + start], axis=1)
        keep = np.argpartition(-cs, self.k - 1, axis=1)[:, :self.k]
        self.sim = np.take_along_axis(cs, keep, axis=1)
        self.idx = np.take_along_axis(ci, keep, axis=1)

    def result(self):
        order = np.lexsort((self.idx, -self.sim), axis=1)     # by cosine, then row id
        return (np.take_along_axis(self.idx, order, axis=1),
                np.take_along_axis(self.sim, order, axis=1))


# --------------------------------------------------------------------------- statistics

def _q(v, qs=(0.1, 0.5, 0.9)):
    return {f"p{int(q * 100)}": float(np.quantile(v, q)) for q in qs}


def lid_mle(sim: np.ndarray, k: int = GT_K) -> np.ndarray:
    """Local intrinsic dimension per query (Levina-Bickel MLE on its k nearest Euclidean
    distances, sqrt(2 - 2 cos) for unit vectors): how many dimensions the neighbourhood
    fills; higher = harder for every ANN index."""
    d = np.sqrt(np.maximum(2.0 - 2.0 * sim[:, :k].astype(np.float64), 1e-12))
    return -1.0 / np.mean(np.log(d[:, :-1] / d[:, -1:]), axis=1)


def same_source_share(gt: np.ndarray, src: np.ndarray, k: int = 10,
                      direct: bool = False) -> float:
    """Mean over queries of 1 - (distinct sources among the top-k) / k: 0 when the
    top-k come from k different source rows, 0.9 when they are all one source.
    ``src`` maps a row to its source, or (``direct``) is already ``gt``'s sources."""
    s = src[:, :k] if direct else src[gt[:, :k]]
    return float(np.mean([1.0 - len(np.unique(r)) / k for r in s]))


def neighbour_stats(sim: np.ndarray) -> dict:
    lid = lid_mle(sim)
    return {"cos1_mean": float(sim[:, 0].mean()), "cos1": _q(sim[:, 0]),
            "cos10_mean": float(sim[:, 9].mean()), "cos10": _q(sim[:, 9]),
            "cos100_mean": float(sim[:, GT_K - 1].mean()),
            "gap_cos1_cos10_mean": float((sim[:, 0] - sim[:, 9]).mean()),
            "lid100_median": float(np.median(lid))}


def exact_topk(queries: np.ndarray, base: np.ndarray, k: int = GT_K):
    t = TopK(queries, k)
    for s in range(0, len(base), BLOCK):
        t.add(base[s:s + BLOCK], s)
    return t.result()


def fmt_stats(name: str, st: dict) -> str:
    return (f"{name:34s} cos@1 {st['cos1_mean']:.3f} [{st['cos1']['p10']:.3f} "
            f"{st['cos1']['p50']:.3f} {st['cos1']['p90']:.3f}]  cos@10 {st['cos10_mean']:.3f} "
            f"[{st['cos10']['p10']:.3f} {st['cos10']['p50']:.3f} {st['cos10']['p90']:.3f}]  "
            f"LID {st['lid100_median']:.1f}")


# --------------------------------------------------------------------------- make

def is_complete(out: Path) -> bool:
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if not meta.get("complete"):
        return False
    for name, shape in meta.get("files", {}).items():
        try:
            arr = np.load(out / name, mmap_mode="r")
        except (OSError, ValueError):
            return False
        if list(arr.shape) != list(shape["shape"]):
            return False
    return True


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) make_scale.py process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return state not in ("Z", "X") and b"make_scale" in cmd


def _claim_partial(part: Path, key: dict) -> dict | None:
    """Own ``OUT.partial`` for this run. Returns the checkpoint of an interrupted run
    with the same parameters (``key``) to resume from, or None (fresh directory).
    Refuses while another live run owns it; removes a dead run's leftover that cannot
    be resumed (only a directory with our pid file)."""
    pidfile = part / "make_scale.pid"
    if part.exists():
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            sys.exit(f"{part} exists and is not a make_scale.py work directory: remove it")
        if _pid_alive(pid) and pid != os.getpid():
            sys.exit(f"{part} is being written by process {pid}")
        try:
            ckpt = json.loads((part / "checkpoint.json").read_text())
        except (OSError, ValueError):
            ckpt = None
        if ckpt is not None and ckpt.get("key") == key:
            pidfile.write_text(f"{os.getpid()}\n")
            return ckpt
        print(f"removing the leftover of an interrupted run: {part}", flush=True)
        shutil.rmtree(part)
    part.mkdir(parents=True)
    pidfile.write_text(f"{os.getpid()}\n")
    return None


def _save_checkpoint(part: Path, key: dict, rows: int, top: "TopK", timings: dict,
                     writers) -> None:
    """Make rows [0, rows) durable, then record them (and the running top-100) as done:
    an interrupted run started again with the same arguments resumes from here."""
    for w in writers:
        w.sync()
    np.savez(part / "checkpoint.tmp.npz", sim=top.sim, idx=top.idx)
    os.replace(part / "checkpoint.tmp.npz", part / "checkpoint.npz")
    tmp = part / "checkpoint.json.tmp"
    tmp.write_text(json.dumps({"key": key, "rows": rows, "timings": timings}, indent=1))
    os.replace(tmp, part / "checkpoint.json")


def make(args) -> int:
    src = args.src or common.SHARED_DATA / "pypi-minilm-100k"
    out = args.out.resolve()
    if out.exists():
        if is_complete(out):
            print(f"{out} is complete (meta.json); nothing to do", flush=True)
            return 0
        sys.exit(f"{out} exists but is not a complete set: remove it to re-generate")
    t_all = time.perf_counter()
    real, q16 = load_source(src, args.queries)
    n_real, dim = real.shape
    n = args.n
    keep_real = not args.no_real
    if keep_real and n < n_real:
        sys.exit(f"--n {n} is smaller than the real set ({n_real}); use --no-real")
    part = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"generator": "local-dirichlet-mixture", "k": args.k, "m": args.m,
              "alpha": args.alpha, "spread": args.spread, "include_real": keep_real,
              "seed": args.seed, "block_rows": BLOCK}
    source = {"path": str(src), "n": n_real,
              "base_sha256": file_sha256(src / "base.f16.npy"),
              "queries_sha256": file_sha256(src / "queries.f16.npy")}
    key = {"version": VERSION, "n": n, "n_queries": len(q16), "params": params,
           "source": source}
    ckpt = _claim_partial(part, key)
    done_rows = ckpt["rows"] if ckpt else 0
    if ckpt is None:
        need = n * dim * 2 + n * 8
        free = shutil.disk_usage(part).free
        if free < need * 1.05:
            shutil.rmtree(part)
            sys.exit(f"not enough disk: need {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
    # timings add up over the sessions of a resumed run
    timings = dict(ckpt["timings"]) if ckpt else {
        "knn_table_s": 0.0, "generate_and_write_s": 0.0, "ground_truth_s": 0.0,
        "checkpoint_s": 0.0, "sessions": 0, "session_wall_s": []}
    timings["sessions"] += 1
    print(f"making {out}: n={n:,} from {src} ({n_real:,} real rows, "
          f"{'kept' if keep_real else 'not kept'}), {len(q16)} queries, {params}"
          + (f"; resuming at row {done_rows:,}" if ckpt else ""), flush=True)
    with common.Progress(total_steps=3, title="make_scale",
                         enabled=False if args.no_progress else None) as prog:
        t0 = time.perf_counter()
        if (part / "knn.i32.npy").exists():             # kept for a resumed run
            nbr = np.load(part / "knn.i32.npy")
        else:
            nbr = knn_table(real, args.k, prog)
            np.save(part / "knn.tmp.npy", nbr)
            os.replace(part / "knn.tmp.npy", part / "knn.i32.npy")
            timings["knn_table_s"] += time.perf_counter() - t0
        prog.step()

        t0 = time.perf_counter()
        if keep_real:
            pos = real_positions(n, n_real, args.seed)
            order = np.argsort(pos)
            pos_sorted, id_sorted = pos[order], order.astype(np.int64)
        else:
            pos_sorted = id_sorted = np.empty(0, dtype=np.int64)
        base = NpyWriter(part / "base.f16.npy", np.float16, (n, dim), resume_rows=done_rows)
        origin = NpyWriter(part / "origin.i32.npy", np.int32, (n, 2), resume_rows=done_rows)
        top = TopK(q16.astype(np.float32), GT_K)
        if ckpt:
            with np.load(part / "checkpoint.npz") as z:
                top.sim, top.idx = z["sim"], z["idx"]
        first = done_rows // BLOCK
        with Bar(prog, "generate + exact top-100", n - done_rows, "rows") as bar:
            for b in range(first, -(-n // BLOCK)):
                s, e = b * BLOCK, min(n, (b + 1) * BLOCK)
                t1 = time.perf_counter()
                blk, org = make_block(b, s, e, real, nbr, pos_sorted, id_sorted,
                                      args.seed, args.m, args.alpha, args.spread)
                base.write(blk)
                origin.write(org)
                t2 = time.perf_counter()
                top.add(blk, s)
                t3 = time.perf_counter()
                timings["ground_truth_s"] += t3 - t2
                timings["generate_and_write_s"] += t2 - t1
                if (b + 1) % CHECKPOINT_BLOCKS == 0 and e < n:
                    snap = dict(timings, session_wall_s=timings["session_wall_s"]
                                + [time.perf_counter() - t_all])
                    _save_checkpoint(part, key, e, top, snap, (base, origin))
                    timings["checkpoint_s"] += time.perf_counter() - t3
                bar.advance(e - s)
        t1 = time.perf_counter()
        base.close()
        origin.close()
        gt, sim = top.result()
        np.save(part / "gt.i32.npy", gt.astype(np.int32))
        np.save(part / "gt_sim.f32.npy", sim.astype(np.float32))
        np.save(part / "queries.f16.npy", q16)
        timings["close_s"] = time.perf_counter() - t1
        prog.step()

        t0 = time.perf_counter()
        stats = realism_stats(part, real, q16, sim, gt, pos_sorted)
        timings["stats_s"] = time.perf_counter() - t0
        prog.step()
    timings["session_wall_s"].append(time.perf_counter() - t_all)
    timings["total_s"] = sum(timings["session_wall_s"])

    files = {}
    for name in ("base.f16.npy", "queries.f16.npy", "gt.i32.npy", "gt_sim.f32.npy",
                 "origin.i32.npy"):
        arr = np.load(part / name, mmap_mode="r")
        files[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                       "bytes": (part / name).stat().st_size}
    meta = {
        "complete": True, "version": VERSION, "name": out.name, "n": n, "dim": dim,
        "n_queries": len(q16), "gt_k": GT_K, "metric": "ip (cosine; unit-norm vectors)",
        "source": source, "params": params, "timings": timings, "stats": stats, "files": files,
        "bytes_total": sum(f["bytes"] for f in files.values()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": common.timestamp(),
        "machine": common.machine_info(),
    }
    (part / "meta.json").write_text(json.dumps(common.jsonable(meta), indent=2) + "\n")
    (part / "README.md").write_text(readme(meta))
    for name in ("make_scale.pid", "knn.i32.npy", "checkpoint.json", "checkpoint.npz"):
        (part / name).unlink(missing_ok=True)
    os.replace(part, out)
    print(fmt_stats(f"real {n_real:,} (source)", stats["real"]))
    print(fmt_stats(f"synthetic {n:,}", stats["synthetic"]))
    print(f"same-source share of the top-10: anchor {stats['synthetic']['same_anchor_top10']:.3f}, "
          f"dominant parent {stats['synthetic']['same_parent_top10']:.3f}; "
          f"real rows in the top-10 {stats['synthetic']['real_rows_in_top10']:.3f}")
    print(f"done: {out} ({meta['bytes_total'] / 1e9:.2f} GB) in {timings['total_s']:.0f} s "
          f"(kNN table {timings['knn_table_s']:.0f} s, generate+write "
          f"{timings['generate_and_write_s']:.0f} s, "
          f"ground truth {timings['ground_truth_s']:.0f} s)")
    return 0


def realism_stats(part: Path, real: np.ndarray, q16: np.ndarray, sim: np.ndarray,
                  gt: np.ndarray, real_pos: np.ndarray) -> dict:
    """Neighbour statistics of the real queries on the source set and the synthetic set."""
    _, rsim = exact_topk(q16.astype(np.float32), real)
    top10 = np.asarray(gt[:, :10])
    origin = np.load(part / "origin.i32.npy", mmap_mode="r")
    org = np.asarray(origin[top10.ravel()]).reshape(*top10.shape, 2)
    syn = neighbour_stats(sim)
    syn["same_anchor_top10"] = same_source_share(top10, org[..., 0], direct=True)
    syn["same_parent_top10"] = same_source_share(top10, org[..., 1], direct=True)
    syn["real_rows_in_top10"] = float(np.isin(top10, real_pos).mean())
    return {"real": neighbour_stats(rsim), "synthetic": syn,
            "note": "real queries; cos@k = cosine of the k-th nearest row; LID = Levina-Bickel "
                    "MLE on the 100 nearest; same_*_top10 = mean of 1 - distinct/10"}


def readme(meta: dict) -> str:
    p, t, st = meta["params"], meta["timings"], meta["stats"]
    r, s = st["real"], st["synthetic"]
    return f"""# {meta['name']}: synthetic scale set ({meta['n']:,} x {meta['dim']}, float16)

Made by `bench/make_scale.py` (sutradb) from the real set `{meta['source']['path']}`
({meta['source']['n']:,} MiniLM sentence embeddings of PyPI package summaries).
Same layout as the real set, so `bench/bench_ivf.py --data <this dir>` works unchanged.

| file | shape | what |
| --- | --- | --- |
| base.f16.npy | ({meta['n']}, {meta['dim']}) float16 | unit-norm corpus vectors |
| queries.f16.npy | ({meta['n_queries']}, {meta['dim']}) float16 | the real queries of the source set (real texts) |
| gt.i32.npy | ({meta['n_queries']}, 100) int32 | exact top-100 rows per query by cosine (float16 values as float32) |
| gt_sim.f32.npy | ({meta['n_queries']}, 100) float32 | their cosines |
| origin.i32.npy | ({meta['n']}, 2) int32 | [anchor, dominant parent]: real source rows of each row (a real row: itself) |

Generator (local Dirichlet mixture, seed {p['seed']}): {'all real rows kept at random positions; ' if p['include_real'] else ''}every
other row is normalize(sum_j w_j x_j) over a uniformly random real row (anchor) and
{p['m']} rows drawn from its {p['k']} exact nearest real neighbours, w = Dirichlet({p['alpha']}) plus a
zero-sum Gaussian jitter of scale {p['spread']} (an affine combination that may extrapolate),
rounded to float16. Rows depend only on (source, n, seed, k, m, alpha, spread).

Real queries, source set vs this set:

| | cos@1 mean (p10/p50/p90) | cos@10 mean (p10/p50/p90) | LID@100 median |
| --- | --- | --- | --- |
| real {meta['source']['n']:,} | {r['cos1_mean']:.3f} ({r['cos1']['p10']:.3f}/{r['cos1']['p50']:.3f}/{r['cos1']['p90']:.3f}) | {r['cos10_mean']:.3f} ({r['cos10']['p10']:.3f}/{r['cos10']['p50']:.3f}/{r['cos10']['p90']:.3f}) | {r['lid100_median']:.1f} |
| this set | {s['cos1_mean']:.3f} ({s['cos1']['p10']:.3f}/{s['cos1']['p50']:.3f}/{s['cos1']['p90']:.3f}) | {s['cos10_mean']:.3f} ({s['cos10']['p10']:.3f}/{s['cos10']['p50']:.3f}/{s['cos10']['p90']:.3f}) | {s['lid100_median']:.1f} |

Share of a query's top-10 from the same source (1 - distinct/10): same anchor
{s['same_anchor_top10']:.3f}, same dominant parent {s['same_parent_top10']:.3f}; real rows among the top-10:
{s['real_rows_in_top10']:.3f}.

Generation: {t['total_s']:.0f} s in all (kNN table {t['knn_table_s']:.0f} s, generate + write
{t['generate_and_write_s']:.0f} s, ground truth {t['ground_truth_s']:.0f} s) on a shared
2-core machine{f" (in {t['sessions']} sessions: interrupted and resumed)" if t['sessions'] > 1 else ""};
{meta['bytes_total'] / 1e9:.2f} GB on disk. Command: `{meta['command']}`.
See meta.json for everything, and docs/benchmarks.md ("Scale data sets") in sutradb.
"""


# --------------------------------------------------------------------------- validate

def validate(args) -> int:
    """Grow random subsets of the real set back to its size with the generator and
    compare, on the real queries, with the real set itself."""
    src = args.src or common.SHARED_DATA / "pypi-minilm-100k"
    real, q16 = load_source(src, args.queries)
    q = q16.astype(np.float32)
    n = len(real)
    rgt, rsim = exact_topk(q, real)
    perm = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(2 ** 31 + 1,))
                                 ).permutation(n)
    rows = []
    with common.Progress(total_steps=len(args.validate_seeds), title="validate",
                         enabled=False if args.no_progress else None) as prog:
        for ns in args.validate_seeds:
            seeds = real[np.sort(perm[:ns])]
            nbr = knn_table(seeds, min(args.k, ns - 1), prog)
            # the nearest seed of every real row: the real set's own "source"
            near_real = nearest_rows(seeds, real)
            st = neighbour_stats(rsim)
            st["same_source_top10"] = same_source_share(rgt, near_real)
            rows.append((f"real {n:,} (source = nearest of {ns:,} seeds)", st, None))
            pos = real_positions(n, ns, args.seed)
            order = np.argsort(pos)
            syn = np.empty((n, real.shape[1]), dtype=np.float16)
            anchor = np.empty(n, dtype=np.int32)
            for b, s in enumerate(range(0, n, BLOCK)):
                e = min(n, s + BLOCK)
                blk, org = make_block(b, s, e, seeds, nbr, pos[order], order.astype(np.int64),
                                      args.seed, args.m, args.alpha, args.spread)
                syn[s:e], anchor[s:e] = blk, org[:, 0]
            is_seed = np.zeros(n, dtype=bool)
            is_seed[pos] = True
            sgt, ssim = exact_topk(q, syn)
            sgt = sgt.astype(np.int64)
            st = neighbour_stats(ssim)
            st["same_source_top10"] = same_source_share(sgt, nearest_rows(seeds, syn))
            st["same_anchor_top10"] = same_source_share(sgt, anchor)
            st["real_rows_in_top10"] = float(is_seed[sgt[:, :10]].mean())
            rows.append((f"synthetic {n:,} from {ns:,} seeds", st, (syn, sgt)))
            st_seed = neighbour_stats(exact_topk(q, seeds)[1])
            rows.append((f"the {ns:,} seeds alone", st_seed, None))
            prog.step()
    print(f"\ngenerator k={args.k} m={args.m} alpha={args.alpha} spread={args.spread} "
          f"seed={args.seed}; "
          f"{len(q)} real queries")
    for name, st, _ in rows:
        extra = "".join(f"  {k.replace('_top10', '')} {st[k]:.3f}"
                        for k in ("same_source_top10", "same_anchor_top10", "real_rows_in_top10")
                        if k in st)
        print(fmt_stats(name, st) + extra)
    if args.validate_hardness:
        print("\nrecall@10 at fixed settings (FAISS IVF1265 Flat / IVF1265,PQ48 nprobe 64 "
              "+ refine; hnswlib M=16 ef_construction=100):")
        print(f"{'set':34s} " + hardness(real, rgt, q, header=True))
        print(f"{f'real {n:,}':34s} " + hardness(real, rgt, q))
        for name, st, data in rows:
            if data is not None:
                print(f"{name:34s} " + hardness(data[0].astype(np.float32), data[1], q))
    return 0


def nearest_rows(seeds: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), 8192):
        out[s:s + 8192] = np.argmax(np.asarray(x[s:s + 8192], dtype=np.float32) @ seeds.T, axis=1)
    return out


def hardness(base: np.ndarray, gt: np.ndarray, q: np.ndarray, header: bool = False,
             nlist: int = 1265, threads: int = 2) -> str:
    """recall@10 of fixed FAISS/hnswlib settings: how hard the set is for each family."""
    cols = ["ivf_np4", "ivf_np16", "ivf_np64", "pq_np64", "pq_np64_refine5",
            "hnsw_ef10", "hnsw_ef20", "hnsw_ef40"]
    if header:
        return " ".join(f"{c:>8s}" for c in cols)
    import faiss
    import hnswlib
    faiss.omp_set_num_threads(threads)
    base = np.ascontiguousarray(base, dtype=np.float32)
    tr = common.training_sample(base, 65536, seed=0)
    d = base.shape[1]
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 10
    ivf.train(tr)
    ivf.add(base)
    r = {}
    for npb in (4, 16, 64):
        ivf.nprobe = npb
        r[f"ivf_np{npb}"] = common.recall_at_k(ivf.search(q, 10)[1], gt)
    pq = faiss.index_factory(d, f"IVF{nlist},PQ48", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(pq).cp.niter = 10
    pq.train(tr)
    rf = faiss.IndexRefineFlat(pq)
    rf.add(base)
    faiss.extract_index_ivf(pq).nprobe = 64
    rf.k_factor = 1
    r["pq_np64"] = common.recall_at_k(rf.search(q, 10)[1], gt)
    rf.k_factor = 5
    r["pq_np64_refine5"] = common.recall_at_k(rf.search(q, 10)[1], gt)
    h = hnswlib.Index(space="ip", dim=d)
    h.init_index(len(base), M=16, ef_construction=100, random_seed=1)
    h.add_items(base, num_threads=threads)
    for ef in (10, 20, 40):
        h.set_ef(ef)
        r[f"hnsw_ef{ef}"] = common.recall_at_k(h.knn_query(q, 10)[0], gt)
    return " ".join(f"{r[c]:8.3f}" for c in cols)


def main(args) -> int:
    return validate(args) if args.validate else make(args)


if __name__ == "__main__":
    sys.exit(main(ARGS))
