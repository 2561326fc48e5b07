"""/v1/files copied into real sandboxes: file_ids at create, file_id later, large files, and a
copy that fails. The rest of /v1/files runs in-process (tests/service/test_files_api.py)."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle, exec_

pytestmark = pytest.mark.root


def _names(client: openai.OpenAI) -> list[str]:
    return [c.name for c in client.containers.list(limit=100)]


def test_file_ids_copy_into_the_container(
    client: openai.OpenAI, raw: httpx2.Client, uploaded: list[str]
) -> None:
    payload = b"hello from the files api\n\x00\xff"
    f = client.files.create(file=("notes.txt", payload), purpose="user_data")
    uploaded.append(f.id)
    assert f.id.startswith("file-") and f.id[5:].isalnum()
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == (
        "file", len(payload), "notes.txt", "user_data", "processed"
    )  # fmt: skip
    assert f.expires_at is None
    assert client.files.retrieve(f.id).filename == "notes.txt"
    assert client.files.content(f.id).read() == payload
    assert f.id in [x.id for x in client.files.list(purpose="user_data")]
    assert f.id not in [x.id for x in client.files.list(purpose="batch")]

    box = client.containers.create(name="with-files", file_ids=[f.id])
    try:
        got = exec_(raw, box.id, "base64 -w0 /mnt/data/notes.txt")
        assert base64.b64decode(got["output"][0]["stdout"]) == payload  # type: ignore[index]
        listed = {x.path: x for x in client.containers.files.list(box.id)}
        copied = listed["/mnt/data/notes.txt"]
        assert copied.source == "user" and copied.bytes == len(payload)
        content = client.containers.files.content.retrieve(copied.id, container_id=box.id)
        assert content.read() == payload
        # A copy later, by file_id (the SDK sends JSON): a name clash gets a suffix.
        again = client.containers.files.create(box.id, file_id=f.id)
        assert (again.path, again.source) == ("/mnt/data/notes (1).txt", "user")
    finally:
        client.containers.delete(box.id)


def test_cat_prints_the_uploaded_bytes(
    client: openai.OpenAI, raw: httpx2.Client, uploaded: list[str]
) -> None:
    f = client.files.create(file=("greeting.txt", b"hi there\n"), purpose="assistants")
    uploaded.append(f.id)
    box = client.containers.create(name="cat", file_ids=[f.id])
    try:
        out = exec_(raw, box.id, "cat /mnt/data/greeting.txt")
        assert out["output"][0]["stdout"] == "hi there\n"  # type: ignore[index]
    finally:
        client.containers.delete(box.id)


def test_large_file_streams_through(
    client: openai.OpenAI, raw: httpx2.Client, uploaded: list[str]
) -> None:
    payload = os.urandom((3 << 20) + 17)
    f = client.files.create(file=("big.bin", payload), purpose="user_data")
    uploaded.append(f.id)
    assert client.files.content(f.id).read() == payload
    box = client.containers.create(name="big", file_ids=[f.id])
    try:
        out = exec_(raw, box.id, "sha256sum big.bin | cut -d' ' -f1")
        assert out["output"][0]["stdout"] == hashlib.sha256(payload).hexdigest() + "\n"  # type: ignore[index]
    finally:
        client.containers.delete(box.id)


def test_a_copy_that_fails_destroys_the_new_container(
    client: openai.OpenAI, daemon: DaemonHandle, uploaded: list[str]
) -> None:
    good = client.files.create(file=("good.txt", b"fine"), purpose="user_data")
    bad = client.files.create(file=("bad.txt", b"blob goes missing"), purpose="user_data")
    uploaded += [good.id, bad.id]
    (daemon.root / "state" / "blobs" / "files" / bad.id).unlink()  # the copy will fail
    sandboxes = daemon.root / "state" / "sandboxes"
    before_dirs = sorted(p.name for p in sandboxes.iterdir())
    before = _names(client)
    with pytest.raises(openai.NotFoundError):
        client.containers.create(name="rolled-back", file_ids=[good.id, bad.id])
    assert _names(client) == before
    assert sorted(p.name for p in sandboxes.iterdir()) == before_dirs
