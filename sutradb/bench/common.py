"""Helpers shared by the performance suite (:mod:`sutradb.bench.suite`) and the research
benchmarks in a source checkout's ``bench/`` (whose ``bench/common.py`` re-exports
these and adds the research-only ones).

Plain Python + NumPy; optional packages (rich, tqdm, threadpoolctl, faiss) are imported
lazily, so everything here works with only sutradb's own dependencies installed.

Conventions
-----------
* Timings are wall-clock seconds from ``time.perf_counter``; a measurement is repeated
  and reported by its median, with min/max and every sample kept.
* Recall@k = |returned top-k ∩ gt[:, :k]| / k, averaged over queries.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

__all__ = [
    "THREAD_ENV_VARS", "limit_threads_env", "limit_threads", "thread_pools", "cpu_model", "cpu_flags",
    "package_version", "git_revision", "machine_info", "training_sample", "recall_at_k",
    "rotated", "Progress", "jsonable", "timestamp", "default_json_path", "write_json",
    "fmt_num",
]

#: The directory holding the ``sutradb`` package (in a source checkout: the repo root).
PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


# --------------------------------------------------------------------------- threads

#: The thread-count variables ``limit_threads_env`` sets.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads_env(n: int | None) -> None:
    """Set the usual thread-count environment variables.

    Call this *before* importing numpy/faiss/sutradb: OpenMP and OpenBLAS read them at
    load time. ``limit_threads`` (below) additionally limits libraries already loaded.
    """
    if not n:
        return
    for var in THREAD_ENV_VARS:
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
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    if sys.modules.get("faiss") is not None:
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

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD-relevant flags of /proc/cpuinfo (empty where there is none)."""
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


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """``git describe --always --dirty`` of the repository holding ``path``; by default
    the source checkout this sutradb runs from, or None for an installed package (so
    that a venv inside some other repository does not report that repository)."""
    import subprocess
    if path is None:
        if not (PACKAGE_PARENT / ".git").exists():
            return None
        path = PACKAGE_PARENT
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
        affinity = os.cpu_count()  # type: ignore[assignment]  # None when unknown, as reported
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
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
    try:                                    # the kernel level this process runs
        from .. import simd
        info["sutradb_simd_level"] = simd.level
    except Exception:                       # noqa: BLE001  (kernels not built: still report)
        info["sutradb_simd_level"] = None
    info["thread_pools"] = thread_pools()
    info["git_revision"] = git_revision()
    info["env"] = {k: os.environ[k] for k in sorted(os.environ)
                   if k.startswith(("OMP_", "OPENBLAS_", "MKL_", "SUTRADB_"))}
    return info


# --------------------------------------------------------------------------- data

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


def rotated(items: Sequence, r: int) -> list:
    """``items`` rotated by ``r``: interleave libraries per repeat without a fixed order."""
    if not items:
        return []
    r %= len(items)
    return list(items[r:]) + list(items[:r])


# --------------------------------------------------------------------------- progress

def _importable(name: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Progress:
    """Live progress: an overall bar plus one for the current operation (its rate and
    ETA) when stdout is a TTY, drawn by rich if it is installed, else by tqdm, else as
    simple lines (one per operation); when stdout is not a TTY, quiet plain lines.

    ``backend`` says which: "rich", "tqdm", "lines" (a line per operation) or
    "plain" (log lines only); ``rich`` is True for the rich backend.

    Usage::

        with Progress(total_steps=12, enabled=None) as prog:
            with prog.op("encode faiss", total=n_rows, unit="rows") as advance:
                ...; advance(1000)
            prog.step()              # one overall step done
            prog.log("a line")       # printed above the bars / as a plain line
    """

    def __init__(self, total_steps: int, title: str = "bench", enabled: bool | None = None,
                 plain_ops: bool = False) -> None:
        self.total_steps = total_steps
        self.title = title
        live = sys.stdout.isatty() if enabled is None else enabled
        if not live:
            self.backend = "lines" if plain_ops else "plain"
        elif _importable("rich"):
            self.backend = "rich"
        elif _importable("tqdm"):
            self.backend = "tqdm"
        else:
            self.backend = "lines"
        self.rich = self.backend == "rich"
        self.plain_ops = self.backend == "lines"
        self._progress = None
        self._overall = None
        self._console = None

    def __enter__(self):
        if self.backend == "rich":
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
        elif self.backend == "tqdm":
            from tqdm import tqdm
            self._overall = tqdm(total=self.total_steps, desc=self.title, unit="step",
                                 position=0, leave=True, dynamic_ncols=True)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
        elif self.backend == "tqdm" and self._overall is not None:
            self._overall.close()
            self._overall = None
        return False

    @property
    def console(self):
        """The rich console of the bars (None for the other backends)."""
        return self._console

    def step(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._overall, n)
        elif self.backend == "tqdm" and self._overall is not None:
            self._overall.update(n)

    def log(self, msg: str) -> None:
        if self._progress is not None:
            self._progress.console.print(msg, highlight=False, markup=False)
        elif self.backend == "tqdm" and self._overall is not None:
            from tqdm import tqdm
            tqdm.write(msg)
        else:
            print(msg, flush=True)

    @contextmanager
    def op(self, description: str, total: float | None = None, unit: str = ""):
        """A sub-task; yields ``advance(n)``. The "plain" backend prints nothing."""
        if self._progress is not None:
            task = self._progress.add_task(f"  {description}", total=total, unit=unit)
            try:
                yield lambda n=1: self._progress.advance(task, n)
            finally:
                self._progress.remove_task(task)
        elif self.backend == "tqdm" and self._overall is not None:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=f"  {description}", unit=unit or "it", position=1,
                       leave=False, dynamic_ncols=True)
            try:
                yield lambda n=1: bar.update(n)
            finally:
                bar.close()
        else:
            if self.backend == "lines":
                print(f"  {description} ...", flush=True)
            yield lambda n=1: None


# --------------------------------------------------------------------------- output

def jsonable(o):
    """``o`` with NumPy scalars/arrays as Python numbers/lists, paths as strings and
    NaN/inf as None (what ``json.dump`` can write)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
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


def default_json_path(prefix: str, directory: str | os.PathLike | None = None) -> Path:
    """``<directory>/<prefix>-<timestamp>.json``; the current directory by default."""
    return Path(directory if directory is not None else ".") / f"{prefix}-{timestamp()}.json"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NumPy scalars/arrays converted, NaN/inf → null)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(jsonable(obj), f, indent=2)
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
