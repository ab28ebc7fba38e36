pytest_plugins = ["sutradb.testing"]   # the fixtures users get: sutra_db, sutra_db_factory

import os

from hypothesis import HealthCheck, settings

# Kernel property tests run a few hundred examples locally and in CI; the debug build
# (SUTRADB_CYTHON_DEBUG=1, bounds checks on) is slower, so it runs fewer.
settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("debug", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SUTRADB_HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "default"))


# --------------------------------------------------------------------- SIMD levels
import sys  # noqa: E402

import pytest  # noqa: E402

import sutradb.index.ivf  # noqa: E402
import sutradb.index.pq  # noqa: E402
from sutradb import simd  # noqa: E402

#: the kernel levels this machine can run, best first (avx512, avx2, scalar here)
SIMD_LEVELS = simd.supported_levels()


@pytest.fixture(scope="module", params=SIMD_LEVELS)
def kernel_level(request):
    """Run a whole test module once per SIMD level this CPU supports: the module's
    ``_core`` / ``_pq`` globals and those of the index layer point at that level's
    kernels for the module's tests, then back (module scope, so hypothesis tests can
    use it). Yields the level's name."""
    core, pq = simd.load(request.param)
    targets = [sys.modules[request.module.__name__], sutradb.index.pq, sutradb.index.ivf]
    saved = [(t, name, getattr(t, name)) for t in targets for name in ("_core", "_pq")
             if hasattr(t, name)]
    for t, name, _ in saved:
        setattr(t, name, core if name == "_core" else pq)
    yield request.param
    for t, name, old in saved:
        setattr(t, name, old)
