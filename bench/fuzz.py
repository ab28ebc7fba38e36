#!/usr/bin/env python
"""The damage-fuzzing campaign: many cases of ``tests/fuzz_target.py`` in child processes.

Two drivers, side by side, each in chunks of child processes (``--jobs`` at a time) so
that a crash (segfault) or a hang (``faulthandler`` ends the child after 60 s) of one
chunk is reported with its seed and does not end the campaign:

* ``random``: the seeded mutator (bit flips, byte writes, truncation, zeroed 4 KiB
  pages, splices of two valid files, earlier versions of a file, deleted files,
  several files at once), a new seed per chunk;
* ``atheris``: libFuzzer through atheris, coverage-guided over every file kind, one
  corpus directory that grows across chunks (if atheris is installed).

The only allowed outcomes are the same content or a ``SutraError``; anything else stops
its chunk and is listed (the random driver's line names the case to replay:
``python tests/fuzz_target.py random SEEDS 1 SEED`` reruns a chunk; atheris saves
``crash-*`` inputs, ``python tests/fuzz_target.py replay SEEDS FILE`` reruns one).

    .venv/bin/python bench/fuzz.py --cases 100000 --json bench/results/fuzz.json
    .venv/bin/python bench/fuzz.py --cases 2000 --atheris-share 0.5     # a short run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "fuzz_target.py"


def run_chunk(kind, seeds, n, seed, work):
    t0 = time.monotonic()
    if kind == "random":
        cmd = [sys.executable, str(TARGET), "random", seeds, str(n), str(seed)]
    else:
        cmd = [sys.executable, str(TARGET), "atheris", seeds, str(n), work, f"-seed={seed}"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(TARGET.parent))
    out = {"kind": kind, "seed": seed, "cases": n, "seconds": time.monotonic() - t0,
           "returncode": p.returncode}
    if kind == "random" and p.returncode == 0:
        out["outcomes"] = json.loads(p.stdout.strip().splitlines()[-1])["outcomes"]
    elif kind == "atheris" and p.returncode == 0:
        m = re.search(r"Done (\d+) runs", p.stderr)
        out["cases"] = int(m.group(1)) if m else 0
        cov = re.findall(r"cov: (\d+)", p.stderr)
        if cov:
            out["coverage"] = int(cov[-1])
    if p.returncode != 0:
        tail = (p.stderr or p.stdout)[-4000:]
        out["failure"] = tail
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000, help="total cases (default 100,000)")
    ap.add_argument("--chunk", type=int, default=2500, help="cases per child process")
    ap.add_argument("--atheris-share", type=float, default=0.3,
                    help="share of the cases run by the coverage-guided driver (default 0.3)")
    ap.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    try:
        import atheris  # noqa: F401
        share = args.atheris_share
    except ImportError:
        print("atheris is not installed: the random driver only", file=sys.stderr)
        share = 0.0
    work = tempfile.mkdtemp(prefix="sutra-fuzz-campaign-")
    seeds = os.path.join(work, "seeds")
    subprocess.run([sys.executable, str(TARGET), "seeds", seeds], check=True, cwd=str(TARGET.parent))
    n_ath = int(args.cases * share)
    chunks = []
    seed = args.seed
    for kind, total in (("atheris", n_ath), ("random", args.cases - n_ath)):
        while total > 0:
            n = min(args.chunk, total)
            chunks.append((kind, n, seed))
            seed += 1
            total -= n
    ath_dir = os.path.join(work, "atheris")
    os.makedirs(ath_dir, exist_ok=True)
    started = time.monotonic()
    results, done = [], 0
    total_cases = sum(c[1] for c in chunks)
    with ThreadPoolExecutor(args.jobs) as pool:
        futs = [pool.submit(run_chunk, k, seeds, n, s, ath_dir) for k, n, s in chunks]
        for f in futs:
            r = f.result()
            results.append(r)
            done += r["cases"]
            el = time.monotonic() - started
            rate = done / el if el else 0
            eta = (total_cases - done) / rate if rate else 0
            bad = sum(1 for x in results if x["returncode"] != 0)
            print(f"\r[{done:>7}/{total_cases}] {rate:6.1f} cases/s  ETA {eta / 60:5.1f} min  "
                  f"bad chunks {bad}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    outcomes = {}
    for r in results:
        for k, v in r.get("outcomes", {}).items():
            outcomes[k] = outcomes.get(k, 0) + v
    crashes = [f for f in os.listdir(ath_dir) if f.startswith(("crash-", "timeout-", "oom-"))]
    bad = [r for r in results if r["returncode"] != 0]
    summary = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "args": vars(args),
        "cases": sum(r["cases"] for r in results),
        "random_cases": sum(r["cases"] for r in results if r["kind"] == "random"),
        "atheris_cases": sum(r["cases"] for r in results if r["kind"] == "atheris"),
        "random_outcomes": outcomes,
        "bad_chunks": bad,
        "atheris_artifacts": crashes,
        "seconds": time.monotonic() - started,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "bad_chunks"}, indent=1))
    for r in bad:
        print(f"BAD {r['kind']} seed {r['seed']} rc {r['returncode']}:\n{r['failure'][-1500:]}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 1 if bad or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
