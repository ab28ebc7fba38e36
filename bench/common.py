"""Shared helpers for the research benchmarks in ``bench/`` (PQ engine, IVF, storage,
database, scale, distributed).

The helpers the performance suite needs too (thread pinning, machine info,
``training_sample``, ``recall_at_k``, ``rotated``, ``Progress``, ``write_json``,
``fmt_num``, ...) live in the installed package, :mod:`sutradb.bench.common`, and are
re-exported here, so there is one copy of each; this file adds what only the research
scripts use: the checkout's data and results paths, data-set loading, timing and
latency statistics, and the memory probe of measuring child processes.

Conventions
-----------
* Timings are wall-clock seconds from ``time.perf_counter``; a measurement is repeated
  and reported by its median (``summarize``), with min/max and every sample kept.
* Latencies are per call; ``latency_stats`` turns them into p50/p95/p99 ms and QPS
  (QPS = calls / sum of call latencies, i.e. loop overhead outside the call excluded).
* Recall@k = |returned top-k ∩ gt[:, :k]| / k, averaged over queries.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SHARED_DATA = BENCH_DIR.parent.parent / "shared" / "data"

if str(BENCH_DIR.parent) not in sys.path:       # the checkout's sutradb (built in place)
    sys.path.insert(0, str(BENCH_DIR.parent))

from sutradb.bench import common as _shared  # noqa: E402
from sutradb.bench.common import *  # noqa: E402,F401,F403  (the shared helpers)


def default_json_path(prefix: str) -> Path:
    """``bench/results/<prefix>-<timestamp>.json``."""
    return _shared.default_json_path(prefix, RESULTS_DIR)


# --------------------------------------------------------------------------- data

@dataclass
class Dataset:
    name: str
    path: Path
    base: np.ndarray          # (n, d) float32, C-contiguous
    queries: np.ndarray       # (nq, d) float32
    gt: np.ndarray            # (nq, >=k) int rows of base, nearest first
    metric: str               # "ip" (normalised vectors) or "l2"
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "n_base": int(len(self.base)),
                "n_queries": int(len(self.queries)), "dim": self.dim, "metric": self.metric,
                "gt_k": int(self.gt.shape[1]), "notes": self.notes}


def _is_normalised(x: np.ndarray, tol: float = 1e-2) -> bool:
    norms = np.linalg.norm(x[: min(len(x), 2000)], axis=1)
    return bool(np.all(np.abs(norms - 1.0) < tol))


def load_dataset(path: str | os.PathLike, max_queries: int | None = None,
                 metric: str | None = None) -> Dataset:
    """Load ``base.f16.npy`` / ``queries.f16.npy`` / ``gt.i32.npy`` from a directory.

    Vectors are converted to float32. ``metric`` defaults to "ip" when the base vectors
    are L2-normalised (the ground truth is then by inner product = cosine) and "l2"
    otherwise; pass it explicitly when that guess is wrong for a data set.
    """
    p = Path(path)
    base = np.ascontiguousarray(np.load(p / "base.f16.npy").astype(np.float32))
    queries = np.ascontiguousarray(np.load(p / "queries.f16.npy").astype(np.float32))
    gt = np.load(p / "gt.i32.npy")
    notes = []
    if max_queries is not None and max_queries < len(queries):
        queries, gt = queries[:max_queries].copy(), gt[:max_queries].copy()
        notes.append(f"first {max_queries} queries")
    if metric is None:
        metric = "ip" if _is_normalised(base) else "l2"
        notes.append(f"metric {metric} inferred ({'normalised' if metric == 'ip' else 'unnormalised'} vectors)")
    return Dataset(p.name, p, base, queries, gt, metric, notes)


# --------------------------------------------------------------------------- timing

def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def time_autorange(fn: Callable[[], Any], min_time: float = 0.0,
                   max_calls: int = 1_000_000) -> tuple[float, int, Any]:
    """Seconds per call of ``fn()``, calling it back to back until ``min_time`` seconds
    have passed (at least once), like ``timeit``'s autorange: a millisecond-long
    operation timed once is mostly noise. Returns (seconds per call, calls, last result).
    """
    pc = time.perf_counter
    calls, t0 = 0, pc()
    while True:
        r = fn()
        calls += 1
        elapsed = pc() - t0
        if elapsed >= min_time or calls >= max_calls:
            return elapsed / calls, calls, r


def time_each(fn: Callable[[int], Any], n: int, on_progress: Callable[[int], None] | None = None,
              progress_every: int = 64) -> tuple[np.ndarray, list]:
    """Call ``fn(i)`` for i in range(n); return per-call seconds and the results.

    ``on_progress(done)`` is called outside the timed region every ``progress_every``
    calls, so progress reporting never shows up in the latencies.
    """
    lat = np.empty(n, dtype=np.float64)
    out = [None] * n
    pc = time.perf_counter
    for i in range(n):
        t0 = pc()
        out[i] = fn(i)
        lat[i] = pc() - t0
        if on_progress is not None and (i + 1) % progress_every == 0:
            on_progress(progress_every)
    if on_progress is not None and n % progress_every:
        on_progress(n % progress_every)
    return lat, out


def summarize(samples: Iterable[float]) -> dict:
    """Median/min/max/count (and the samples) of repeated timings, in seconds."""
    s = [float(v) for v in samples]
    if not s:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0,
                "samples": []}
    return {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s),
            "samples": s}


def latency_stats(latencies_s: Sequence[float] | np.ndarray) -> dict:
    """p50/p95/p99/mean in milliseconds and QPS (calls / summed latency)."""
    a = np.asarray(latencies_s, dtype=np.float64)
    if a.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "qps": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99]) * 1e3
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "mean_ms": float(a.mean() * 1e3), "qps": float(a.size / a.sum())}


def median_of_dicts(dicts: Sequence[dict], keys: Sequence[str]) -> dict:
    """Per-key median over repeats of e.g. ``latency_stats`` outputs."""
    out = {}
    for k in keys:
        vals = [d[k] for d in dicts if d.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


# --------------------------------------------------------------------------- child processes

#: Source for a measuring child process: ``status()`` (VmRSS, RssAnon, RssFile, VmHWM
#: in bytes, from /proc/self/status) and ``file_rss(prefix)`` (resident bytes of the
#: mapped files whose path contains ``prefix``, by file extension, from smaps).
CHILD_MEMORY_HELPERS = r"""
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    return out
def file_rss(prefix):
    by_kind, path = {}, None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if parts and not parts[0].endswith(":") and "-" in parts[0]:
            path = parts[5] if len(parts) > 5 else ""
        elif parts and parts[0] == "Rss:" and path and prefix in path:
            ext = path.rsplit(".", 1)[-1]
            by_kind[ext] = by_kind.get(ext, 0) + int(parts[1]) * 1024
    return by_kind
"""
