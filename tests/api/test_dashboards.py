"""The Grafana dashboard and the alert rules only use metrics a running daemon exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.root
CONFIG = Path(__file__).resolve().parents[2] / "config"
METRIC = re.compile(r"\bsandboxd_[a-z_]+")


def _referenced() -> set[str]:
    text = (CONFIG / "grafana" / "sandboxd.json").read_text()
    text += (CONFIG / "prometheus" / "alerts.yml").read_text()
    return set(METRIC.findall(text))


def test_every_referenced_metric_is_exported(raw: httpx2.Client) -> None:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    exported = set()
    for family in text_string_to_metric_families(raw.get("/metrics").text):
        # a labelled family with no children yet has no samples, only HELP/TYPE
        exported.update(family.name + s for s in suffixes.get(family.type, ("",)))
    missing = sorted(_referenced() - exported)
    assert not missing, missing
    assert len(_referenced()) >= 10


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup --test installs it)")
    proc = subprocess.run(
        [promtool, "check", "rules", str(CONFIG / "prometheus" / "alerts.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
