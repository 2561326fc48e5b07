"""`python -m bench` rewrites BENCHMARKS.md but keeps the section other commands' figures
were pasted into."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import _kept
from bench.report import KEPT_HEADING


def test_the_kept_section_survives_a_rewrite(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    assert _kept(out) == ""
    out.write_text("# old figures\n| a | 1 |\n")
    assert _kept(out) == ""
    kept = f"{KEPT_HEADING}\n\nsoak: healthz p99 12 ms\n"
    out.write_text(f"# old figures\n| a | 1 |\n\n{kept}")
    assert _kept(out) == "\n" + kept
