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

from sutradb import simd  # noqa: E402

#: the kernel levels this machine can run, best first (avx512, avx2, scalar here)
SIMD_LEVELS = simd.supported_levels()


@pytest.fixture(scope="module", params=SIMD_LEVELS)
def kernel_level(request):
    """Run a whole test module once per SIMD level this CPU supports: the index layer
    (through ``simd.using``) and the module's own ``_core`` / ``_pq`` globals use that
    level's kernels for the module's tests (module scope, so hypothesis tests can use
    it). Yields the level's name."""
    core, pq = simd.load(request.param)
    mod = sys.modules[request.module.__name__]
    saved = [(name, getattr(mod, name)) for name in ("_core", "_pq") if hasattr(mod, name)]
    for name, _ in saved:
        setattr(mod, name, core if name == "_core" else pq)
    with simd.using(request.param):
        yield request.param
    for name, old in saved:
        setattr(mod, name, old)
