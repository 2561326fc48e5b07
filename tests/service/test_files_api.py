"""/v1/files through the official SDK (in-process): uploads, owners, expiry, caps, pagination,
malformed multipart; nothing is left behind by a refused upload."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import openai
import pytest

from tests.service.conftest import InProcessDaemon as DaemonHandle


def _names(client: openai.OpenAI) -> list[str]:
    return [c.name for c in client.containers.list(limit=100)]


def _blobs(daemon: DaemonHandle, kind: str) -> list[str]:
    return sorted(p.name for p in (daemon.root / "state" / "blobs" / kind).iterdir())


def test_unknown_file_id_creates_nothing(
    client: openai.OpenAI, raw: httpx2.Client, container: str, uploaded: list[str]
) -> None:
    f = client.files.create(file=("ok.txt", b"ok"), purpose="user_data")
    uploaded.append(f.id)
    before = _names(client)
    for bad in ("file-doesnotexist", "not-an-id", "cntr_" + "0" * 48):
        with pytest.raises(openai.NotFoundError):
            client.containers.create(name="never", file_ids=[f.id, bad])
    assert _names(client) == before
    assert "never" not in before
    r = raw.post(f"/v1/containers/{container}/files", json={"file_id": "file-nope"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "file_id"
    r = raw.post(f"/v1/containers/{container}/files", json={"file_id": f.id, "x": 1})
    assert r.status_code == 400
    bad = raw.post("/v1/containers", json={"name": "x", "file_ids": [f.id, f.id]})
    assert bad.status_code == 400
    bad = raw.post("/v1/containers", json={"name": "x", "file_ids": "file-1"})
    assert bad.status_code == 400
    assert _names(client) == before


def test_foreign_files_are_not_found(daemon: DaemonHandle) -> None:
    url = daemon.tcp_url + "/v1"
    with (
        openai.OpenAI(base_url=url, api_key=daemon.keys["alice"], max_retries=0) as alice,
        openai.OpenAI(base_url=url, api_key=daemon.keys["bob"], max_retries=0) as bob,
    ):
        f = alice.files.create(file=("secret.txt", b"alice only"), purpose="user_data")
        try:
            assert f.id not in [x.id for x in bob.files.list()]
            with pytest.raises(openai.NotFoundError):
                bob.files.retrieve(f.id)
            with pytest.raises(openai.NotFoundError):
                bob.files.content(f.id)
            with pytest.raises(openai.NotFoundError):
                bob.files.delete(f.id)
            before = [c.id for c in bob.containers.list()]
            with pytest.raises(openai.NotFoundError):
                bob.containers.create(name="steal", file_ids=[f.id])
            assert [c.id for c in bob.containers.list()] == before
            assert alice.files.content(f.id).read() == b"alice only"
        finally:
            alice.files.delete(f.id)


def test_expired_files_answer_404_and_their_blobs_go(
    client: openai.OpenAI, daemon: DaemonHandle, uploaded: list[str]
) -> None:
    f = client.files.create(
        file=("short.txt", b"brief"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 1},
    )
    uploaded.append(f.id)
    assert f.expires_at == f.created_at + 1
    assert f.id in _blobs(daemon, "files")
    deadline = time.monotonic() + 10
    while f.id in _blobs(daemon, "files") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f.id not in _blobs(daemon, "files")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.create(name="late", file_ids=[f.id])
    assert f.id not in [x.id for x in client.files.list(limit=10000)]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"purpose": "nope"}, "purpose"),
        ({}, "purpose"),
        ({"purpose": "batch", "expires_after[anchor]": "created_at"}, "expires_after.seconds"),
        (
            {"purpose": "batch", "expires_after[anchor]": "now", "expires_after[seconds]": "5"},
            "expires_after.anchor",
        ),
        (
            {
                "purpose": "batch",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": str(10**9),
            },
            "expires_after.seconds",
        ),
    ],
)
def test_bad_uploads_are_400(
    raw: httpx2.Client, daemon: DaemonHandle, fields: dict[str, str], param: str
) -> None:
    r = raw.post("/v1/files", data=fields, files={"file": ("a.txt", b"a")})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert _blobs(daemon, "tmp") == []


def test_bad_names_and_missing_file_are_400(raw: httpx2.Client) -> None:
    r = raw.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a.txt", b"a")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = raw.post("/v1/files", data={"purpose": "batch"}, files={"file": ("..", b"a")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = raw.post("/v1/files", json={"purpose": "batch"})
    assert r.status_code == 400


def test_caps_are_413_and_keep_nothing(daemon: DaemonHandle, client: openai.OpenAI) -> None:
    before = [x.id for x in client.files.list(limit=10000)]
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("huge.bin", b"x" * ((4 << 20) + 1)), purpose="batch")
    assert info.value.status_code == 413
    assert [x.id for x in client.files.list(limit=10000)] == before
    assert _blobs(daemon, "tmp") == []
    url = daemon.tcp_url + "/v1"
    with openai.OpenAI(base_url=url, api_key=daemon.keys["bob"], max_retries=0) as bob:
        mine = []
        try:
            for i in range(3):  # 9 MiB of the 10 MiB an owner may keep
                made = bob.files.create(file=(f"p{i}.bin", b"y" * (3 << 20)), purpose="batch")
                mine.append(made.id)
            with pytest.raises(openai.APIStatusError) as info:
                bob.files.create(file=("p3.bin", b"y" * (3 << 20)), purpose="batch")
            assert info.value.status_code == 413
            assert sorted(x.id for x in bob.files.list()) == sorted(mine)
            assert _blobs(daemon, "tmp") == []
        finally:
            for fid in mine:
                bob.files.delete(fid)


def test_list_paginates_and_delete(client: openai.OpenAI, daemon: DaemonHandle) -> None:
    made = [client.files.create(file=(f"n{i}.txt", b"n"), purpose="evals").id for i in range(5)]
    try:
        page = client.files.list(purpose="evals", limit=2, order="asc")
        assert [x.id for x in page.data] == made[:2] and page.has_more
        assert [x.id for x in page] == made  # the SDK follows `after`
        gone = client.files.delete(made[0])
        assert (gone.id, gone.object, gone.deleted) == (made[0], "file", True)
        assert made[0] not in _blobs(daemon, "files")
        with pytest.raises(openai.NotFoundError):
            client.files.content(made[0])
    finally:
        for fid in made[1:]:
            client.files.delete(fid)


def test_blob_dir_is_private(daemon: DaemonHandle) -> None:
    blobs = Path(daemon.root / "state" / "blobs" / "files")
    assert blobs.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("path", ["/v1/files", "/v1/skills"])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"garbage", "multipart/form-data"),
        (b"--x\r\nnope\r\n\r\n", "multipart/form-data; boundary=x"),
        (b"", "multipart/form-data; boundary=x"),
        (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
            "multipart/form-data; boundary=x",
        ),
        (
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\nabc',
            "multipart/form-data; boundary=x",
        ),
    ],
)
def test_malformed_multipart_is_400_and_keeps_nothing(
    raw: httpx2.Client, daemon: DaemonHandle, path: str, body: bytes, content_type: str
) -> None:
    r = raw.post(path, content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert _blobs(daemon, "tmp") == []


def test_admin_sees_every_owners_files(daemon: DaemonHandle) -> None:
    url = daemon.tcp_url + "/v1"
    with (
        openai.OpenAI(base_url=url, api_key=daemon.keys["alice"], max_retries=0) as alice,
        daemon.sdk("root") as client,  # an admin owner (server.admin_owners)
    ):
        f = alice.files.create(file=("a.txt", b"a"), purpose="vision")
        try:
            assert f.id in [x.id for x in client.files.list(purpose="vision")]
            assert client.files.retrieve(f.id).filename == "a.txt"
        finally:
            alice.files.delete(f.id)
