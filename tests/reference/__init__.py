"""Slow, obvious float64 numpy references written from SPEC.md (never from the kernels)."""
