"""The compiled kernels, one subpackage per SIMD level (``scalar``, ``avx2``,
``avx512``, ``native``), each holding ``_core`` and ``_pq`` built from the same
sources with that level's compiler flags. Import them through :mod:`sutradb.simd`,
never directly: a level's module may not run on this CPU."""
