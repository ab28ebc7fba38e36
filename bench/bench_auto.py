#!/usr/bin/env python
"""Where ``index="auto"`` should move from exact search to flat PQ to IVF lists,
measured: the three index kinds at growing sizes on several real sets, at equal recall.

For each data set and each size n (the first n base rows; exact ground truth of that
subset computed here), databases are built through the public API as a user would:
``sutradb.open(..., index="flat")`` (exact scan of the stored vectors),
``index="pq"`` + ``build_index(kind="pq")`` (the default 4-bit codes, flat scan with
exact re-ranking), ``index="ivf"`` + ``build_index(kind="ivf")`` (blocked 4-bit IVF
lists, re-ranking), and the plain defaults (``sutradb.open(path)``, ``add_vectors``:
what ``index="auto"`` gives at that size, searched with no parameters). For each kind
the frontier of its knobs (``rerank``; ``nprobe`` x ``rerank`` for IVF) is walked and,
per nprobe, the cheapest re-rank depth reaching recall@10 >= ``--target`` is timed one
query per call, one thread; every point of every kind at that size is timed
interleaved in a rotated order, ``--repeats`` times, medians. The figure per kind is
its best QPS at the target recall; the crossovers are the sizes where the next kind
overtakes the previous one.

    .venv/bin/python bench/bench_auto.py --json bench/results/auto.json
    .venv/bin/python bench/bench_auto.py --data /work/shared/data/sift-5k --sizes 1000,2000,5000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

K = 10
DEFAULT_DATA = ["/work/shared/data/pypi-minilm-100k", "/work/shared/data/sift-5k",
                "/work/data/docstrings-minilm"]
DEFAULT_SIZES = (1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)
NPROBES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
RERANKS = (0, 10, 20, 30, 50, 80, 120, 200, 300, 500, 800)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", metavar="DIR")
    p.add_argument("--sizes", default=None, help="comma-separated sizes (default %s and the "
                   "set's full size)" % ",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--kinds", default="flat,pq,ivf,default")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--queries", type=int, default=200, help="queries timed one per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    a.data = a.data or [d for d in DEFAULT_DATA if Path(d).is_dir()]
    a.sizes_given = bool(a.sizes)
    a.sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else list(DEFAULT_SIZES)
    return a


def subset_gt(base: np.ndarray, Q: np.ndarray, metric: str, k: int = K) -> np.ndarray:
    """Exact top-k rows of ``base`` per query (ip for normalised sets, else l2)."""
    B = base.astype(np.float32)
    out = np.empty((len(Q), k), np.int64)
    bn = (B * B).sum(1) if metric == "l2" else None
    for s in range(0, len(Q), 256):
        S = Q[s:s + 256] @ B.T
        D = -S if metric != "l2" else bn[None, :] - 2 * S
        kk = min(k, B.shape[0])
        part = np.argpartition(D, kk - 1, axis=1)[:, :kk]
        o = np.lexsort((part, np.take_along_axis(D, part, 1)), axis=1)
        out[s:s + 256, :kk] = np.take_along_axis(part, o, 1)
    return out


def measure_size(base16, Q, metric, n, kinds, args, tmp):
    import sutradb

    gt = subset_gt(base16[:n], Q, metric)
    out = {"n": n, "kinds": {}}
    dbs, runs = {}, []

    def recall(fn):
        return common.recall_at_k(fn(Q)[1], gt, K)

    for kind in kinds:
        path = os.path.join(tmp, f"{kind}-{n}")
        t0 = time.perf_counter()
        if kind == "default":
            db = sutradb.open(path, "w", metric=metric)
            db.add_vectors(base16[:n])
            db.search_vectors(Q[:1], k=K)       # training deferred to the first search, if so
        else:
            db = sutradb.open(path, "w", metric=metric, index=kind)
            db.add_vectors(base16[:n])
            if kind != "flat":
                db.build_index(kind=kind)
        build = time.perf_counter() - t0
        dbs[kind] = db
        info = db.index_info
        out["kinds"][kind] = {"build_s": build, "index": info.get("kind"), "points": []}

        def fn_of(nprobe=None, rr=None, db=db):
            kw = {}
            if nprobe is not None:
                kw["nprobe"] = nprobe
            if rr is not None:
                kw["rerank"] = rr
            return lambda q: db.search_vectors(q, k=K, **kw)

        pts = []
        if kind == "default":
            pts.append(({}, recall(fn_of()), fn_of()))
        elif kind == "flat":
            pts.append(({}, recall(fn_of()), fn_of()))
        elif kind == "pq":
            for rr in RERANKS:
                r = recall(fn_of(rr=rr))
                pts.append(({"rerank": rr}, r, fn_of(rr=rr)))
                if r >= args.target:
                    break
        else:
            nlist = int(info.get("nlist") or 1)
            for nprobe in [p for p in NPROBES if p <= nlist]:
                for rr in RERANKS:
                    r = recall(fn_of(nprobe, rr))
                    if r >= args.target:
                        pts.append(({"nprobe": nprobe, "rerank": rr}, r, fn_of(nprobe, rr)))
                        break
        for params, r, fn in pts:
            if r >= args.target or kind in ("default", "flat"):
                runs.append((kind, params, r, fn))
    nq = min(args.queries, len(Q))
    qps = [[] for _ in runs]
    for rep in range(args.repeats):
        for i in common.rotated(list(range(len(runs))), rep):
            fn = runs[i][3]
            fn(Q[:1])
            lat, _ = common.time_each(lambda j: fn(Q[j:j + 1]), nq)
            qps[i].append(float(nq / lat.sum()))
    for (kind, params, r, _), q in zip(runs, qps):
        out["kinds"][kind]["points"].append({"params": params, "recall": r, "qps": float(np.median(q)),
                                             "qps_repeats": q})
    for kind, kd in out["kinds"].items():
        ok = [p for p in kd["points"] if p["recall"] >= args.target]
        kd["best"] = max(ok, key=lambda p: p["qps"]) if ok else None
        if kind == "default" and kd["points"]:
            kd["best"] = kd["points"][0]
    for db in dbs.values():
        db.close()
    return out


def main(argv=None):
    args = parse_args(argv)
    common.limit_threads(1)
    kinds = args.kinds.split(",")
    results = {"benchmark": "auto-index crossovers", "machine": common.machine_info(),
               "target": args.target, "datasets": []}
    for d in args.data:
        ds = common.load_dataset(d)
        base16 = np.load(Path(d) / "base.f16.npy", mmap_mode="r")
        metric = "cosine" if ds.metric == "ip" else "l2"
        sizes = sorted({min(s, len(base16)) for s in args.sizes}
                       | (set() if args.sizes_given else {len(base16)}))
        entry = {"dataset": ds.describe(), "metric": metric, "sizes": []}
        results["datasets"].append(entry)
        for n in sizes:
            tmp = tempfile.mkdtemp(prefix="sutradb-auto-")
            try:
                t0 = time.perf_counter()
                r = measure_size(np.ascontiguousarray(base16[:n]), ds.queries, metric, n, kinds, args, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            entry["sizes"].append(r)
            cells = []
            for kind in kinds:
                b = r["kinds"][kind]["best"]
                cells.append(f"{kind} {b['qps']:,.0f} q/s r={b['recall']:.3f} {b['params']}" if b else f"{kind} -")
            print(f"{Path(d).name} n={n:,} ({time.perf_counter() - t0:.0f} s): " + " | ".join(cells), flush=True)
            if args.json:
                common.write_json(args.json, results)
    if args.json:
        print(f"results: {common.write_json(args.json, results)}")
    return results


if __name__ == "__main__":
    main()
