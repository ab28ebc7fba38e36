"""The demo: a product-quantized index over the bundled real sample, queried.

Run with ``python -m sutradb.demo``. It loads 2,000 real sentence embeddings of
PyPI package summaries (shipped in ``sutradb/data/pypi-sample``), trains a
product quantizer (48 subspaces x 8 bits: 48 bytes per 384-d vector, 32x smaller
than float32), encodes the vectors, and answers the sample's query texts by ADC
search, then by ADC + exact re-ranking, printing the hits and recall@10 against
the exact ground truth.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .index.pq import ProductQuantizer

SAMPLE = Path(__file__).resolve().parent / "data" / "pypi-sample"


def load_sample(path: Path = SAMPLE):
    """The bundled sample: (base float16, base texts, queries float16, query texts,
    exact top-100 ground truth)."""
    base = np.load(path / "base.f16.npy")
    queries = np.load(path / "queries.f16.npy")
    gt = np.load(path / "gt.i32.npy")
    texts = (path / "base_texts.txt").read_text(encoding="utf-8").splitlines()
    qtexts = (path / "query_texts.txt").read_text(encoding="utf-8").splitlines()
    return base, texts, queries, qtexts, gt


def recall_at(I: np.ndarray, gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(I[i, :k].tolist()) & set(gt[i, :k].tolist())) / k
                          for i in range(len(I))]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sutradb.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, default=48, help="PQ subspaces (default 48)")
    ap.add_argument("--nbits", type=int, default=8, choices=(4, 8))
    ap.add_argument("--show", type=int, default=3, help="queries to print (default 3)")
    ap.add_argument("--rerank", type=int, default=50,
                    help="ADC candidates re-ranked exactly (default 50)")
    args = ap.parse_args(argv)

    base, texts, queries, qtexts, gt = load_sample()
    n, dim = base.shape
    print(f"sample: {n} real MiniLM embeddings of PyPI summaries ({dim}-d), "
          f"{len(queries)} queries")

    t0 = time.perf_counter()
    pq = ProductQuantizer(dim, args.m, nbits=args.nbits, metric="cosine", seed=0)
    pq.fit(base, iters=25)
    t1 = time.perf_counter()
    codes = pq.encode(base)
    t2 = time.perf_counter()
    print(f"trained PQ m={args.m} nbits={args.nbits} in {t1 - t0:.2f} s, encoded in "
          f"{(t2 - t1) * 1e3:.1f} ms: {codes.shape[1]} bytes/vector "
          f"({base.shape[1] * 4 / codes.shape[1]:.0f}x smaller than float32)")

    t3 = time.perf_counter()
    D, I = pq.search(queries, codes, k=max(10, args.rerank))
    t4 = time.perf_counter()
    D2, I2 = pq.rerank(queries, base, I, k=10)
    t5 = time.perf_counter()
    for qi in range(min(args.show, len(queries))):
        print(f"\nquery: {qtexts[qi]!r}")
        for rank in range(5):
            row = int(I2[qi, rank])
            print(f"  {rank + 1}. [{D2[qi, rank]:.3f}] {texts[row]}")
    print(f"\nrecall@10, ADC only:         {recall_at(I, gt, 10):.3f}   "
          f"({(t4 - t3) / len(queries) * 1e3:.3f} ms/query)")
    print(f"recall@10, ADC + re-ranking: {recall_at(I2, gt, 10):.3f}   "
          f"(+{(t5 - t4) / len(queries) * 1e3:.3f} ms/query for {args.rerank} candidates)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
