"""Image recipes (config/images/*.toml): the shipped ones parse, a malformed one is refused
with the key named, and the digest (in every build id) changes with what decides the
contents and with nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.image_build import recipe
from sandbox.image_build.recipe import RecipeError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "images"


def _parse(data: dict[str, Any]) -> recipe.Recipe:
    return recipe.parse("r", {"debian": {"packages": ["python3"]}, **data})


def test_the_shipped_recipes_parse_and_are_found_by_name() -> None:
    assert recipe.SHIPPED == SHIPPED
    assert {"minimal", "python-data"} <= set(recipe.available((SHIPPED,)))
    minimal = recipe.load(recipe.find("minimal", (SHIPPED,)))
    data = recipe.load(recipe.find("python-data", (SHIPPED,)))
    assert minimal.name == "minimal" and minimal.suite == "bookworm"
    assert {"python3", "ca-certificates", "curl", "git"} <= set(minimal.debian)
    assert set(minimal.debian) <= set(data.debian)  # python-data has everything minimal has
    assert {"python3-pandas", "nodejs", "npm", "jq", "sqlite3", "poppler-utils"} <= set(data.debian)
    # not in Debian bookworm
    assert {p.partition("==")[0] for p in data.python} == {"python-pptx", "pdfplumber"}
    wanted = {"pandas", "numpy", "scipy", "sklearn", "matplotlib.pyplot", "seaborn", "openpyxl"}
    wanted |= {"xlrd", "docx", "pptx", "reportlab", "pypdf", "pdfplumber", "PIL", "bs4", "lxml"}
    wanted |= {"requests", "networkx", "tabulate", "sympy", "statsmodels.api"}
    assert wanted <= set(data.verify_imports)
    assert any(c.startswith("node -e") for c in data.verify_commands)
    assert data.env["MPLBACKEND"] == "Agg"
    assert data.description and minimal.description


def test_a_path_names_a_recipe_file_and_an_unknown_name_lists_the_known(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[debian]\npackages = ["python3"]\n')
    assert recipe.load(recipe.find(str(path), (SHIPPED,))).name == "mine"
    with pytest.raises(RecipeError, match=r"no recipe 'nope' \(known: .*minimal"):
        recipe.find("nope", (SHIPPED,))
    with pytest.raises(RecipeError, match="not found"):
        recipe.find(str(tmp_path / "absent.toml"), (SHIPPED,))


def test_a_local_recipe_wins_over_a_shipped_one_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "minimal.toml").write_text('[debian]\npackages = ["python3"]\n')
    assert recipe.find("minimal", (tmp_path, SHIPPED)) == tmp_path / "minimal.toml"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"packages": ["x"]}, "unknown key 'packages'"),
        ({"debian": {"packages": ["python3"], "pkgs": []}}, r"\[debian\]: unknown key 'pkgs'"),
        ({"verify": {"import": ["x"]}}, r"\[verify\]: unknown key 'import'"),
        ({"python": ["x"]}, r"\[python\] must be a table"),
        ({"debian": {"packages": "python3"}}, "packages must be a list of non-empty strings"),
        ({"debian": {"packages": [1]}}, "packages must be a list of non-empty strings"),
        ({"debian": {"packages": []}}, r"\[debian\] packages is required"),
        ({"debian": {"packages": ["python3", "python3"]}}, "listed twice"),
        ({"debian": {"packages": ["bad name"]}}, "'bad name' is not a package name"),
        ({"python": {"packages": ["--index-url=http://x"]}}, "is not a package name"),
        ({"npm": {"packages": ["../x"]}}, "is not a package name"),
        ({"suite": 12}, "suite must be a string"),
        ({"suite": "Bookworm!"}, "not a Debian suite name"),
        ({"snapshot": "yesterday"}, "not like 20250520T000000Z"),
        ({"description": ["x"]}, "description must be a string"),
        ({"env": {"1X": "y"}}, r"\[env\]: env name '1X' is not an identifier"),
        ({"env": {"X": 1}}, r"\[env\]: env X must be a string"),
        ({"env": {"X": "a\0b"}}, r"\[env\]: env X must be a string without NUL"),
        ({"verify": {"imports": ["os; rm"]}}, "is not a module name"),
        ({"verify": {"commands": [""]}}, "commands must be a list of non-empty strings"),
    ],
)
def test_a_malformed_recipe_is_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"debian": {"packages": ["python3"]}}
    with pytest.raises(RecipeError, match=message):
        recipe.parse("r", {**base, **data})


def test_bad_toml_is_refused_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[debian\n")
    with pytest.raises(RecipeError, match=r"broken.toml: not valid TOML"):
        recipe.load(path)


def test_the_digest_follows_the_contents_not_the_order() -> None:
    one = _parse({"debian": {"packages": ["python3", "curl"]}, "python": {"packages": ["a", "b"]}})
    two = _parse({"debian": {"packages": ["curl", "python3"]}, "python": {"packages": ["b", "a"]}})
    key = {"layout_version": "6", "mirror": "http://m"}
    assert one.digest(**key) == two.digest(**key)
    assert len(one.digest(**key)) == 64
    changed = [
        _parse({"debian": {"packages": ["python3", "curl", "git"]}}),
        _parse({"suite": "trixie"}),
        _parse({"snapshot": "20250520T000000Z"}),
        _parse({"env": {"A": "b"}}),
        _parse({"verify": {"imports": ["json"]}}),
        _parse({"npm": {"packages": ["left-pad"]}}),
    ]
    base = _parse({}).digest(**key)
    digests = {r.digest(**key) for r in changed}
    assert base not in digests and len(digests) == len(changed)
    assert _parse({}).digest(layout_version="7", mirror="http://m") != base
    assert _parse({}).digest(layout_version="6", mirror="http://other") != base
    # The description says what the image is for; it does not change what is in it.
    assert _parse({"description": "words"}).digest(**key) == base


def test_a_snapshot_builds_from_snapshot_debian_org() -> None:
    pinned = _parse({"snapshot": "20250520T000000Z"})
    assert pinned.mirror("http://deb.debian.org/debian") == (
        "http://snapshot.debian.org/archive/debian/20250520T000000Z"
    )
    assert _parse({}).mirror("http://m") == "http://m"


def test_the_host_mirror_is_read_from_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert recipe.host_mirror(tmp_path) == recipe.DEFAULT_MIRROR
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert recipe.host_mirror(tmp_path) == "http://mirror.example/debian"
