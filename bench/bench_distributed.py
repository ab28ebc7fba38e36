"""Distributed learn and sharded search (sutradb.distributed) against one process and
one database, in the same run.

Learn (texts -> concepts, the MiniLM model, all on this machine):

=============  ==================================================================
config         what runs
=============  ==================================================================
single         ``db.add(texts)`` in this process, torch on 2 threads (the default)
single-1t      the same on 1 torch thread (the model's own threading, measured)
dask-1x1       ``learn(..., client)``: LocalCluster, 1 worker x 1 thread
dask-1x2       1 worker x 2 threads (torch on 2 threads in the worker)
dask-2x1       2 workers x 1 thread
procs-1x1      the ceiling: one plain process (1 torch thread) embeds the texts
procs-2x1      two plain processes (1 torch thread each) embed half each, together
=============  ==================================================================

Every config learns the same texts with the same embedding windows, and trains the
PQ codebook at the end (``--index-threshold``; the codebook is the same in every
config). Reported: texts/s of the whole job and of its embed + write part alone
(single: ``db.add`` without training, then ``build_index()`` timed apart; dask: the
job's own phase timings), medians of interleaved repeats (configs rotate each repeat,
so a shared machine's noise hits all alike), and the ratios the issue asks for, plus the
CPU-seconds each job used (all its processes: what it costs whatever else runs on the
machine). Each dask measurement starts its own cluster (one alive at a time); start-up
and model loading are timed apart.

Search: one database of the data set's vectors against the same vectors learned into
2 and 4 shards (``learn(vectors=...)``: the same codebook), queried one query per call
and in one batch, on local threads and (2 shards) as tasks on a LocalCluster; QPS and
recall@10 against the exact ground truth.

Usage::

    python bench/bench_distributed.py                       # ~3,000 texts; 100k vectors
    python bench/bench_distributed.py --n 2048 --repeats 3 --json out.json
    python bench/bench_distributed.py --skip-search         # learn only

Every scheduler and worker binds to 127.0.0.1 (no dashboard).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

import common  # noqa: E402

SPEC = "sentence-transformers:all-MiniLM-L6-v2"
LEARN_CONFIGS = ("single", "single-1t", "dask-1x1", "dask-1x2", "dask-2x1", "procs-1x1", "procs-2x1")
CLUSTERS = {"dask-1x1": (1, 1), "dask-1x2": (1, 2), "dask-2x1": (2, 1)}


def load_texts(args) -> tuple[list[str], str]:
    if args.texts:
        p = Path(args.texts)
    else:
        p = common.SHARED_DATA / "pypi-minilm-100k" / "base_texts.txt"
        if not p.exists():
            p = BENCH_DIR.parent / "sutradb" / "data" / "pypi-sample" / "base_texts.txt"
    texts = p.read_text(encoding="utf-8").splitlines()[:args.n]
    return texts, str(p)


def search_data(args):
    d = Path(args.search_data) if args.search_data else common.SHARED_DATA / "pypi-minilm-100k"
    if not d.exists():
        d = BENCH_DIR.parent / "sutradb" / "data" / "pypi-sample"
    n = args.search_n
    base = np.load(d / "base.f16.npy", mmap_mode="r")
    base = np.ascontiguousarray(base[:n] if n else base)
    queries = np.load(d / "queries.f16.npy").astype(np.float32)[:args.queries]
    tf = d / "base_texts.txt"
    texts = tf.read_text(encoding="utf-8").splitlines()[:len(base)] if tf.exists() else None
    gt = None
    if (d / "gt.i32.npy").exists() and (not n or n >= len(np.load(d / "base.f16.npy", mmap_mode="r"))):
        gt = np.load(d / "gt.i32.npy")[:len(queries)]
    if gt is None:          # a prefix of the base: exact ground truth here
        B = base.astype(np.float32)
        B /= np.linalg.norm(B, axis=1, keepdims=True)
        Qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        gt = np.argsort(-(Qn @ B.T), axis=1, kind="stable")[:, :10]
    return base, texts, queries, gt, str(d)


def index_options():
    """Options that keep one database and the shards on the same kind of index (a
    PQ scan with exact re-ranking) whatever their size."""
    import sutradb.database as D
    return {"index": "pq"} if "index" in D.DEFAULT_OPTIONS else {}


# ----------------------------------------------------------------------------- learn

def cpu_seconds(pids) -> float:
    """User + system CPU seconds used so far by these processes (this one included by
    the caller): what a job costs whatever else runs on the machine."""
    import psutil
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def run_single(texts, emb, threads, tmp, args, prog):
    import torch
    import sutradb
    torch.set_num_threads(threads)
    path = Path(tmp) / "single.sutra"
    with prog.op(f"single {threads}t: learn x{len(texts)}", total=len(texts), unit="texts") as adv:
        c0 = cpu_seconds([os.getpid()])
        t0 = time.perf_counter()
        with sutradb.open(path, "w", embedder=emb, batch_size=args.window // 16, index_threshold=0,
                          durability=args.durability, **index_options()) as db:
            db.add(texts, progress=False)
            t1 = time.perf_counter()
            if args.index_threshold and len(texts) >= args.index_threshold:
                db.build_index()
        t2 = time.perf_counter()
        cpu = cpu_seconds([os.getpid()]) - c0
        adv(len(texts))
    shutil.rmtree(path, ignore_errors=True)
    return {"total": t2 - t0, "embed_write": t1 - t0, "train_index": t2 - t1, "cpu": cpu}


def run_dask(texts, client, threads, tmp, args, prog):
    from sutradb.distributed import learn
    path = Path(tmp) / "dist.shards"
    with prog.op(f"dask: learn x{len(texts)}", total=len(texts), unit="texts") as adv:
        last = [0]

        def progress(done, total):
            adv(done - last[0])
            last[0] = done
        pids = [os.getpid(), *client.run(os.getpid).values()]
        c0 = cpu_seconds(pids)
        t0 = time.perf_counter()
        rep = learn(texts, path, embedder=SPEC, shards=args.shards, client=client, mode="w",
                    batch_size=args.window // 16, partition_size=args.window,
                    index_threshold=args.index_threshold, durability=args.durability,
                    worker_threads=threads, progress=progress, **index_options())
        total = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - c0
    shutil.rmtree(path, ignore_errors=True)
    tm = rep.timings
    return {"total": total, "embed_write": tm["setup"] + tm["partitions"],
            "train_index": tm["train"] + tm["index"], "timings": dict(tm), "cpu": cpu}


_EMBED_CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
from sutradb.embedders import get_embedder
path, lo, hi, window, spec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
texts = open(path, encoding="utf-8").read().splitlines()[lo:hi]
emb = get_embedder(spec)          # as every other configuration: the default passes
emb(texts[:32])
print("ready", flush=True)
sys.stdin.readline()
t = time.perf_counter()
for s in range(0, len(texts), window):
    emb(texts[s:s + window])
print(json.dumps({"s": time.perf_counter() - t}), flush=True)
"""


def embed_ceiling(texts_file, n, window, procs):
    """Seconds for ``procs`` plain processes (no engine, no database), each on one
    torch thread with the model loaded and warm, to embed their share of the first
    ``n`` texts at the same moment: ``t(1) / t(2)`` is the most any 2-way scale-out of
    this model can get on this machine (its cores, caches, memory bandwidth)."""
    import json
    import subprocess
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR.parent), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cuts = [round(i * n / procs) for i in range(procs + 1)]
    ps = [subprocess.Popen([sys.executable, "-c", _EMBED_CHILD, texts_file, str(cuts[i]),
                            str(cuts[i + 1]), str(window), SPEC], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env) for i in range(procs)]
    try:
        for p in ps:
            while p.stdout.readline().strip() != "ready":
                if p.poll() is not None:
                    raise RuntimeError("an embedding process failed")
        t0 = time.perf_counter()
        for p in ps:
            p.stdin.write("go\n")
            p.stdin.flush()
        own = [json.loads(p.stdout.readline())["s"] for p in ps]
        wall = time.perf_counter() - t0
    finally:
        for p in ps:
            p.kill() if p.poll() is None else None
            p.wait()
    return {"wall": wall, "per_process": own}


def bench_learn(args, prog, tmp):
    import torch
    from distributed import Client
    from sutradb.embedders import get_embedder
    from sutradb.distributed import local_cluster

    texts, src = load_texts(args)
    n = len(texts)
    configs = [c for c in args.configs.split(",") if c]
    bad = set(configs) - set(LEARN_CONFIGS)
    if bad:
        raise SystemExit(f"unknown configs {sorted(bad)} (known: {LEARN_CONFIGS})")
    prog.log(f"learn: {n} texts from {src}, windows/partitions of {args.window}, "
             f"{args.shards} shards, codebook trained at the end: "
             f"{bool(args.index_threshold and n >= args.index_threshold)}")
    torch_default = torch.get_num_threads()
    t = time.perf_counter()
    emb = get_embedder(SPEC)
    emb(texts[:32])
    startup = {"single": [time.perf_counter() - t]}
    # one cluster alive at a time: started for its measurement (start-up and model
    # loading timed apart) and closed after, so that no idle cluster's heartbeats and
    # profiler (~3.5 % of a core per process) weigh on the other configurations
    samples = {c: [] for c in configs}
    try:
        for r in range(args.repeats):
            for name in common.rotated(configs, r):
                if name.startswith("single"):
                    res = run_single(texts, emb, 1 if name == "single-1t" else torch_default,
                                     tmp, args, prog)
                elif name.startswith("procs"):
                    c = embed_ceiling(src, n, args.window, 2 if name == "procs-2x1" else 1)
                    res = {"total": c["wall"], "embed_write": c["wall"], "train_index": 0.0,
                           "cpu": sum(c["per_process"]), "per_process": c["per_process"]}
                else:
                    w, th = CLUSTERS[name]
                    t = time.perf_counter()
                    with local_cluster(n_workers=w, threads_per_worker=th) as cl, Client(cl) as client:
                        # the plugin loads the model in every worker; a short job warms up,
                        # and every worker imports what training the codebook needs (as
                        # the single process has after its first run)
                        run_dask(texts[:args.window], client, th, tmp, args, prog)
                        client.run(importlib.import_module, "sklearn.cluster")
                        startup.setdefault(name, []).append(time.perf_counter() - t)
                        res = run_dask(texts, client, th, tmp, args, prog)
                samples[name].append(res)
                prog.log(f"  repeat {r + 1}: {name:10s} {n / res['total']:7.1f} texts/s "
                         f"(embed+write {n / res['embed_write']:7.1f}/s), "
                         f"{1000 * res['cpu'] / n:5.2f} CPU-s per 1000 texts")
                prog.step()
    finally:
        torch.set_num_threads(torch_default)

    out = {"n": n, "source": src, "window": args.window, "shards": args.shards,
           "torch_threads_single": torch_default, "configs": {},
           "startup_s": {k: statistics.median(v) for k, v in startup.items()}}
    med = {}
    for name, rs in samples.items():
        tot = common.summarize([x["total"] for x in rs])
        ew = common.summarize([x["embed_write"] for x in rs])
        ti = common.summarize([x["train_index"] for x in rs])
        med[name] = {"total": tot["median"], "embed_write": ew["median"]}
        cpu = common.summarize([x["cpu"] for x in rs])
        med[name]["cpu"] = cpu["median"]
        row = {"texts_per_s": n / tot["median"], "embed_write_texts_per_s": n / ew["median"],
               "seconds": tot, "embed_write_seconds": ew, "train_index_seconds": ti,
               "cpu_seconds": cpu, "cpu_s_per_1000_texts": 1000 * cpu["median"] / n}
        if "timings" in rs[0]:
            row["phase_median_s"] = {k: statistics.median(x["timings"][k] for x in rs)
                                     for k in rs[0]["timings"]}
        out["configs"][name] = row

    def ratio(a, b, what="total"):
        if a in med and b in med:
            return med[b][what] / med[a][what]
        return None
    out["ratios"] = {
        "dask-2x1 / dask-1x1 (scale-out, same threads per worker)": ratio("dask-2x1", "dask-1x1"),
        "dask-2x1 / dask-1x1, embed+write": ratio("dask-2x1", "dask-1x1", "embed_write"),
        "dask-2x1 / single-1t (2 workers vs one process on 1 thread)": ratio("dask-2x1", "single-1t"),
        "dask-2x1 / single-1t, embed+write": ratio("dask-2x1", "single-1t", "embed_write"),
        "dask-2x1 / single (2 cores both ways)": ratio("dask-2x1", "single"),
        "dask-2x1 / single, embed+write": ratio("dask-2x1", "single", "embed_write"),
        "dask-1x2 / single (engine overhead, same threads)": ratio("dask-1x2", "single"),
        "dask-1x1 / single-1t (engine overhead, 1 thread)": ratio("dask-1x1", "single-1t"),
        "single / single-1t (the model's own 2-thread scaling)": ratio("single", "single-1t"),
        "single / single-1t, embed+write": ratio("single", "single-1t", "embed_write"),
        "procs-2x1 / procs-1x1 (the machine's ceiling: 2 plain processes, embedding only)":
            ratio("procs-2x1", "procs-1x1"),
        "dask-2x1 / dask-1x1 over the ceiling (the engine's share of the ideal)":
            (ratio("dask-2x1", "dask-1x1") / ratio("procs-2x1", "procs-1x1")
             if ratio("dask-2x1", "dask-1x1") and ratio("procs-2x1", "procs-1x1") else None),
    }
    # CPU per text, whatever else ran: a ratio of 1.0 means 2 workers do the same work
    # per text as 1, so with 2 free cores they run 2x as fast (wall-clock ratios above
    # also carry the machine's other load)
    out["cpu_per_text_ratios"] = {
        "dask-1x1 / dask-2x1 (scale-out efficiency)": ratio("dask-2x1", "dask-1x1", "cpu"),
        "single-1t / dask-2x1": ratio("dask-2x1", "single-1t", "cpu"),
        "single-1t / single (2 torch threads)": ratio("single", "single-1t", "cpu"),
        "single-1t / dask-1x1 (engine overhead)": ratio("dask-1x1", "single-1t", "cpu"),
    }
    out["load_average_after"] = list(os.getloadavg())
    return out


# ----------------------------------------------------------------------------- search

def bench_search(args, prog, tmp):
    import sutradb
    from distributed import Client
    from sutradb.distributed import learn, local_cluster

    base, texts, queries, gt, src = search_data(args)
    n = len(base)
    opts = dict(index_threshold=1, durability="off", **index_options())
    prog.log(f"search: {n} vectors from {src}, {len(queries)} queries, shards {args.search_shards}")
    one = Path(tmp) / "one.sutra"
    t = time.perf_counter()
    with sutradb.open(one, "w", **opts) as db:
        db.add_vectors(base, texts=texts)
    build = {"one": time.perf_counter() - t}
    shard_paths = {}
    for S in args.search_shards:
        p = Path(tmp) / f"s{S}.shards"
        t = time.perf_counter()
        learn(texts if texts is not None else [""] * n, p, vectors=base, shards=S,
              partition_size=args.search_partition, progress=False, **opts)
        build[f"{S} shards"] = time.perf_counter() - t
        shard_paths[S] = p
    prog.log("  built: " + ", ".join(f"{k} {v:.1f} s" for k, v in build.items()))

    nq1 = min(args.single_queries, len(queries))

    @contextlib.contextmanager
    def on_threads(p):
        with (sutradb.open(p, "r") if p == one else sutradb.open_sharded(p)) as h:
            h.search_vectors(queries[:4], 10)           # warm-up (mmaps, tables)
            yield h

    @contextlib.contextmanager
    def on_dask(p):
        # a cluster only while it is measured: idle workers would load the others
        with local_cluster(n_workers=2, threads_per_worker=1) as cl, Client(cl) as client, \
                sutradb.open_sharded(p, client=client) as h:
            h.search_vectors(queries[:4], 10)           # the workers open the shards
            yield h

    systems = [("one database", lambda: on_threads(one))]
    for S, p in shard_paths.items():
        systems.append((f"{S} shards, threads", lambda p=p: on_threads(p)))
    if args.search_dask and shard_paths:
        S0 = min(shard_paths)
        systems.append((f"{S0} shards, dask 2x1", lambda: on_dask(shard_paths[S0])))
    res = {name: {"single": [], "batch": []} for name, _ in systems}
    Is = {}
    for r in range(args.repeats):
        for name, opener in common.rotated(systems, r):
            with opener() as h:
                with prog.op(f"{name}: {nq1} single queries", total=nq1, unit="queries") as adv:
                    lat, outs = common.time_each(lambda i: h.search_vectors(queries[i], 10), nq1, adv)
                res[name]["single"].append(common.latency_stats(lat))
                t = time.perf_counter()
                D, I = h.search_vectors(queries, 10)
                res[name]["batch"].append(len(queries) / (time.perf_counter() - t))
                Is[name] = I
            prog.step()
    rows = []
    for name, _ in systems:
        single = common.median_of_dicts(res[name]["single"], ["qps", "p50_ms", "p95_ms", "p99_ms"])
        rows.append({"system": name, "single_query": single,
                     "batch_qps": statistics.median(res[name]["batch"]),
                     "recall_at_10": common.recall_at_k(Is[name], gt, 10)})
    exact_equal = {}
    with sutradb.open(one, "r") as db:
        D1, I1 = db.search_vectors(queries[:16], 10, exact=True)
        for S, p in shard_paths.items():
            with sutradb.open_sharded(p) as h:
                D2, I2 = h.search_vectors(queries[:16], 10, exact=True)
            exact_equal[f"{S} shards"] = bool((I1 == I2).all() and (D1 == D2).all())
    one_row = rows[0]
    ratios = {r["system"] + " / one database": {
        "single_query_qps": r["single_query"]["qps"] / one_row["single_query"]["qps"],
        "batch_qps": r["batch_qps"] / one_row["batch_qps"],
        "recall_at_10": (r["recall_at_10"], one_row["recall_at_10"])} for r in rows[1:]}
    return {"n": n, "source": src, "queries": len(queries), "single_queries": nq1,
            "build_s": build, "rows": rows, "ratios": ratios,
            "exact_search_equal_to_one_database": exact_equal}


# ----------------------------------------------------------------------------- main

def quiet_dask() -> None:
    """Cluster start/stop chatter (INFO lines of distributed's own loggers) off."""
    import importlib
    import logging
    importlib.import_module("distributed")          # configures its loggers on import
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] == "distributed":
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv=None):
    quiet_dask()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3072, help="texts to learn (default 3072)")
    ap.add_argument("--texts", help="a text file, one text per line (default: the 100k PyPI "
                                    "summaries of ../shared/data when present, else the bundled sample)")
    ap.add_argument("--window", type=int, default=512,
                    help="db.add window = learn partition size (texts; batch_size = window/16)")
    ap.add_argument("--shards", type=int, default=2, help="shards of the learn jobs")
    ap.add_argument("--index-threshold", type=int, default=1000,
                    help="train the codebook at the end when n >= this (0: never)")
    ap.add_argument("--durability", default="full")
    ap.add_argument("--configs", default=",".join(LEARN_CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--search-data", help="directory with base.f16.npy, queries.f16.npy, gt.i32.npy")
    ap.add_argument("--search-n", type=int, default=0, help="base vectors for search (0: all)")
    ap.add_argument("--search-shards", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4])
    ap.add_argument("--search-partition", type=int, default=4096)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single-queries", type=int, default=300)
    ap.add_argument("--no-search-dask", dest="search_dask", action="store_false")
    ap.add_argument("--skip-learn", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--json", help="result file (default bench/results/distributed-<time>.json)")
    ap.add_argument("--tmp", help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="sutradb-bench-dist-", dir=args.tmp)
    n_cfg = len([c for c in args.configs.split(",") if c])
    steps = (0 if args.skip_learn else args.repeats * n_cfg) + \
        (0 if args.skip_search else args.repeats * (1 + len(args.search_shards) + args.search_dask))
    result = {"benchmark": "distributed", "args": vars(args),
              "machine": common.machine_info(["torch", "sentence-transformers", "dask", "distributed"])}
    try:
        with common.Progress(steps, title="bench distributed") as prog:
            if not args.skip_learn:
                result["learn"] = bench_learn(args, prog, tmp)
                for k, v in {**result["learn"]["ratios"],
                             **result["learn"]["cpu_per_text_ratios"]}.items():
                    prog.log(f"  {k}: {v:.2f}x" if v is not None else f"  {k}: -")
            if not args.skip_search:
                result["search"] = bench_search(args, prog, tmp)
                for r in result["search"]["rows"]:
                    prog.log(f"  {r['system']:24s} single {r['single_query']['qps']:8.0f} q/s  "
                             f"batch {r['batch_qps']:8.0f} q/s  recall@10 {r['recall_at_10']:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = common.write_json(args.json or common.default_json_path("distributed"), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
