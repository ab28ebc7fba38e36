#!/usr/bin/env python
"""Before/after: run one benchmark script from several source trees, interleaved.

Each tree is a checkout of sutradb with its kernels built (a ``git worktree`` of an
older commit, say). Every repeat runs the script once per tree, the order rotating
from repeat to repeat (A B C, B C A, C A B, ...), each run in its own process with
``PYTHONPATH`` set to its tree, so the trees share the machine's state (page cache,
thermal, neighbours) as evenly as a 2-core VM allows. Each run writes its own JSON;
the summary gives, for every metric asked for (a dotted path into that JSON), the
median per tree over the repeats and the ratio of each tree to the first.

    python bench/ab.py --tree before=/work/wt-old --tree after=. --repeats 3 \\
        --metric commit.ratio_sutradb_over_sqlite --out bench/results/ab-commit \\
        -- bench/bench_storage.py --only commit

The script must accept ``--json PATH``. Ratios of ratios (a tree's sutradb / SQLite
against another tree's) are the figure to quote: they cancel most of the drift of the
machine between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def lookup(doc, path: str):
    """The value at dotted ``path`` in ``doc`` (list indexes allowed), or None."""
    cur = doc
    for part in path.split("."):
        if isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(cur, dict):
            if part not in cur:
                return None
            cur = cur[part]
        else:
            return None
    return cur if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: ab.py [options] -- SCRIPT [ARGS...]")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=DIR",
                    help="a source tree (repeatable; the first is the reference)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metric", action="append", default=[], metavar="DOTTED.PATH")
    ap.add_argument("--out", required=True, help="directory for the per-run JSON and summary.json")
    ap.add_argument("--taskset", default=None, help="CPU list for taskset (e.g. 1)")
    args = ap.parse_args(argv[:cut])
    script, script_args = argv[cut + 1], argv[cut + 2:]
    trees = []
    for t in args.tree:
        name, _, d = t.partition("=")
        if not d:
            raise SystemExit(f"--tree {t!r}: expected NAME=DIR")
        trees.append((name, Path(d).resolve()))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = {name: [] for name, _ in trees}
    for rep in range(args.repeats):
        order = trees[rep % len(trees):] + trees[:rep % len(trees)]
        for name, tree in order:
            js = out / f"{name}-{rep}.json"
            cmd = [sys.executable, str(tree / script), *script_args, "--json", str(js)]
            if args.taskset:
                cmd = ["taskset", "-c", args.taskset, *cmd]
            env = dict(os.environ, PYTHONPATH=str(tree))
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
                raise SystemExit(f"{name} repeat {rep}: exit {r.returncode}")
            runs[name].append(json.loads(js.read_text()))
            print(f"repeat {rep} {name}: {dt:.1f} s", flush=True)
    ref = trees[0][0]
    summary = {"script": script, "args": script_args, "repeats": args.repeats,
               "trees": {n: str(d) for n, d in trees}, "metrics": {}}
    for m in args.metric:
        row = {}
        for name, _ in trees:
            vals = [v for v in (lookup(doc, m) for doc in runs[name]) if v is not None]
            row[name] = {"values": vals, "median": statistics.median(vals) if vals else None}
        r0 = row[ref]["median"]
        for name, _ in trees:
            med = row[name]["median"]
            row[name]["ratio_to_" + ref] = (med / r0) if (med is not None and r0) else None
        summary["metrics"][m] = row
        cells = "  ".join(f"{n} {row[n]['median']:.4g} ({row[n]['ratio_to_' + ref]:.3f}x)"
                          if row[n]["median"] is not None else f"{n} -" for n, _ in trees)
        print(f"{m}: {cells}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
