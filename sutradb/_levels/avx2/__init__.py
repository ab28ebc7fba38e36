"""Kernels compiled for the avx2 level (see sutradb.simd)."""
