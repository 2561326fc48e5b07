"""The API form of file names: valid UTF-8 always, every byte recoverable, ordinary names
unchanged, and no two names alike."""

from __future__ import annotations

import os
import random

import pytest

from sandbox.pathnames import from_api, raw, to_api


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"report.txt", "report.txt"),
        (b"50% off.pdf", "50% off.pdf"),
        ("caf\u00e9 \u2603.txt".encode(), "caf\u00e9 \u2603.txt"),
        (b"evil\xff.txt", "evil%FF.txt"),
        (b"evil%FF.txt", "evil%25FF.txt"),  # a real '%FF' cannot pass for the byte 0xFF
        (b"a%2", "a%2"),
        (b"%\xff", "%%FF"),
        (b"\xed\xa0\x80", "%ED%A0%80"),  # an encoded surrogate is not UTF-8 either
    ],
)
def test_examples(name: bytes, shown: str) -> None:
    assert to_api(os.fsdecode(name)) == shown
    assert raw(shown) == name
    assert from_api(shown) == os.fsdecode(name)


def test_every_byte_string_round_trips_and_no_two_collide() -> None:
    rng = random.Random(16)
    alphabet = b"%%%aF0/. \xff\xc3\xa9\x80"
    seen: dict[str, bytes] = {}
    for _ in range(20000):
        name = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        shown = to_api(os.fsdecode(name))
        shown.encode("utf-8")  # valid UTF-8: JSON and SQLite take it
        assert raw(shown) == name
        assert seen.setdefault(shown, name) == name, (shown, name)


def test_lone_surrogates_that_no_os_name_has_are_refused() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        to_api("a\ud800")
