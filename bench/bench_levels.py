#!/usr/bin/env python
"""SIMD levels: the Database's IVF search at each kernel level against FAISS forced to
the matching level, one query per call, one thread.

For each data set, a child process

* builds a sutradb database through the public API (``add_vectors`` of the base
  rows, then ``build_index(kind="ivf")`` with the database's defaults: 4-bit codes in
  blocked lists, float16 vectors for the exact re-ranking) and a FAISS
  ``IndexIVFPQ`` + ``IndexRefineFlat`` (nlist = sutradb's, PQ m = dim / 8, 8 bits:
  the same bytes per vector, inner product or L2 as the data set);
* finds, for each nprobe of a ladder, the smallest re-rank depth (sutradb) or
  k_factor (FAISS) that reaches recall@10 >= the target (0.95) on all queries;
* times those points one query per call, the sutradb levels (``avx512``, ``avx2``,
  ``scalar``: switched in-process with ``sutradb.simd.using``) and the FAISS levels
  (FAISS 1.15's dynamic dispatch: ``faiss.SIMDConfig.set_level``, what its
  ``FAISS_SIMD_LEVEL`` variable sets; older wheels used ``FAISS_OPT_LEVEL``) all
  interleaved in a rotated order, ``--repeats`` times, keeping each point's median.

The best QPS at the target recall is compared within the run: sutradb at level L
against FAISS at the same level (avx512 / avx2 / generic), and the sutradb levels
against each other.

    .venv/bin/python bench/bench_levels.py --plot docs/img/levels.png
    .venv/bin/python bench/bench_levels.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

K = 10
DEFAULT_DATA = ["/work/shared/data/pypi-minilm-100k", "/work/shared/data/sift-5k"]
#: FAISS level -> the sutradb level it is matched with
FAISS_MATCH = {"avx512": "avx512", "avx2": "avx2", "generic": "scalar"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", metavar="DIR", help=f"data sets (default {DEFAULT_DATA})")
    p.add_argument("--faiss-levels", default="avx2,avx512,generic")
    p.add_argument("--levels", default=None, help="sutradb levels (default all this CPU runs)")
    p.add_argument("--target", type=float, default=0.95, help="recall@10 to reach")
    p.add_argument("--queries", type=int, default=None, help="queries timed one per call (default 300)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--from-json", default=None, help="only plot/print an earlier result")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.data = a.data or DEFAULT_DATA
    a.queries = a.queries or (100 if a.quick else 300)
    a.repeats = a.repeats or (1 if a.quick else 3)
    return a


# ------------------------------------------------------------------------- child

def _faiss_levels(faiss, names):
    """{our name: FAISS SIMDLevel} for the FAISS levels this build and CPU can run."""
    cfg = faiss.SIMDConfig
    best = cfg.get_level()                      # the auto-detected level
    want = {"avx512": best if "AVX512" in cfg.get_level_name() else None,
            "avx2": faiss.SIMDLevel_AVX2, "generic": faiss.SIMDLevel_NONE}
    out = {}
    for name in names:
        lv = want.get(name)
        if lv is not None and (not cfg.has_dynamic_dispatch() or cfg.is_simd_level_available(lv)):
            out[name] = lv
    cfg.set_level(best)
    return out


def child(args):
    import numpy as np

    import common
    import faiss
    import sutradb
    from sutradb import simd
    from sutradb.index.ivf import default_nlist

    common.limit_threads(None)
    ds = common.load_dataset(args.data[0])
    base16 = np.load(Path(args.data[0]) / "base.f16.npy")
    n, dim = ds.base.shape
    metric = "cosine" if ds.metric == "ip" else "l2"
    Q = ds.queries
    levels = args.levels.split(",") if args.levels else list(simd.supported_levels())
    levels = [lv for lv in levels if lv != "native"]
    flevels = _faiss_levels(faiss, args.faiss_levels.split(","))
    names = {}
    for name, lv in flevels.items():
        faiss.SIMDConfig.set_level(lv)
        names[name] = faiss.SIMDConfig.get_level_name()
    out = {"dataset": ds.describe(), "levels": levels, "faiss_levels": names,
           "faiss_version": faiss.__version__, "simd": simd.config(), "target": args.target}

    tmp = tempfile.mkdtemp(prefix="sutradb-levels-")
    t0 = time.perf_counter()
    db = sutradb.open(os.path.join(tmp, "db"), "w", metric=metric)
    db.add_vectors(base16)
    db.build_index(kind="ivf")
    out["sutradb_build_s"] = time.perf_counter() - t0
    out["index"] = db.index_info
    db.close()
    db = sutradb.open(os.path.join(tmp, "db"), "r")
    nlist = int(db.index_info.get("nlist") or default_nlist(n))

    t0 = time.perf_counter()
    mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    quant = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    ivf = faiss.IndexIVFPQ(quant, dim, nlist, dim // 8, 8, mt)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    ivf.train(common.training_sample(ds.base, 65_536))
    ref = faiss.IndexRefineFlat(ivf)
    ref.add(ds.base)
    out["faiss_build_s"] = time.perf_counter() - t0
    out["nlist"] = nlist
    faiss.omp_set_num_threads(1)
    common.limit_threads(1)

    ladder = [p for p in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if p <= nlist]
    reranks = (0, 10, 20, 30, 50, 80, 120, 200, 300, 500)
    kfs = (1, 2, 4, 8, 16, 32)

    def su_fn(nprobe, rr):
        return lambda q: db.search_vectors(q, k=K, nprobe=nprobe, rerank=rr)

    def fa_fn(nprobe, kf):
        ps = faiss.IndexRefineSearchParameters(k_factor=kf,
                                               base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
        return lambda q: ref.search(q, K, params=ps)

    # the frontier: per nprobe and recall level, the cheapest second knob that reaches
    # it (recall computed at the best level: every level returns the same ids); the
    # target gives the headline figure, the other levels the curves
    targets = sorted({0.8, 0.9, args.target, 0.97, 0.99})
    runs, seen = [], set()

    def frontier(lib, nprobe, knobs, fn_of):
        recalls = {}
        for t in targets:
            for kn in knobs:
                if kn not in recalls:
                    recalls[kn] = common.recall_at_k(fn_of(nprobe, kn)(Q)[1], ds.gt, K)
                if recalls[kn] >= t:
                    if (lib, nprobe, kn) not in seen:
                        seen.add((lib, nprobe, kn))
                        yield kn, recalls[kn]
                    break

    for nprobe in ladder:
        for rr, r in frontier("sutradb", nprobe, reranks, su_fn):
            for lv in levels:
                runs.append((f"sutradb-{lv}", ("sutradb", lv), {"nprobe": nprobe, "rerank": rr}, r,
                             su_fn(nprobe, rr)))
        for kf, r in frontier("faiss", nprobe, kfs, fa_fn):
            for name, lv in flevels.items():
                runs.append((f"faiss-{name}", ("faiss", lv), {"nprobe": nprobe, "k_factor": kf}, r,
                             fa_fn(nprobe, kf)))
    nq = min(args.queries, len(Q))
    qps = {i: [] for i in range(len(runs))}
    for rep in range(args.repeats):
        for i in common.rotated(list(range(len(runs))), rep):
            _, (lib, lv), _, _, fn = runs[i]
            if lib == "sutradb":
                with simd.using(lv):
                    fn(Q[:1])
                    lat, _ = common.time_each(lambda j: fn(Q[j:j + 1]), nq)
            else:
                faiss.SIMDConfig.set_level(lv)
                fn(Q[:1])
                lat, _ = common.time_each(lambda j: fn(Q[j:j + 1]), nq)
            qps[i].append(float(nq / lat.sum()))
        print(f"   repeat {rep + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    out["points"] = [{"system": name, "params": params, "recall": r, "qps": float(np.median(qps[i])),
                      "qps_repeats": qps[i]} for i, (name, _, params, r, _) in enumerate(runs)]
    best = {}
    for pt in out["points"]:
        if pt["recall"] >= args.target and (pt["system"] not in best or pt["qps"] > best[pt["system"]]["qps"]):
            best[pt["system"]] = pt
    out["best"] = best
    db.close()
    print(json.dumps(out))


# ------------------------------------------------------------------------ parent

def report(results):
    lines = []
    for res in results:
        b = res["best"]
        lines.append(f"== {res['dataset']['name']} (recall@10 >= {res['target']}; FAISS "
                     f"{res['faiss_version']} levels {res['faiss_levels']})")
        for sysname, pt in sorted(b.items(), key=lambda kv: -kv[1]["qps"]):
            lines.append(f"   {sysname:<16} {pt['qps']:>9.0f} q/s  recall {pt['recall']:.3f}  {pt['params']}")
        for fl, sl in FAISS_MATCH.items():
            fa, su = b.get(f"faiss-{fl}"), b.get(f"sutradb-{sl}")
            if fa and su:
                lines.append(f"   sutradb-{sl} / faiss-{fl} = {su['qps'] / fa['qps']:.2f}x")
        top = b.get(f"sutradb-{res['levels'][0]}")
        for lv in res["levels"][1:]:
            if top and f"sutradb-{lv}" in b:
                lines.append(f"   sutradb-{lv} / sutradb-{res['levels'][0]} = "
                             f"{b[f'sutradb-{lv}']['qps'] / top['qps']:.2f}x")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted({r["dataset"]["name"] for r in results})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for res in (r for r in results if r["dataset"]["name"] == name):
            systems = sorted({p["system"] for p in res["points"]})
            for s in systems:
                pts = sorted((p for p in res["points"] if p["system"] == s), key=lambda p: -p["recall"])
                env, top = [], 0.0        # the upper envelope: best QPS at >= each recall
                for p in pts:
                    if p["qps"] > top:
                        top = p["qps"]
                        env.append(p)
                pts = env[::-1]
                ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts],
                        marker="o" if s.startswith("sutradb") else "s",
                        linestyle="-" if s.startswith("sutradb") else "--", label=s)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s (one per call, 1 thread)")
        ax.set_title(f"{name}: Database IVF + re-rank vs FAISS IVF-PQ + refine")
        ax.axvline(res["target"], color="grey", linewidth=0.8, linestyle=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())["results"]
    else:
        results = []
        for data in args.data:
            env = {k: v for k, v in os.environ.items()
                   if k not in ("SUTRADB_SIMD", "FAISS_SIMD_LEVEL", "FAISS_OPT_LEVEL")}
            cmd = [sys.executable, __file__, "--child", "--data", data,
                   "--faiss-levels", args.faiss_levels, "--target", str(args.target),
                   "--queries", str(args.queries), "--repeats", str(args.repeats)] + \
                (["--levels", args.levels] if args.levels else [])
            print(f"-- {Path(data).name}", file=sys.stderr, flush=True)
            r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise SystemExit(f"child failed for {data}")
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(report(results[-1:]), file=sys.stderr, flush=True)
        if args.json:
            import common
            common.write_json(args.json, {"machine": common.machine_info(["faiss-cpu"]),
                                          "args": vars(args), "results": results})
    print(report(results))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
