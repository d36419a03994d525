"""Benchmark jobs (``python -m benchmarks.NAME``); their figures go into docs/."""
