#!/usr/bin/env python
"""Bulk load through the Database against sqlite3 ``executemany``, same rows, same run.

For each size n (default 20,000 and 100,000 real MiniLM rows with their PyPI
summaries), each repeat loads, in a fresh directory and in a rotated order:

* ``sutradb-full``: ``db.add_vectors(X, texts=..., metadata=...)`` into a new database
  with default options (``durability="full"``: the commit is fsynced);
* ``sutradb-vectors``: ``db.add_vectors(X)`` alone;
* ``sqlite-full``: ``executemany`` of ``(id, text, JSON metadata, float16 vector
  blob)`` in one transaction, WAL mode, ``synchronous=FULL`` (the commit is fsynced);
* ``sqlite-vectors``: the same with only ``(id, blob)``.

The time is the call (sutradb: ``add_vectors`` returns once committed; sqlite:
``BEGIN`` .. ``COMMIT``). Opening is outside it. For sutradb the index upkeep the
commit leaves due (PQ training, IVF lists: deferred to first use) is timed apart as
"first search" (the first ``search_vectors`` after the load) and ``close`` is timed
too. Medians over repeats; ratios are sutradb rows/s over sqlite rows/s.

    .venv/bin/python bench/bench_load.py --json bench/results/load.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

DATA = "/work/shared/data/pypi-minilm-100k"


def metadata_of(i: int, text: str) -> dict:
    return {"src": "pypi", "row": i, "lang": "en" if i % 3 else "fr", "len": len(text)}


def run_sutradb(tmp, X, texts, metas, full):
    import sutradb
    db = sutradb.open(os.path.join(tmp, "db"), "w", metric="cosine")
    t0 = time.perf_counter()
    if full:
        db.add_vectors(X, texts=texts, metadata=metas)
    else:
        db.add_vectors(X)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    db.search_vectors(X[:1], k=10)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    db.close()
    return {"load_s": load, "first_search_s": first, "close_s": time.perf_counter() - t0}


def run_sqlite(tmp, X, texts, metas, full):
    con = sqlite3.connect(os.path.join(tmp, "s.sqlite"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    if full:
        con.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, text TEXT, meta TEXT, vec BLOB)")
    else:
        con.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, vec BLOB)")
    t0 = time.perf_counter()
    con.execute("BEGIN")
    if full:
        con.executemany("INSERT INTO c VALUES (?, ?, ?, ?)",
                        ((i, texts[i], json.dumps(metas[i]), X[i].tobytes()) for i in range(len(X))))
    else:
        con.executemany("INSERT INTO c VALUES (?, ?)", ((i, X[i].tobytes()) for i in range(len(X))))
    con.execute("COMMIT")
    load = time.perf_counter() - t0
    con.close()
    return {"load_s": load}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    common.limit_threads(1)
    Xall = np.load(Path(a.data) / "base.f16.npy")
    tall = (Path(a.data) / "base_texts.txt").read_text(encoding="utf-8").splitlines()
    systems = ["sutradb-full", "sqlite-full", "sutradb-vectors", "sqlite-vectors"]
    out = {"benchmark": "bulk load", "machine": common.machine_info(), "sizes": []}
    for n in [int(s) for s in a.sizes.split(",")]:
        X = np.ascontiguousarray(Xall[:n])
        texts = tall[:n]
        metas = [metadata_of(i, t) for i, t in enumerate(texts)]
        runs = {s: [] for s in systems}
        for rep in range(a.repeats):
            for s in common.rotated(systems, rep):
                tmp = tempfile.mkdtemp(prefix="sutradb-load-")
                try:
                    fn = run_sutradb if s.startswith("sutradb") else run_sqlite
                    runs[s].append(fn(tmp, X, texts, metas, s.endswith("full")))
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        row = {"n": n, "systems": {}}
        for s, rs in runs.items():
            load = statistics.median(r["load_s"] for r in rs)
            d = {"rows_per_s": n / load, "load_s_repeats": [r["load_s"] for r in rs]}
            if s.startswith("sutradb"):
                d["first_search_s"] = statistics.median(r["first_search_s"] for r in rs)
                d["close_s"] = statistics.median(r["close_s"] for r in rs)
            row["systems"][s] = d
        for kind in ("full", "vectors"):
            row[f"ratio_{kind}"] = row["systems"][f"sutradb-{kind}"]["rows_per_s"] / \
                row["systems"][f"sqlite-{kind}"]["rows_per_s"]
        out["sizes"].append(row)
        sy = row["systems"]
        print(f"n={n:,}: with texts+metadata sutradb {sy['sutradb-full']['rows_per_s']:,.0f} rows/s vs "
              f"sqlite {sy['sqlite-full']['rows_per_s']:,.0f} ({row['ratio_full']:.2f}x); vectors only "
              f"{sy['sutradb-vectors']['rows_per_s']:,.0f} vs {sy['sqlite-vectors']['rows_per_s']:,.0f} "
              f"({row['ratio_vectors']:.2f}x); first search after the load (index upkeep) "
              f"{sy['sutradb-full']['first_search_s']:.2f} s, close {sy['sutradb-full']['close_s']:.3f} s",
              flush=True)
    if a.json:
        print(f"results: {common.write_json(a.json, out)}")
    return out


if __name__ == "__main__":
    main()
