"""Container files: upload, list, retrieve, content, delete, and what code writes."""

from __future__ import annotations

import os

import httpx2
import openai
import pytest

from tests.api.conftest import exec_

pytestmark = pytest.mark.root


def test_upload_list_download_round_trip(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    payload = os.urandom(3 << 20) + b"\x00end"
    up = client.containers.files.create(container, file=("data.bin", payload))
    assert up.path == "/mnt/data/data.bin" and up.source == "user" and up.bytes == len(payload)
    assert up.id.startswith("cfile_") and up.container_id == container
    listed = {f.id: f for f in client.containers.files.list(container)}
    assert listed[up.id].path == "/mnt/data/data.bin"
    got = client.containers.files.content.retrieve(up.id, container_id=container).read()
    assert got == payload
    assert client.containers.files.retrieve(up.id, container_id=container).bytes == len(payload)
    out = exec_(raw, container, "sha256sum data.bin | cut -d' ' -f1")
    import hashlib

    assert out["output"][0]["stdout"] == hashlib.sha256(payload).hexdigest() + "\n"  # type: ignore[index]


def test_name_clash_gets_a_suffix(client: openai.OpenAI, container: str) -> None:
    a = client.containers.files.create(container, file=("report.txt", b"one"))
    b = client.containers.files.create(container, file=("report.txt", b"two"))
    assert (a.path, b.path) == ("/mnt/data/report.txt", "/mnt/data/report (1).txt")
    assert client.containers.files.content.retrieve(b.id, container_id=container).read() == b"two"


def test_files_written_by_code_are_assistant_files(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    exec_(raw, container, "mkdir -p out && printf hello > out/result.txt")
    files = {f.path: f for f in client.containers.files.list(container)}
    made = files["/mnt/data/out/result.txt"]
    assert made.source == "assistant" and made.bytes == 5
    assert (
        client.containers.files.content.retrieve(made.id, container_id=container).read() == b"hello"
    )
    exec_(raw, container, "rm out/result.txt")
    assert "/mnt/data/out/result.txt" not in [
        f.path for f in client.containers.files.list(container)
    ]


def test_delete_file(client: openai.OpenAI, raw: httpx2.Client, container: str) -> None:
    up = client.containers.files.create(container, file=("gone.txt", b"x"))
    r = raw.delete(f"/v1/containers/{container}/files/{up.id}")
    assert r.status_code == 200
    assert r.json() == {"id": up.id, "object": "container.file.deleted", "deleted": True}
    out = exec_(raw, container, "test -e gone.txt; echo $?")
    assert out["output"][0]["stdout"] == "1\n"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(up.id, container_id=container)


def test_symlink_to_host_file_never_serves_host_content(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    up = client.containers.files.create(container, file=("victim.txt", b"mine"))
    # Code replaces the uploaded file with a symlink to a file that only exists on the host.
    exec_(
        raw, container, "rm victim.txt && ln -s /etc/shadow victim.txt && ln -s /proc/1/environ env"
    )
    r = raw.get(f"/v1/containers/{container}/files/{up.id}/content")
    # The record still names the path; the agent refuses to follow it out of the workspace.
    assert r.status_code == 400, r.text
    assert "outside" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert b"root:" not in r.content
    paths = [f.path for f in client.containers.files.list(container)]
    assert "/mnt/data/env" not in paths and "/mnt/data/victim.txt" not in paths
