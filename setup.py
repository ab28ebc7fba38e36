"""Build the Cython kernels, once per SIMD level.

The kernels (``sutradb/_core.pyx``, ``sutradb/_pq.pyx`` and the C helpers they
include) are cythonized once and compiled once per *level*, each into its own pair of
extension modules under ``sutradb/_levels/<level>/``:

========  ==========================================  ===============================
level     compiler flags (GCC/clang; MSVC alike)      CPUs
========  ==========================================  ===============================
avx512    ``-march=x86-64-v4 -mavx512vbmi             Ice Lake, Sapphire Rapids,
          -mavx512vnni``                              Zen 4 and newer
avx2      ``-march=x86-64-v3`` (AVX2, FMA, F16C)      Haswell (2013), Zen 1 and newer
scalar    the platform baseline (no ``-march``)       every CPU of the platform
native    ``-march=native`` (``SUTRADB_NATIVE=1``)    the build machine only
========  ==========================================  ===============================

x86-64 builds compile avx512, avx2 and scalar; other architectures (arm64: macOS,
Linux) compile scalar only, which the compiler vectorises for NEON. At import,
``sutradb/simd.py`` asks the CPU what it supports and loads the best level
(``SUTRADB_SIMD=avx2`` forces a lower one). So every wheel runs on every CPU of its
platform tag, and is fast on each. ``build/levels.json`` -> ``sutradb/_levels/
build.json`` records what was compiled, with which compiler and flags
(``sutradb.show_config()``).

Release builds use ``boundscheck=False, wraparound=False, initializedcheck=False,
cdivision=True`` and ``-O3``; ``SUTRADB_CYTHON_DEBUG=1`` rebuilds with every check on
(bounds, wraparound, initialisation, ``-O0 -g``): one CI pass runs the tests that way.
OpenMP is used when the compiler has it (``SUTRADB_NO_OPENMP=1`` turns it off).
``SUTRADB_LEVELS=scalar,avx2`` builds only the levels named (faster development
builds); ``SUTRADB_NATIVE=1`` adds the non-redistributable ``native`` level, which is
preferred where it can run.
"""

import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0") not in ("", "0")


DEBUG = _flag("SUTRADB_CYTHON_DEBUG")
NATIVE = _flag("SUTRADB_NATIVE")
MSVC = sys.platform == "win32"
# the target machine (cibuildwheel cross-builds macOS arm64 on x86-64 hosts through
# _PYTHON_HOST_PLATFORM / ARCHFLAGS, which sysconfig and ARCHFLAGS report)
_plat = sysconfig.get_platform().lower()
_archflags = os.environ.get("ARCHFLAGS", "")
if "arm64" in _archflags or "aarch64" in _plat or _plat.endswith("arm64"):
    MACHINE = "arm64"
elif "x86_64" in _archflags or "x86_64" in _plat or "amd64" in _plat or _plat.endswith("-x86_64"):
    MACHINE = "x86_64"
elif _plat.startswith("macosx") and "universal2" in _plat:
    MACHINE = "universal2"
else:
    MACHINE = platform.machine().lower() or "unknown"
X86 = MACHINE in ("x86_64", "amd64", "x86", "i686")


def _cc():
    return os.environ.get("CC", "cc")


def _compiles(flags, code="int main(void){return 0;}\n"):
    """True when the C compiler accepts ``flags`` (GCC/clang only)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            r = subprocess.run([*_cc().split(), *flags, src, "-o", os.path.join(tmp, "t")],
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


def _compiler_has_openmp():
    if _flag("SUTRADB_NO_OPENMP") or MSVC:
        return False
    return _compiles(["-fopenmp"],
                     "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")


def _level_flags():
    """{level: extra compile flags} for this compiler and target machine."""
    if not X86:
        return {"scalar": []}
    if MSVC:
        # MSVC defines __AVX2__ / __AVX512*__ for /arch but not the FMA, F16C, VBMI
        # and VNNI macros _simd.h tests; /arch:AVX2 and /arch:AVX512 enable them all
        avx2 = ["/arch:AVX2", "/D__FMA__", "/D__F16C__"]
        return {"avx512": ["/arch:AVX512", "/D__FMA__", "/D__F16C__", "/D__AVX512VBMI__",
                           "/D__AVX512VNNI__"],
                "avx2": avx2, "scalar": []}
    v3 = ["-march=x86-64-v3"]
    if not _compiles(v3):       # compilers before GCC 11 / clang 12
        v3 = ["-mavx", "-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt",
              "-mmovbe", "-mpopcnt", "-msse4.2"]
    v4 = ["-march=x86-64-v4"] if v3[0].startswith("-march") else \
        v3 + ["-mavx512f", "-mavx512dq", "-mavx512cd", "-mavx512bw", "-mavx512vl"]
    levels = {"avx512": v4 + ["-mavx512vbmi", "-mavx512vnni"], "avx2": v3, "scalar": []}
    if not _compiles(levels["avx512"]):
        del levels["avx512"]
    return levels


#: CPU feature names of sutradb/_cpu.h by the compiler macro that enables them
_MACRO_FEATURES = {
    "__SSE4_2__": "sse4.2", "__POPCNT__": "popcnt", "__AVX__": "avx", "__AVX2__": "avx2",
    "__FMA__": "fma", "__F16C__": "f16c", "__BMI__": "bmi1", "__BMI2__": "bmi2",
    "__LZCNT__": "lzcnt", "__MOVBE__": "movbe", "__AVX512F__": "avx512f",
    "__AVX512DQ__": "avx512dq", "__AVX512CD__": "avx512cd", "__AVX512BW__": "avx512bw",
    "__AVX512VL__": "avx512vl", "__AVX512VBMI__": "avx512vbmi",
    "__AVX512VNNI__": "avx512vnni",
}


def _required_features(flags):
    """The CPU features a level's flags let the compiler use (GCC/clang: from the
    macros it predefines), which the CPU must have before the level is imported."""
    if MSVC:
        have = {f[3:] for f in flags if f.startswith("/D__")}
        out = set()
        if "/arch:AVX2" in flags or "/arch:AVX512" in flags:
            out |= {"avx", "avx2", "fma", "f16c"}
        if "/arch:AVX512" in flags:
            out |= {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}
        out |= {_MACRO_FEATURES[m] for m in ("__" + h for h in have) if m in _MACRO_FEATURES}
        return sorted(out)
    try:
        r = subprocess.run([*_cc().split(), *flags, "-dM", "-E", "-"], input="",
                           capture_output=True, text=True)
    except OSError:
        return []
    macros = {line.split()[1] for line in r.stdout.splitlines() if line.startswith("#define ")}
    return sorted(name for macro, name in _MACRO_FEATURES.items() if macro in macros)


OPENMP = _compiler_has_openmp()
LEVELS = _level_flags()
if NATIVE and not MSVC:
    LEVELS = {"native": ["-march=native"], **LEVELS}
_only = [s.strip() for s in os.environ.get("SUTRADB_LEVELS", "").split(",") if s.strip()]
if _only:
    unknown = set(_only) - set(LEVELS)
    if unknown:
        sys.exit(f"SUTRADB_LEVELS: {sorted(unknown)} not buildable here (have {sorted(LEVELS)})")
    LEVELS = {k: v for k, v in LEVELS.items() if k in _only or k == "scalar"}
_LEVEL_NUMBER = {"scalar": 0, "avx2": 1, "avx512": 2, "native": 3}

if MSVC:
    base_args = ["/Od", "/Zi"] if DEBUG else ["/O2"]
else:
    base_args = (["-O0", "-g"] if DEBUG else ["-O3"]) + [
        "-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code"]
link_args = []
if OPENMP:
    base_args.append("-fopenmp")
    link_args.append("-fopenmp")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

# the generated C depends on the directives: keep one tree per mode, so switching
# between debug and release builds always re-generates it
BUILD_DIR = os.path.join("build", "cython-debug" if DEBUG else "cython-release")
generated = cythonize(
    [Extension(f"sutradb.{name}", [f"sutradb/{name}.pyx"]) for name in ("_core", "_pq")],
    compiler_directives=directives,
    compile_time_env={"SUTRADB_OPENMP": OPENMP},
    annotate=_flag("SUTRADB_CYTHON_ANNOTATE"),
    build_dir=BUILD_DIR,
)
c_sources = {ext.name.rsplit(".", 1)[1]: os.path.abspath(ext.sources[0]) for ext in generated}

extensions = []
for level, flags in LEVELS.items():
    for name, csrc in c_sources.items():
        # one small wrapper per level, so each level's object file has its own path;
        # it names the mode and flags, so that switching between debug and release
        # (or changing flags) rewrites it and the level is rebuilt, never left stale
        wrapper = os.path.join("build", "levels", level, f"{name}.c")
        os.makedirs(os.path.dirname(wrapper), exist_ok=True)
        text = (f"/* {name} kernels at level {level} (generated by setup.py):\n"
                f" * {' '.join(base_args + flags)} */\n#include \"{csrc}\"\n")
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as f:
                f.write(text)
        extensions.append(Extension(
            f"sutradb._levels.{level}.{name}",
            [wrapper],
            include_dirs=[np.get_include(), os.path.join(ROOT, "sutradb")],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                           ("SUTRA_LEVEL", str(_LEVEL_NUMBER[level]))],
            extra_compile_args=base_args + flags,
            extra_link_args=link_args,
            # the wrapper only includes the generated C: rebuild when it (or a
            # header it includes) changes
            depends=[csrc] + [os.path.join(ROOT, "sutradb", h) for h in ("_simd.h", "_cpu.h")],
        ))

# the record codec: portable C with no SIMD, built once (base flags, no level flags),
# so it runs on every CPU of the platform
extensions += cythonize(
    [Extension("sutradb.storage._codec", ["sutradb/storage/_codec.pyx"],
               define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
               extra_compile_args=[a for a in base_args if a not in ("-fopenmp", "/openmp")])],
    compiler_directives=directives,
    annotate=_flag("SUTRADB_CYTHON_ANNOTATE"),
    build_dir=BUILD_DIR,
)

# what was built, for sutradb.show_config() and the loader (which must know what a
# level needs *before* importing it: its module init may already use those
# instructions)
_build_info = {
    "format": 1,
    "machine": MACHINE,
    "platform": _plat,
    "compiler": "msvc" if MSVC else _cc(),
    "compiler_version": "" if MSVC else subprocess.run(
        [*_cc().split(), "--version"], capture_output=True, text=True).stdout.split("\n")[0],
    "openmp": OPENMP,
    "debug": DEBUG,
    "base_flags": base_args,
    "levels": {level: {"flags": flags, "requires": _required_features(base_args + flags)}
               for level, flags in LEVELS.items()},
}
_info_path = os.path.join(ROOT, "sutradb", "_levels", "build.json")
_text = json.dumps(_build_info, indent=1, sort_keys=True) + "\n"
if not os.path.exists(_info_path) or open(_info_path).read() != _text:
    with open(_info_path, "w") as f:
        f.write(_text)

setup(ext_modules=extensions)
