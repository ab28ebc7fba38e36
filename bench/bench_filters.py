#!/usr/bin/env python
"""Filtered search and listing: the field index against the code before it, and peers.

100,000 real vectors (pypi-minilm-100k) with synthetic metadata whose filters select
1 %, 10 % and 50 % of the rows:

* ``cat`` (a string; one value per row): ``{"cat": "c1"}`` / ``"c10"`` / ``"c50"``;
* ``year`` (an int, uniform over 1900..1999): ``{"year": {"$lt": 1901}}`` / 1910 / 1950;
* ``tags`` (a list of strings; "t1" / "t10" / "t50" each present independently with
  that probability, plus a filler tag): ``{"tags": {"$contains": "t1"}}``... (the code
  before the field index has no list filter, so only this branch and the peers run it).

Measured for each filter: ``search_vectors`` with one query per call (k=10, one
thread) over the first ``--queries`` queries (p50 latency, recall@10 against the exact
filtered top-10 computed here by brute force); ``count(where)``; ``find_ids(where)``
(every matching id) and ``find(where, limit=100)``; and, in each fresh process, the
first filtered call (which builds the metadata index and the field index of its
path) and the open.

Variants run as child processes on a database built once (read-only opens), A B B A
... over ``--repeats`` rounds; the figures are medians over rounds and the ratios are
taken within the run:

* ``after``: this checkout;
* ``before``: ``--base DIR``, a worktree of the commit before the field index
  (``git worktree add DIR <commit>`` and copy the built kernels into it);
* peers, with ``--peers-python`` (a separate venv): LanceDB (IVF-PQ index over the
  vectors, scalar indexes BITMAP on ``cat``, BTREE on ``year``, LABEL_LIST on ``tags``,
  pre-filtering) and Chroma (HNSW, ``where`` with ``$contains`` on the list), each
  when it imports.

Run pinned to one core, e.g.::

    taskset -c 0 .venv/bin/python bench/bench_filters.py --base /work/wt-filters-base \\
        --peers-python /work/venv-peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = "/work/shared/data/pypi-minilm-100k"
K = 10
SELECTIVITY = (1, 10, 50)


# ---------------------------------------------------------------------- data

def make_metadata(n: int, seed: int = 0):
    """The synthetic metadata (a list of dicts) and, per filter name, its row mask."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    cat = np.full(n, "other", object)
    cat[u < 0.61] = "c50"
    cat[u < 0.11] = "c10"
    cat[u < 0.01] = "c1"
    year = 1900 + rng.integers(0, 100, n)
    has = {s: rng.random(n) < s / 100 for s in SELECTIVITY}
    filler = rng.integers(0, 20, n)
    md = []
    for i in range(n):
        tags = [f"f{filler[i]}"] + [f"t{s}" for s in SELECTIVITY if has[s][i]]
        md.append({"cat": cat[i], "year": int(year[i]), "tags": tags})
    masks = {}
    for s in SELECTIVITY:
        masks[f"eq{s}"] = cat == f"c{s}"
        masks[f"range{s}"] = year < 1900 + s
        masks[f"tags{s}"] = has[s]
    return md, masks


def filters():
    """name -> (sutradb/Chroma where, LanceDB SQL, runs on the code before)."""
    out = {}
    for s in SELECTIVITY:
        out[f"eq{s}"] = ({"cat": f"c{s}"}, f"cat = 'c{s}'", True)
        out[f"range{s}"] = ({"year": {"$lt": 1900 + s}}, f"year < {1900 + s}", True)
        out[f"tags{s}"] = ({"tags": {"$contains": f"t{s}"}}, f"array_has_any(tags, ['t{s}'])", False)
    return out


def load(data, nq):
    X = np.load(Path(data) / "base.f16.npy")
    Q = np.load(Path(data) / "queries.f16.npy").astype(np.float32)[:nq]
    return X, Q


# ---------------------------------------------------------------------- workers

def _timed(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _recall(I, gt):
    hits = 0
    total = 0
    for row, g in zip(I, gt):
        g = [x for x in g.tolist() if x >= 0]
        total += len(g)
        hits += len(set(row.tolist()) & set(g))
    return hits / max(total, 1)


def worker_sutradb(args):
    """One measuring process of a sutradb variant (``PYTHONPATH`` picks which)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import sutradb
    X, Q = load(args.data, args.queries)
    gt = np.load(args.gt, allow_pickle=False)
    names = [n for n in json.loads(args.names)]
    fl = filters()
    res = {"sutradb": sutradb.__file__}
    t0 = time.perf_counter()
    db = sutradb.open(args.db, "r")
    res["open_s"] = time.perf_counter() - t0
    res["index"] = db.index_info.get("kind")
    first = {}
    for name in names:                        # first call per filter: builds indexes
        t0 = time.perf_counter()
        db.count(fl[name][0])
        first[name] = time.perf_counter() - t0
    res["first_call_s"] = first
    lat = []
    for q in Q:
        t0 = time.perf_counter()
        db.search_vectors(q, k=K, threads=1)
        lat.append(time.perf_counter() - t0)
    res["search_unfiltered_ms"] = 1e3 * statistics.median(lat)
    out = {}
    for j, name in enumerate(names):
        where = fl[name][0]
        lat, I = [], []
        for q in Q:
            t0 = time.perf_counter()
            _, ids = db.search_vectors(q, k=K, where=where, threads=1)
            lat.append(time.perf_counter() - t0)
            I.append(ids[0])
        r = {"search_ms": 1e3 * statistics.median(lat),
             "search_p95_ms": 1e3 * float(np.percentile(lat, 95)),
             "recall@10": _recall(np.array(I), gt[j][:len(Q)])}
        r["count_ms"] = 1e3 * _timed(lambda: db.count(where), args.reps)
        r["count"] = db.count(where)
        r["find_ids_ms"] = 1e3 * _timed(lambda: db.find_ids(where), max(2, args.reps // 4))
        r["find100_ms"] = 1e3 * _timed(lambda: db.find(where, limit=100), args.reps)
        out[name] = r
    res["filters"] = out
    db.close()
    print(json.dumps(res))


def build_sutradb(args):
    import sutradb
    X, _ = load(args.data, 1)
    md, _ = make_metadata(len(X))
    t0 = time.perf_counter()
    db = sutradb.open(args.db, "w", durability="normal")
    db.add_vectors(X, metadata=md)
    info = db.index_info
    db.close()
    print(json.dumps({"build_s": time.perf_counter() - t0, "index": info.get("kind")}))


def worker_lancedb(args):
    import lancedb
    import pyarrow as pa
    X, Q = load(args.data, args.queries)
    gt = np.load(args.gt, allow_pickle=False)
    names = json.loads(args.names)
    fl = filters()
    path = args.db
    res = {"lancedb": lancedb.__version__}
    fresh = not os.path.exists(os.path.join(path, "t.lance"))
    con = lancedb.connect(path)
    if fresh:
        md, _ = make_metadata(len(X))
        t0 = time.perf_counter()
        tbl = pa.table({"id": pa.array(np.arange(len(X))),
                        "vector": pa.FixedSizeListArray.from_arrays(
                            pa.array(X.astype(np.float32).ravel()), X.shape[1]),
                        "cat": pa.array([m["cat"] for m in md]),
                        "year": pa.array([m["year"] for m in md], pa.int64()),
                        "tags": pa.array([m["tags"] for m in md], pa.list_(pa.string()))})
        t = con.create_table("t", tbl)
        t.create_index(metric="cosine", num_partitions=256, num_sub_vectors=48)
        t.create_scalar_index("cat", index_type="BITMAP")
        t.create_scalar_index("year", index_type="BTREE")
        t.create_scalar_index("tags", index_type="LABEL_LIST")
        res["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t = con.open_table("t")
    res["open_s"] = time.perf_counter() - t0

    def search(q, sql):
        s = t.search(q).distance_type("cosine").limit(K).nprobes(args.nprobes).refine_factor(10)
        if sql:
            s = s.where(sql, prefilter=True)
        return s.select(["id"]).to_arrow()["id"].to_numpy()

    first = {}
    for name in names:
        t0 = time.perf_counter()
        t.count_rows(fl[name][1])
        first[name] = time.perf_counter() - t0
    res["first_call_s"] = first
    lat = []
    for q in Q:
        t0 = time.perf_counter()
        search(q, None)
        lat.append(time.perf_counter() - t0)
    res["search_unfiltered_ms"] = 1e3 * statistics.median(lat)
    out = {}
    for j, name in enumerate(names):
        sql = fl[name][1]
        lat, I = [], []
        for q in Q:
            t0 = time.perf_counter()
            ids = search(q, sql)
            lat.append(time.perf_counter() - t0)
            I.append(np.pad(ids, (0, K - len(ids)), constant_values=-1))
        r = {"search_ms": 1e3 * statistics.median(lat),
             "search_p95_ms": 1e3 * float(np.percentile(lat, 95)),
             "recall@10": _recall(np.array(I), gt[j][:len(Q)])}
        r["count_ms"] = 1e3 * _timed(lambda: t.count_rows(sql), args.reps)
        r["count"] = t.count_rows(sql)
        r["find_ids_ms"] = 1e3 * _timed(
            lambda: t.search().where(sql).select(["id"]).limit(None).to_arrow(), max(2, args.reps // 4))
        r["find100_ms"] = 1e3 * _timed(
            lambda: t.search().where(sql).limit(100).to_arrow(), args.reps)
        out[name] = r
    res["filters"] = out
    print(json.dumps(res))


def worker_chroma(args):
    import chromadb
    X, Q = load(args.data, args.queries)
    gt = np.load(args.gt, allow_pickle=False)
    names = json.loads(args.names)
    fl = filters()
    res = {"chromadb": chromadb.__version__}
    fresh = not os.path.exists(os.path.join(args.db, "chroma.sqlite3"))
    client = chromadb.PersistentClient(path=args.db)
    if fresh:
        md, _ = make_metadata(len(X))
        t0 = time.perf_counter()
        col = client.create_collection("bench", metadata={"hnsw:space": "cosine"},
                                       embedding_function=None)
        step = 5000
        for s0 in range(0, len(X), step):
            col.add(ids=[str(i) for i in range(s0, min(s0 + step, len(X)))],
                    embeddings=X[s0:s0 + step].astype(np.float32),
                    metadatas=md[s0:s0 + step])
        res["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    col = client.get_collection("bench", embedding_function=None)
    res["open_s"] = time.perf_counter() - t0
    first = {}
    for name in names:
        t0 = time.perf_counter()
        col.get(where=fl[name][0], include=[])
        first[name] = time.perf_counter() - t0
    res["first_call_s"] = first
    lat = []
    for q in Q:
        t0 = time.perf_counter()
        col.query(query_embeddings=[q], n_results=K, include=["distances"])
        lat.append(time.perf_counter() - t0)
    res["search_unfiltered_ms"] = 1e3 * statistics.median(lat)
    out = {}
    for j, name in enumerate(names):
        where = fl[name][0]
        lat, I = [], []
        for q in Q:
            t0 = time.perf_counter()
            r = col.query(query_embeddings=[q], n_results=K, where=where, include=["distances"])
            lat.append(time.perf_counter() - t0)
            ids = [int(x) for x in r["ids"][0]]
            I.append(np.array(ids + [-1] * (K - len(ids))))
        r = {"search_ms": 1e3 * statistics.median(lat),
             "search_p95_ms": 1e3 * float(np.percentile(lat, 95)),
             "recall@10": _recall(np.array(I), gt[j][:len(Q)])}
        r["count_ms"] = 1e3 * _timed(lambda: len(col.get(where=where, include=[])["ids"]),
                                     max(2, args.reps // 4))
        r["count"] = len(col.get(where=where, include=[])["ids"])
        r["find_ids_ms"] = r["count_ms"]           # Chroma counts by listing the ids
        r["find100_ms"] = 1e3 * _timed(lambda: col.get(where=where, limit=100), args.reps)
        out[name] = r
    res["filters"] = out
    print(json.dumps(res))


# ---------------------------------------------------------------------- driver

def run_child(python, pythonpath, argv, log):
    env = dict(os.environ, PYTHONPATH=pythonpath or "", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", RAYON_NUM_THREADS="1",
               TOKIO_WORKER_THREADS="1")
    t0 = time.perf_counter()
    p = subprocess.run([python, str(Path(__file__).resolve())] + argv, env=env,
                       capture_output=True, text=True)
    if p.returncode:
        log(f"   child failed ({p.returncode}): {p.stderr[-2000:]}")
        return None
    log(f"   ({time.perf_counter() - t0:.0f} s)")
    return json.loads(p.stdout.strip().splitlines()[-1])


def exact_filtered_gt(X, Q, masks, names):
    """(len(names), nq, K) rows of the exact filtered top-K by cosine (-1 padding)."""
    Xf = X.astype(np.float32)
    Xf /= np.maximum(np.linalg.norm(Xf, axis=1, keepdims=True), 1e-30)
    Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30)
    S = Qn @ Xf.T
    out = np.full((len(names), len(Q), K), -1, np.int64)
    for j, name in enumerate(names):
        m = masks[name]
        Sm = np.where(m[None, :], S, -np.inf)
        top = np.argsort(-Sm, axis=1)[:, :K]
        ok = np.take_along_axis(Sm, top, axis=1) > -np.inf
        out[j] = np.where(ok, top, -1)
    return out


def median_results(runs):
    """Per-field medians over a variant's repeated runs."""
    runs = [r for r in runs if r]
    if not runs:
        return None
    out = {"runs": len(runs)}
    for k in ("open_s", "search_unfiltered_ms", "build_s"):
        vals = [r[k] for r in runs if k in r]
        if vals:
            out[k] = statistics.median(vals)
    out["index"] = runs[0].get("index")
    out["first_call_s"] = {n: statistics.median([r["first_call_s"][n] for r in runs])
                           for n in runs[0]["first_call_s"]}
    out["filters"] = {}
    for n in runs[0]["filters"]:
        keys = runs[0]["filters"][n].keys()
        out["filters"][n] = {k: statistics.median([r["filters"][n][k] for r in runs]) for k in keys}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--queries", type=int, default=100, help="queries timed one per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reps", type=int, default=20, help="calls per count/find timing")
    p.add_argument("--base", default=None, help="worktree of the code before (the 'before' variant)")
    p.add_argument("--peers-python", default=None, help="python of a venv with lancedb / chromadb")
    p.add_argument("--peers", default="lancedb,chroma")
    p.add_argument("--nprobes", type=int, default=20, help="LanceDB IVF partitions probed")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sutradb-bench-filters"))
    p.add_argument("--json", default=str(HERE / "results" / "filters.json"))
    p.add_argument("--worker", choices=["sutradb", "build", "lancedb", "chroma"], default=None)
    p.add_argument("--db", default=None)
    p.add_argument("--gt", default=None)
    p.add_argument("--names", default=None)
    a = p.parse_args(argv)
    if a.worker:
        return {"sutradb": worker_sutradb, "build": build_sutradb, "lancedb": worker_lancedb,
                "chroma": worker_chroma}[a.worker](a)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    os.makedirs(a.workdir, exist_ok=True)
    X, Q = load(a.data, a.queries)
    n = len(X)
    md, masks = make_metadata(n)
    del md
    fl = filters()
    all_names = list(fl)
    old_names = [k for k in all_names if fl[k][2]]
    sel = {k: float(masks[k].mean()) for k in all_names}
    log(f"{n} rows, {len(Q)} queries; selectivity: " + ", ".join(f"{k} {v:.3f}" for k, v in sel.items()))
    gt_all = exact_filtered_gt(X, Q, masks, all_names)
    gt_old = gt_all[[all_names.index(k) for k in old_names]]
    gt_all_f = os.path.join(a.workdir, "gt_all.npy")
    gt_old_f = os.path.join(a.workdir, "gt_old.npy")
    np.save(gt_all_f, gt_all)
    np.save(gt_old_f, gt_old)

    here = str(HERE.parent)
    dbpath = os.path.join(a.workdir, "sutradb")
    build = None
    if not os.path.isdir(dbpath):
        log("build the sutradb database (once)")
        build = run_child(sys.executable, here, ["--worker", "build", "--db", dbpath,
                                                 "--data", a.data], log)
    common = ["--data", a.data, "--queries", str(a.queries), "--reps", str(a.reps)]
    variants = {"after": (sys.executable, here, ["--worker", "sutradb", "--db", dbpath, "--gt", gt_all_f,
                                                  "--names", json.dumps(all_names)] + common)}
    if a.base:
        variants["before"] = (sys.executable, a.base,
                              ["--worker", "sutradb", "--db", dbpath, "--gt", gt_old_f,
                               "--names", json.dumps(old_names)] + common)
    peers = {}
    if a.peers_python:
        for peer in a.peers.split(","):
            mod = {"lancedb": "lancedb", "chroma": "chromadb"}[peer]
            ok = subprocess.run([a.peers_python, "-c", f"import {mod}"], capture_output=True)
            if ok.returncode:
                log(f"{peer}: does not import ({ok.stderr.decode()[-300:]}); skipped")
                continue
            pdb = os.path.join(a.workdir, peer)
            argv_p = ["--worker", peer, "--db", pdb, "--gt", gt_all_f, "--names", json.dumps(all_names),
                      "--nprobes", str(a.nprobes)] + common
            log(f"{peer}: build (once)")
            first = run_child(a.peers_python, "", argv_p, log)
            if first is None:
                continue
            peers[peer] = {"build_s": first.get("build_s")}
            variants[peer] = (a.peers_python, "", argv_p)
    runs = {k: [] for k in variants}
    order = list(variants)
    for r in range(a.repeats):
        seq = order if r % 2 == 0 else order[::-1]
        for name in seq:
            log(f"round {r + 1}/{a.repeats}: {name}")
            runs[name].append(run_child(*variants[name], log))
    res = {"data": a.data, "n": n, "queries": len(Q), "k": K, "repeats": a.repeats,
           "selectivity": sel, "filters": {k: {"where": fl[k][0], "lancedb_sql": fl[k][1]}
                                          for k in all_names},
           "build": build, "command": " ".join(sys.argv),
           "when": time.strftime("%Y-%m-%d %H:%M:%S"),
           "variants": {k: median_results(v) for k, v in runs.items()}, "samples": runs}
    for peer, info in peers.items():
        if res["variants"].get(peer) is not None:
            res["variants"][peer]["build_s"] = info["build_s"]
    # ratios within the run: before / after (> 1: the field index is faster)
    ratios = {}
    after = res["variants"]["after"]
    for other in res["variants"]:
        if other == "after" or res["variants"][other] is None:
            continue
        o = res["variants"][other]
        rr = {}
        for f, m in o["filters"].items():
            if f in after["filters"]:
                rr[f] = {k: m[k] / after["filters"][f][k] for k in
                         ("search_ms", "count_ms", "find_ids_ms", "find100_ms")
                         if after["filters"][f].get(k)}
        ratios[f"{other}/after"] = rr
    res["ratios"] = ratios
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
    log(f"wrote {a.json}")
    for k, rr in ratios.items():
        log(f"{k} (time of {k.split('/')[0]} / time of this branch):")
        for f, v in rr.items():
            log(f"   {f:8s} " + "  ".join(f"{m} x{x:.2f}" for m, x in v.items()))


if __name__ == "__main__":
    main()
