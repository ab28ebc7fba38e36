"""Which compiled kernels run here: the SIMD level, chosen once at import.

The kernels are compiled once per level (see ``setup.py``): ``avx512`` (x86-64-v4 with
AVX-512 VBMI and VNNI), ``avx2`` (x86-64-v3: AVX2, FMA, F16C), ``scalar`` (the
platform's baseline, on every CPU; NEON-vectorised by the compiler on arm64) and, in
opt-in ``SUTRADB_NATIVE=1`` builds, ``native``. At import this module asks the CPU
(``cpuid`` + ``xgetbv``, through the always-safe scalar module) which instruction sets
it and the operating system support, and loads the best level whose requirements are
met, as FAISS's loader and NumPy's dispatch do. A level is never imported on a CPU
that cannot run it: its module's own initialisation may already use its
instructions.

``SUTRADB_SIMD=avx2`` (or ``scalar``, ``avx512``, ``native``) forces a level; forcing
one the CPU cannot run, or one this build did not compile, raises
:class:`~sutradb.errors.UnsupportedCPUError` at ``import sutradb``. Every level gives
the same results (same ids; distances equal to float rounding), which the tests check
for every kernel.

Attributes
----------
level : str
    The active level.
core, pq : module
    The active level's ``_core`` (distance tables, ADC scans, re-ranking, IVF) and
    ``_pq`` (k-means, encode) extension modules.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from collections.abc import Iterator
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Callable

from .errors import UnsupportedCPUError

__all__ = ["LEVELS", "level", "core", "pq", "load", "using", "build_info", "cpu_features",
           "supported_levels", "config", "show_config"]

#: every level there is, best first
LEVELS = ("native", "avx512", "avx2", "scalar")
_LEVEL_NUMBER = {"scalar": 0, "avx2": 1, "avx512": 2, "native": 3}
_ENV = "SUTRADB_SIMD"


def build_info() -> dict[str, Any]:
    """What this installation compiled: levels with their flags and the CPU features
    each needs, compiler, OpenMP (``sutradb/_levels/build.json``, written by
    ``setup.py``)."""
    path = Path(__file__).resolve().parent / "_levels" / "build.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        return info
    except (OSError, ValueError) as e:
        raise UnsupportedCPUError(
            f"the sutradb kernels are not built ({path} is missing or unreadable: {e}); "
            "install the package (pip install .) or run setup.py build_ext --inplace") from e


def _import_level(name: str) -> tuple[ModuleType, ModuleType]:
    core = importlib.import_module(f"sutradb._levels.{name}._core")
    pq = importlib.import_module(f"sutradb._levels.{name}._pq")
    if core.LEVEL != _LEVEL_NUMBER[name]:      # a stale or misplaced build
        raise UnsupportedCPUError(f"sutradb._levels.{name} holds level {core.LEVEL} kernels")
    return core, pq


_INFO = build_info()
_BUILT = tuple(name for name in LEVELS if name in _INFO.get("levels", {}))
if "scalar" not in _BUILT:
    raise UnsupportedCPUError("this sutradb build has no portable (scalar) kernels")
_scalar_core, _scalar_pq = _import_level("scalar")
_CPU = frozenset(_scalar_core.cpu_features())


def cpu_features() -> frozenset[str]:
    """The instruction-set extensions this CPU and its operating system support
    (``"avx2"``, ``"fma"``, ``"avx512vbmi"``, ...; see ``sutradb/_cpu.h``)."""
    return _CPU


def _missing(name: str) -> list[str]:
    return sorted(set(_INFO["levels"][name].get("requires", ())) - _CPU)


def supported_levels() -> tuple[str, ...]:
    """The compiled levels this CPU can run, best first."""
    return tuple(name for name in _BUILT if not _missing(name))


_loaded: dict[str, tuple[ModuleType, ModuleType]] = {"scalar": (_scalar_core, _scalar_pq)}


def load(name: str) -> tuple[ModuleType, ModuleType]:
    """The ``(_core, _pq)`` modules of level ``name`` (for tests and benchmarks that
    compare levels; the database uses the active level).

    Raises
    ------
    UnsupportedCPUError
        When the level is unknown, was not compiled in this build, or needs an
        instruction set this CPU (or its operating system) lacks.
    """
    if name not in LEVELS:
        raise UnsupportedCPUError(f"unknown SIMD level {name!r}: choose from {', '.join(LEVELS)}")
    if name not in _BUILT:
        raise UnsupportedCPUError(
            f"SIMD level {name!r} is not compiled in this build (it has {', '.join(_BUILT)})")
    missing = _missing(name)
    if missing:
        raise UnsupportedCPUError(
            f"SIMD level {name!r} needs {', '.join(missing)}, which this CPU does not "
            f"support; it can run {', '.join(supported_levels())}")
    if name not in _loaded:
        _loaded[name] = _import_level(name)
    return _loaded[name]


def _choose() -> tuple[str, str]:
    forced = os.environ.get(_ENV, "").strip().lower()
    if forced:
        load(forced)                      # raises with the reason when it cannot run
        return forced, f"forced by {_ENV}={forced}"
    return supported_levels()[0], "the best level this CPU supports"


level, _why = _choose()
if TYPE_CHECKING:
    # what type checkers see: every level's modules have the signatures of the stubs
    # (sutradb/_levels/scalar/_core.pyi, _pq.pyi; the other levels' stubs re-export them)
    from ._levels.scalar import _core as core
    from ._levels.scalar import _pq as pq
else:
    core, pq = load(level)


@contextlib.contextmanager
def using(name: str) -> Iterator[str]:
    """Run the kernels of level ``name`` inside the ``with`` block (every caller
    looks them up here, as ``simd.core`` / ``simd.pq``), then restore the active
    ones. For benchmarks and tests that compare levels in one process; not for use
    while other threads search.
    """
    global level, core, pq
    saved = level, core, pq
    core, pq = load(name)
    level = name
    try:
        yield name
    finally:
        level, core, pq = saved


def config() -> dict[str, Any]:
    """The build and the runtime choice as a dict (what :func:`show_config` prints)."""
    from . import __version__
    return {
        "sutradb": __version__,
        "python": sys.version.split()[0],
        "platform": f"{sys.platform} {platform.machine()}",
        "build": {
            "machine": _INFO.get("machine"),
            "compiler": _INFO.get("compiler"),
            "compiler_version": _INFO.get("compiler_version"),
            "openmp": _INFO.get("openmp"),
            "debug": _INFO.get("debug"),
            "base_flags": _INFO.get("base_flags"),
            "levels": _INFO.get("levels"),
        },
        "cpu_features": sorted(_CPU),
        "supported_levels": list(supported_levels()),
        "active_level": level,
        "active_because": _why,
        "fastscan4_simd": bool(core.HAVE_FASTSCAN4),
        "cpu_vendor": core.CPU_VENDOR,
        "adc_gather": core.adc_gather(),
        "compiled_paths": list(core.COMPILED_PATHS),
    }


def show_config(file: IO[str] | None = None) -> None:
    """Print how sutradb was built and which kernels run on this machine: the
    compiled SIMD levels with their flags and requirements, compiler, OpenMP, the
    CPU's features and the active level (``sutradb info --build`` prints the same).
    """
    c = config()
    out = file or sys.stdout
    b = c["build"]
    p: Callable[..., None] = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"sutradb {c['sutradb']} (Python {c['python']}, {c['platform']})")
    p(f"  compiler:        {b['compiler']} {b['compiler_version'] or ''}".rstrip())
    p(f"  OpenMP:          {'yes' if b['openmp'] else 'no'}")
    p(f"  debug build:     {'yes' if b['debug'] else 'no'}")
    p(f"  base flags:      {' '.join(b['base_flags'] or [])}")
    p("  compiled levels:")
    for name in LEVELS:
        if name in (b["levels"] or {}):
            lv = b["levels"][name]
            ok = "runs here" if name in c["supported_levels"] else \
                "needs " + ", ".join(_missing(name))
            p(f"    {name:<7} flags: {' '.join(lv['flags']) or '(baseline)'}; {ok}")
    p(f"  CPU features:    {' '.join(c['cpu_features']) or '(none detected)'}")
    p(f"  active level:    {c['active_level']} ({c['active_because']})")
    p(f"  SIMD paths:      {', '.join(c['compiled_paths']) or 'portable C only'}"
      f"; 4-bit fast scan {'SIMD' if c['fastscan4_simd'] else 'portable C'}; 8-bit ADC "
      f"{'AVX-512 gathers' if c['adc_gather'] else 'scalar loads'} ({c['cpu_vendor'] or 'unknown'} CPU)")
