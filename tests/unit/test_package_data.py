"""A non-editable install (`pip install .`) carries every file the daemon reads from its own
packages: each is declared as package data and found inside its package, not the checkout."""

from __future__ import annotations

import tomllib
from pathlib import Path

import sandbox
from sandbox import seccomp

REPO = Path(__file__).resolve().parents[2]


def test_the_seccomp_profile_ships_inside_its_package() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    package = Path(sandbox.__file__).parent
    assert seccomp.DEFAULT_PROFILE.parent == package
    assert seccomp.DEFAULT_PROFILE.is_file()
    assert seccomp.DEFAULT_PROFILE.name in declared["sandbox"]
    for name, patterns in declared.items():  # every declared file or pattern exists
        for pattern in patterns:
            assert list((REPO / name).glob(pattern)), (name, pattern)
