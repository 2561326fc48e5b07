"""List cursors survive deletion (in-process): the Python SDK's list-and-delete loops empty
every list (each page's cursor is the id of an object the loop has just deleted), for
containers, files, skills and skill versions; malformed cursors are 400."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.apifixtures import create_containers, tcp_sdk
from tests.service.conftest import InProcessDaemon as DaemonHandle
from tests.skillzips import make_zip, skill_md

pytestmark = pytest.mark.slow

MANY = 130  # > 6 pages of the SDKs' default 20


def test_python_sdk_list_and_delete_empties_130_containers(daemon: DaemonHandle) -> None:
    with tcp_sdk(daemon.tcp_url, daemon.keys["bob"]) as bob:
        made = set(create_containers(bob, MANY, "doomed"))
        try:
            deleted = []
            for c in bob.containers.list():  # the SDK follows `after` = the last id it saw
                bob.containers.delete(c.id)
                deleted.append(c.id)
            assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
            assert bob.containers.list().data == []
        finally:
            for c in bob.containers.list(limit=100):
                bob.containers.delete(c.id)


def test_list_and_delete_empties_files(client: openai.OpenAI) -> None:
    made = {client.files.create(file=(f"u{i}.txt", b"u"), purpose="evals").id for i in range(45)}
    try:
        deleted = []
        for f in client.files.list(purpose="evals", limit=20):
            client.files.delete(f.id)
            deleted.append(f.id)
        assert set(deleted) == made, f"deleted {len(deleted)} of {len(made)}"
    finally:
        for f in client.files.list(purpose="evals"):
            client.files.delete(f.id)


def test_list_and_delete_empties_skills_and_versions(
    client: openai.OpenAI, skills: list[str]
) -> None:
    zipped = make_zip({"s/SKILL.md": skill_md("loop")})
    skills.extend(client.skills.create(files=("s.zip", zipped)).id for _ in range(45))
    versioned = skills[0]
    for _ in range(44):
        client.skills.versions.create(versioned, files=("s.zip", zipped))
    deleted = []
    for v in client.skills.versions.list(versioned):
        if v.version != "1":  # the default version cannot be deleted
            client.skills.versions.delete(v.version, skill_id=versioned)
            deleted.append(v.version)
    assert sorted(map(int, deleted)) == list(range(2, 46))
    deleted = []
    for s in client.skills.list():
        client.skills.delete(s.id)
        deleted.append(s.id)
    assert set(skills) <= set(deleted), f"deleted {len(set(skills) & set(deleted))} of 45"


def test_a_never_made_id_is_placed_by_its_time(client: openai.OpenAI) -> None:
    made = [client.containers.create(name="placed").id for _ in range(3)]
    try:
        between = "cntr_" + made[2][5:21] + "0" * 32  # made[2]'s time: just before it
        page = client.containers.list(after=between, order="asc", limit=100)
        assert [c.id for c in page.data] == [made[2]]
        page = client.containers.list(after=between, limit=100)
        assert [c.id for c in page.data if c.id in made] == [made[1], made[0]]
    finally:
        for cid in made:
            client.containers.delete(cid)


@pytest.mark.parametrize(
    ("path", "after"),
    [
        ("/v1/containers", "cntr_nothex"),
        ("/v1/containers", "file-abc"),
        ("/v1/files", "cntr_" + "0" * 48),
        ("/v1/files", "file-OLDSTYLEIDTHATNEVEREXISTED"),  # an old id's shape: no time in it
        ("/v1/skills", "skill_123"),
    ],
)
def test_malformed_cursors_are_400(raw: httpx2.Client, path: str, after: str) -> None:
    r = raw.get(path, params={"after": after})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "after"
