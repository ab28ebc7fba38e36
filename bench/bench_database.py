#!/usr/bin/env python
"""Database benchmark: ``sutradb.open`` with default settings against its peers.

Same run, same data, one thread for every query-time measurement. For each data set:

* build: ``add_vectors`` of every base row (one transaction; PQ training included when
  the database passes the default threshold);
* recall@10 of ``search_vectors`` with default settings (all queries, one batch);
* single-query latency (one query per call, one thread) of sutradb against FAISS
  ``IndexFlatIP``/``IndexFlatL2`` (exact) and FAISS ``IndexIVFPQ`` + ``IndexRefineFlat``
  tuned to the recall sutradb reaches (the fastest nprobe / k_factor that matches it);
* ``get()`` per second against ``sqlite3`` primary-key lookups of the same records
  (id, text, metadata JSON, float16 vector blob); cold (first touch) and warm passes;
* ``distance()`` single calls and ``distances()`` batched;
* resident memory per concept while searching, measured in a fresh child process that
  opens the database and runs the queries (anonymous memory and mapped file pages
  separately), against float32 vectors (``4 * dim`` bytes).

Measurements are repeated with the libraries interleaved (A B, B A, ...) and reported
by their medians; ratios are computed within the run.

    .venv/bin/python bench/bench_database.py                  # both data sets, ~10 min
    .venv/bin/python bench/bench_database.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

DEFAULT_DATA = ["/work/shared/data/pypi-minilm-100k", "/work/shared/data/sift-5k"]
K = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", metavar="DIR",
                   help="data set directory (repeatable; default: %s, those present)" % ", ".join(DEFAULT_DATA))
    p.add_argument("--queries", type=int, default=None, help="first N queries (default all; --quick 200)")
    p.add_argument("--latency-queries", type=int, default=None, help="queries timed one per call (default 500)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; --quick 2)")
    p.add_argument("--lookups", type=int, default=None, help="get()/sqlite lookups per pass (default 50,000)")
    p.add_argument("--quick", action="store_true", help="fewer queries/repeats")
    p.add_argument("--no-ivf", action="store_true", help="skip FAISS IVF-PQ")
    p.add_argument("--json", default=None, help="output JSON (default bench/results/database-<time>.json)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (2 if a.quick else 3)
    a.queries = a.queries or (200 if a.quick else None)
    a.latency_queries = a.latency_queries or (200 if a.quick else 500)
    a.lookups = a.lookups or (10_000 if a.quick else 50_000)
    return a


# --------------------------------------------------------------------------- memory

_CHILD = common.CHILD_MEMORY_HELPERS + r"""
import json, sys, numpy as np
import sutradb
Q = np.load(sys.argv[2]).astype(np.float32)[: int(sys.argv[3])]
before = status()
db = sutradb.open(sys.argv[1], mode="r")
opened = status()
for q in Q:
    db.search_vectors(q, k=10)
after = status()
print(json.dumps({"before": before, "opened": opened, "after": after, "n": len(db),
                  "index": db.index_info["kind"], "db_file_rss": file_rss(sys.argv[1])}))
"""


def memory_in_child(path, queries_file, nq):
    out = subprocess.run([sys.executable, "-c", _CHILD, path, str(queries_file), str(nq)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one data set

def bench_dataset(path, args, prog):
    import faiss
    import numpy as np

    import sutradb

    ds = common.load_dataset(path, max_queries=args.queries)
    base16 = np.load(Path(path) / "base.f16.npy")
    n, dim = ds.base.shape
    metric = "cosine" if ds.metric == "ip" else "l2"
    res = {"dataset": ds.describe(), "sutradb_metric": metric}
    prog.log(f"== {ds.name}: {n} x {dim}, {len(ds.queries)} queries, metric {metric}")

    tmp = tempfile.mkdtemp(prefix="sutradb-bench-")
    dbpath = os.path.join(tmp, "db")
    common.limit_threads(None)
    with prog.op("build sutradb", total=1):
        t0 = time.perf_counter()
        db = sutradb.open(dbpath, "w")
        db.add_vectors(base16, texts=[f"concept {i}" for i in range(n)],
                       metadata=[{"i": i, "even": i % 2 == 0} for i in range(n)])
        res["build_s"] = time.perf_counter() - t0
        res["index"] = db.index_info
        db.close()
    prog.log(f"   build (add_vectors + index): {res['build_s']:.1f} s, index {res['index']['kind']}")
    prog.step()

    common.limit_threads(1)
    db = sutradb.open(dbpath, "r")
    Q = ds.queries
    # recall with defaults
    D, I = db.search_vectors(Q, k=K)
    rec = common.recall_at_k(I, ds.gt, K)
    res["recall@10_default"] = rec
    prog.log(f"   recall@10 (defaults): {rec:.4f}")

    # FAISS peers
    flat = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    flat.add(ds.base)
    peers = {"faiss_flat": lambda q: flat.search(q, K)}
    ivf_info = None
    if not args.no_ivf and n >= 20_000:
        with prog.op("train faiss ivf-pq", total=1):
            nlist = 1024
            m = dim // 8
            mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
            quant = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
            ivf = faiss.IndexIVFPQ(quant, dim, nlist, m, 8, mt)
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            ivf.train(common.training_sample(ds.base, 65_536))
            ref = faiss.IndexRefineFlat(ivf)
            ref.add(ds.base)
            faiss.omp_set_num_threads(1)
        best = None
        sweep = []
        for nprobe in (16, 32, 64, 128, 256):
            for kf in (4, 8, 16, 32):
                ps = faiss.IndexRefineSearchParameters(k_factor=kf, base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
                _, Ii = ref.search(Q, K, params=ps)
                r = common.recall_at_k(Ii, ds.gt, K)
                lat, _ = common.time_each(lambda i: ref.search(Q[i:i + 1], K, params=ps), min(200, len(Q)))
                p50 = float(np.median(lat))
                sweep.append({"nprobe": nprobe, "k_factor": kf, "recall": r, "p50_ms": p50 * 1e3})
                if r >= rec - 1e-9 and (best is None or p50 < best[2]):
                    best = (nprobe, kf, p50, r)
        # sutradb's own recall/latency curve (rerank depth), to compare at equal recall
        curve = []
        for rr in (0, 20, 30, 50, 100, 200):
            _, Is = db.search_vectors(Q, k=K, rerank=rr)
            r_s = common.recall_at_k(Is, ds.gt, K)
            lat_s, _ = common.time_each(lambda i: db.search_vectors(Q[i:i + 1], k=K, rerank=rr),
                                        min(200, len(Q)))
            curve.append({"rerank": rr, "recall": r_s, "p50_ms": float(np.median(lat_s)) * 1e3})
        res["sutradb_rerank_curve"] = curve
        target = min(rec, max(x["recall"] for x in sweep))
        ivf_at = min((x for x in sweep if x["recall"] >= target), key=lambda x: x["p50_ms"])
        su_at = min((x for x in curve if x["recall"] >= target), key=lambda x: x["p50_ms"])
        res["same_recall"] = {"target_recall": target, "faiss_ivfpq_refine": ivf_at, "sutradb": su_at,
                              "sutradb_speedup": ivf_at["p50_ms"] / su_at["p50_ms"]}
        prog.log(f"   at recall >= {target:.4f}: sutradb rerank={su_at['rerank']} p50 "
                 f"{su_at['p50_ms']:.3f} ms vs faiss ivf-pq+refine nprobe={ivf_at['nprobe']} "
                 f"k_factor={ivf_at['k_factor']} p50 {ivf_at['p50_ms']:.3f} ms")
        if best is not None:
            ps_best = faiss.IndexRefineSearchParameters(
                k_factor=best[1], base_index_params=faiss.SearchParametersIVF(nprobe=best[0]))
            peers["faiss_ivfpq_refine"] = lambda q: ref.search(q, K, params=ps_best)
            ivf_info = {"nlist": nlist, "m": m, "nprobe": best[0], "k_factor": best[1],
                        "recall@10": best[3], "sweep": sweep}
        else:
            ivf_info = {"nlist": nlist, "m": m, "matched": False, "sweep": sweep}
        res["faiss_ivfpq_refine"] = ivf_info
        prog.log(f"   faiss ivf-pq+refine at sutradb's recall: {ivf_info.get('nprobe')=}, "
                 f"{ivf_info.get('k_factor')=}")

    # single-query latency, interleaved
    nl = min(args.latency_queries, len(Q))
    libs = {"sutradb": lambda q: db.search_vectors(q, k=K), **peers}
    lat = {name: [] for name in libs}
    with prog.op("single-query latency", total=args.repeats * len(libs) * nl, unit="q") as adv:
        for r in range(args.repeats):
            for name in common.rotated(list(libs), r):
                fn = libs[name]
                ls, _ = common.time_each(lambda i: fn(Q[i:i + 1]), nl, on_progress=adv)
                lat[name].append(common.latency_stats(ls))
    res["latency"] = {name: common.median_of_dicts(v, ["p50_ms", "p95_ms", "p99_ms", "mean_ms", "qps"])
                      for name, v in lat.items()}
    for name, v in res["latency"].items():
        prog.log(f"   {name:20s} p50 {v['p50_ms']:.3f} ms  qps {v['qps']:.0f}")
    s50 = res["latency"]["sutradb"]["p50_ms"]
    res["speedup_vs_faiss_flat"] = res["latency"]["faiss_flat"]["p50_ms"] / s50
    if "faiss_ivfpq_refine" in res["latency"]:
        res["speedup_vs_faiss_ivfpq_refine"] = res["latency"]["faiss_ivfpq_refine"]["p50_ms"] / s50
    prog.step()
    del flat

    # get() vs sqlite
    con = sqlite3.connect(":memory:")
    con.execute("create table c (id integer primary key, key text, text text, meta text, vec blob)")
    con.executemany("insert into c values (?, ?, ?, ?, ?)",
                    ((i, None, f"concept {i}", json.dumps({"i": i, "even": i % 2 == 0}),
                      base16[i].tobytes()) for i in range(n)))
    con.commit()
    cur = con.cursor()
    rnd = random.Random(0)
    # distinct ids: a cold pass reads each id for the first time on its handle
    look = rnd.sample(range(n), min(args.lookups, n))

    def run_sqlite():
        ex = cur.execute
        t0 = time.perf_counter()
        for i in look:
            row = ex("select id, key, text, meta, vec from c where id = ?", (i,)).fetchone()
            json.loads(row[3])
            np.frombuffer(row[4], np.float16)
        return len(look) / (time.perf_counter() - t0)

    def run_get(dbx):
        g = dbx.get
        t0 = time.perf_counter()
        for i in look:
            g(i)
        return len(look) / (time.perf_counter() - t0)

    def run_many(dbx):
        gm = dbx.get_many
        t0 = time.perf_counter()
        for a in range(0, len(look), 1000):
            gm(look[a:a + 1000])
        return len(look) / (time.perf_counter() - t0)

    cold, warm, many, sq = [], [], [], []
    for r in range(args.repeats):
        for name in common.rotated(["sqlite", "sutradb", "get_many"], r):
            if name == "sqlite":
                sq.append(run_sqlite())
            elif name == "sutradb":
                dbg = sutradb.open(dbpath, "r")         # a fresh handle: every id cold
                cold.append(run_get(dbg))
                run_get(dbg)            # a row enters the record cache on its second read
                warm.append(run_get(dbg))
                dbg.close()
            else:
                dbg = sutradb.open(dbpath, "r")
                many.append(run_many(dbg))
                dbg.close()
    res["get_per_s"] = {"sutradb_cold": statistics.median(cold), "sutradb_warm": statistics.median(warm),
                        "sutradb_get_many": statistics.median(many), "sqlite": statistics.median(sq),
                        "samples": {"cold": cold, "warm": warm, "get_many": many, "sqlite": sq}}
    res["get_vs_sqlite_warm"] = res["get_per_s"]["sutradb_warm"] / res["get_per_s"]["sqlite"]
    res["get_vs_sqlite_cold"] = res["get_per_s"]["sutradb_cold"] / res["get_per_s"]["sqlite"]
    res["get_many_vs_sqlite"] = res["get_per_s"]["sutradb_get_many"] / res["get_per_s"]["sqlite"]
    prog.log(f"   get()/s warm {res['get_per_s']['sutradb_warm']:,.0f} cold {res['get_per_s']['sutradb_cold']:,.0f}"
             f"  get_many {res['get_per_s']['sutradb_get_many']:,.0f}"
             f"  sqlite {res['get_per_s']['sqlite']:,.0f}")
    con.close()
    prog.step()

    # distances
    pairs = [(rnd.randrange(n), rnd.randrange(n)) for _ in range(100_000)]
    P = np.array([(rnd.randrange(n), rnd.randrange(n)) for _ in range(1_000_000)], np.int64)
    db.distance(0, 1)                       # builds the lookup table
    single, batched = [], []
    for r in range(args.repeats):
        dist = db.distance
        t0 = time.perf_counter()
        for a, b in pairs:
            dist(a, b)
        single.append(len(pairs) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        db.distances(P)
        batched.append(len(P) / (time.perf_counter() - t0))
    res["distance_pairs_per_s"] = {"single": statistics.median(single), "batched": statistics.median(batched),
                                   "samples": {"single": single, "batched": batched}}
    prog.log(f"   distance(): {res['distance_pairs_per_s']['single']:,.0f} pairs/s single, "
             f"{res['distance_pairs_per_s']['batched']:,.0f} batched")
    db.close()
    prog.step()

    # memory per concept while searching (fresh child process)
    mem = memory_in_child(dbpath, Path(path) / "queries.f16.npy", min(1000, len(Q)))
    d_anon = mem["after"]["RssAnon"] - mem["before"]["RssAnon"]
    d_file = mem["after"]["RssFile"] - mem["before"]["RssFile"]
    res["memory"] = {**mem, "anon_bytes_per_concept": d_anon / n, "file_bytes_per_concept": d_file / n,
                     "float32_bytes_per_concept": 4 * dim,
                     "codes_bytes_per_concept": res["index"].get("code_size")}
    res["memory"]["ratio_anon_plus_file_vs_float32"] = (d_anon + d_file) / n / (4 * dim)
    fr = mem.get("db_file_rss", {})
    res["memory"]["db_file_rss_bytes_per_concept"] = {k: v / n for k, v in fr.items()}
    search_set = d_anon + sum(v for k, v in fr.items() if k != "vec")
    res["memory"]["resident_without_vector_pages_per_concept"] = search_set / n
    res["memory"]["ratio_without_vector_pages_vs_float32"] = search_set / n / (4 * dim)
    prog.log(f"   memory while searching: +{d_anon / n:.0f} B/concept anonymous, "
             f"+{d_file / n:.0f} B/concept mapped file pages (float32 vectors: {4 * dim} B); "
             f"database files resident per concept: "
             + ", ".join(f"{k} {v / n:.0f} B" for k, v in sorted(fr.items())))
    prog.step()
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def main(argv=None):
    args = parse_args(argv)
    common.limit_threads_env(None)
    import faiss  # noqa: F401  (loaded before limiting thread pools)
    import numpy  # noqa: F401

    import sutradb  # noqa: F401
    data = args.data or [d for d in DEFAULT_DATA if Path(d).is_dir()]
    result = {"benchmark": "database", "args": vars(args),
              "machine": common.machine_info(("faiss-cpu", "sutradb", "numpy")), "datasets": []}
    with common.Progress(total_steps=5 * len(data), title="database bench",
                         enabled=False if args.no_progress else None) as prog:
        for d in data:
            result["datasets"].append(bench_dataset(d, args, prog))
    path = common.write_json(args.json or common.default_json_path("database"), result)
    print(f"wrote {path}")
    for r in result["datasets"]:
        print(f"{r['dataset']['name']}: recall@10 {r['recall@10_default']:.4f}; "
              f"p50 {r['latency']['sutradb']['p50_ms']:.3f} ms = {r['speedup_vs_faiss_flat']:.1f}x faiss flat"
              + (f", {r['speedup_vs_faiss_ivfpq_refine']:.2f}x faiss ivf-pq+refine"
                 if "speedup_vs_faiss_ivfpq_refine" in r else "")
              + (f" (same recall {r['same_recall']['target_recall']:.3f}: "
                 f"{r['same_recall']['sutradb_speedup']:.2f}x faiss ivf-pq+refine)" if "same_recall" in r else "")
              + f"; get {r['get_vs_sqlite_warm']:.2f}x sqlite warm ({r['get_vs_sqlite_cold']:.2f}x cold,"
              f" get_many {r.get('get_many_vs_sqlite', float('nan')):.2f}x)"
              f"; distance {r['distance_pairs_per_s']['single']:,.0f}/s single, "
              f"{r['distance_pairs_per_s']['batched']:,.0f}/s batched"
              f"; memory {r['memory']['ratio_anon_plus_file_vs_float32']:.3f} of float32 "
              f"({r['memory']['ratio_without_vector_pages_vs_float32']:.3f} without re-ranked vector pages)")
    return result


if __name__ == "__main__":
    main()
