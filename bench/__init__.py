"""Benchmarks and fault drills; run them as scripts (see README.md)."""
