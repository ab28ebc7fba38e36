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
