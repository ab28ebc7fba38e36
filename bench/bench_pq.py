#!/usr/bin/env python
"""PQ engine benchmark: sutradb ProductQuantizer against FAISS and nanopq.

Same run, same training rows, same k-means iterations, same thread count for every
library. For each data set and each ``nbits``:

* nbits=8: sutradb, FAISS ``IndexPQ``, nanopq ``PQ(Ks=256)``
* nbits=4: sutradb, FAISS ``IndexPQFastScan``, nanopq ``PQ(Ks=16)``

it measures fit time, encode time (all base rows), batched search (all queries in one
call), one-query-per-call search (per-call latency p50/p95/p99 and QPS) and recall@10
against the exact ground truth. Each measurement is repeated; medians are reported and
the libraries are interleaved inside every repeat (A B C, B C A, ...) so machine noise
hits them alike. Ratios sutradb/peer and the bars of issue 2 are in the summary and JSON.

    .venv/bin/python bench/bench_pq.py --quick                 # ~1-2 min smoke run
    .venv/bin/python bench/bench_pq.py --plot bench/results/pq.png   # full run

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import time
import warnings
from pathlib import Path

DEFAULT_DATA = ["/work/shared/data/pypi-minilm-100k", "/work/shared/data/sift-5k"]
K = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", metavar="DIR",
                   help="data set directory with base.f16.npy, queries.f16.npy, gt.i32.npy "
                        "(repeatable; default: %s, those present)" % ", ".join(DEFAULT_DATA))
    p.add_argument("--m", type=int, default=None,
                   help="sub-quantizers (default: dim // 8, i.e. 48 for 384-d, 16 for 128-d)")
    p.add_argument("--nbits", type=int, action="append", choices=(4, 8),
                   help="bits per code (repeatable; default: 8 and 4)")
    p.add_argument("--metric", choices=("l2", "ip"), default=None,
                   help="force a metric (default: ip for L2-normalised data, else l2)")
    p.add_argument("--iters", type=int, default=25, help="k-means iterations (default 25 = FAISS's pq.cp.niter)")
    p.add_argument("--train-rows", type=int, default=None,
                   help="training sample rows (default 256 * 2**nbits, FAISS's default cap)")
    p.add_argument("--seed", type=int, default=0, help="seed for the training sample and models (default 0)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats of encode/search (default 5; --quick 2)")
    p.add_argument("--fit-repeats", type=int, default=None,
                   help="repeats of fit (default min(repeats, 3); --quick 1)")
    p.add_argument("--queries", type=int, default=None,
                   help="use the first N queries (default all; --quick 200)")
    p.add_argument("--threads", type=int, default=1, help="threads for every library (default 1)")
    p.add_argument("--min-time", type=float, default=None,
                   help="an encode / batched-search sample repeats the call until this many "
                        "seconds have passed, and one-query search loops over the queries "
                        "until then (small data sets; default 0.25; --quick 0.1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 repeats, 1 fit, 200 queries, nanopq fit extrapolated")
    p.add_argument("--no-nanopq", action="store_true", help="skip nanopq")
    p.add_argument("--no-faiss", action="store_true", help="skip FAISS")
    p.add_argument("--no-sutradb", action="store_true", help="skip sutradb")
    p.add_argument("--nanopq-queries", type=int, default=None,
                   help="queries timed for nanopq's pure-NumPy search (default 100; --quick 20)")
    p.add_argument("--nanopq-fit-budget", type=float, default=None,
                   help="seconds one nanopq fit may take before its fit time is extrapolated "
                        "from a fit of fewer subspaces (default: no limit; --quick 10)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="JSON output (default bench/results/pq-<timestamp>.json)")
    p.add_argument("--plot", metavar="PATH.png", default=None, help="write a PNG chart")
    p.add_argument("--no-progress", action="store_true", help="plain lines even on a TTY")
    p.add_argument("--from-json", metavar="PATH", default=None,
                   help="measure nothing: print the summary (and --plot) of an earlier run")
    a = p.parse_args(argv)
    q = a.quick
    a.repeats = a.repeats or (2 if q else 5)
    a.fit_repeats = a.fit_repeats or (1 if q else min(a.repeats, 3))
    a.queries = a.queries or (200 if q else None)
    if a.min_time is None:
        a.min_time = 0.1 if q else 0.25
    a.nanopq_queries = a.nanopq_queries or (20 if q else 100)
    if a.nanopq_fit_budget is None:
        a.nanopq_fit_budget = 10.0 if q else math.inf
    a.nbits = sorted(set(a.nbits or [8, 4]), reverse=True)
    if not a.data:
        a.data = [d for d in DEFAULT_DATA if Path(d).is_dir()]
    return a


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    # Before numpy / faiss / sutradb load their OpenMP and BLAS runtimes.
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_v] = str(ARGS.threads)

import numpy as np  # noqa: E402

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
if str(_HERE.parent) not in sys.path:
    sys.path.insert(1, str(_HERE.parent))      # the repo root, for an in-place built sutradb
import common  # noqa: E402


# --------------------------------------------------------------------------- peers

def _topk_rows(scores: np.ndarray, k: int, largest: bool) -> np.ndarray:
    s = -scores if largest else scores
    k = min(k, len(s))
    part = np.argpartition(s, k - 1)[:k]
    return part[np.lexsort((part, s[part]))]


class Peer:
    """One library at one nbits. Subclasses set name/library and implement the ops."""

    library = "?"
    name = "?"
    batch_api = True            # False: "batched" search is a per-query loop
    max_timed_queries = None    # time only this many queries (slow pure-Python search)

    def __init__(self, dim, m, nbits, metric, iters, seed, threads):
        self.dim, self.m, self.nbits, self.metric = dim, m, nbits, metric
        self.ks = 1 << nbits
        self.iters, self.seed, self.threads = iters, seed, threads
        self.notes: list[str] = []
        self.fit_extrapolated = None

    def fit(self, sample):
        raise NotImplementedError

    def warmup(self, sample, queries):
        """Untimed: a tiny fit/encode/search so one-time costs (lazy imports, first-touch
        allocations, thread pools) do not land in the first timed sample."""
        iters, budget = self.iters, getattr(self, "fit_budget", None)
        try:
            self.iters = 2
            if budget is not None:
                self.fit_budget = math.inf
            small = sample[: min(len(sample), 4 * self.ks)]
            self.fit(small)
            self.encode(small)
            self.search_batch(queries[:2], K)
            self.search_one(queries[:1], K)
        finally:
            self.iters = iters
            if budget is not None:
                self.fit_budget = budget
            if hasattr(self, "pq"):
                self.pq = None

    def encode(self, base):
        raise NotImplementedError

    def search_batch(self, queries, k):
        raise NotImplementedError

    def search_one(self, q, k):
        return self.search_batch(q, k)


class FaissPeer(Peer):
    library = "faiss"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        import faiss
        self.faiss = faiss
        self.fast = self.nbits == 4
        self.name = "faiss-IndexPQFastScan" if self.fast else "faiss-IndexPQ"
        self.fmetric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        self.index = None

    def fit(self, sample):
        f = self.faiss
        cls = f.IndexPQFastScan if self.fast else f.IndexPQ
        idx = cls(self.dim, self.m, self.nbits, self.fmetric)
        idx.pq.cp.niter = self.iters
        # Use exactly the rows given (FAISS would otherwise subsample above 256 * Ks).
        idx.pq.cp.max_points_per_centroid = max(256, -(-len(sample) // self.ks))
        idx.pq.cp.seed = 1234 + self.seed
        idx.pq.cp.min_points_per_centroid = 1   # only silences FAISS's small-sample warning
        idx.train(sample)
        self.index = idx

    def encode(self, base):
        self.index.reset()
        self.index.add(base)

    def search_batch(self, queries, k):
        return self.index.search(queries, k)[1]


class NanopqPeer(Peer):
    library = "nanopq"
    batch_api = False

    def __init__(self, *a, max_timed_queries=100, fit_budget=math.inf, **kw):
        super().__init__(*a, **kw)
        import nanopq
        self.nanopq = nanopq
        self.name = f"nanopq-PQ(Ks={self.ks})"
        self.max_timed_queries = max_timed_queries
        self.fit_budget = fit_budget
        self.pq = None
        self.codes = None
        self.notes.append("search is pure NumPy (dtable + adist + argpartition), one query "
                          "per call; 'batched' is the same loop")

    def _new(self, m):
        return self.nanopq.PQ(M=m, Ks=self.ks, metric="dot" if self.metric == "ip" else "l2",
                              verbose=False)

    def fit(self, sample):
        with warnings.catch_warnings():
            # scipy's kmeans2 warns about empty clusters (nanopq keeps them as they are).
            warnings.simplefilter("ignore", UserWarning)
            return self._fit(sample)

    def _fit(self, sample):
        if self.fit_budget == math.inf:
            self.pq = self._new(self.m).fit(sample, iter=self.iters, seed=self.seed)
            return None
        # Budgeted: time a fit of the first few subspaces (nanopq trains them one after
        # another, independently), extrapolate by m / m_part; if the whole fit fits the
        # budget, do it for real instead.
        m_part = max(1, self.m // 16)
        ds = self.dim // self.m
        part = np.ascontiguousarray(sample[:, : m_part * ds])
        t, _ = common.time_call(lambda: self._new(m_part).fit(part, iter=self.iters, seed=self.seed))
        est = t * self.m / m_part
        if est <= self.fit_budget:
            t, self.pq = common.time_call(
                lambda: self._new(self.m).fit(sample, iter=self.iters, seed=self.seed))
            return t
        self.fit_extrapolated = (f"fit time extrapolated: {m_part} of {self.m} subspaces "
                                 f"timed at {self.iters} iterations, x{self.m / m_part:g}")
        if self.pq is None:
            # A model for encode/search within the budget: fewer k-means iterations.
            it = max(1, int(self.iters * self.fit_budget / est))
            self.pq = self._new(self.m).fit(sample, iter=it, seed=self.seed)
            self.notes.append(f"model for encode/search fitted with {it} of {self.iters} "
                              f"iterations (budget); its recall is not comparable")
        return est

    def encode(self, base):
        self.codes = self.pq.encode(base)

    def search_one(self, q, k):
        dist = self.pq.dtable(q[0]).adist(self.codes)
        return _topk_rows(dist, k, largest=self.metric == "ip")[None, :]

    def search_batch(self, queries, k):
        return np.vstack([self.search_one(queries[i:i + 1], k) for i in range(len(queries))])


class SutraPeer(Peer):
    library = "sutradb"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from sutradb import ProductQuantizer
        self.cls = ProductQuantizer
        self.name = f"sutradb-PQ{self.nbits}"
        self.pq = None
        self.codes = None
        self._encode_kw = {}
        try:
            if "threads" in inspect.signature(ProductQuantizer.encode).parameters:
                self._encode_kw = {"threads": self.threads}
        except (TypeError, ValueError):
            pass

    def fit(self, sample):
        pq = self.cls(self.dim, self.m, nbits=self.nbits, metric=self.metric, seed=self.seed)
        pq.fit(sample, max_train=len(sample), iters=self.iters, threads=self.threads)
        self.pq = pq

    def encode(self, base):
        self.codes = self.pq.encode(base, **self._encode_kw)

    def search_batch(self, queries, k):
        return self.pq.search(queries, self.codes, k=k, threads=self.threads)[1]


def sutradb_status():
    """(ok, version or error) without letting an import failure stop the benchmark."""
    try:
        import sutradb
        from sutradb import ProductQuantizer  # noqa: F401
        return True, getattr(sutradb, "__version__", "?")
    except Exception as e:  # ImportError, missing extension, ...
        return False, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- running

OPS = ("fit", "encode", "search_batch", "search_single")


def run_group(ds, nbits, peers, args, prog, sample):
    """All measurements for one data set at one nbits; returns result rows."""
    nq = len(ds.queries)
    tag = f"{ds.name} nbits={nbits}"
    res = {p.name: {"fit": [], "encode": [], "search_batch": [], "search_single": [],
                    "latency": [], "encode_calls": 1, "batch_calls": 1, "single_passes": 1, "recall_batch": None, "recall_single": None,
                    "queries_timed_batch": nq, "queries_timed_single": nq} for p in peers}

    def tq(p):  # queries timed for this peer
        return nq if p.max_timed_queries is None else min(nq, p.max_timed_queries)

    for p in peers:
        with prog.op(f"{tag} warm-up {p.name}"):
            p.warmup(sample, ds.queries)

    # fit ------------------------------------------------------------------
    for r in range(args.fit_repeats):
        for p in common.rotated(peers, r):
            with prog.op(f"{tag} fit {p.name} [{r + 1}/{args.fit_repeats}]"):
                t, ret = common.time_call(lambda: p.fit(sample))
            res[p.name]["fit"].append(ret if isinstance(ret, float) else t)
            prog.step()
    prog.log(f"{tag} fit (s, median of {args.fit_repeats}): " + ", ".join(
        f"{p.name} {np.median(res[p.name]['fit']):.3g}" for p in peers))

    # encode ---------------------------------------------------------------
    n = len(ds.base)
    for r in range(args.repeats):
        for p in common.rotated(peers, r):
            with prog.op(f"{tag} encode {p.name} [{r + 1}/{args.repeats}]"):
                t, calls, _ = common.time_autorange(lambda: p.encode(ds.base), args.min_time)
            res[p.name]["encode"].append(t)
            res[p.name]["encode_calls"] = calls
            prog.step()
    prog.log(f"{tag} encode {n} rows (s): " + ", ".join(
        f"{p.name} {np.median(res[p.name]['encode']):.3g}" for p in peers))

    # recall (untimed for peers without a batch API: all queries, once) ---------
    for p in peers:
        if not p.batch_api:
            with prog.op(f"{tag} recall {p.name} ({nq} queries, untimed)", total=nq,
                         unit="q") as adv:
                _, out = common.time_each(lambda i: p.search_one(ds.queries[i:i + 1], K), nq,
                                          on_progress=adv)
            res[p.name]["recall_batch"] = common.recall_at_k(np.vstack(out), ds.gt, K)
            res[p.name]["recall_single"] = res[p.name]["recall_batch"]

    # batched search -------------------------------------------------------
    for r in range(args.repeats):
        for p in common.rotated(peers, r):
            m = tq(p)
            with prog.op(f"{tag} search batched {p.name} [{r + 1}/{args.repeats}]"):
                t, calls, I = common.time_autorange(lambda: p.search_batch(ds.queries[:m], K),
                                                    args.min_time)
            res[p.name]["search_batch"].append(t / m)        # seconds per query
            res[p.name]["batch_calls"] = calls
            res[p.name]["queries_timed_batch"] = m
            if p.batch_api and res[p.name]["recall_batch"] is None:
                res[p.name]["recall_batch"] = common.recall_at_k(I, ds.gt, K)
            prog.step()

    # one query per call ---------------------------------------------------
    for r in range(args.repeats):
        for p in common.rotated(peers, r):
            m = tq(p)
            qs = ds.queries
            with prog.op(f"{tag} search single {p.name} [{r + 1}/{args.repeats}]", total=m,
                         unit="q") as adv:
                lat, out = common.time_each(lambda i: p.search_one(qs[i:i + 1], K), m,
                                            on_progress=adv)
                passes = 1
                while lat.sum() < args.min_time and p.batch_api:   # small sets: more passes
                    more, _ = common.time_each(lambda i: p.search_one(qs[i:i + 1], K), m)
                    lat = np.concatenate([lat, more])
                    passes += 1
            res[p.name]["single_passes"] = passes
            res[p.name]["latency"].append(common.latency_stats(lat))
            res[p.name]["search_single"].append(float(lat.mean()))   # seconds per query
            res[p.name]["queries_timed_single"] = m
            if res[p.name]["recall_single"] is None:
                res[p.name]["recall_single"] = common.recall_at_k(np.vstack(out), ds.gt[:m], K)
            prog.step()
    prog.log(f"{tag} search QPS batched / single: " + ", ".join(
        f"{p.name} {1 / np.median(res[p.name]['search_batch']):,.0f} / "
        f"{1 / np.median(res[p.name]['search_single']):,.0f}" for p in peers))

    rows = []
    for p in peers:
        R = res[p.name]
        base = {"dataset": ds.name, "library": p.library, "peer": p.name, "nbits": nbits,
                "m": p.m, "metric": p.metric, "notes": list(p.notes)}
        fit = common.summarize(R["fit"])
        rows.append(base | {"operation": "fit", "seconds_median": fit["median"],
                            "seconds_min": fit["min"], "seconds_max": fit["max"],
                            "samples": fit["samples"], "n": len(sample),
                            "throughput": len(sample) / fit["median"], "unit": "train rows/s",
                            "iters": args.iters, "extrapolated": p.fit_extrapolated})
        enc = common.summarize(R["encode"])
        rows.append(base | {"operation": "encode", "seconds_median": enc["median"],
                            "seconds_min": enc["min"], "seconds_max": enc["max"],
                            "samples": enc["samples"], "n": n, "calls_per_sample": R["encode_calls"],
                            "throughput": n / enc["median"], "unit": "rows/s"})
        sb = common.summarize(R["search_batch"])
        rows.append(base | {"operation": "search_batch",
                            "seconds_median": sb["median"] * R["queries_timed_batch"],
                            "seconds_per_query": sb["median"], "samples": sb["samples"],
                            "n": R["queries_timed_batch"], "queries_total": nq,
                            "calls_per_sample": R["batch_calls"],
                            "throughput": 1 / sb["median"], "unit": "queries/s",
                            "batch_api": p.batch_api, "recall_at_10": R["recall_batch"]})
        ss = common.summarize(R["search_single"])
        lat = common.median_of_dicts(R["latency"], ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        rows.append(base | {"operation": "search_single",
                            "seconds_median": ss["median"] * R["queries_timed_single"],
                            "seconds_per_query": ss["median"], "samples": ss["samples"],
                            "n": R["queries_timed_single"], "queries_total": nq,
                            "passes_per_sample": R["single_passes"],
                            "throughput": 1 / ss["median"], "unit": "queries/s",
                            **lat, "recall_at_10": R["recall_single"]})
    return rows


# Bars from issue 2 section 6: (nbits, peer library, operation) -> minimum ratio.
BARS = {
    (8, "faiss", "search_batch"): 1.0, (8, "faiss", "search_single"): 1.0,
    (8, "faiss", "fit"): 1.0, (8, "faiss", "encode"): 1.0,
    (8, "nanopq", "fit"): 10.0,
    (4, "faiss", "search_batch"): 0.5, (4, "faiss", "search_single"): 0.5,
}
RECALL_TOLERANCE = 0.01


def compute_ratios(rows):
    """sutradb vs every peer: throughput ratios (>1 = sutradb faster), fit-time ratio
    (peer seconds / sutradb seconds), recall difference (sutradb - peer)."""
    out = []
    idx = {(r["dataset"], r["nbits"], r["library"], r["operation"]): r for r in rows}
    for (ds, nbits, lib, op), s in idx.items():
        if lib != "sutradb":
            continue
        for (ds2, nb2, plib, op2), p in idx.items():
            if (ds2, nb2, op2) != (ds, nbits, op) or plib == "sutradb":
                continue
            if op == "fit":
                ratio = p["seconds_median"] / s["seconds_median"]
                meaning = f"{p['peer']} fit seconds / sutradb fit seconds"
            else:
                ratio = s["throughput"] / p["throughput"]
                meaning = f"sutradb {s['unit']} / {p['peer']} {p['unit']}"
            bar = BARS.get((nbits, plib, op))
            item = {"dataset": ds, "nbits": nbits, "operation": op, "vs": p["peer"],
                    "vs_library": plib, "ratio": ratio, "meaning": meaning, "bar": bar,
                    "passes": None if bar is None else bool(ratio >= bar)}
            if p.get("extrapolated"):
                item["note"] = p["extrapolated"]
            out.append(item)
            if op == "search_batch" and s.get("recall_at_10") is not None \
                    and p.get("recall_at_10") is not None:
                diff = s["recall_at_10"] - p["recall_at_10"]
                need = plib == "faiss"
                item = {"dataset": ds, "nbits": nbits, "operation": "recall_at_10",
                        "vs": p["peer"], "vs_library": plib, "difference": diff,
                        "meaning": "sutradb recall@10 - peer recall@10",
                        "bar": -RECALL_TOLERANCE if need else None,
                        "passes": bool(diff >= -RECALL_TOLERANCE) if need else None}
                if _model_reduced(p):
                    item["note"] = "peer model fitted with fewer iterations: not comparable"
                out.append(item)
    dsets = list(dict.fromkeys(r["dataset"] for r in rows))
    ops = ("fit", "encode", "search_batch", "search_single", "recall_at_10")
    libs = ("faiss", "nanopq")
    out.sort(key=lambda x: (dsets.index(x["dataset"]), -x["nbits"], libs.index(x["vs_library"])
                            if x["vs_library"] in libs else 9, ops.index(x["operation"])))
    return out


# --------------------------------------------------------------------------- output

def print_summary(result, console=None):
    from rich.console import Console
    from rich.table import Table
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    rows = result["rows"]
    for ds in result["datasets"]:
        name = ds["name"]
        t = Table(title=f"{name}  (n={ds['n_base']:,}, d={ds['dim']}, {ds['metric']}, "
                        f"{result['parameters']['threads']} thread, medians)",
                  title_justify="left")
        for c in ("library", "nbits", "fit s", "encode s", "batched q/s", "single q/s",
                  "p50 ms", "p95 ms", "p99 ms", "recall@10"):
            t.add_column(c, justify="left" if c == "library" else "right")
        peers = []
        for r in rows:
            if r["dataset"] == name and (r["peer"], r["nbits"]) not in peers:
                peers.append((r["peer"], r["nbits"]))
        for peer, nbits in peers:
            g = {r["operation"]: r for r in rows
                 if r["dataset"] == name and r["peer"] == peer and r["nbits"] == nbits}
            fit = g["fit"]
            sb, ss = g["search_batch"], g["search_single"]
            fit_s = f"{fit['seconds_median']:.3g}" + ("*" if fit.get("extrapolated") else "")
            sub = lambda r: "" if r["n"] == r["queries_total"] else f" ({r['n']}q)"  # noqa: E731
            style = "bold" if g["fit"]["library"] == "sutradb" else None
            t.add_row(peer, str(nbits), fit_s, f"{g['encode']['seconds_median']:.3g}",
                      f"{sb['throughput']:,.0f}{sub(sb)}", f"{ss['throughput']:,.0f}{sub(ss)}",
                      f"{ss['p50_ms']:.3f}", f"{ss['p95_ms']:.3f}", f"{ss['p99_ms']:.3f}",
                      "—" if sb["recall_at_10"] is None else
                      f"{sb['recall_at_10']:.4f}" + ("†" if _model_reduced(sb) else ""),
                      style=style)
        console.print(t)
    if result["ratios"]:
        t = Table(title="sutradb vs peers (throughput ratio >1 = sutradb faster; fit: peer s / "
                        "sutradb s; recall: difference)", title_justify="left")
        for c in ("dataset", "nbits", "operation", "vs", "ratio", "bar", "ok"):
            t.add_column(c, justify="left" if c in ("dataset", "operation", "vs") else "right")
        for r in result["ratios"]:
            val = (f"{r['difference']:+.4f}" + ("†" if r.get("note") else "")
                   if r["operation"] == "recall_at_10"
                   else f"{r['ratio']:.2f}x" + ("*" if r.get("note") else ""))
            bar = "" if r["bar"] is None else (f"≥{r['bar']:+.2f}" if r["operation"] ==
                                               "recall_at_10" else f"≥{r['bar']:g}x")
            ok = {None: "", True: "[green]yes[/]", False: "[red]NO[/]"}[r["passes"]]
            t.add_row(r["dataset"], str(r["nbits"]), r["operation"], r["vs"], val, bar, ok)
        console.print(t)
    if any(_model_reduced(r) for r in rows):
        console.print("† nanopq model fitted with fewer k-means iterations to stay in "
                      "--nanopq-fit-budget: its recall is not comparable")
    if any(r.get("extrapolated") for r in rows):
        console.print("* " + "; ".join(sorted({r["extrapolated"] for r in rows
                                              if r.get("extrapolated")})))
    for note in result.get("notes", []):
        console.print(f"note: {note}", highlight=False)


COLORS = {"sutradb": "#1f77b4", "faiss": "#ff7f0e", "nanopq": "#2ca02c"}
SHORT = {"faiss-IndexPQ": "FAISS PQ", "faiss-IndexPQFastScan": "FAISS FastScan"}


def _short(r):
    name = SHORT.get(r["peer"], r["library"])
    return f"{name}\n{r['nbits']}-bit"


def _model_reduced(r):
    return any("not comparable" in n for n in r.get("notes", []))


def make_plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = result["rows"]
    ratio = {(x["dataset"], x["nbits"], x["operation"], x["vs_library"]): x["ratio"]
             for x in result["ratios"] if "ratio" in x}
    dsets = [d["name"] for d in result["datasets"]]
    fig, axes = plt.subplots(len(dsets), 3, figsize=(16, 4.8 * len(dsets)), squeeze=False)
    panels = (("search_batch", "batched search: queries/s (higher is better)", "throughput"),
              ("search_single", "one query per call: queries/s (higher is better)", "throughput"),
              ("fit", "fit time: s (lower is better)", "seconds_median"))
    order = ["sutradb", "faiss", "nanopq"]
    for i, ds in enumerate(dsets):
        meta = next(d for d in result["datasets"] if d["name"] == ds)
        for j, (op, title, key) in enumerate(panels):
            ax = axes[i][j]
            rs = [r for r in rows if r["dataset"] == ds and r["operation"] == op]
            rs.sort(key=lambda r: (-r["nbits"], order.index(r["library"])))
            vals = [r[key] for r in rs]
            xs = np.arange(len(rs))
            bars = ax.bar(xs, vals, color=[COLORS[r["library"]] for r in rs],
                          edgecolor="black", linewidth=0.6)
            for b, r in zip(bars, rs):
                if r["nbits"] == 4:
                    b.set_hatch("//")
            ax.set_yscale("log")
            ax.set_xticks(xs, [_short(r) for r in rs], fontsize=8)
            ax.set_title(f"{ds}: {title}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{ds}\nn={meta['n_base']:,}, d={meta['dim']}, m={meta.get('m')}, "
                              f"{meta['metric']}", fontsize=8.5)
            if vals:
                ax.set_ylim(min(vals) / 2, max(vals) * 8)
            for b, r, v in zip(bars, rs, vals):
                txt = f"{v:,.0f}" if key == "throughput" else f"{v:.3g} s"
                if op == "fit" and r.get("extrapolated"):
                    txt += "\n(extrapolated)"
                if op != "fit" and r.get("recall_at_10") is not None:
                    txt += f"\nR@10 {r['recall_at_10']:.3f}" + ("†" if _model_reduced(r) else "")
                if op != "fit" and r["n"] != r.get("queries_total", r["n"]):
                    txt += f"\n(timed on {r['n']} q)"
                if r["library"] == "sutradb":
                    rt = ratio.get((ds, r["nbits"], op, "faiss"))
                    if rt is not None:
                        txt += f"\n{rt:.2f}x FAISS"
                ax.annotate(txt, (b.get_x() + b.get_width() / 2, v), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
            ax.grid(axis="y", alpha=0.3, which="both")
    handles = [Patch(facecolor=COLORS[k], edgecolor="black", label=k) for k in order]
    handles += [Patch(facecolor="white", edgecolor="black", label="8-bit"),
                Patch(facecolor="white", edgecolor="black", hatch="//", label="4-bit")]
    fig.legend(handles=handles, loc="upper right", ncol=5, fontsize=8, frameon=False)
    p = result["parameters"]
    foot = ("ratios on sutradb bars: >1 = sutradb faster (fit: FAISS s / sutradb s).  "
            "† recall of a model fitted with fewer iterations (--quick budget).")
    fig.text(0.01, 0.005, foot, fontsize=7.5)
    fig.suptitle(f"sutradb PQ vs FAISS vs nanopq: {p['threads']} thread, median of "
                 f"{p['repeats']} (fit: {p['fit_repeats']}), {p['iters']} k-means iterations, "
                 f"same training rows; {result['machine']['cpu_model']}", fontsize=10, x=0.4)
    fig.tight_layout(rect=(0, 0.015, 1, 0.97))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main

def main(args):
    t_start = time.perf_counter()
    notes = []
    libs = []
    if not args.no_faiss:
        import faiss  # noqa: F401
        libs.append("faiss")
    if not args.no_nanopq:
        import nanopq  # noqa: F401
        libs.append("nanopq")
    sutra_ok, sutra_info = (False, "skipped (--no-sutradb)") if args.no_sutradb else sutradb_status()
    if sutra_ok:
        libs.append("sutradb")
    elif not args.no_sutradb:
        notes.append(f"sutradb not importable, benchmarked peers only: {sutra_info}")
        print(f"warning: {notes[-1]}", file=sys.stderr)
    # Imported everything with a thread pool: now pin them all.
    _ctl = common.limit_threads(args.threads)  # noqa: F841
    machine = common.machine_info(("faiss-cpu", "nanopq", "sutradb", "threadpoolctl"))
    if sutra_ok:
        machine["versions"]["sutradb"] = sutra_info

    datasets = []
    for d in args.data:
        ds = common.load_dataset(d, max_queries=args.queries, metric=args.metric)
        datasets.append(ds)
    if not datasets:
        sys.exit("no data set found (pass --data DIR)")

    def m_for(ds):
        m = args.m or max(1, ds.dim // 8)
        if ds.dim % m:
            sys.exit(f"--m {m} does not divide dim {ds.dim} of {ds.name}")
        return m

    def peers_for(ds, nbits):
        kw = dict(iters=args.iters, seed=args.seed, threads=args.threads)
        a = (ds.dim, m_for(ds), nbits, ds.metric)
        ps = []
        if "sutradb" in libs:
            ps.append(SutraPeer(*a, **kw))
        if "faiss" in libs:
            ps.append(FaissPeer(*a, **kw))
        if "nanopq" in libs:
            ps.append(NanopqPeer(*a, max_timed_queries=args.nanopq_queries,
                                 fit_budget=args.nanopq_fit_budget, **kw))
        return ps

    n_peers = len(libs)
    total = len(datasets) * len(args.nbits) * n_peers * (args.fit_repeats + 3 * args.repeats)
    rows = []
    params = {k: (v if v != math.inf else None) for k, v in vars(args).items()}
    params["k"] = K
    params["libraries"] = libs
    result = {"benchmark": "pq", "started": common.timestamp(), "machine": machine,
              "parameters": params, "datasets": [], "training": [], "rows": rows,
              "ratios": [], "notes": notes}

    enabled = False if args.no_progress else None
    with common.Progress(total, title="bench_pq", enabled=enabled) as prog:
        prog.log(f"libraries: {', '.join(libs)}; threads={args.threads}; repeats={args.repeats} "
                 f"(fit {args.fit_repeats}); iters={args.iters}")
        for ds in datasets:
            result["datasets"].append(ds.describe() | {"m": m_for(ds)})
            for nbits in args.nbits:
                ks = 1 << nbits
                n_train = min(len(ds.base), args.train_rows or 256 * ks)
                sample = common.training_sample(ds.base, n_train, seed=args.seed)
                result["training"].append({"dataset": ds.name, "nbits": nbits, "rows": n_train,
                                           "seed": args.seed, "iters": args.iters,
                                           "selection": "sorted(default_rng(seed).permutation(n)[:rows])"})
                peers = peers_for(ds, nbits)
                rows.extend(run_group(ds, nbits, peers, args, prog, sample))
                result["ratios"] = compute_ratios(rows)
                # Write what we have after every group: a crash keeps the earlier results.
                common.write_json(args.json, result)

    result["elapsed_s"] = time.perf_counter() - t_start
    result["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["ratios"] = compute_ratios(rows)
    path = common.write_json(args.json, result)
    print_summary(result)
    print(f"JSON: {path}  ({result['elapsed_s']:.0f}s)")
    if args.plot:
        print(f"plot: {make_plot(result, args.plot)}")
    return result


def replay(args):
    import json
    with open(args.from_json) as f:
        result = json.load(f)
    result["ratios"] = compute_ratios(result["rows"])
    print_summary(result)
    if args.plot:
        print(f"plot: {make_plot(result, args.plot)}")


if __name__ == "__main__":
    if ARGS.from_json:
        replay(ARGS)
        sys.exit(0)
    if ARGS.json is None:
        ARGS.json = str(common.default_json_path("pq"))
    main(ARGS)
