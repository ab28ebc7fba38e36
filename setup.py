"""Build the Cython kernels.

Release builds use ``boundscheck=False, wraparound=False, initializedcheck=False,
cdivision=True`` and ``-O3``; set ``SUTRADB_CYTHON_DEBUG=1`` to rebuild with every
check on (bounds, wraparound, initialisation, ``-O0 -g``): one CI pass runs the tests
that way. OpenMP is used when the compiler has it (``SUTRADB_NO_OPENMP=1`` turns it
off). ``-march=native`` is used for source builds (the kernels are built on the
machine that runs them); ``SUTRADB_PORTABLE=1`` turns it off for redistributable
wheels.
"""

import os
import sys
import tempfile
import subprocess

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SUTRADB_CYTHON_DEBUG", "0") not in ("", "0")
PORTABLE = os.environ.get("SUTRADB_PORTABLE", "0") not in ("", "0")


def _compiler_has_openmp():
    if os.environ.get("SUTRADB_NO_OPENMP", "0") not in ("", "0") or sys.platform == "win32":
        return False
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        try:
            r = subprocess.run([cc, "-fopenmp", src, "-o", os.path.join(tmp, "t")],
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


OPENMP = _compiler_has_openmp()

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
if not PORTABLE and sys.platform != "win32":
    compile_args.append("-march=native")
compile_args += ["-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"sutradb.{name}",
        [f"sutradb/{name}.pyx"],
        include_dirs=[np.get_include(), "sutradb"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in ("_pq", "_core")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        compile_time_env={"SUTRADB_OPENMP": OPENMP},
        annotate=os.environ.get("SUTRADB_CYTHON_ANNOTATE", "0") not in ("", "0"),
        # the generated C depends on the directives: keep one tree per mode, so
        # switching between debug and release builds always re-generates it
        build_dir=os.path.join("build", "cython-debug" if DEBUG else "cython-release"),
    ),
)
