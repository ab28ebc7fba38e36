#!/usr/bin/env python
"""Ranked full-text search: sutradb's own postings against tantivy and bm25s, same
texts, same queries, same run.

The choice of engine for ``search_text`` (issue 18) by measurement. For each real text
set (the PyPI summaries of pypi-minilm-100k, the long docstrings set when built, the
bundled 2,000-row sample) and each repeat, in a rotated order, every engine:

* **build**: indexes the texts and makes them durable (sutradb: ``add_vectors`` of the
  texts with 4-d vectors in a new database, ``close``; tantivy 0.27: one writer thread,
  ``commit``, merges waited for; bm25s: index the same tokens, ``save``);
* **open**: a fresh handle in the same process and its first query (cold handle; the
  page cache is warm: the files were just written);
* **query**: every query text of the set, k = 10, warm; latencies p50/p95/QPS. sutradb
  returns ``Hit`` s with their concepts; tantivy fetches the stored id of each of its
  top 10; bm25s returns row numbers;
* **update**: one new text made durable and visible to the next query, median of 20
  (sutradb: ``add_vectors`` of one row, an fsynced commit, then ``search_text``;
  tantivy: ``add_document``, ``commit``, ``reload``, search; bm25s has no update: it
  re-indexes everything, timed once).

Every engine ranks by BM25 with k1 = 1.2, b = 0.75; sutradb and bm25s (``method=
"lucene"``) index the same tokens, tantivy its own default tokenizer (lower-cased
alphanumeric runs). ``agreement``: mean overlap of each engine's top 10 with sutradb's.
Ratios are engine time over sutradb time (> 1: sutradb faster), per repeat, medians.

    .venv/bin/python bench/bench_text.py --json bench/results/text.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import sutradb  # noqa: E402
from sutradb.demo import SAMPLE  # noqa: E402
from sutradb.text import Tokenizer  # noqa: E402

K = 10
SETS = {
    "pypi-100k": common.SHARED_DATA / "pypi-minilm-100k",
    "docstrings-11k": Path("/work/data/docstrings-minilm"),
    "sample-2k": SAMPLE,
}


def load_texts(path: Path, max_base: int | None):
    base = (path / "base_texts.txt").read_text(encoding="utf-8").splitlines()
    queries = (path / "query_texts.txt").read_text(encoding="utf-8").splitlines()
    if max_base:
        base = base[:max_base]
    return base, [q for q in queries if q.strip()][:300]


# --------------------------------------------------------------------------- engines

class Sutra:
    name = "sutradb"

    def build(self, d, texts):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((len(texts), 4)).astype(np.float32)
        db = sutradb.open(os.path.join(d, "db"), "w", dim=4, index="flat")
        db.add_vectors(X, texts=texts)
        db.close()

    def open(self, d):
        self.db = sutradb.open(os.path.join(d, "db"), "r")

    def query(self, q):
        return [h.id for h in self.db.search_text(q, K)]

    def open_writer(self, d):
        self.db.close()
        self.db = sutradb.open(os.path.join(d, "db"))

    def update(self, text):
        self.db.add_vectors(np.ones((1, 4), np.float32), texts=[text])

    def close(self):
        self.db.close()


class Tantivy:
    name = "tantivy"

    def _schema(self):
        import tantivy
        sb = tantivy.SchemaBuilder()
        sb.add_unsigned_field("id", stored=True, indexed=True)
        sb.add_text_field("text", stored=False)
        return sb.build()

    def build(self, d, texts):
        import tantivy
        p = os.path.join(d, "tv")
        os.mkdir(p)
        ix = tantivy.Index(self._schema(), path=p)
        w = ix.writer(heap_size=128 << 20, num_threads=1)
        for i, t in enumerate(texts):
            doc = tantivy.Document()
            doc.add_unsigned("id", i)
            doc.add_text("text", t)
            w.add_document(doc)
        w.commit()
        w.wait_merging_threads()

    def open(self, d):
        import tantivy
        self.ix = tantivy.Index.open(os.path.join(d, "tv"))
        self.n = self.ix.searcher().num_docs
        self.tok = Tokenizer()

    def query(self, q):
        terms = self.tok.terms(q)
        if not terms:
            return []
        s = self.ix.searcher()
        parsed = self.ix.parse_query(" ".join(terms), ["text"])
        hits = s.search(parsed, K).hits
        return [s.doc(a)["id"][0] for _, a in hits]

    def open_writer(self, d):
        self.w = self.ix.writer(heap_size=32 << 20, num_threads=1)

    def update(self, text):
        import tantivy
        doc = tantivy.Document()
        doc.add_unsigned("id", self.n)
        doc.add_text("text", text)
        self.w.add_document(doc)
        self.n += 1
        self.w.commit()
        self.ix.reload()

    def close(self):
        if hasattr(self, "w"):
            self.w.wait_merging_threads()
            del self.w
        del self.ix


class BM25S:
    name = "bm25s"

    def build(self, d, texts):
        import bm25s
        tok = Tokenizer()
        r = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        r.index([tok.terms(t) for t in texts], show_progress=False)
        r.save(os.path.join(d, "bm"))
        self.texts = texts

    def open(self, d):
        import bm25s
        self.r = bm25s.BM25.load(os.path.join(d, "bm"), mmap=True)
        self.tok = Tokenizer()

    def query(self, q):
        terms = [t for t in self.tok.terms(q) if t in self.r.vocab_dict]
        if not terms:
            return []
        s = self.r.get_scores(terms)
        top = np.argpartition(-s, K)[:K] if len(s) > K else np.arange(len(s))
        top = top[np.lexsort((top, -s[top]))]
        return [int(i) for i in top if s[i] > 0]

    def open_writer(self, d):
        pass

    def update(self, text):         # no incremental update: index everything again
        import bm25s
        self.texts = self.texts + [text]
        r = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        r.index([self.tok.terms(t) for t in self.texts], show_progress=False)
        self.r = r

    def close(self):
        del self.r


ENGINES = {"sutradb": Sutra, "tantivy": Tantivy, "bm25s": BM25S}


def dir_bytes(p):
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def run_engine(cls, texts, queries, n_updates):
    eng = cls()
    d = tempfile.mkdtemp(prefix="sutra-text-")
    try:
        t0 = time.perf_counter()
        eng.build(d, texts)
        build = time.perf_counter() - t0
        disk = dir_bytes(d)
        t0 = time.perf_counter()
        eng.open(d)
        first = eng.query(queries[0])
        open_first = time.perf_counter() - t0
        lat, results = [], []
        for q in queries:
            t0 = time.perf_counter()
            r = eng.query(q)
            lat.append(time.perf_counter() - t0)
            results.append(r)
        upd = []
        eng.open_writer(d)
        for j in range(n_updates if cls is not BM25S else 1):
            t0 = time.perf_counter()
            eng.update(f"zzfresh{j} {texts[j]}")
            got = eng.query(f"zzfresh{j}")
            upd.append(time.perf_counter() - t0)
            assert got, (cls.name, "an update must be visible to the next query")
        eng.close()
        del first
        return {"build_s": build, "docs_per_s": len(texts) / build, "disk_bytes": disk,
                "open_first_query_s": open_first, "update_s": statistics.median(upd),
                **common.latency_stats(lat)}, results
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--max-base", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {"benchmark": "text", "machine": common.machine_info(), "sets": []}
    for name in a.sets.split(","):
        path = SETS[name]
        if not (path / "base_texts.txt").exists():
            print(f"{name}: {path} not found, skipped")
            continue
        texts, queries = load_texts(path, a.max_base)
        per = {e: [] for e in ENGINES}
        results = {}
        names = list(ENGINES)
        for rep in range(a.repeats):
            for e in names[rep % len(names):] + names[:rep % len(names)]:
                m, res = run_engine(ENGINES[e], texts, queries, a.updates)
                per[e].append(m)
                results[e] = res
                print(f"{name} rep {rep} {e}: build {m['build_s']:.2f}s open+q {m['open_first_query_s'] * 1e3:.1f}ms "
                      f"p50 {m['p50_ms']:.3f}ms qps {m['qps']:.0f} update {m['update_s'] * 1e3:.2f}ms "
                      f"disk {m['disk_bytes'] / 1e6:.1f}MB", flush=True)
        keys = ["build_s", "docs_per_s", "disk_bytes", "open_first_query_s", "update_s", "p50_ms",
                "p95_ms", "qps"]
        summary = {e: common.median_of_dicts(per[e], keys) for e in ENGINES}
        ratios = {}
        for e in ENGINES:
            if e == "sutradb":
                continue
            ratios[e] = {k: statistics.median(o[k] / s[k] for o, s in zip(per[e], per["sutradb"]))
                         for k in ("build_s", "open_first_query_s", "update_s", "p50_ms")}
        agree = {}
        for e in ENGINES:
            ov = [len(set(x) & set(y)) / max(len(y), 1) for x, y in zip(results[e], results["sutradb"]) if y]
            agree[e] = float(np.mean(ov)) if ov else None
        out["sets"].append({"set": name, "n": len(texts), "queries": len(queries),
                            "summary": summary, "ratio_over_sutradb": ratios,
                            "agreement_top10": agree, "repeats": per})
        print(f"{name}: ratios (engine / sutradb) {ratios}; agreement {agree}")
    if a.json:
        common.write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
