"""Shared helpers for sutradb benchmarks (PQ engine, storage, database).

Everything here is plain Python + NumPy; optional packages (rich, threadpoolctl, faiss)
are imported lazily so a benchmark that does not need them still runs.

Conventions
-----------
* Timings are wall-clock seconds from ``time.perf_counter``; a measurement is repeated
  and reported by its median (``summarize``), with min/max and every sample kept.
* Latencies are per call; ``latency_stats`` turns them into p50/p95/p99 ms and QPS
  (QPS = calls / sum of call latencies, i.e. loop overhead outside the call excluded).
* Recall@k = |returned top-k ∩ gt[:, :k]| / k, averaged over queries.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SHARED_DATA = BENCH_DIR.parent.parent / "shared" / "data"


# --------------------------------------------------------------------------- threads

def limit_threads_env(n: int | None) -> None:
    """Set the usual thread-count environment variables.

    Call this *before* importing numpy/faiss/sutradb: OpenMP and OpenBLAS read them at
    load time. ``limit_threads`` (below) additionally limits libraries already loaded.
    """
    if not n:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)


def limit_threads(n: int | None):
    """Limit every loaded BLAS/OpenMP pool (threadpoolctl) and FAISS's OpenMP to ``n``.

    Returns the threadpoolctl controller (keep a reference; it is process-wide). Import
    every library that brings its own OpenMP/BLAS (faiss, sutradb, ...) *before* calling.
    """
    if not n:
        return None
    ctl = None
    try:
        from threadpoolctl import threadpool_limits
        ctl = threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl is in the bench extra
        pass
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    return ctl


def thread_pools() -> list[dict]:
    """What threadpoolctl sees: one dict per loaded BLAS/OpenMP library."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "architecture", "threading_layer")
    return [{k: i.get(k) for k in keep if k in i} | {"file": Path(i["filepath"]).name}
            for i in threadpool_info()]


# --------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                              "avx512vl", "avx512_vbmi", "avx512_vnni", "avx512_fp16",
                              "avx_vnni", "amx_tile")
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        mod = sys.modules.get(name)
        return getattr(mod, "__version__", None) if mod else None


def git_revision(path: str | os.PathLike = BENCH_DIR) -> str | None:
    """``git describe --always --dirty`` of the repository holding ``path`` (or None)."""
    import subprocess
    try:
        r = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(extra_packages: Sequence[str] = ()) -> dict:
    """CPU, cores, OS, Python and library versions (for the JSON header)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "cores_available": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "versions": {},
    }
    for name in ("numpy", "scipy", *extra_packages):
        info["versions"][name] = package_version(name)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        info["faiss_compile_options"] = faiss.get_compile_options()
        try:
            info["faiss_simd_level"] = faiss.SIMDConfig.get_level_name()
        except Exception:
            pass
    info["thread_pools"] = thread_pools()
    info["git_revision"] = git_revision()
    info["env"] = {k: os.environ[k] for k in sorted(os.environ)
                   if k.startswith(("OMP_", "OPENBLAS_", "MKL_"))}
    return info


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


def training_sample(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct rows of ``x`` chosen by a seeded RNG (sorted, contiguous copy).

    Give the *same* array to every library so they train on identical rows.
    """
    if n >= len(x):
        return np.ascontiguousarray(x)
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return np.ascontiguousarray(x[idx])


def recall_at_k(I: np.ndarray, gt: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |I[:, :k] ∩ gt[:, :k]| / k (-1 padding never matches)."""
    I = np.asarray(I)[:, :k]
    G = np.asarray(gt)[: len(I), :k]
    hits = sum(len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(I, G))
    return hits / (k * len(I)) if len(I) else float("nan")


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


def rotated(items: Sequence, r: int) -> list:
    """``items`` rotated by ``r``: interleave libraries per repeat without a fixed order."""
    if not items:
        return []
    r %= len(items)
    return list(items[r:]) + list(items[:r])


# --------------------------------------------------------------------------- progress

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


class Progress:
    """Live progress: a rich bar (overall steps + the current operation with its rate
    and ETA) when stdout is a TTY, otherwise quiet plain lines.

    Usage::

        with Progress(total_steps=12, enabled=None) as prog:
            with prog.op("encode faiss", total=n_rows, unit="rows") as advance:
                ...; advance(1000)
            prog.step()              # one overall step done
            prog.log("a line")       # printed above the bar / as a plain line
    """

    def __init__(self, total_steps: int, title: str = "bench", enabled: bool | None = None,
                 plain_ops: bool = False):
        self.total_steps = total_steps
        self.title = title
        self.rich = sys.stdout.isatty() if enabled is None else enabled
        self.plain_ops = plain_ops
        self._progress = None
        self._overall = None
        self._console = None
        if self.rich:
            try:
                import rich  # noqa: F401
            except ImportError:
                self.rich = False

    def __enter__(self):
        if self.rich:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RProgress,
                                       ProgressColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.text import Text

            class RateColumn(ProgressColumn):
                def render(self, task):
                    unit = task.fields.get("unit", "")
                    if task.speed is None or not unit:
                        return Text("")
                    return Text(f"{task.speed:,.0f} {unit}/s", style="cyan")

            self._console = Console()
            self._progress = RProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self._console, refresh_per_second=4, transient=False)
            self._progress.__enter__()
            self._overall = self._progress.add_task(self.title, total=self.total_steps, unit="")
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
        return False

    @property
    def console(self):
        return self._console

    def step(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._overall, n)

    def log(self, msg: str) -> None:
        if self._progress is not None:
            self._progress.console.print(msg, highlight=False, markup=False)
        else:
            print(msg, flush=True)

    @contextmanager
    def op(self, description: str, total: float | None = None, unit: str = ""):
        """A sub-task; yields ``advance(n)``. Plain mode prints nothing unless plain_ops."""
        if self._progress is None:
            if self.plain_ops:
                print(f"  {description} ...", flush=True)
            yield lambda n=1: None
            return
        task = self._progress.add_task(f"  {description}", total=total, unit=unit)
        try:
            yield lambda n=1: self._progress.advance(task, n)
        finally:
            self._progress.remove_task(task)


# --------------------------------------------------------------------------- output

def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        o = float(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    return o


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def default_json_path(prefix: str) -> Path:
    return RESULTS_DIR / f"{prefix}-{timestamp()}.json"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NumPy scalars/arrays converted, NaN/inf → null)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")
    os.replace(tmp, p)
    return p


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Compact human number: 1234567 → '1.23M', 0.00123 → '0.00123'."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    ax = abs(x)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= div:
            return f"{x / div:.{digits}g}{suf}"
    return f"{x:.{digits}g}"
