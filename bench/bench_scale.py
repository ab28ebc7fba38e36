#!/usr/bin/env python
"""Scale benchmark: a sutradb database of millions of concepts, end to end.

For a data set directory (``base.f16.npy``, ``queries.f16.npy``, ``gt.i32.npy``; the
1M / 10M sets come from ``bench/make_scale.py``), through the public API only:

* **build**: ``sutradb.open(path, "w", index="pq", durability="off")``, then
  ``add_vectors`` in batches (PQ trained on a seeded sample at the first commit,
  every vector encoded), then ``build_index(kind="ivf", nlist=...)`` (coarse k-means,
  assignment of every row, nprobe tuned for ``target_recall`` on held-out rows);
  wall time of each step, disk size;
* **open**: a fresh process opening the database read-only (cold-ish: the files were
  just written, so they are in the page cache as a user's would be) and in-process
  re-opens (median);
* **search**: recall@10 against the exact ground truth and single-query QPS (one
  query per call, one thread) for several ``nprobe``, interleaved repeats, medians;
  the fastest setting at recall >= 0.9 and >= 0.95;
* **memory while searching**: a fresh process opens the database and runs the
  single-query loop (twice) at the chosen setting; RSS split into anonymous memory and
  mapped file pages, and file pages by file kind (codes, IVF index, vectors, ...); then
  the same with the vector file evicted from the page cache first
  (``POSIX_FADV_DONTNEED``), so re-ranking reads its candidates from the disk: the
  speed of a machine whose RAM does not hold the vectors.

    .venv/bin/python bench/bench_scale.py --data /work/scale/minilm-1m --path /work/scale/db-1m
    .venv/bin/python bench/bench_scale.py --data /work/scale/minilm-10m --path /work/scale/db-10m \\
        --nlist 4096 --json bench/results/scale-10m.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

K = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="directory with base.f16.npy, queries.f16.npy, gt.i32.npy")
    p.add_argument("--path", required=True, help="database directory (built unless it exists)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the database exists")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: sutradb's ~4 sqrt(n))")
    p.add_argument("--batch", type=int, default=500_000, help="rows per add_vectors call")
    p.add_argument("--queries", type=int, default=1000, help="queries for recall")
    p.add_argument("--single", type=int, default=300, help="queries timed one per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nprobes", default=None, help="comma-separated nprobe values (default: a ladder)")
    p.add_argument("--reranks", default=None,
                   help="comma-separated rerank values, each run with every nprobe (default: "
                        "the database's default rerank only)")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def dir_bytes(path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def build(args, base, prog) -> dict:
    import sutradb
    n = base.shape[0]
    if os.path.exists(args.path):
        shutil.rmtree(args.path)
    out = {}
    t0 = time.perf_counter()
    db = sutradb.open(args.path, "w", dim=base.shape[1], metric="cosine", index="pq",
                      durability="off", progress=True)
    with prog.op("add_vectors (PQ trained at the first commit)", total=n, unit="vectors") as advance:
        for s in range(0, n, args.batch):
            blk = np.asarray(base[s:s + args.batch], dtype=np.float32)
            db.add_vectors(blk)
            advance(len(blk))
    out["add_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    params = {"kind": "ivf"}
    if args.nlist:
        params["nlist"] = args.nlist
    info = db.build_index(**params)
    out["ivf_s"] = time.perf_counter() - t1
    db.close()
    out["total_s"] = time.perf_counter() - t0
    out["index"] = {k: v for k, v in info.items() if k != "grid"}
    out["disk_bytes"] = dir_bytes(args.path)
    return out


_OPEN_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import sutradb
t1 = time.perf_counter()
db = sutradb.open(sys.argv[1], "r")
t2 = time.perf_counter()
info = db.index_info
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "index_info_s": t3 - t2, "n": len(db)}))
"""

_MEM_CHILD = common.CHILD_MEMORY_HELPERS + r"""
import glob, json, os, sys, time, numpy as np
import sutradb
Q = np.load(sys.argv[2]).astype(np.float32)[: int(sys.argv[3])]
nprobe, rerank = int(sys.argv[4]), int(sys.argv[6])
evicted = []
if sys.argv[5] == "cold":
    # the stored vectors out of the page cache: re-ranking reads them from the disk
    for f in glob.glob(os.path.join(sys.argv[1], "*.vec")):
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        evicted.append(os.path.basename(f))
before = status()
db = sutradb.open(sys.argv[1], "r")
opened = status()
passes = []
for _ in range(2):
    t = time.perf_counter()
    for q in Q:
        db.search_vectors(q, k=10, nprobe=nprobe, rerank=rerank)
    passes.append(len(Q) / (time.perf_counter() - t))
after = status()
print(json.dumps({"before": before, "opened": opened, "after": after, "evicted": evicted,
                  "qps_passes": passes, "db_file_rss": file_rss(sys.argv[1])}))
"""


def child(code, *argv) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                       text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    with common.Progress(total_steps=4, title="scale", plain_ops=True) as prog:
        run(args, prog)


def run(args, prog):
    data = Path(args.data)
    base = np.load(data / "base.f16.npy", mmap_mode="r")
    Q = np.load(data / "queries.f16.npy").astype(np.float32)[:args.queries]
    gt = np.load(data / "gt.i32.npy")[:args.queries]
    res = {"machine": common.machine_info(), "data": str(data), "n": int(base.shape[0]),
           "dim": int(base.shape[1]), "args": vars(args)}
    prog.log(f"{data.name}: {base.shape[0]:,} x {base.shape[1]}")
    if args.rebuild or not os.path.exists(os.path.join(args.path, "MANIFEST")):
        res["build"] = build(args, base, prog)
        prog.step()
        b = res["build"]
        prog.log(f"build: add {b['add_s']:.0f} s, IVF {b['ivf_s']:.0f} s, total {b['total_s']:.0f} s, "
                 f"disk {b['disk_bytes'] / 2**30:.2f} GiB ({b['disk_bytes'] / res['n']:.0f} B/concept)")
    import sutradb
    # open: fresh processes, then in-process re-opens
    opens = [child(_OPEN_CHILD, args.path) for _ in range(3)]
    res["open_child"] = opens
    reopen = []
    for _ in range(20):
        t = time.perf_counter()
        d = sutradb.open(args.path, "r")
        reopen.append(time.perf_counter() - t)
        d.close()
    res["open_inprocess_ms"] = common.latency_stats(reopen)
    prog.log(f"open: fresh process {statistics.median(o['open_s'] for o in opens) * 1e3:.1f} ms "
             f"(median of 3), in-process p50 {np.median(reopen) * 1e3:.2f} ms")
    prog.step()
    db = sutradb.open(args.path, "r")
    info = db.index_info
    res["index"] = {k: v for k, v in info.items()}
    nlist = info["nlist"]
    if args.nprobes:
        nprobes = [int(x) for x in args.nprobes.split(",")]
    else:
        nprobes = sorted({p for p in (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
                          if p <= nlist} | {info["nprobe"]})
    reranks = [int(x) for x in args.reranks.split(",")] if args.reranks else [info["rerank"]]
    points = []
    for rr in reranks:
        for p in nprobes:
            _, I = db.search_vectors(Q, k=K, nprobe=p, rerank=rr)
            points.append({"nprobe": p, "rerank": rr, "recall": common.recall_at_k(I, gt, K),
                           "qps": []})
    nq = min(args.single, len(Q))
    for r in range(args.repeats):
        for pt in common.rotated(points, r):
            p, rr = pt["nprobe"], pt["rerank"]
            lat, _ = common.time_each(lambda i: db.search_vectors(Q[i], k=K, nprobe=p, rerank=rr), nq)
            pt["qps"].append(nq / float(np.sum(lat)))
            pt.setdefault("p50_ms", []).append(float(np.median(lat)) * 1e3)
            pt.setdefault("p99_ms", []).append(float(np.percentile(lat, 99)) * 1e3)
    for pt in points:
        pt["qps"] = statistics.median(pt["qps"])
        pt["p50_ms"] = statistics.median(pt["p50_ms"])
        pt["p99_ms"] = statistics.median(pt["p99_ms"])
        prog.log(f"  nprobe {pt['nprobe']:>4} rerank {pt['rerank']:>4}: recall@10 {pt['recall']:.4f}  {pt['qps']:8.0f} q/s  "
                 f"p50 {pt['p50_ms']:.2f} ms  p99 {pt['p99_ms']:.2f} ms")
    res["points"] = points
    prog.step()
    for target in (0.9, 0.95):
        ok = [pt for pt in points if pt["recall"] >= target]
        res[f"at_{target}"] = max(ok, key=lambda pt: pt["qps"]) if ok else None
    db.close()
    chosen = res["at_0.9"] or max(points, key=lambda pt: pt["recall"])
    qfile = data / "queries.f16.npy"
    for mode in ("warm", "cold"):
        m = res["memory" if mode == "warm" else "memory_cold"] = child(
            _MEM_CHILD, args.path, qfile, nq, chosen["nprobe"], mode, chosen["rerank"])
        prog.log(f"memory while searching, {mode} cache (nprobe {chosen['nprobe']}, "
                 f"rerank {chosen['rerank']}): "
                 f"RSS {m['after']['VmRSS'] / 2**20:.0f} MiB "
                 f"(anon {m['after']['RssAnon'] / 2**20:.0f}, file {m['after']['RssFile'] / 2**20:.0f}); "
                 f"db files {json.dumps({k: round(v / 2**20, 1) for k, v in m['db_file_rss'].items()})} MiB; "
                 f"q/s first/second pass {m['qps_passes'][0]:.0f}/{m['qps_passes'][1]:.0f}")
    path = args.json or common.default_json_path(f"scale-{data.name}")
    common.write_json(path, res)
    prog.log(f"wrote {path}")


if __name__ == "__main__":
    main()
