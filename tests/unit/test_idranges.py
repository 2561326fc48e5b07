"""The host-wide id-range registry (sandbox/idranges.py), on a registry in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.idranges import MIN_RANGE, IdRanges, IdRangeSettings, IdRangesExhausted


def _settings(tmp_path: Path, count: int = 4) -> IdRangeSettings:
    return IdRangeSettings(base=100_000, count=count, registry=tmp_path / "ids")


def test_two_instances_never_share_a_range_and_release_only_their_own(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    a, b = IdRanges(s, "inst-a"), IdRanges(s, "inst-b")
    firsts = {a.claim("cntr_1"), b.claim("cntr_2"), a.claim("cntr_3"), b.claim("cntr_4")}
    assert firsts == set(s)
    with pytest.raises(IdRangesExhausted):
        a.claim("cntr_5")
    b.release("cntr_1")  # a's: b leaves it alone
    assert IdRanges(s, "inst-a").load() == {
        "cntr_1": a.lookup("cntr_1"),
        "cntr_3": a.lookup("cntr_3"),
    }
    a.release("cntr_1")
    assert a.claim("cntr_5") not in (b.lookup("cntr_2"), b.lookup("cntr_4"))


def test_a_claim_left_half_written_is_swept_at_load_and_never_read(tmp_path: Path) -> None:
    """A daemon killed inside a claim's write leaves a temporary file; the next load removes
    it, and it never counts as a claim."""
    s = _settings(tmp_path, count=1)
    ranges = IdRanges(s, "inst-a")
    ranges.load()
    leftover = s.registry / f".tmp-{os.getpid()}-{s.base}-{MIN_RANGE}"
    leftover.write_text("inst-b cntr_9\n")
    assert IdRanges(s, "inst-b").load() == {}
    assert not leftover.exists()
    assert ranges.claim("cntr_1") == s.base
