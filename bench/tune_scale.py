#!/usr/bin/env python
"""``Database.tune`` on real queries, checked on held-out ones.

Tunes nprobe/rerank for ``--target`` recall@10 on the first ``--tune`` queries of a
data set (exact ground truth computed by ``tune`` itself over the stored vectors),
then measures the chosen setting on the remaining queries against the data set's
exact ground truth (recall@10, single-query QPS over 300 of them)::

    .venv/bin/python bench/tune_scale.py --data /work/scale/minilm-10m --path /work/scale/db-10m \\
        --tune 500 --target 0.9 --json bench/results/scale-10m-tune.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="directory with queries.f16.npy, gt.i32.npy")
    ap.add_argument("--path", required=True, help="a built database of the data set's base")
    ap.add_argument("--tune", type=int, default=500, help="queries used for tuning")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import sutradb
    d = Path(args.data)
    Q = np.load(d / "queries.f16.npy").astype(np.float32)
    gt = np.load(d / "gt.i32.npy")
    nt = args.tune
    with sutradb.open(args.path, "r") as db:
        t = time.perf_counter()
        r = db.tune(Q[:nt], target_recall=args.target)
        tune_s = time.perf_counter() - t
        chosen = {k: v for k, v in r.items() if k != "grid"}
        print(f"tune: {tune_s:.1f} s, {len(r['grid'])} settings tried, chosen {chosen}")
        _, I = db.search_vectors(Q[nt:], k=10, nprobe=r["nprobe"], rerank=r["rerank"])
        rec = common.recall_at_k(I, gt[nt:], 10)
        n1 = min(300, len(Q) - nt)
        lat, _ = common.time_each(lambda i: db.search_vectors(Q[nt + i], k=10, nprobe=r["nprobe"],
                                                              rerank=r["rerank"]), n1)
        qps = n1 / float(np.sum(lat))
    print(f"held out ({len(Q) - nt} queries): recall@10 {rec:.4f}, {qps:.0f} q/s one query per call")
    res = {"machine": common.machine_info(), "args": vars(args), "tune_s": tune_s, "chosen": chosen,
           "grid": r["grid"], "heldout_recall": rec, "heldout_qps": qps}
    path = args.json or common.default_json_path(f"tune-{d.name}")
    common.write_json(path, res)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
