"""Benchmark of sandboxd against plain runc (and Docker when reachable), and a soak.

Run as root from the repository root: ``.venv/bin/python -m bench`` (``--quick`` for fewer
samples). See BENCHMARKS.md for the latest figures. ``.venv/bin/python -m bench.soak``
(``--minutes 20`` by default) runs hostile tenants beside normal ones and reports /healthz and
a neighbour's exec p50/p99, the daemon's RSS and store size over time and the replies by
status (bench/soak.py, bench/tenants.py).
"""
