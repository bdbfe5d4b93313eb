"""Benchmarks and the real local servers they and the tests start (see README.md here for method and figures)."""
