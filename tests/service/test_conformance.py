"""Details of OpenAI's spec and SDKs that clients trip over: skill zips made from inside the
skill folder, list limits as the spec states them, error messages that name the real problem."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.skillzips import make_zip, skill_md


def test_a_zip_made_inside_the_skill_folder_is_a_skill(
    client: openai.OpenAI, skills: list[str]
) -> None:
    """`cd skill && zip -r ../s.zip .`: SKILL.md at the zip's root, beside sub-folders."""
    data = make_zip(
        {"SKILL.md": skill_md("rooted"), "scripts/run.py": b"print(1)\n", "ref/a/b.md": b"b"}
    )
    s = client.skills.create(files=("s.zip", data, "application/zip"))
    skills.append(s.id)
    assert s.name == "rooted"
    v2 = client.skills.versions.create(s.id, files=("s.zip", data, "application/zip"))
    assert v2.version == "2"


def test_several_top_level_folders_say_what_to_do(raw: httpx2.Client) -> None:
    data = make_zip({"a/SKILL.md": skill_md("two"), "b/x.txt": b"x"})
    r = raw.post("/v1/skills", files={"files": ("s.zip", data, "application/zip")})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "several top-level entries ('a', 'b')" in message
    assert "zip -r" in message and "SKILL.md at the top level" in message


def test_files_list_default_limit_is_the_specs_10000(client: openai.OpenAI) -> None:
    made = [client.files.create(file=(f"d{i}.txt", b"d"), purpose="evals").id for i in range(25)]
    try:
        page = client.files.list(purpose="evals")  # no limit: OpenAI's default, 10000
        assert [f.id for f in page.data] == made[::-1]
        assert page.has_more is False
    finally:
        for fid in made:
            client.files.delete(fid)


def test_skills_lists_accept_limit_0(
    client: openai.OpenAI, raw: httpx2.Client, skills: list[str]
) -> None:
    data = make_zip({"z/SKILL.md": skill_md("zero-limit")})
    s = client.skills.create(files=("s.zip", data, "application/zip"))
    skills.append(s.id)
    for path in ("/v1/skills", f"/v1/skills/{s.id}/versions"):
        r = raw.get(path, params={"limit": 0})
        assert r.status_code == 200, r.text
        assert r.json()["data"] == [] and r.json()["has_more"] is True
    r = raw.get("/v1/skills", params={"limit": 101})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    r = raw.get("/v1/containers", params={"limit": 0})  # 1 to 100 there, as the spec says
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("a\\b.txt", "contains a backslash"),
        ("a/b.txt", "contains '/'"),
        ("..", "is '..'"),
        ("x" * 256, "is 256 bytes long (at most 255)"),
    ],
)
def test_bad_file_names_are_reported_accurately(
    raw: httpx2.Client, container: str, name: str, says: str
) -> None:
    for path, data in (
        ("/v1/files", {"purpose": "batch"}),
        (f"/v1/containers/{container}/files", {}),
    ):
        r = raw.post(path, data=data, files={"file": (name, b"a")})
        assert r.status_code == 400, (path, r.text)
        err = r.json()["error"]
        assert says in err["message"], (path, err)
        assert err["param"] == "file"
