"""Kernels compiled for the scalar level (see sutradb.simd)."""
