"""Performance regression guard (CI, well under a minute): a small sample of the benchmark,
judged only against baselines measured in the same run on the same machine, with generous
ratios — absolute times on shared machines are noise. `python -m bench` has the full figures.
"""

from __future__ import annotations

import pytest

from bench.baseline import measure_runc
from bench.client import Client
from bench.daemon import running_daemon
from bench.sandboxd import Sizes, measure_api
from bench.workdir import workdir

pytestmark = [pytest.mark.root, pytest.mark.slow]
SAMPLE = Sizes(create=5, exec=30, baseline=5)


def test_sandboxd_stays_well_ahead_of_its_baselines() -> None:
    with workdir() as work:
        with running_daemon(work) as daemon, Client(str(daemon.socket)) as client:
            api = {s.key: s.median for s in measure_api(client, SAMPLE).figures}
        baseline = {s.key: s.median for s in measure_runc(work, SAMPLE.baseline)[0]}
    report = f"sandboxd {api}, runc {baseline}"
    # measured at the time of writing (BENCHMARKS.md): 0.11x, 0.05x, 1.95x
    assert api["exec"] <= 0.5 * baseline["runc_exec"], report
    assert api["pool_create"] <= 0.5 * api["create"], report
    assert api["create"] <= 3.0 * baseline["runc_start"], report
