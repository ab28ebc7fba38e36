#!/usr/bin/env python
"""Arrow in and out: ``to_arrow`` / ``add_arrow`` / ``to_pandas`` and export / import
against ``add_vectors`` and ``find`` on the same data, in the same run (issue 20).

Data: the first N rows (default 100,000) of a data set directory (``base.f16.npy``,
``base_texts.txt``; default the PyPI MiniLM set, 384-d), each with its text and two
metadata fields (``{"row": i, "src": "a" | "b"}``). Every database is a file database
with ``index="flat"`` (no PQ training: the data path only), default durability.

Timed, each once per repeat with the operations interleaved, reported by medians:

* ``add_vectors``: float32 vectors, texts, metadata list (a fresh database);
* ``add_arrow`` f16 / f32: a table with a ``fixed_size_list<halffloat|float>`` vector
  column, the text column and the two metadata columns (a fresh database);
* ``to_arrow``: every column (vectors as views of the mapped file), of the database
  reopened read-only; ``to_arrow(["id", "vector"])`` (no record decoding);
  ``to_pandas``; ``find()`` (every concept as a Concept, the Python-object read);
* ``export`` / ``from_export`` as Parquet and as JSONL.

Rows per second and ratios against ``add_vectors`` (writes) and ``find`` (reads) are
computed within the run.

    taskset -c 0 .venv/bin/python bench/bench_arrow.py              # 100k rows, 5 repeats
    taskset -c 0 .venv/bin/python bench/bench_arrow.py --quick      # 20k rows, 2 repeats
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

DEFAULT_DATA = "/work/shared/data/pypi-minilm-100k"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help=f"data set directory (default {DEFAULT_DATA}, "
                   "else the bundled 2,000-row sample)")
    p.add_argument("--rows", type=int, default=None, help="rows (default 100,000; --quick 20,000)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 5; --quick 2)")
    p.add_argument("--no-jsonl", action="store_true", help="skip the JSONL export / import")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None,
                   help="output JSON (default bench/results/arrow-<time>.json)")
    a = p.parse_args(argv)
    a.rows = a.rows or (20_000 if a.quick else 100_000)
    a.repeats = a.repeats or (2 if a.quick else 5)
    return a


def load(a):
    from sutradb.demo import load_sample
    path = Path(a.data or DEFAULT_DATA)
    if (path / "base.f16.npy").exists():
        base = np.load(path / "base.f16.npy", mmap_mode="r")
        texts = (path / "base_texts.txt").read_text(encoding="utf-8").splitlines()
        name = path.name
    else:
        base, texts, *_ = load_sample()
        name = "bundled sample"
    n = min(a.rows, len(base))
    V16 = np.ascontiguousarray(base[:n], dtype=np.float16)
    return name, V16, texts[:n]


def main(argv=None):
    a = parse_args(argv)
    import pyarrow as pa

    import sutradb
    name, V16, texts = load(a)
    n, d = V16.shape
    V32 = V16.astype(np.float32)
    mds = [{"row": i, "src": "a" if i % 3 else "b"} for i in range(n)]
    t16 = pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(V16.reshape(-1)), d),
                    "text": texts, "row": np.arange(n), "src": [m["src"] for m in mds]})
    t32 = t16.set_column(0, "vector", pa.FixedSizeListArray.from_arrays(
        pa.array(V32.reshape(-1)), d))
    work = Path(tempfile.mkdtemp(prefix="sutradb-bench-arrow-"))
    print(f"{name}: {n:,} rows x {d} dims, {a.repeats} repeats, in {work}")
    src = work / "src"
    with sutradb.open(src, dim=d, index="flat") as db:
        db.add_vectors(V32, texts=texts, metadata=mds)
    reader = sutradb.open(src, "r")

    def fresh(tag):
        p = work / tag
        shutil.rmtree(p, ignore_errors=True)
        return p

    def w_add_vectors():
        with sutradb.open(fresh("w"), dim=d, index="flat") as db:
            db.add_vectors(V32, texts=texts, metadata=mds)

    def w_add_arrow(t):
        def run():
            with sutradb.open(fresh("w"), dim=d, index="flat") as db:
                db.add_arrow(t)
        return run

    def export(fmt):
        def run():
            p = fresh(f"exp-{fmt}")
            reader.export(p, format=fmt)
        return run

    def import_(fmt):
        def run():
            db = sutradb.from_export(work / f"exp-{fmt}", fresh(f"imp-{fmt}"))
            db.close()
        return run

    ops = {
        "add_vectors": w_add_vectors,
        "add_arrow_f16": w_add_arrow(t16),
        "add_arrow_f32": w_add_arrow(t32),
        "to_arrow": lambda: reader.to_arrow(),
        "to_arrow_id_vector": lambda: reader.to_arrow(["id", "vector"]),
        "to_pandas": lambda: reader.to_pandas(),
        "find": lambda: reader.find(),
        "export_parquet": export("parquet"),
        "import_parquet": import_("parquet"),
    }
    if not a.no_jsonl:
        ops["export_jsonl"] = export("jsonl")
        ops["import_jsonl"] = import_("jsonl")
    samples = {k: [] for k in ops}
    for r in range(a.repeats):
        rot = common.rotated(list(ops), r)
        # an import reads the export of this repeat: imports go last
        order = sorted(rot, key=lambda k: (k.startswith("import"), rot.index(k)))
        for k in order:
            dt, _ = common.time_call(ops[k])
            samples[k].append(dt)
            print(f"  repeat {r + 1}/{a.repeats} {k:<20} {dt:7.3f} s  {n / dt:>12,.0f} rows/s",
                  flush=True)
    reader.close()
    res = {k: common.summarize(v) for k, v in samples.items()}
    med = {k: v["median"] for k, v in res.items()}
    # the zero-copy claim, checked on the reopened database
    with sutradb.open(src, "r") as db:
        from sutradb.database.arrow import vector_array
        chunks = db.to_arrow(["vector"]).column(0).chunks      # one per 65,536 rows
        view = all(np.shares_memory(vector_array(c), db._store.vectors) for c in chunks)
    rows = []
    print(f"\nmedians over {a.repeats} repeats, {n:,} rows x {d}:")
    for k in ops:
        base = med["add_vectors"] if k.startswith(("add", "import")) else med["find"]
        ref = "add_vectors" if k.startswith(("add", "import")) else "find"
        row = {"op": k, "seconds": med[k], "rows_per_s": n / med[k],
               "ratio": base / med[k], "vs": ref}
        rows.append(row)
        print(f"  {k:<20} {med[k]:7.3f} s {n / med[k]:>12,.0f} rows/s   "
              f"{base / med[k]:5.2f}x {ref}")
    print(f"  to_arrow vector column is a view of the mapped file: {view}")
    out = {"bench": "arrow", "data": name, "rows": n, "dim": d, "repeats": a.repeats,
           "command": " ".join(sys.argv), "machine": common.machine_info(["pyarrow", "pandas"]),
           "results": res, "rows_table": rows, "vector_view": bool(view),
           "time": common.timestamp()}
    path = common.write_json(a.json or common.default_json_path("arrow"), out)
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
