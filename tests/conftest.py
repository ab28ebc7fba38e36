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

#: the kernel levels the per-level tests run: every level this machine can run, best
#: first (avx512, avx2, scalar here), or only the one SUTRADB_SIMD forces
SIMD_LEVELS = (simd.level,) if os.environ.get("SUTRADB_SIMD") else simd.supported_levels()


def pytest_report_header(config):
    import sutradb
    return (f"sutradb {sutradb.__version__} from {os.path.dirname(sutradb.__file__)}; "
            f"SIMD level {simd.level} ({simd._why}); per-level tests: {', '.join(SIMD_LEVELS)}")


def pytest_configure(config):
    # CI runs the suite against the installed wheel: make sure that is what it tests
    if os.environ.get("SUTRADB_EXPECT_INSTALLED"):
        import sutradb
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.abspath(sutradb.__file__).startswith(here + os.sep):
            raise pytest.UsageError(f"SUTRADB_EXPECT_INSTALLED: sutradb was imported from the "
                                    f"source tree ({sutradb.__file__}), not the installed wheel")


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
