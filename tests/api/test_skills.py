"""Skills inside real sandboxes: mounted read-only at /mnt/skills with an index. The API side
of /v1/skills runs in-process (tests/service/test_skills.py)."""

from __future__ import annotations

import base64
import json

import httpx2
import openai
import pytest

from tests.api.conftest import exec_
from tests.skillzips import make_zip, skill_md

pytestmark = pytest.mark.root


def _exec(raw: httpx2.Client, cid: str, command: str) -> tuple[str, int]:
    out = exec_(raw, cid, command)["output"][0]  # type: ignore[index]
    return out["stdout"] + out["stderr"], out["outcome"]["exit_code"]


def test_skills_mount_read_only_with_an_index(
    client: openai.OpenAI, raw: httpx2.Client, skills: list[str]
) -> None:
    s = client.skills.create(
        files=[("pdf/SKILL.md", skill_md("pdf-kit", "Make PDFs.")), ("pdf/bin/run.sh", b"echo 1")]
    )
    skills.append(s.id)
    v2 = client.skills.versions.create(s.id, files=[("p/SKILL.md", skill_md("pdf-kit", "v2"))])
    other = client.skills.create(files=[("SKILL.md", skill_md("notes"))])
    skills.append(other.id)
    inline = base64.b64encode(make_zip({"x/SKILL.md": skill_md("inline-one", "Inline.")}))
    box = client.containers.create(
        name="skills",
        skills=[
            {"type": "skill_reference", "skill_id": s.id},
            {"type": "skill_reference", "skill_id": other.id, "version": "latest"},
            {
                "type": "inline",
                "name": "inline-one",
                "description": "Inline.",
                "source": {
                    "type": "base64",
                    "media_type": "application/zip",
                    "data": inline.decode(),
                },
            },
        ],
    )
    try:
        text, code = _exec(raw, box.id, "cat /mnt/skills/index.json")
        assert code == 0
        index = json.loads(text)["skills"]
        assert index == [
            {"name": "pdf-kit", "description": "Make PDFs.", "path": "/mnt/skills/pdf-kit"},
            {"name": "notes", "description": "Does a thing.", "path": "/mnt/skills/notes"},
            {"name": "inline-one", "description": "Inline.", "path": "/mnt/skills/inline-one"},
        ]
        text, code = _exec(raw, box.id, "cat /mnt/skills/pdf-kit/bin/run.sh")
        assert (text, code) == ("echo 1", 0)
        text, code = _exec(raw, box.id, "touch /mnt/skills/pdf-kit/x 2>&1; echo > /mnt/skills/y")
        assert code != 0 and "Read-only file system" in text
        text, _ = _exec(
            raw, box.id, "stat -c '%a' /mnt/skills/pdf-kit/SKILL.md /mnt/skills/pdf-kit"
        )
        assert text.split() == ["644", "755"]
    finally:
        client.containers.delete(box.id)
    # An explicit version mounts that version.
    box = client.containers.create(
        name="v2", skills=[{"type": "skill_reference", "skill_id": s.id, "version": v2.version}]
    )
    try:
        text, _ = _exec(raw, box.id, "cat /mnt/skills/index.json")
        assert json.loads(text)["skills"][0]["description"] == "v2"
        text, code = _exec(raw, box.id, "test -e /mnt/skills/pdf-kit/bin/run.sh")
        assert code == 1
    finally:
        client.containers.delete(box.id)
