"""Safe retries on a real daemon: a create retried after client timeouts (a real create is
slower than the client's timeout) makes one container, and every creating POST replays,
container files included. The other cases run in-process (tests/service/test_idempotency.py)."""

from __future__ import annotations

import contextlib
import threading

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle
from tests.apifixtures import idempotency_key, named
from tests.skillzips import make_zip, skill_md

pytestmark = pytest.mark.root


def test_a_create_retried_after_client_timeouts_makes_one_container(
    daemon: DaemonHandle, client: openai.OpenAI, unique_name: str
) -> None:
    """The SDK gives up on each attempt after 20 ms, a cold create takes longer, and each retry
    resends the key: one container, whatever the SDK saw (3 before Idempotency-Key)."""
    attempts: list[str] = []
    http = httpx2.Client(
        transport=httpx2.HTTPTransport(uds=daemon.socket),
        event_hooks={"request": [lambda r: attempts.append(r.headers["Idempotency-Key"])]},
    )
    impatient = openai.OpenAI(
        base_url="http://localhost/v1", api_key="x", http_client=http, timeout=0.02,
        max_retries=2,
    )  # fmt: skip
    headers = {"Idempotency-Key": idempotency_key()}
    with http, contextlib.suppress(openai.APITimeoutError):
        impatient.containers.create(name=unique_name, extra_headers=headers)
    assert len(attempts) >= 2 and set(attempts) == {headers["Idempotency-Key"]}
    made = named(client, unique_name)
    for _ in range(50):  # the first attempt may still be running on the daemon
        if made:
            break
        threading.Event().wait(0.1)
        made = named(client, unique_name)
    again = client.containers.create(name=unique_name, extra_headers=headers)
    assert named(client, unique_name) == [again.id]
    raw = client.containers.with_raw_response.create(name=unique_name, extra_headers=headers)
    assert raw.headers.get("Idempotent-Replayed") == "true"
    assert raw.parse().id == again.id


def test_every_creating_post_replays(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    """Container files, files, skills and skill versions: multipart bodies match part by part
    (each attempt draws a new boundary)."""
    zipped = make_zip({"s/SKILL.md": skill_md("idem")})
    skill = client.skills.create(files=("s.zip", zipped))
    try:
        posts = [
            (f"/v1/containers/{container}/files", {}, {"file": ("i.txt", b"data")}),
            ("/v1/files", {"purpose": "batch"}, {"file": ("i.txt", b"data")}),
            ("/v1/skills", {}, {"files": ("s.zip", zipped, "application/zip")}),
            (f"/v1/skills/{skill.id}/versions", {}, {"files": ("s.zip", zipped)}),
        ]
        for path, data, files in posts:
            h = {"Idempotency-Key": idempotency_key()}
            first = raw.post(path, data=data, files=files, headers=h)
            second = raw.post(path, data=data, files=files, headers=h)
            assert (first.status_code, second.status_code) == (200, 200), (path, second.text)
            assert first.json() == second.json(), path
            assert second.headers.get("Idempotent-Replayed") == "true"
            changed = {k: (v[0], b"other", *v[2:]) for k, v in files.items()}
            third = raw.post(path, data=data, files=changed, headers=h)
            assert third.status_code == 409, (path, third.text)
        assert len([f for f in client.containers.files.list(container) if "i" in f.path]) == 1
        assert [v.version for v in client.skills.versions.list(skill.id)] == ["2", "1"]
        mine = [f for f in client.files.list(purpose="batch") if f.filename == "i.txt"]
        assert len(mine) == 1
        client.files.delete(mine[0].id)
        for s in client.skills.list():
            if s.name == "idem" and s.id != skill.id:
                client.skills.delete(s.id)
    finally:
        client.skills.delete(skill.id)
