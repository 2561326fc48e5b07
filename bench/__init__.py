"""Benchmark of sandboxd against plain runc (and Docker when reachable).

Run as root from the repository root: ``.venv/bin/python -m bench`` (``--quick`` for fewer
samples). See BENCHMARKS.md for the latest figures.
"""
