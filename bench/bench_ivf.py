"""IVF-PQ with exact re-ranking: sutradb vs FAISS IndexIVFPQ + IndexRefineFlat vs hnswlib.

recall@10 against the data set's exact ground truth, single-query QPS (one query per
call) and batched QPS (all queries in one call), on ONE thread, for several
settings of each library:

* sutradb ``IVFIndex`` + ``ProductQuantizer`` (PQ on raw vectors), several
  (nprobe, rerank); re-ranking reads the float16 vectors from a memory map of
  ``base.f16.npy`` (as a database would). Two code layouts of the same 48 bytes per
  vector (``--sutra-nbits``): ``sutradb`` = 4-bit codes, m = 96, blocked for the
  fast scan; ``sutradb-8bit`` = 8-bit codes, m = 48 (FAISS's layout);
* FAISS ``index_factory("IVF{nlist},PQ48")`` (inner product, residual PQ, FAISS's
  default) wrapped in ``IndexRefineFlat`` (float32 vectors in RAM), same nlist,
  several (nprobe, k_factor);
* hnswlib (M = 16, ef_construction = 200, inner product), several ef.

Every setting is one "point"; each repeat visits every point in a rotated order
(interleaved, so drifting machine load hits every library alike) and the medians
over repeats are reported. Memory needed to search: sutradb = list-ordered codes +
coarse centres (float32 + float16 panels) + list arrays + codebooks; FAISS = its
serialized IVF-PQ (codes + ids + centres) and the refine vectors; hnswlib = its
saved index size.

    .venv/bin/python bench/bench_ivf.py --plot bench/results/ivf.png        # full run
    .venv/bin/python bench/bench_ivf.py --quick                             # smoke run
    .venv/bin/python bench/bench_ivf.py --from-json bench/results/ivf-*.json --plot x.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

K = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="directory with base.f16.npy, queries.f16.npy, "
                   "gt.i32.npy (default ../shared/data/pypi-minilm-100k)")
    p.add_argument("--queries", type=int, default=None, help="queries used (default all)")
    p.add_argument("--single-queries", type=int, default=None,
                   help="queries timed one per call (default 500; --quick 200)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds a batched measurement runs at least (default 0.3)")
    p.add_argument("--nlist", type=int, default=None, help="default: sutradb's default_nlist(n)")
    p.add_argument("--m", type=int, default=48,
                   help="FAISS's PQ subspaces (8 bits); sutradb's 4-bit codes use 2m")
    p.add_argument("--sutra-nbits", default="4,8",
                   help="sutradb code layouts to run: 4 (m=2*M, blocked fast scan, library "
                        "'sutradb') and/or 8 (m=M, 'sutradb-8bit')")
    p.add_argument("--train", type=int, default=65536, help="training rows (both IVF libraries)")
    p.add_argument("--pq-iters", type=int, default=20)
    p.add_argument("--ivf-iters", type=int, default=10)
    p.add_argument("--build-threads", type=int, default=2,
                   help="threads for training/building (search always uses one)")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer points/queries, 1 repeat")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--no-hnswlib", action="store_true")
    p.add_argument("--hnsw-cache", metavar="PATH", default=None,
                   help="hnswlib index file: loaded if it exists (its build not timed), else "
                        "built and saved there (hours of builds saved at 1M+)")
    p.add_argument("--json", metavar="PATH", default=None)
    p.add_argument("--plot", metavar="PATH.png", default=None)
    p.add_argument("--from-json", metavar="PATH", default=None,
                   help="measure nothing: summarise (and --plot) an earlier run")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 3)
    a.single_queries = a.single_queries or (200 if a.quick else 500)
    a.min_time = a.min_time if a.min_time is not None else (0.1 if a.quick else 0.3)
    return a


ARGS = parse_args() if __name__ == "__main__" else None
# one thread for every library: set before numpy / faiss / sutradb load their runtimes
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
if str(_HERE.parent) not in sys.path:
    sys.path.insert(1, str(_HERE.parent))
import common  # noqa: E402

SUTRA_POINTS = ([(p, 50) for p in (64, 128, 192)]
                + [(p, 100) for p in (48, 64, 80, 96, 112, 128, 160, 192, 256)]
                + [(p, 200) for p in (64, 80, 88, 96, 112, 128, 160)])
FAISS_POINTS = ([(p, 10) for p in (48, 64, 96, 128, 160, 192, 256)]
                + [(p, 20) for p in (64, 96, 128, 160, 192)])
HNSW_POINTS = [16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 256]
QUICK = {"sutradb": [(64, 100), (128, 100), (192, 100)], "faiss": [(64, 10), (128, 10), (192, 10)],
         "hnswlib": [32, 128]}


# --------------------------------------------------------------------------- peers

class Sutra:
    def __init__(self, nbits: int):
        self.nbits = nbits
        self.library = "sutradb" if nbits == 4 else "sutradb-8bit"

    def build(self, ds, train, args, prog):
        from sutradb.index.ivf import IVFIndex
        from sutradb.index.pq import ProductQuantizer
        t = {}
        m = 2 * args.m if self.nbits == 4 else args.m
        with prog.op(f"{self.library}: fit PQ (m={m}, {self.nbits} bits)"):
            t["fit_pq"], self.pq = common.time_call(lambda: ProductQuantizer(
                ds.dim, m, self.nbits, metric="cosine", seed=0).fit(
                    train, max_train=len(train), iters=args.pq_iters, threads=args.build_threads))
        with prog.op(f"{self.library}: fit IVF"):
            t["fit_ivf"], self.ivf = common.time_call(lambda: IVFIndex(
                ds.dim, nlist=args.nlist, metric="cosine", seed=0).fit(
                    train, max_train=len(train), iters=args.ivf_iters, threads=args.build_threads))

        def add():
            codes = self.pq.encode(ds.base, threads=args.build_threads)
            self.ivf.build(self.ivf.assign(ds.base, threads=args.build_threads))
            return self.ivf.list_order(codes, blocked=self.nbits == 4)
        with prog.op(f"{self.library}: encode + assign + lay out lists"):
            t["add"], self.codes = common.time_call(add)
        self.vectors = np.load(ds.path / "base.f16.npy", mmap_mode="r")
        self.memory = {
            "codes": int(self.codes.nbytes),
            "ivf_arrays": int(self.ivf.nbytes()),
            "codebooks": int(self.pq.codebooks.nbytes + sum(a.nbytes for a in self.pq._table_ops)),
        }
        self.memory["search_ram"] = sum(self.memory.values())
        self.memory["rerank_vectors_mmap"] = int(self.vectors.nbytes)
        self.nlist = self.ivf.nlist
        return t

    def points(self, quick):
        return QUICK["sutradb"] if quick else SUTRA_POINTS

    def label(self, pt):
        return f"nprobe={pt[0]} rerank={pt[1]}"

    def curve(self, pt):
        return f"{self.library} rerank={pt[1]}"

    def search(self, Q, pt):
        return self.ivf.search(Q, self.codes, self.pq, k=K, nprobe=pt[0], rerank=pt[1],
                               vectors=self.vectors, threads=1)[1]

    def search_one(self, q, pt):
        return self.search(q, pt)


class Faiss:
    library = "faiss"

    def build(self, ds, train, args, prog):
        import faiss
        self.faiss = faiss
        faiss.omp_set_num_threads(args.build_threads)
        t = {}
        idx = faiss.index_factory(ds.dim, f"IVF{args.nlist},PQ{args.m}", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(idx))
        ivf.cp.niter = args.ivf_iters
        ivf.cp.seed = 1234
        ivf.cp.max_points_per_centroid = max(256, len(train) // args.nlist + 1)
        ivf.pq.cp.niter = args.pq_iters
        ivf.pq.cp.max_points_per_centroid = max(256, len(train) // 256 + 1)
        with prog.op("faiss: train IVF + PQ"):
            t["fit"], _ = common.time_call(lambda: idx.train(train))
        self.ivfpq = idx
        self.index = faiss.IndexRefineFlat(idx)
        with prog.op("faiss: add"):
            t["add"], _ = common.time_call(lambda: self.index.add(ds.base))
        ivf_bytes = int(faiss.serialize_index(idx).nbytes)
        self.memory = {"ivfpq_index": ivf_bytes, "refine_vectors_ram": int(ds.base.nbytes)}
        self.memory["search_ram"] = ivf_bytes + int(ds.base.nbytes)
        self.params = faiss.IndexRefineSearchParameters
        self.ivf_params = faiss.SearchParametersIVF
        faiss.omp_set_num_threads(1)
        return t

    def points(self, quick):
        return QUICK["faiss"] if quick else FAISS_POINTS

    def label(self, pt):
        return f"nprobe={pt[0]} k_factor={pt[1]}"

    def curve(self, pt):
        return f"faiss IVFPQ+refine k_factor={pt[1]}"

    def search(self, Q, pt):
        faiss = self.faiss
        faiss.extract_index_ivf(self.ivfpq).nprobe = pt[0]
        self.index.k_factor = pt[1]
        return self.index.search(Q, K)[1]

    def search_one(self, q, pt):
        return self.index.search(q, K)[1]          # parameters set by search()


class Hnsw:
    library = "hnswlib"

    def build(self, ds, train, args, prog):
        import hnswlib
        t = {}
        idx = hnswlib.Index(space="ip", dim=ds.dim)
        cache = args.hnsw_cache
        if cache and os.path.exists(cache):
            # built before with the same parameters (M 16, ef_construction 200, seed
            # 100) on the same base: the search is the same, the build is not timed
            idx.load_index(cache, max_elements=len(ds.base))
            if idx.get_current_count() != len(ds.base):
                raise SystemExit(f"{cache}: {idx.get_current_count()} vectors, the data has {len(ds.base)}")
            t["loaded_from"] = cache
        else:
            idx.init_index(max_elements=len(ds.base), ef_construction=200, M=16, random_seed=100)
            with prog.op("hnswlib: add (M=16, ef_construction=200)"):
                t["add"], _ = common.time_call(
                    lambda: idx.add_items(ds.base, np.arange(len(ds.base)), num_threads=args.build_threads))
            if cache:
                idx.save_index(cache)
        idx.set_num_threads(1)
        self.index = idx
        with tempfile.TemporaryDirectory() as tmp:
            f = os.path.join(tmp, "h.bin")
            idx.save_index(f)
            size = os.path.getsize(f)
        self.memory = {"index": int(size), "search_ram": int(size)}
        return t

    def points(self, quick):
        return QUICK["hnswlib"] if quick else HNSW_POINTS

    def label(self, pt):
        return f"ef={pt}"

    def curve(self, pt):
        return "hnswlib M=16"

    def search(self, Q, pt):
        self.index.set_ef(max(pt, K))
        return self.index.knn_query(Q, k=K, num_threads=1)[0]

    def search_one(self, q, pt):
        return self.index.knn_query(q, k=K, num_threads=1)[0]


# --------------------------------------------------------------------------- run

def run(args):
    path = Path(args.data) if args.data else common.SHARED_DATA / "pypi-minilm-100k"
    ds = common.load_dataset(path, max_queries=args.queries, metric="ip")
    from sutradb.index.ivf import default_nlist
    args.nlist = args.nlist or default_nlist(len(ds.base))
    train = common.training_sample(ds.base, min(args.train, len(ds.base)), seed=0)
    peers = [Sutra(int(b)) for b in args.sutra_nbits.split(",")]
    if not args.no_faiss:
        peers.append(Faiss())
    if not args.no_hnswlib:
        peers.append(Hnsw())
    pts = [(p, pt) for p in peers for pt in p.points(args.quick)]
    nsingle = min(args.single_queries, len(ds.queries))
    result = {"benchmark": "ivf", "k": K, "dataset": ds.describe(),
              "config": {k: v for k, v in vars(args).items()}, "machine": None,
              "build": {}, "memory": {}, "points": []}
    with common.Progress(total_steps=len(peers) + args.repeats * len(pts), title="ivf") as prog:
        for p in peers:
            result["build"][p.library] = p.build(ds, train, args, prog)
            result["memory"][p.library] = p.memory
            prog.log(f"{p.library}: build {result['build'][p.library]}, memory {p.memory}")
            prog.step()
        common.limit_threads(1)
        result["machine"] = common.machine_info(["faiss-cpu", "hnswlib"])
        acc = {(p.library, str(pt)): {"batch": [], "single": [], "lat": []} for p, pt in pts}
        for p, pt in pts:                                 # recall + warm-up, untimed
            I = p.search(ds.queries, pt)
            a = acc[(p.library, str(pt))]
            a["recall"] = common.recall_at_k(I, ds.gt, K)
            Is = np.vstack([p.search_one(ds.queries[i:i + 1], pt) for i in range(nsingle)])
            a["recall_single"] = common.recall_at_k(Is, ds.gt[:nsingle], K)
        for r in range(args.repeats):
            for p, pt in common.rotated(pts, r * 7):
                a = acc[(p.library, str(pt))]
                with prog.op(f"[{r + 1}/{args.repeats}] {p.library} {p.label(pt)}"):
                    t, _, _ = common.time_autorange(lambda: p.search(ds.queries, pt), args.min_time)
                    a["batch"].append(t / len(ds.queries))
                    p.search(ds.queries[:1], pt)          # sets the point's parameters
                    lat, _ = common.time_each(lambda i: p.search_one(ds.queries[i:i + 1], pt),
                                              nsingle)
                    a["single"].append(float(lat.mean()))
                    a["lat"].append(common.latency_stats(lat))
                prog.step()
        for p, pt in pts:
            a = acc[(p.library, str(pt))]
            result["points"].append({
                "library": p.library, "curve": p.curve(pt), "label": p.label(pt),
                "params": list(pt) if isinstance(pt, tuple) else [pt],
                "recall": a["recall"], "recall_single": a["recall_single"],
                "qps_batch": 1 / float(np.median(a["batch"])),
                "qps_single": 1 / float(np.median(a["single"])),
                "p50_ms_single": float(np.median([x["p50_ms"] for x in a["lat"]])),
                "p99_ms_single": float(np.median([x["p99_ms"] for x in a["lat"]])),
                "samples_batch_s_per_query": a["batch"], "samples_single_s_per_query": a["single"],
            })
    result["summary"] = summarise(result)
    return result


def best_at(points, lib, target, key):
    ok = [p for p in points if p["library"] == lib and
          min(p["recall"], p["recall_single"]) >= target]
    return max(ok, key=lambda p: p[key]) if ok else None


def summarise(result, targets=(0.9, 0.95)):
    out = {}
    mem = result["memory"]
    for target in targets:
        row = {}
        for key in ("qps_single", "qps_batch"):
            best = {lib: best_at(result["points"], lib, target, key) for lib in mem}
            row[key] = {lib: (None if b is None else {"qps": b[key], "label": b["label"],
                                                      "recall": b["recall"]})
                        for lib, b in best.items()}
            for me in [lib for lib in best if lib.startswith("sutradb")]:
                s = best.get(me)
                for lib in ("faiss", "hnswlib"):
                    if s is not None and best.get(lib) is not None:
                        row[key][f"{me}_vs_{lib}"] = s[key] / best[lib][key]
        out[f"recall>={target}"] = row
    for me in [lib for lib in mem if lib.startswith("sutradb")]:
        for lib in ("hnswlib", "faiss"):
            if lib in mem:
                out[f"memory_{me}_over_{lib}"] = mem[me]["search_ram"] / mem[lib]["search_ram"]
    return out


def print_summary(result):
    print(f"\n{result['dataset']['name']}: n={result['dataset']['n_base']}, "
          f"nlist={result['config']['nlist']}, m={result['config']['m']}, one thread")
    print(f"{'library':12s} {'setting':26s} {'recall@10':>9s} {'single QPS':>10s} "
          f"{'batch QPS':>10s} {'p50 ms':>7s}")
    for p in result["points"]:
        print(f"{p['library']:12s} {p['label']:26s} {p['recall']:9.4f} {p['qps_single']:10,.0f} "
              f"{p['qps_batch']:10,.0f} {p['p50_ms_single']:7.3f}")
    print("\nmemory needed to search (MB):")
    for lib, m in result["memory"].items():
        print(f"  {lib:8s} " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in m.items()))
    for t, row in result["summary"].items():
        if not t.startswith("recall"):
            print(f"{t}: {row:.4f}")
            continue
        for key, r in row.items():
            bits = []
            for lib, b in r.items():
                if "_vs_" in lib:
                    bits.append(f"{lib} {b:.2f}x")
                elif b is None:
                    bits.append(f"{lib} —")
                else:
                    bits.append(f"{lib} {b['qps']:,.0f} ({b['label']}, {b['recall']:.3f})")
            print(f"{t} {key}: " + "; ".join(bits))


def make_plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"sutradb": "tab:blue", "sutradb-8bit": "tab:purple", "faiss": "tab:orange",
              "hnswlib": "tab:green"}
    styles = ["-o", "--s", ":^"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    mem = result["memory"]
    for ax, key, title in ((axes[0], "qps_single", "one query per call"),
                           (axes[1], "qps_batch", f"batched ({result['dataset']['n_queries']} queries per call)")):
        curves = {}
        for p in result["points"]:
            curves.setdefault((p["library"], p["curve"]), []).append(p)
        seen = {}
        for (lib, curve), pts in curves.items():
            pts = sorted(pts, key=lambda p: p["recall"])
            i = seen.get(lib, 0)
            seen[lib] = i + 1
            rk = "recall_single" if key == "qps_single" else "recall"
            label = f"{curve} ({mem[lib]['search_ram'] / 1e6:.0f} MB)"
            ax.plot([p[rk] for p in pts], [p[key] for p in pts], styles[i % 3],
                    color=colors.get(lib), label=label, ms=4)
        ax.axvline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second (one thread)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"IVF-PQ + exact re-rank vs FAISS IVFPQ+RefineFlat vs hnswlib — "
                 f"{result['dataset']['name']} (n={result['dataset']['n_base']:,}, "
                 f"nlist={result['config']['nlist']}, m={result['config']['m']}); "
                 f"legend: RAM needed to search")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(args):
    if args.from_json:
        import json
        result = json.loads(Path(args.from_json).read_text())
    else:
        result = run(args)
        out = common.write_json(args.json or common.default_json_path("ivf"), result)
        print(f"json: {out}")
    print_summary(result)
    if args.plot:
        print(f"plot: {make_plot(result, args.plot)}")


if __name__ == "__main__":
    main(ARGS)
