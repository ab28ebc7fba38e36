"""Kernels compiled for the native level (see sutradb.simd)."""
