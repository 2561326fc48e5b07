"""The soak (bench/soak.py) for 2 minutes, with the issue's targets loosened for CI noise.

The real targets (`python -m bench.soak`, 20 minutes): /healthz and a neighbour's exec p99
<= 50 ms while a hostile tenant runs the maximum output case, daemon RSS <= 300 MiB, no 5xx.
Here the same tenants run for 2 minutes on a shared, loaded 2-core machine, where the
sandboxes' own work (dd, file floods, 0xff generators) competes with the daemon for CPU, so
the latency bounds are 10x and 15x the targets and RSS gets 150 MiB of slack: wide enough for
noise, far below the multi-second stalls and gigabytes the hostile tenants cause when the
daemon does not bound them. A 5xx is a bug anywhere: none is allowed.
"""

from __future__ import annotations

import pytest

from bench import soak

pytestmark = [pytest.mark.root, pytest.mark.slow]

HEALTHZ_P99_MS = 500.0  # target 50
NEIGHBOUR_P99_MS = 750.0  # target 50
RSS_MIB = 450.0  # target 300
SETTINGS = soak.Settings(minutes=2.0, dirty_mib=128, rss_abort_mib=1024)


@pytest.mark.timeout(1200)
def test_two_minute_soak_with_hostile_tenants() -> None:
    """Hostile tenants beside normal ones for 2 minutes: no 5xx, bounded daemon RSS, and
    /healthz and a neighbour's exec stay responsive."""
    result = soak.run(SETTINGS, "tests/soak/test_soak.py (2 minutes)")
    report = soak.render(result)
    print(report)
    healthz = result.summary("healthz", "healthz")
    neighbour = result.summary("neighbour", "exec")
    assert not result.aborted, report
    assert result.server_errors() == 0, report
    assert result.rss_max_mib() <= RSS_MIB, report
    assert healthz is not None and healthz.p99 <= HEALTHZ_P99_MS, report
    assert neighbour is not None and neighbour.p99 <= NEIGHBOUR_P99_MS, report
