"""Benchmarks run with pytest-benchmark; each compares pbfast's Rust primitives to their Python twins."""
