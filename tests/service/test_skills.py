"""/v1/skills through the official SDK (in-process): create (zip and directory), versions,
default, content, owner scoping and the validation rejections."""

from __future__ import annotations

import base64
import io
import stat
import zipfile

import openai
import pytest

from tests.service.conftest import InProcessDaemon as DaemonHandle
from tests.skillzips import make_zip, skill_md, zip_names


def test_zip_skill_round_trip(client: openai.OpenAI, skills: list[str]) -> None:
    data = make_zip({"csv/SKILL.md": skill_md("csv-tools"), "csv/tool.py": b"print('csv')\n"})
    s = client.skills.create(files=("csv.zip", data, "application/zip"))
    skills.append(s.id)
    assert s.id.startswith("skill_") and len(s.id) == 6 + 32
    assert (s.object, s.name, s.description) == ("skill", "csv-tools", "Does a thing.")
    assert (s.default_version, s.latest_version) == ("1", "1")
    assert client.skills.retrieve(s.id).name == "csv-tools"
    assert s.id in [x.id for x in client.skills.list()]
    got = client.skills.content.retrieve(s.id).read()
    assert zip_names(got) == ["csv-tools/SKILL.md", "csv-tools/tool.py"]

    v2 = client.skills.versions.create(
        s.id, files=[("csv/SKILL.md", skill_md("csv-tools", "Better.")), ("csv/t.py", b"2")]
    )
    assert v2.id.startswith("skillver_") and (v2.version, v2.skill_id) == ("2", s.id)
    assert (v2.object, v2.description) == ("skill.version", "Better.")
    after = client.skills.retrieve(s.id)
    assert (after.default_version, after.latest_version, after.description) == (
        "1", "2", "Does a thing."
    )  # fmt: skip
    assert [v.version for v in client.skills.versions.list(s.id, order="asc")] == ["1", "2"]
    assert client.skills.versions.retrieve("2", skill_id=s.id).id == v2.id
    assert zip_names(client.skills.versions.content.retrieve("2", skill_id=s.id).read()) == [
        "csv-tools/SKILL.md",
        "csv-tools/t.py",
    ]
    updated = client.skills.update(s.id, default_version="2")
    assert (updated.default_version, updated.description) == ("2", "Better.")
    # The default version cannot be deleted; another one can.
    with pytest.raises(openai.BadRequestError):
        client.skills.versions.delete("2", skill_id=s.id)
    gone = client.skills.versions.delete("1", skill_id=s.id)
    assert (gone.deleted, gone.version) == (True, "1")
    with pytest.raises(openai.NotFoundError):
        client.skills.versions.retrieve("1", skill_id=s.id)
    with pytest.raises(openai.NotFoundError):
        client.skills.update(s.id, default_version="9")
    deleted = client.skills.delete(s.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (s.id, "skill.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.skills.retrieve(s.id)


def test_default_version_accepts_an_integer_and_last_version_delete_deletes_skill(
    client: openai.OpenAI, skills: list[str]
) -> None:
    s = client.skills.create(files=[("SKILL.md", skill_md("solo"))])
    skills.append(s.id)
    assert s.name == "solo"
    v2 = client.skills.versions.create(s.id, files=[("SKILL.md", skill_md("solo"))], default=True)
    assert client.skills.retrieve(s.id).default_version == v2.version == "2"
    r = client.skills.with_raw_response.update(s.id, default_version="1", extra_body={})
    assert r.http_response.status_code == 200
    raw = client.post(f"/skills/{s.id}", body={"default_version": 2}, cast_to=openai.types.Skill)
    assert raw.default_version == "2"
    client.skills.versions.delete("1", skill_id=s.id)
    client.skills.versions.delete("2", skill_id=s.id)
    with pytest.raises(openai.NotFoundError):
        client.skills.retrieve(s.id)


def _special_zip(kind: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("s/SKILL.md", skill_md("special"))
        info = zipfile.ZipInfo("s/entry")
        info.create_system = 3
        info.external_attr = (kind | 0o777) << 16
        zf.writestr(info, b"/etc/shadow")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        (make_zip({"s/readme.md": b"x"}), "needs a SKILL.md"),
        (make_zip({"s/SKILL.md": b"x", "s/skill.md": b"y"}), "more than one SKILL.md"),
        (make_zip({"s/SKILL.md": b"---\nname: Bad!\ndescription: d\n---\n"}), "skill name"),
        (make_zip({"s/SKILL.md": b"---\nname: ok\n---\n"}), "description"),
        (make_zip({"s/SKILL.md": skill_md("ok"), "s/../../etc/x": b"x"}), "leaves the skill"),
        (make_zip({"s/SKILL.md": skill_md("ok"), "/etc/x": b"x"}), "Absolute path"),
        (_special_zip(stat.S_IFLNK), "symlink"),
        (_special_zip(stat.S_IFCHR), "device"),
        (make_zip({"s/SKILL.md": skill_md("ok"), "s/z": bytes(30 << 20)}), "exceeds"),
        (make_zip({"s/SKILL.md": skill_md("ok"), "s/z": bytes(20 << 20)}), "zip bomb"),
        (
            make_zip({"s/SKILL.md": skill_md("ok")} | {f"s/{i}": b"x" for i in range(501)}),
            "more than 500 files",
        ),
        (b"PK\x03\x04 not really a zip", "Not a valid zip"),
    ],
)
def test_invalid_skills_are_400_with_the_reason(
    client: openai.OpenAI, daemon: DaemonHandle, upload: bytes, reason: str
) -> None:
    before = [s.id for s in client.skills.list(limit=100)]
    with pytest.raises(openai.BadRequestError) as info:
        client.skills.create(files=("s.zip", upload, "application/zip"))
    body = info.value.body
    assert isinstance(body, dict)
    assert reason in body["message"] and body["param"] == "files"
    assert [s.id for s in client.skills.list(limit=100)] == before
    assert list((daemon.root / "state" / "blobs" / "tmp").iterdir()) == []


def test_directory_upload_path_escape_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="leaves the skill folder"):
        client.skills.create(files=[("d/SKILL.md", skill_md("x")), ("d/../../x", b"x")])


def test_too_large_upload_is_413(client: openai.OpenAI) -> None:
    import os

    with pytest.raises(openai.APIStatusError) as info:
        client.skills.create(files=("big.zip", os.urandom((50 << 20) + 1), "application/zip"))
    assert info.value.status_code == 413


def test_foreign_skills_are_not_found(daemon: DaemonHandle) -> None:
    url = daemon.tcp_url + "/v1"
    with (
        openai.OpenAI(base_url=url, api_key=daemon.keys["alice"], max_retries=0) as alice,
        openai.OpenAI(base_url=url, api_key=daemon.keys["bob"], max_retries=0) as bob,
    ):
        s = alice.skills.create(files=[("SKILL.md", skill_md("private"))])
        try:
            assert s.id not in [x.id for x in bob.skills.list()]
            for call in (
                lambda: bob.skills.retrieve(s.id),
                lambda: bob.skills.content.retrieve(s.id),
                lambda: bob.skills.update(s.id, default_version="1"),
                lambda: bob.skills.delete(s.id),
                lambda: bob.skills.versions.list(s.id),
                lambda: bob.skills.versions.retrieve("1", skill_id=s.id),
                lambda: bob.skills.versions.delete("1", skill_id=s.id),
                lambda: bob.skills.versions.create(s.id, files=[("SKILL.md", skill_md("x"))]),
            ):
                with pytest.raises(openai.NotFoundError):
                    call()
            assert alice.skills.retrieve(s.id).name == "private"
        finally:
            alice.skills.delete(s.id)


def _names(client: openai.OpenAI) -> list[str]:
    return [c.name for c in client.containers.list(limit=100)]


def test_bad_skill_references_create_nothing(
    client: openai.OpenAI, daemon: DaemonHandle, skills: list[str]
) -> None:
    s = client.skills.create(files=[("SKILL.md", skill_md("real"))])
    skills.append(s.id)
    before = _names(client)
    for refs in (
        [{"type": "skill_reference", "skill_id": "skill_" + "0" * 32}],
        [{"type": "skill_reference", "skill_id": s.id, "version": "7"}],
        [{"type": "skill_reference", "skill_id": "nope"}],
    ):
        with pytest.raises(openai.NotFoundError):
            client.containers.create(name="never", skills=refs)  # type: ignore[arg-type]
    bad_inline = base64.b64encode(make_zip({"x/SKILL.md": b"no front matter"})).decode()
    for refs, param in (
        ([{"type": "inline", "name": "a", "description": "b",
           "source": {"type": "base64", "media_type": "application/zip", "data": bad_inline}}],
         "skills[0].source.data"),
        ([{"type": "inline", "name": "a", "description": "b",
           "source": {"type": "base64", "media_type": "application/zip", "data": "!!"}}],
         "skills[0].source.data"),
        ([{"type": "skill_reference", "skill_id": s.id}] * 2, "skills"),
        ([{"type": "mystery"}], "skills[0].type"),
    ):  # fmt: skip
        with pytest.raises(openai.BadRequestError) as info:
            client.containers.create(name="never", skills=refs)  # type: ignore[arg-type]
        assert isinstance(info.value.body, dict) and info.value.body["param"] == param
    assert _names(client) == before
    assert list((daemon.root / "state" / "blobs" / "tmp").iterdir()) == []
    url = daemon.tcp_url + "/v1"
    with openai.OpenAI(base_url=url, api_key=daemon.keys["bob"], max_retries=0) as bob:
        with pytest.raises(openai.NotFoundError):
            bob.containers.create(
                name="steal", skills=[{"type": "skill_reference", "skill_id": s.id}]
            )
        assert "steal" not in [c.name for c in bob.containers.list()]


def _bomb(expanded: int) -> bytes:
    """A zip whose one entry expands to `expanded` zero bytes (about 1 MB on the wire)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("s/SKILL.md", skill_md("bomb"))
        with zf.open("s/zeros.bin", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(expanded >> 20):
                entry.write(block)
    return buf.getvalue()


@pytest.mark.slow
def test_a_1_gib_zip_bomb_and_a_60_mb_zip_are_refused(
    client: openai.OpenAI, daemon: DaemonHandle
) -> None:
    bomb = _bomb(1 << 30)
    assert len(bomb) < 2 << 20
    with pytest.raises(openai.BadRequestError, match=r"zip bomb|exceeds"):
        client.skills.create(files=("bomb.zip", bomb, "application/zip"))
    import os

    with pytest.raises(openai.APIStatusError) as info:
        client.skills.create(files=("big.zip", os.urandom(60 << 20), "application/zip"))
    assert info.value.status_code == 413
    assert list((daemon.root / "state" / "blobs" / "tmp").iterdir()) == []
