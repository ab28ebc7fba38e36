"""Storage benchmark: commit latency vs SQLite, bulk load, open time, bytes per concept.

Measures, in one run and on the same disk:

1. **Commit latency** of a one-concept transaction (384-d float16 vector, 48-byte PQ
   code, a short text and metadata) with ``durability="full"``, against ``sqlite3`` in
   WAL mode with ``synchronous=FULL`` inserting the same row in its own transaction.
   Rounds alternate between the two; the figure is the median per-commit latency over
   all rounds, and the ratio sutradb / SQLite (goal: <= 1.0).
2. **Bulk load** with ``durability="off"``: rows/s (= vectors/s) for one transaction
   of N concepts put in batches (SQLite ``executemany`` in one transaction alongside).
3. **Open time** of stores of growing size up to 1M concepts (median of repeats; goal:
   <= 50 ms and flat in N), reader and writer.
4. **Bytes on disk per concept** beyond codes and payload (vector bytes + msgpack of
   the record), for the bulk-loaded store (goal: <= 32).

Usage::

    python bench/bench_storage.py [--quick] [--only commit] [--json PATH] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Progress, default_json_path, machine_info, summarize, write_json  # noqa: E402
from sutradb.storage import Store  # noqa: E402

DIM, M = 384, 48


def fmt_num(x: float) -> str:
    """1234567 -> '1.23M', 45000 -> '45k'."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def concept(i: int, rng):
    vec = rng.standard_normal((1, DIM)).astype(np.float16)
    code = rng.integers(0, 256, (1, M), dtype=np.uint8)
    return vec, code, f"concept number {i}", {"src": "bench", "i": i}


# --------------------------------------------------------------------------- commit latency

def sutra_commits(path, n, rng, start):
    s = Store.open(path, durability="full")
    lat = np.empty(n)
    try:
        for k in range(n):
            i = start + k
            vec, code, text, meta = concept(i, rng)
            t0 = time.perf_counter()
            with s.begin() as t:
                t.put([i], texts=[text], metadata=[meta], codes=code, vectors=vec)
            lat[k] = time.perf_counter() - t0
    finally:
        s.close()
    return lat


def sqlite_commits(path, n, rng, start):
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE IF NOT EXISTS c (id INTEGER PRIMARY KEY, text TEXT, meta BLOB,"
                    " code BLOB, vec BLOB)")
        lat = np.empty(n)
        for k in range(n):
            i = start + k
            vec, code, text, meta = concept(i, rng)
            t0 = time.perf_counter()
            con.execute("BEGIN")
            con.execute("INSERT INTO c VALUES (?, ?, ?, ?, ?)",
                        (i, text, msgpack.packb(meta), code.tobytes(), vec.tobytes()))
            con.execute("COMMIT")
            lat[k] = time.perf_counter() - t0
    finally:
        con.close()
    return lat


def bench_commit(work, rounds, per_round, prog):
    rng = np.random.default_rng(0)
    sut, sq = [], []
    sp, qp = work / "commit.sutra", str(work / "commit.sqlite")
    with prog.op("commit latency", total=2 * rounds * per_round, unit="commits") as adv:
        for r in range(rounds):
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for which in order:
                if which == 0:
                    sut.append(sutra_commits(sp, per_round, rng, r * per_round))
                else:
                    sq.append(sqlite_commits(qp, per_round, rng, r * per_round))
                adv(per_round)
    s_all, q_all = np.concatenate(sut), np.concatenate(sq)
    res = {
        "rounds": rounds, "commits_per_round": per_round,
        "sutradb_full_ms": {"median": float(np.median(s_all) * 1e3),
                            "p95": float(np.percentile(s_all, 95) * 1e3),
                            "round_medians": [float(np.median(x) * 1e3) for x in sut]},
        "sqlite_wal_full_ms": {"median": float(np.median(q_all) * 1e3),
                               "p95": float(np.percentile(q_all, 95) * 1e3),
                               "round_medians": [float(np.median(x) * 1e3) for x in sq]},
    }
    res["ratio_sutradb_over_sqlite"] = res["sutradb_full_ms"]["median"] / res["sqlite_wal_full_ms"]["median"]
    return res


# --------------------------------------------------------------------------- bulk load

def bulk_rows(n, batch, seed=1):
    rng = np.random.default_rng(seed)
    for c0 in range(0, n, batch):
        k = min(batch, n - c0)
        ids = np.arange(c0, c0 + k, dtype=np.int64)
        yield (ids, rng.standard_normal((k, DIM)).astype(np.float16),
               rng.integers(0, 256, (k, M), dtype=np.uint8),
               [f"concept number {i}" for i in range(c0, c0 + k)],
               [{"i": i} for i in range(c0, c0 + k)])


def bench_bulk(work, n, batch, prog, with_vectors=True, name="bulk.sutra"):
    """One transaction of ``n`` rows; timed: the put calls, the commit and close
    (generating the random data and accounting the payload are not)."""
    path = work / name
    shutil.rmtree(path, ignore_errors=True)
    payload = 0
    timed = 0.0
    with prog.op(f"bulk load {fmt_num(n)} (durability=off)", total=n, unit="rows") as adv:
        t0 = time.perf_counter()
        s = Store.open(path, durability="off")
        txn = s.begin()
        timed += time.perf_counter() - t0
        for ids, vec, code, texts, metas in bulk_rows(n, batch):
            t0 = time.perf_counter()
            txn.put(ids, texts=texts, metadata=metas, codes=code,
                    vectors=vec if with_vectors else None)
            timed += time.perf_counter() - t0
            payload += (vec.nbytes if with_vectors else 0) + sum(
                len(msgpack.packb([None, x, m])) for x, m in zip(texts, metas))
            adv(len(ids))
        t0 = time.perf_counter()
        txn.commit()
        s.close()
        timed += time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in path.iterdir())
    codes = n * M
    return path, {
        "n": n, "batch": batch, "vectors": with_vectors,
        "seconds": timed, "rows_per_s": n / timed,
        "bytes_on_disk": disk, "codes_bytes": codes, "payload_bytes": payload,
        "overhead_bytes_per_concept": (disk - codes - payload) / n,
    }


def sqlite_bulk(work, n, batch, prog):
    p = work / "bulk.sqlite"
    for suf in ("", "-wal", "-shm"):
        Path(str(p) + suf).unlink(missing_ok=True)
    con = sqlite3.connect(p, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, text TEXT, meta BLOB, code BLOB, vec BLOB)")
    with prog.op(f"sqlite bulk {fmt_num(n)} (synchronous=OFF)", total=n, unit="rows") as adv:
        t0 = time.perf_counter()
        con.execute("BEGIN")
        for ids, vec, code, texts, metas in bulk_rows(n, batch):
            rows = [(int(i), x, msgpack.packb(m), c.tobytes(), v.tobytes())
                    for i, x, m, c, v in zip(ids, texts, metas, code, vec)]
            con.executemany("INSERT INTO c VALUES (?, ?, ?, ?, ?)", rows)
            adv(len(ids))
        con.execute("COMMIT")
        con.close()
        dt = time.perf_counter() - t0
    size = sum(Path(str(p) + suf).stat().st_size for suf in ("", "-wal") if Path(str(p) + suf).exists())
    return {"n": n, "seconds": dt, "rows_per_s": n / dt, "bytes_on_disk": size}


# --------------------------------------------------------------------------- open time

def open_times(path, repeats):
    out = {}
    for mode in ("r", "a"):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            s = Store.open(path, mode)
            n = s.n_live
            _ = s.codes      # the kernels' view: must not cost O(N)
            ts.append(time.perf_counter() - t0)
            s.close()
        out[mode] = summarize([t * 1e3 for t in ts]) | {"n_live": n}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--json", help="write results here (default bench/results/storage-*.json)")
    ap.add_argument("--dir", help="work directory (default: a temp dir on the same disk as /tmp)")
    ap.add_argument("--bulk-n", type=int, help="rows for the bulk load (default 1M, quick 100k)")
    ap.add_argument("--open-n", type=int, nargs="*", help="store sizes for open time "
                    "(default 10k 100k 1M; codes + records, no vectors)")
    ap.add_argument("--rounds", type=int, help="commit-latency rounds (default 6, quick 3)")
    ap.add_argument("--per-round", type=int, help="commits per round (default 200, quick 50)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", choices=["commit"], help="run only the commit-latency part")
    args = ap.parse_args(argv)
    bulk_n = args.bulk_n or (100_000 if args.quick else 1_000_000)
    open_ns = args.open_n or [10_000, 100_000, 1_000_000]
    rounds = args.rounds or (3 if args.quick else 6)
    per_round = args.per_round or (50 if args.quick else 200)
    work = Path(tempfile.mkdtemp(prefix="sutra-bench-", dir=args.dir))
    results = {"benchmark": "storage", "machine": machine_info(["msgpack"]),
               "sqlite_version": sqlite3.sqlite_version, "work_dir": str(work),
               "params": {"dim": DIM, "code_bytes": M, "quick": args.quick}}
    try:
        with Progress(total_steps=1 if args.only else 4 + len(open_ns), title="storage") as prog:
            c = results["commit"] = bench_commit(work, rounds, per_round, prog)
            prog.log(f"commit (one concept, durability full): sutradb {c['sutradb_full_ms']['median']:.3f} ms,"
                     f" sqlite WAL FULL {c['sqlite_wal_full_ms']['median']:.3f} ms,"
                     f" ratio {c['ratio_sutradb_over_sqlite']:.2f}")
            prog.step()
            if args.only == "commit":
                return _finish(args, results)
            path, b = bench_bulk(work, bulk_n, 10_000, prog)
            results["bulk"] = b
            prog.log(f"bulk load: {fmt_num(b['rows_per_s'])} vectors/s ({b['seconds']:.2f} s for "
                     f"{fmt_num(bulk_n)}), overhead {b['overhead_bytes_per_concept']:.1f} B/concept")
            prog.step()
            results["bulk_open_ms"] = open_times(path, 5)
            shutil.rmtree(path, ignore_errors=True)
            prog.step()
            q = results["sqlite_bulk"] = sqlite_bulk(work, bulk_n, 10_000, prog)
            prog.log(f"sqlite bulk: {fmt_num(q['rows_per_s'])} rows/s")
            prog.step()
            results["open_ms"] = {}
            for n in open_ns:
                p, info = bench_bulk(work, n, 50_000, prog, with_vectors=False, name=f"open{n}.sutra")
                ot = results["open_ms"][str(n)] = open_times(p, 7) | {"build": info}
                prog.log(f"open {fmt_num(n)} concepts: reader {ot['r']['median']:.2f} ms, "
                         f"writer {ot['a']['median']:.2f} ms")
                shutil.rmtree(p, ignore_errors=True)
                prog.step()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return _finish(args, results)


def _finish(args, results):
    out = write_json(args.json or default_json_path("storage" + (f"-{args.only}" if args.only else "")),
                     results)
    print(f"results: {out}")
    return results


if __name__ == "__main__":
    main()
