"""Benchmarks run on demand: ./run.sh bench NAME."""
