"""The sutradb performance suite: ``sutradb bench`` (or ``python -m sutradb.bench``).

Measures, at each scale and in one run, sutradb's operations against the peers that
apply, on the same data in the same process:

=========  =====================================================  ============================
operation  sutradb                                                peers
=========  =====================================================  ============================
learn      ``db.add(texts)`` through the configured embedder      the raw model, batched
load       ``db.add_vectors`` of every vector (durability off)    sqlite3 executemany
index      PQ training + encoding (``db.build_index``)            —
save       one-concept commit, ``durability="full"``              sqlite3 WAL, synchronous=FULL
open       ``sutradb.open`` of the database just built            sqlite3 connect + count
get        ``db.get(id)`` and ``db.get(key)``                     sqlite3 primary key, dict
distance   ``db.distance(a, b)``, ``db.distances(pairs)``         NumPy on float32 vectors
search     ``search_vectors`` one query per call and batched      FAISS IndexFlatIP, IVF-PQ +
           (recall@10 against exact ground truth)                 refine, hnswlib (M=16)
compact    delete 10 % then ``db.compact()``                      —
=========  =====================================================  ============================

Every row of the JSON result has ``operation, system, scale, throughput, unit,
p50_ms, p95_ms, p99_ms, memory_mb, disk_mb, errors`` (and ``recall_at_10`` for
search); latencies are per call, throughputs are medians over repeats. Peers are
interleaved with sutradb so that the noise of a shared machine hits all alike.

The suite ships in the package: with no ``--data`` it runs on the bundled real sample
(``sutradb/data/pypi-sample``: 2,000 MiniLM embeddings of PyPI summaries with their
texts, 100 queries and exact ground truth); ``--data DIR`` takes a larger set. The
peers are optional (``pip install sutradb[bench]``: faiss-cpu, hnswlib, rich,
matplotlib; sqlite3 is in the standard library): one that is not installed is skipped
with one line saying so, as is ``learn`` when the embedder cannot be loaded
(``pip install sutradb[sentence-transformers]``).

``sutradb bench compare A.json B.json ... [--plot trend.png]`` prints and plots how
the throughputs moved across runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import shutil
import sqlite3
import sys
from typing import Any
import tempfile
import time
from pathlib import Path

import numpy as np

from . import common

__all__ = ["main", "compare", "OPS", "row", "load_data", "exact_gt", "optional_import"]

OLD_SYSTEM = {"learn": 4.0, "load": 7500.0, "bytes_per_concept": 790.0}


# ----------------------------------------------------------------------------- utils

def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def dir_mb(path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total / 2**20


def row(operation, system, scale, *, throughput=None, unit: str = "ops/s", lat=None,
        memory_mb=None, disk_mb=None, errors: int = 0, **extra):
    r = {"operation": operation, "system": system, "scale": int(scale),
         "throughput": throughput, "unit": unit,
         "p50_ms": None, "p95_ms": None, "p99_ms": None,
         "memory_mb": memory_mb, "disk_mb": disk_mb, "errors": errors}
    if lat is not None and len(lat):
        ms = np.asarray(lat, dtype=np.float64) * 1e3
        r.update(p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)),
                 p99_ms=float(np.percentile(ms, 99)))
        if throughput is None:
            r["throughput"] = float(len(ms) / (ms.sum() / 1e3))
    r.update(extra)
    return r


def per_call(fn, args_list, advance=None):
    """Latency of each call fn(*a) for a in args_list (seconds)."""
    lat = np.empty(len(args_list))
    for i, a in enumerate(args_list):
        t = time.perf_counter()
        fn(*a)
        lat[i] = time.perf_counter() - t
        if advance is not None and i % 256 == 0:
            advance(min(256, len(args_list) - i))
    return lat


def load_data(args, default_data=None):
    """(vectors float16 (N, d) memory map, texts or None, queries float32, gt or None,
    source directory) of ``args.data``, else ``default_data``, else the bundled sample."""
    from ..demo import SAMPLE
    ds = Path(args.data) if args.data else Path(default_data) if default_data else SAMPLE
    for name in ("base.f16.npy", "queries.f16.npy"):
        if not (ds / name).is_file():
            raise FileNotFoundError(f"{ds / name} not found: a data set directory holds "
                                    f"base.f16.npy, queries.f16.npy[, gt.i32.npy, base_texts.txt]")
    base = np.load(ds / "base.f16.npy", mmap_mode="r")
    queries = np.load(ds / "queries.f16.npy").astype(np.float32)
    gt = np.load(ds / "gt.i32.npy") if (ds / "gt.i32.npy").exists() else None
    texts_file = Path(args.texts) if args.texts else ds / "base_texts.txt"
    texts = texts_file.read_text(encoding="utf-8").splitlines() if texts_file.exists() else None
    return base, texts, queries, gt, str(ds)


def optional_import(module, ctx, prog, what):
    """``module`` imported, or None after saying once per run that ``what`` is skipped
    because it is not installed (also listed under ``skipped`` in the JSON)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip(ctx, prog, what, f"{module} not installed ({e.__class__.__name__}: {e}); "
                              f"`pip install sutradb[bench]` adds it")
        return None


def skip(ctx, prog, what, reason) -> None:
    """Record (and print, once per run) that ``what`` was skipped and why."""
    shared = ctx["shared"]
    if what in shared["warned"]:
        return
    shared["warned"].add(what)
    shared["skipped"].append({"what": what, "reason": reason})
    prog.log(f"{what}: skipped, {reason}")


def exact_gt(base: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):
        sims = queries[s:s + 256] @ base.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        out[s:s + 256] = np.take_along_axis(part, order, 1)
    return out


# ------------------------------------------------------------------------ operations

def bench_learn(ctx, prog):
    """Texts -> concepts through the embedder, against the raw model alone."""
    import sutradb
    from ..embedders import get_embedder
    from ..errors import EmbedderError
    texts = ctx["texts"]
    if texts is None:
        skip(ctx, prog, "learn", "no texts in the data set (base_texts.txt or --texts)")
        return []
    n = min(len(texts), ctx["learn_n"])
    texts = texts[:n]
    shared = ctx["shared"]
    if "embedder" not in shared:                      # loaded once per run, tried once
        t = time.perf_counter()
        try:
            shared["embedder"] = get_embedder(ctx["embedder"])
        except (EmbedderError, ImportError) as e:
            shared["embedder"] = None
            hint = "" if "pip install" in str(e) else \
                "; `pip install sutradb[sentence-transformers]` or --embedder SPEC"
            skip(ctx, prog, "learn", f"the embedder {ctx['embedder']!r} is not available: "
                                     f"{e}{hint}")
        else:
            prog.log(f"learn: loaded {shared['embedder'].name} in "
                     f"{time.perf_counter() - t:.1f} s")
    emb = shared["embedder"]
    if emb is None:
        return []
    emb(texts[:16])                                   # warm-up
    raw, ours, single_raw, single_ours = [], [], [], []
    for r in range(ctx["repeats_learn"]):
        for who in common.rotated(["raw", "sutradb"], r):
            with prog.op(f"learn {who} x{n}", total=n, unit="texts") as adv:
                if who == "raw":
                    t = time.perf_counter()
                    emb(texts)
                    raw.append(time.perf_counter() - t)
                else:
                    path = Path(ctx["tmp"]) / f"learn-{r}"
                    with sutradb.open(path, "w", embedder=emb, durability="normal") as db:
                        t = time.perf_counter()
                        db.add(texts)
                        ours.append(time.perf_counter() - t)
                    shutil.rmtree(path, ignore_errors=True)
                adv(n)
    # one text per call: the latency a desktop app sees per concept
    m = min(20, n)
    path = Path(ctx["tmp"]) / "learn-single"
    with sutradb.open(path, "w", embedder=emb, durability="full") as db:
        for r in range(2):
            for who in common.rotated(["raw", "sutradb"], r):
                if who == "raw":
                    single_raw += list(per_call(lambda s: emb([s]), [(s,) for s in texts[:m]]))
                else:
                    single_ours += list(per_call(lambda s: db.add([s]), [(s,) for s in texts[:m]]))
    shutil.rmtree(path, ignore_errors=True)
    N = ctx["scale"]
    t_raw, t_ours = float(np.median(raw)), float(np.median(ours))
    return [
        row("learn", "sutradb", N, throughput=n / t_ours, unit="concepts/s",
            embedder=emb.name, texts=n, vs_raw_model=t_raw / t_ours,
            vs_old_system=(n / t_ours) / OLD_SYSTEM["learn"]),
        row("learn", "raw model", N, throughput=n / t_raw, unit="texts/s", embedder=emb.name),
        row("learn_single", "sutradb", N, lat=single_ours, unit="concepts/s",
            vs_raw_model=float(np.median(single_raw) / np.median(single_ours))),
        row("learn_single", "raw model", N, lat=single_raw, unit="texts/s"),
    ]


def bench_load(ctx, prog):
    """Bulk load of every vector (one transaction, durability off) + sqlite3."""
    import sutradb
    V, N = ctx["vectors"], ctx["scale"]
    texts = ctx["texts"][:N] if ctx["texts"] is not None and len(ctx["texts"]) >= N else None
    keys = [f"k{i}" for i in range(N)]
    ours, lite = [], []
    path = Path(ctx["tmp"]) / "db"
    for r in range(ctx["repeats"]):
        for who in common.rotated(["sutradb", "sqlite3"], r):
            gc.collect()
            if who == "sutradb":
                shutil.rmtree(path, ignore_errors=True)
                m0 = rss_mb()
                with prog.op(f"load sutradb x{N}", total=N, unit="rows") as adv:
                    t = time.perf_counter()
                    # the index is trained by the `index` operation, timed on its own
                    with sutradb.open(path, "w", durability="off", index_threshold=N + 1) as db:
                        db.add_vectors(V, texts=texts, keys=keys)
                    ours.append((time.perf_counter() - t, rss_mb() - m0))
                    adv(N)
            else:
                lp = Path(ctx["tmp"]) / "lite.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(str(lp) + suffix).unlink(missing_ok=True)
                t = time.perf_counter()
                con = sqlite3.connect(lp)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=OFF")
                con.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, key TEXT UNIQUE, text TEXT, v BLOB)")
                with con:
                    con.executemany("INSERT INTO c VALUES (?, ?, ?, ?)",
                                    ((i, keys[i], texts[i] if texts else None,
                                      np.asarray(V[i], np.float16).tobytes()) for i in range(N)))
                con.close()
                lite.append(time.perf_counter() - t)
    t_ours = float(np.median([o[0] for o in ours]))
    disk = dir_mb(path)
    ctx["db_path"] = path
    payload = N * V.shape[1] * 2 / 2**20 + (sum(len(t.encode()) for t in texts) / 2**20 if texts else 0)
    return [
        row("load", "sutradb", N, throughput=N / t_ours, unit="vectors/s",
            memory_mb=float(np.median([o[1] for o in ours])), disk_mb=disk,
            bytes_per_concept=disk * 2**20 / N, vs_old_system=(N / t_ours) / OLD_SYSTEM["load"],
            payload_mb=payload),
        row("load", "sqlite3", N, throughput=N / float(np.median(lite)), unit="vectors/s",
            disk_mb=sum(os.path.getsize(p) for p in Path(ctx["tmp"]).glob("lite.db*")) / 2**20),
    ]


def bench_index(ctx, prog):
    """Training of the PQ index (m = dim // 8, 8 bits) and encoding of every vector,
    as the database does once it passes its threshold (10,000 by default)."""
    import sutradb
    path, N = ctx["db_path"], ctx["scale"]
    if N < ctx["index_threshold"]:
        prog.log(f"index: {N:,} concepts stay below the {ctx['index_threshold']:,} threshold "
                 f"(exact search), not trained")
        return []
    with sutradb.open(path) as db:
        t = time.perf_counter()
        info = db.build_index()
        dt = time.perf_counter() - t
    return [row("index", "sutradb", N, throughput=N / dt, unit="vectors/s", seconds=dt,
                m=info.get("m"), code_size=info.get("code_size"), disk_mb=dir_mb(path))]


def bench_open(ctx, prog):
    import sutradb
    path, N = ctx["db_path"], ctx["scale"]
    ours, lite = [], []
    for r in range(ctx["repeats"] * 5):
        for who in common.rotated(["sutradb", "sqlite3"], r):
            if who == "sutradb":
                t = time.perf_counter()
                db = sutradb.open(path, "r")
                n = len(db)
                ours.append(time.perf_counter() - t)
                db.close()
                assert n == N
            else:
                t = time.perf_counter()
                con = sqlite3.connect(Path(ctx["tmp"]) / "lite.db")
                con.execute("SELECT count(*) FROM c").fetchone()
                lite.append(time.perf_counter() - t)
                con.close()
    return [row("open", "sutradb", N, lat=ours, unit="opens/s"),
            row("open", "sqlite3", N, lat=lite, unit="opens/s")]


def bench_save(ctx, prog):
    """One-concept transactions with durability "full" vs sqlite3 WAL FULL."""
    import sutradb
    N, d = ctx["scale"], ctx["vectors"].shape[1]
    n = ctx["commits"]
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((n, d)).astype(np.float32)
    path = Path(ctx["tmp"]) / "save"
    lp = Path(ctx["tmp"]) / "save.db"
    shutil.rmtree(path, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(lp) + suffix).unlink(missing_ok=True)
    db = sutradb.open(path, "w", dim=d, durability="full")
    con = sqlite3.connect(lp, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, text TEXT, v BLOB)")
    ours, lite = [], []
    half = n // 2
    for r in range(2):
        for who in common.rotated(["sutradb", "sqlite3"], r):
            sl = slice(r * half, (r + 1) * half)
            if who == "sutradb":
                ours += list(per_call(lambda v: db.add_vectors(v[None], texts=["a concept"]),
                                      [(v,) for v in vecs[sl]]))
            else:
                def ins(i, v) -> None:
                    con.execute("BEGIN")
                    con.execute("INSERT INTO c VALUES (?, ?, ?)", (i, "a concept",
                                                                  v.astype(np.float16).tobytes()))
                    con.execute("COMMIT")
                lite += list(per_call(ins, [(r * half + i, v) for i, v in enumerate(vecs[sl])]))
    db.close()
    con.close()
    p_ours, p_lite = float(np.median(ours)), float(np.median(lite))
    return [row("save", "sutradb", N, lat=ours, unit="commits/s", vs_sqlite_latency=p_ours / p_lite),
            row("save", "sqlite3", N, lat=lite, unit="commits/s")]


def bench_get(ctx, prog):
    """``get`` by id warm (ids read before) and cold (a fresh handle, distinct ids not
    read before), by key, and ``get_many`` of the cold ids in batches of 1,000 on a
    fresh handle, against sqlite3 primary-key and key lookups."""
    import sutradb
    path, N = ctx["db_path"], ctx["scale"]
    rng = np.random.default_rng(2)
    n = ctx["gets"]
    ids = rng.integers(0, N, n)
    id_list = ids.tolist()
    # cold reads: ids not read before, each once, on a fresh handle
    cold_ids = rng.permutation(N)[:n].tolist()
    nc = len(cold_ids)
    keys = [f"k{i}" for i in ids]
    db = sutradb.open(path, "r")
    for _ in range(2):                      # warm: every id read twice before (a row
        for i in id_list:                   # enters the record cache on its second read)
            db.get(i)
    con = sqlite3.connect(Path(ctx["tmp"]) / "lite.db")
    d = {i: (f"k{i}", None, None) for i in range(N)}
    cur = con.cursor()
    res: dict[str, list[float]] = {}
    for r in range(ctx["repeats"]):
        for who in common.rotated(["id", "cold", "many", "key", "sqlite3", "sqlite3-key", "dict"], r):
            fresh = sutradb.open(path, "r") if who in ("cold", "many") else None
            t = time.perf_counter()
            if who == "id":
                for i in id_list:
                    db.get(i)
            elif who == "cold":
                g = fresh.get
                for i in cold_ids:
                    g(i)
            elif who == "many":
                for a in range(0, nc, 1000):
                    fresh.get_many(cold_ids[a:a + 1000])
            elif who == "key":
                for k in keys:
                    db.get(k)
            elif who == "sqlite3":
                for i in id_list:
                    cur.execute("SELECT key, text, v FROM c WHERE id = ?", (i,)).fetchone()
            elif who == "sqlite3-key":
                for k in keys:
                    cur.execute("SELECT id, text, v FROM c WHERE key = ?", (k,)).fetchone()
            else:
                for i in id_list:
                    d[i]
            res.setdefault(who, []).append((nc if who in ("cold", "many") else n)
                                           / (time.perf_counter() - t))
            if fresh is not None:
                fresh.close()
    db.close()
    con.close()
    med = {k: float(np.median(v)) for k, v in res.items()}
    return [
        row("get", "sutradb", N, throughput=med["id"], unit="gets/s", by="id",
            vs_sqlite=med["id"] / med["sqlite3"]),
        row("get_cold", "sutradb", N, throughput=med["cold"], unit="gets/s", by="id, fresh handle",
            vs_sqlite=med["cold"] / med["sqlite3"]),
        row("get_many", "sutradb", N, throughput=med["many"], unit="gets/s",
            by="1,000 ids per call, fresh handle", vs_sqlite=med["many"] / med["sqlite3"]),
        row("get_key", "sutradb", N, throughput=med["key"], unit="gets/s", by="key",
            vs_sqlite=med["key"] / med["sqlite3-key"]),
        row("get", "sqlite3", N, throughput=med["sqlite3"], unit="gets/s", by="id"),
        row("get_key", "sqlite3", N, throughput=med["sqlite3-key"], unit="gets/s", by="key"),
        row("get", "dict", N, throughput=med["dict"], unit="gets/s", by="id"),
    ]


def bench_distance(ctx, prog):
    import sutradb
    path, N = ctx["db_path"], ctx["scale"]
    V = np.asarray(ctx["vectors"], np.float32)
    rng = np.random.default_rng(3)
    n = ctx["gets"]
    pairs = rng.integers(0, N, (n, 2))
    db = sutradb.open(path, "r")
    single, batched, numpy_b = [], [], []
    plist = [(int(a), int(b)) for a, b in pairs]
    for r in range(ctx["repeats"]):
        for who in common.rotated(["single", "batched", "numpy"], r):
            t = time.perf_counter()
            if who == "single":
                for a, b in plist:
                    db.distance(a, b)
                single.append(n / (time.perf_counter() - t))
            elif who == "batched":
                db.distances(pairs)
                batched.append(n / (time.perf_counter() - t))
            else:
                1.0 - np.einsum("ij,ij->i", V[pairs[:, 0]], V[pairs[:, 1]])
                numpy_b.append(n / (time.perf_counter() - t))
    db.close()
    return [row("distance", "sutradb", N, throughput=float(np.median(single)), unit="pairs/s",
                mode="single call"),
            row("distance_batch", "sutradb", N, throughput=float(np.median(batched)),
                unit="pairs/s", mode="batched"),
            row("distance_batch", "numpy (float32 in RAM)", N,
                throughput=float(np.median(numpy_b)), unit="pairs/s", mode="batched")]


def bench_search(ctx, prog):
    import sutradb
    path, N = ctx["db_path"], ctx["scale"]
    V = np.asarray(ctx["vectors"], np.float32)
    Q = ctx["queries"][:ctx["nq"]]
    gt = ctx["gt"]
    if gt is None or N != ctx["n_total"]:
        gt = exact_gt(V, Q)
    gt = np.asarray(gt)[:len(Q)]
    rows = []
    db = sutradb.open(path, "r")
    m0 = rss_mb()
    systems = {}

    def sutra(rerank):
        def one(q):
            return db.search_vectors(q, k=10, rerank=rerank)[1]
        def batch(Qs):
            return db.search_vectors(Qs, k=10, rerank=rerank)[1]
        return one, batch

    for rr in ctx["reranks"]:
        systems[f"sutradb rerank={rr}" if rr is not None else "sutradb (default)"] = sutra(rr)
    peers = {}
    faiss = optional_import("faiss", ctx, prog, "search peer FAISS (IndexFlatIP, IVF-PQ+refine)")
    if faiss is not None:
        faiss.omp_set_num_threads(1)
        flat = faiss.IndexFlatIP(V.shape[1])
        flat.add(V)
        peers["faiss IndexFlatIP"] = flat
        if N >= 10_000:
            nlist = int(min(4096, max(16, 4 * np.sqrt(N))))
            q = faiss.IndexFlatIP(V.shape[1])
            ivf = faiss.IndexIVFPQ(q, V.shape[1], nlist, 48, 8, faiss.METRIC_INNER_PRODUCT)
            ivf.train(common.training_sample(V, min(N, 65536)))
            ivf.nprobe = 32
            ref = faiss.IndexRefineFlat(ivf)       # wraps the empty index; add() fills both
            ref.add(V)
            ref.k_factor = 10
            peers["faiss IVF-PQ+refine"] = ref
    hnswlib = optional_import("hnswlib", ctx, prog, "search peer hnswlib")
    if hnswlib is not None:
        h = hnswlib.Index(space="ip", dim=V.shape[1])
        h.init_index(max_elements=N, M=16, ef_construction=200, random_seed=0)
        h.set_num_threads(1)
        h.add_items(V)
        h.set_ef(64)
        peers["hnswlib M=16 ef=64"] = h

    def peer_fns(obj):
        if hasattr(obj, "knn_query"):
            return (lambda q: obj.knn_query(q[None], k=10)[0], lambda Qs: obj.knn_query(Qs, k=10)[0])
        return (lambda q: obj.search(q[None], 10)[1], lambda Qs: obj.search(Qs, 10)[1])

    for name, obj in peers.items():
        systems[name] = peer_fns(obj)
    lat = {n: [] for n in systems}
    bat = {n: [] for n in systems}
    rec = {}
    for r in range(ctx["repeats"]):
        for name in common.rotated(list(systems), r):
            one, batch = systems[name]
            with prog.op(f"search {name}", total=len(Q), unit="queries") as adv:
                lat[name].append(per_call(one, [(q,) for q in Q], adv))
            t = time.perf_counter()
            I = batch(Q)
            bat[name].append(len(Q) / (time.perf_counter() - t))
            rec[name] = common.recall_at_k(np.asarray(I), gt, 10)
    mem = rss_mb() - m0
    db.close()
    flat_qps = None
    for name in systems:
        L = np.median(np.stack(lat[name]), axis=0)
        r_ = row("search", name if name.startswith("sutradb") else name, N, lat=L,
                 unit="queries/s", recall_at_10=rec[name],
                 batched_qps=float(np.median(bat[name])),
                 memory_mb=mem if name.startswith("sutradb") else None)
        if name == "faiss IndexFlatIP":
            flat_qps = r_["throughput"]
        rows.append(r_)
    for r_ in rows:
        if flat_qps and r_["system"].startswith("sutradb"):
            r_["vs_faiss_flat_single"] = r_["throughput"] / flat_qps
    return rows


def bench_compact(ctx, prog):
    import sutradb
    path, N = ctx["db_path"], ctx["scale"]
    with sutradb.open(path, durability="off") as db:
        ids = np.random.default_rng(4).choice(N, N // 10, replace=False)
        db.delete(ids.tolist())
        before = dir_mb(path)
        t = time.perf_counter()
        db.compact()
        dt = time.perf_counter() - t
    return [row("compact", "sutradb", N, throughput=(N - len(ids)) / dt, unit="live rows/s",
                disk_mb=dir_mb(path), disk_before_mb=before, seconds=dt)]


def bench_text(ctx, prog):
    """Ranked full-text search, k = 10: ``search_text`` (BM25 over the stored postings)
    against SQLite FTS5's ``bm25()`` over the same texts and queries (the query's terms
    OR-ed), interleaved repeats; also the mean overlap of their top 10s."""
    import sutradb
    from ..text import Tokenizer
    texts, N = ctx["texts"], ctx["scale"]
    if texts is None or len(texts) < N:
        skip(ctx, prog, "text search", "the data set has no base_texts.txt")
        return []
    queries = ctx["query_texts"] or [" ".join(t.split()[:6]) for t in texts[::max(1, N // 500)]]
    queries = [q for q in queries if q.strip()][:ctx["nq"]]
    tok = Tokenizer()
    lp = Path(ctx["tmp"]) / "fts.db"
    lp.unlink(missing_ok=True)
    t = time.perf_counter()
    con = sqlite3.connect(lp)
    con.execute("CREATE VIRTUAL TABLE f USING fts5(t, tokenize='unicode61 remove_diacritics 0')")
    with con:
        con.executemany("INSERT INTO f(rowid, t) VALUES (?, ?)", ((i, texts[i]) for i in range(N)))
    fts_build = time.perf_counter() - t
    fq = [" OR ".join(f'"{w}"' for w in dict.fromkeys(tok.terms(q))) for q in queries]
    db = sutradb.open(ctx["db_path"], "r")
    t = time.perf_counter()
    db.search_text(queries[0], 10)          # the first query after opening: postings checked
    first = time.perf_counter() - t
    ours, lite, overlap = [], [], []
    for r in range(ctx["repeats"]):
        for who in common.rotated(["sutradb", "sqlite3"], r):
            with prog.op(f"text search {who} x{N}", total=len(queries), unit="queries") as adv:
                if who == "sutradb":
                    got = [[h.id for h in db.search_text(q, 10)] for q in queries[:3]]
                    ours.append(per_call(lambda q: db.search_text(q, 10), [(q,) for q in queries], adv))
                else:
                    sql = "SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT 10"
                    lite.append(per_call(lambda q: con.execute(sql, (q,)).fetchall() if q else [],
                                         [(q,) for q in fq], adv))
    for q, f in zip(queries, fq):
        a = [h.id for h in db.search_text(q, 10)]
        b = [x[0] for x in con.execute("SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT 10",
                                       (f,)).fetchall()] if f else []
        if a or b:
            overlap.append(len(set(a) & set(b)) / max(len(a), len(b)))
    db.close()
    con.close()
    del got
    o_lat = np.concatenate(ours)
    l_lat = np.concatenate(lite)
    return [row("text search", "sutradb", N, lat=o_lat, unit="queries/s",
                first_query_ms=first * 1e3,
                top10_overlap_with_fts5=float(np.mean(overlap)) if overlap else None),
            row("text search", "sqlite3 fts5", N, lat=l_lat, unit="queries/s",
                build_s=fts_build)]


OPS = {"learn": bench_learn, "load": bench_load, "index": bench_index, "open": bench_open,
       "save": bench_save,
       "get": bench_get, "distance": bench_distance, "search": bench_search,
       "text": bench_text, "compact": bench_compact}


# ------------------------------------------------------------------------- reporting

def summary_table(rows, console=None) -> None:
    cols = ["operation", "system", "scale", "throughput", "unit", "p50_ms", "p95_ms",
            "p99_ms", "memory_mb", "disk_mb", "recall_at_10"]
    def cell(r, c):
        v = r.get(c)
        return "" if v is None else common.fmt_num(v) if isinstance(v, float) else str(v)

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:                              # a plain text table
        cells = [cols] + [[cell(r, c) for c in cols] for r in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
        print("sutradb bench: summary (medians)")
        for line in cells:
            print("  ".join(v.ljust(w) if c in ("operation", "system", "unit") else v.rjust(w)
                            for v, w, c in zip(line, widths, cols)).rstrip())
        return
    t = Table(title="sutradb bench: summary (medians)")
    for c in cols:
        t.add_column(c, justify="right" if c not in ("operation", "system", "unit") else "left")
    for r in rows:
        t.add_row(*[cell(r, c) for c in cols])
    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(t)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(rows, out_dir: Path):
    """PNG plots of ``rows`` in ``out_dir`` (needs matplotlib); returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    search = [r for r in rows if r["operation"] == "search" and r.get("throughput")
              and r.get("recall_at_10") is not None]
    for scale in sorted({r["scale"] for r in search}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in (r for r in search if r["scale"] == scale):
            mark = "o" if r["system"].startswith("sutradb") else "s"
            ax.scatter(r["recall_at_10"], r["throughput"], marker=mark, s=50)
            ax.annotate(r["system"], (r["recall_at_10"], r["throughput"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("single-query QPS (one thread, log)")
        ax.set_title(f"search, {scale:,} vectors: recall vs single-query throughput")
        ax.grid(alpha=0.3)
        p = out_dir / f"search-recall-qps-{scale}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    others = [r for r in rows if r["operation"] != "search" and r.get("throughput")]
    if others:
        labels = [f"{r['operation']}\n{r['system']}\n{r['scale']:,}" for r in others]
        fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(others)), 5))
        colors = ["tab:blue" if r["system"] == "sutradb" else "tab:gray" for r in others]
        ax.bar(range(len(others)), [r["throughput"] for r in others], color=colors)
        ax.set_xticks(range(len(others)))
        ax.set_xticklabels(labels, fontsize=6, rotation=90)
        ax.set_yscale("log")
        ax.set_ylabel("throughput (per second, log; units per operation)")
        ax.set_title("sutradb (blue) and peers (grey), same run")
        fig.tight_layout()
        p = out_dir / "throughput.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def compare(argv, prog: str = "sutradb bench") -> int:
    ap = argparse.ArgumentParser(prog=f"{prog} compare",
                                 description="Throughput trends across benchmark JSON files.")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--plot", help="PNG path for the trend plot")
    a = ap.parse_args(argv)
    import json
    runs = [json.loads(Path(f).read_text()) for f in a.files]
    keyed: dict[Any, Any] = {}
    for i, run in enumerate(runs):
        for r in run.get("rows", []):
            if r.get("throughput"):
                keyed.setdefault((r["operation"], r["system"], r["scale"]), {})[i] = r["throughput"]
    for (op, system, scale), vals in sorted(keyed.items()):
        series = "  ".join(common.fmt_num(vals.get(i)) for i in range(len(runs)))
        print(f"{op:16s} {system:28s} {scale:>9,}  {series}")
    if a.plot and not have_matplotlib():
        print("--plot: matplotlib not installed (`pip install sutradb[bench]`), no plot",
              file=sys.stderr)
    elif a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5))
        for (op, system, scale), vals in sorted(keyed.items()):
            if system != "sutradb" and not system.startswith("sutradb"):
                continue
            xs = sorted(vals)
            base = vals[xs[0]]
            ax.plot(xs, [vals[x] / base for x in xs], marker="o", label=f"{op} {scale:,}")
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([Path(f).stem for f in a.files], rotation=30, fontsize=7)
        ax.set_ylabel("throughput relative to the first run")
        ax.set_title("sutradb throughput across runs")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"plot: {a.plot}")
    return 0


# ------------------------------------------------------------------------------ main

def main(argv=None, *, prog: str = "sutradb bench", default_data=None,
         results_dir=None) -> int:
    """Run the suite (``argv``: the command-line options; ``compare ...`` for trends).

    ``default_data``: the data set directory used without ``--data`` (default: the
    bundled sample); ``results_dir``: where the JSON goes without ``--json`` (default:
    the current directory). A source checkout's ``bench/suite.py`` passes its real
    100k set and ``bench/results``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return compare(argv[1:], prog)
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="seconds to a minute: one small scale (5,000 rows, or the whole "
                         "data set if smaller), few repeats")
    ap.add_argument("--scales", default=None,
                    help="comma-separated sizes (default 10000 and the data set's size; "
                         "sizes above the data set's are capped to it)")
    ap.add_argument("--ops", default=",".join(OPS), help=f"subset of {','.join(OPS)}")
    ap.add_argument("--data", help="a directory with base.f16.npy, queries.f16.npy[, gt.i32.npy, "
                                   "base_texts.txt] (default: %s)" % (
                                       default_data or "the bundled 2,000-row real sample"))
    ap.add_argument("--texts", help="a text file for `learn` (one text per line)")
    ap.add_argument("--embedder", default="sentence-transformers:all-MiniLM-L6-v2",
                    help="embedder spec for `learn` (skipped when it cannot be loaded)")
    ap.add_argument("--learn", type=int, default=None, help="texts to learn (default 2000; quick 256)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (default 1)")
    ap.add_argument("--json", help="write the results here (default %s/suite-<time>.json)"
                                   % (results_dir or "."))
    ap.add_argument("--plot", nargs="?", const="", default=None,
                    help="write PNG plots (to this directory; default next to the JSON; "
                         "needs matplotlib)")
    ap.add_argument("--quiet", action="store_true", help="no live progress")
    args = ap.parse_args(argv)

    # Thread limits for this run, undone at the end (main may be called in-process).
    saved_env = {k: os.environ.get(k) for k in (*common.THREAD_ENV_VARS, "SUTRADB_NUM_THREADS")}
    common.limit_threads_env(args.threads)    # for what loads later (faiss, hnswlib, torch)
    ctl = common.limit_threads(args.threads)  # what is loaded already
    os.environ.setdefault("SUTRADB_NUM_THREADS", str(args.threads))
    try:
        return run_suite(ap, args, default_data, results_dir)
    finally:
        if ctl is not None:
            ctl.restore_original_limits()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_suite(ap, args, default_data, results_dir) -> int:
    """The body of :func:`main` once the thread limits are set."""
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = set(ops) - set(OPS)
    if unknown:
        ap.error(f"unknown operations {sorted(unknown)}")
    try:
        base, texts, queries, gt, source = load_data(args, default_data)
        qt = Path(source) / "query_texts.txt"
        query_texts = qt.read_text(encoding="utf-8").splitlines() if qt.is_file() else None
    except (OSError, ValueError) as e:
        ap.error(f"cannot read the data set: {e}")
    try:
        asked = ([int(s) for s in args.scales.split(",")] if args.scales else
                 ([5000] if args.quick else [10_000, len(base)]))
    except ValueError:
        ap.error(f"--scales wants comma-separated integers, not {args.scales!r}")
    if any(s < 1 for s in asked):
        ap.error("--scales must be positive")
    scales = sorted({min(s, len(base)) for s in asked})
    if "load" not in ops and any(o in ops for o in ("index", "open", "get", "distance", "search",
                                                    "text", "compact")):
        ops.insert(0, "load")                    # they read the database `load` builds
    shared: dict[str, Any] = {"warned": set(), "skipped": []}    # across scales: say each skip once
    ctx_base = {
        "texts": texts, "queries": queries, "gt": gt, "n_total": len(base),
        "query_texts": query_texts,
        "embedder": args.embedder, "shared": shared,
        "learn_n": args.learn or (256 if args.quick else 2000),
        "repeats": args.repeats or (2 if args.quick else 3),
        "repeats_learn": 1 if args.quick else 2,
        "nq": args.queries or (100 if args.quick else 1000),
        "commits": 100 if args.quick else 400,
        "gets": 20_000 if args.quick else 100_000,
        "reranks": [None, 0] if args.quick else [None, 0, 32, 256],
        "index_threshold": 10_000,
    }
    rows = []
    tmp = tempfile.mkdtemp(prefix="sutradb-bench-")
    t_start = time.perf_counter()
    try:
        with common.Progress(total_steps=len(scales) * len(ops), title="sutradb bench",
                             enabled=False if args.quiet else None) as prog:
            prog.log(f"data: {source} ({len(base):,} x {base.shape[1]}, {len(queries):,} "
                      f"queries{'' if gt is not None else ', ground truth computed'}"
                      f"{'' if texts is not None else ', no texts'}); scales "
                      f"{', '.join(f'{s:,}' for s in scales)}; operations {', '.join(ops)}")
            if args.scales and any(s > len(base) for s in asked):
                prog.log(f"note: the data set has {len(base):,} rows: larger scales capped "
                          f"to it (--data DIR for a larger set)")
            for N in scales:
                ctx = dict(ctx_base, scale=N, tmp=tmp,
                           vectors=np.ascontiguousarray(base[:N], dtype=np.float32))
                for op in ops:
                    t = time.perf_counter()
                    try:
                        new = OPS[op](ctx, prog)
                    except Exception as e:            # one failing operation is a row, not a crash
                        new = [row(op, "sutradb", N, errors=1, error=f"{type(e).__name__}: {e}")]
                    rows += new
                    prog.log(f"[{N:,}] {op}: {len(new)} rows in {time.perf_counter() - t:.1f} s")
                    prog.step()
                shutil.rmtree(Path(tmp) / "db", ignore_errors=True)
        summary_table(rows, prog.console)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"suite": "sutradb bench", "machine": common.machine_info(
               ["sutradb", "faiss-cpu", "hnswlib", "sentence-transformers", "torch"]),
           "parameters": {"scales": scales, "ops": ops, "quick": args.quick, "data": source,
                          "threads": args.threads, "embedder": args.embedder,
                          "old_system": OLD_SYSTEM, "suite_file": __file__},
           "seconds": time.perf_counter() - t_start, "skipped": shared["skipped"],
           "rows": rows}
    path = common.write_json(args.json or common.default_json_path("suite", results_dir), out)
    if shared["skipped"]:
        print(f"skipped: {'; '.join(s_['what'] for s_ in shared['skipped'])} "
              f"(why: above and under `skipped` in the JSON)")
    print(f"JSON: {path} ({len(rows)} rows)")
    if args.plot is not None:
        if not have_matplotlib():
            print("--plot: matplotlib not installed (`pip install sutradb[bench]`), no plots",
                  file=sys.stderr)
        else:
            out_dir = Path(args.plot) if args.plot else path.parent / (path.stem + "-plots")
            for p in plot(rows, out_dir):
                print(f"plot: {p}")
    failed = [r for r in rows if r.get("errors")]
    for r in failed:
        print(f"FAILED {r['operation']} at {r['scale']:,}: {r.get('error')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
