"""Optimal-transport benchmarks against geomloss and ott-jax (see README.md here)."""
