"""The SDK's auto-pagination walks every item exactly once: 250 files, 150 skills."""

from __future__ import annotations

import openai
import pytest

from tests.skillzips import make_zip, skill_md

pytestmark = pytest.mark.slow


def test_250_files_each_listed_once(client: openai.OpenAI) -> None:
    made = [client.files.create(file=(f"p{i}.txt", b"p"), purpose="batch").id for i in range(250)]
    try:
        for order in ("asc", "desc"):
            seen = [f.id for f in client.files.list(purpose="batch", limit=37, order=order)]
            assert seen == (made if order == "asc" else made[::-1])
    finally:
        for fid in made:
            client.files.delete(fid)


def test_150_skills_each_listed_once(client: openai.OpenAI) -> None:
    made = []
    try:
        for i in range(150):
            zipped = make_zip({f"s{i}/SKILL.md": skill_md(f"pager-{i}")})
            made.append(client.skills.create(files=("s.zip", zipped)).id)
        seen = [s.id for s in client.skills.list(limit=40, order="asc")]
        mine = [sid for sid in seen if sid in set(made)]
        assert mine == made
        assert len(seen) == len(set(seen))
    finally:
        for sid in made:
            client.skills.delete(sid)
