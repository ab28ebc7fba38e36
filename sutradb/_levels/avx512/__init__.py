"""Kernels compiled for the avx512 level (see sutradb.simd)."""
