"""The container file index: bounded whatever code does to the workspace, every file name kept
byte for byte (names that are not UTF-8 included), and a workspace larger than one listing
answers with what fits and says so, never an error."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle, exec_
from tests.api.test_code import code

pytestmark = pytest.mark.root

RECORDS_CAP = 20000  # containers.max_file_records (default)
LISTED = 10000  # containers.max_files_listed (default)


@contextlib.contextmanager
def _db(daemon: DaemonHandle) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{daemon.root}/state/sandboxd.db?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def _records(daemon: DaemonHandle, cid: str, like: str = "%") -> int:
    with _db(daemon) as db:
        (n,) = db.execute(
            "SELECT COUNT(*) FROM container_files WHERE container_id = ? AND path LIKE ?",
            (cid, like),
        ).fetchone()
    return int(n)


def _list(raw: httpx2.Client, cid: str, **params: object) -> dict[str, object]:
    r = raw.get(f"/v1/containers/{cid}/files", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def test_a_non_utf8_name_written_by_code_is_kept_byte_for_byte(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    """open(b'/mnt/data/evil\\xff.txt', 'w') in /code: was a 500, the cell's stdout lost, and
    the container's files list and retrieve 500 for good."""
    cell = code(raw, container, "open(b'/mnt/data/evil\\xff.txt', 'w').write('bad')\nprint('kept')")
    assert cell["stdout"] == "kept\n"
    assert [f["path"] for f in cell["files"]] == ["/mnt/data/evil%FF.txt"]
    exec_(raw, container, "printf real > 'evil%FF.txt'")  # a name that looks like the escape
    files = {f.path: f for f in client.containers.files.list(container)}
    bad, real = files["/mnt/data/evil%FF.txt"], files["/mnt/data/evil%25FF.txt"]
    assert bad.id == cell["files"][0]["id"] and bad.bytes == 3
    assert client.containers.files.retrieve(bad.id, container_id=container).path == bad.path
    got = client.containers.files.content.retrieve(bad.id, container_id=container).read()
    assert got == b"bad"
    got = client.containers.files.content.retrieve(real.id, container_id=container).read()
    assert got == b"real"
    client.containers.files.delete(bad.id, container_id=container)
    out = exec_(raw, container, "ls | od -An -c | tr -s ' '")
    assert "e v i l 377" not in out["output"][0]["stdout"]  # type: ignore[index]
    assert [f.path for f in client.containers.files.list(container)] == [real.path]


def _multipart(name: bytes, data: bytes, fields: dict[str, str] | None = None) -> bytes:
    out = b""
    for key, val in (fields or {}).items():
        out += f'--XyZ\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{val}\r\n'.encode()
    out += b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
    return out + b"Content-Type: text/plain\r\n\r\n" + data + b"\r\n--XyZ--\r\n"


def test_a_non_utf8_upload_name_is_kept_byte_for_byte(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    body = _multipart(b"up\xfe.txt", b"uploaded")
    r = raw.post(f"/v1/containers/{container}/files", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/mnt/data/up%FE.txt"
    out = exec_(raw, container, "cat up\xfe.txt")  # the shell line is UTF-8: no such name
    assert out["output"][0]["stdout"] == ""  # type: ignore[index]
    out = exec_(raw, container, "cat \"$(printf 'up\\376.txt')\"")
    assert out["output"][0]["stdout"] == "uploaded"  # type: ignore[index]
    fid = r.json()["id"]
    assert client.containers.files.content.retrieve(fid, container_id=container).read() == (
        b"uploaded"
    )
    # /v1/files keeps the name the same way, and a copy into a container restores the bytes.
    body = _multipart(b"up2\xfe.txt", b"stored", {"purpose": "batch"})
    r = raw.post("/v1/files", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "up2%FE.txt"
    try:
        copied = raw.post(f"/v1/containers/{container}/files", json={"file_id": r.json()["id"]})
        assert copied.status_code == 200, copied.text
        assert copied.json()["path"] == "/mnt/data/up2%FE.txt"
        out = exec_(raw, container, "cat \"$(printf 'up2\\376.txt')\"")
        assert out["output"][0]["stdout"] == "stored"  # type: ignore[index]
    finally:
        client.files.delete(r.json()["id"])


def _tree(raw: httpx2.Client, cid: str, where: str, n: int) -> None:
    """n files with longish names, like headers copied into a project's third_party/."""
    out = exec_(
        raw,
        cid,
        f"mkdir -p {where} && cd {where} && seq -f 'boost_preprocessor_iteration_detail_%05g.hpp' "
        f"{n} | xargs touch",
        timeout_ms=120_000,
    )
    assert out["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}, out  # type: ignore[index]


def test_a_large_tree_lists_what_fits_with_a_marker(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    """12,128 files (more than one listing holds, and more than the agent's 1 MiB frame): was
    500 "sandbox misbehaved"."""
    _tree(raw, container, "proj/third_party/boost/include/boost/preprocessor", 12128)
    first = _list(raw, container)
    assert first["workspace_truncated"] is True and first["has_more"] is True
    assert _records(daemon, container) == LISTED
    seen = 0
    page = first
    while True:  # later pages read the index the first page refreshed
        seen += len(page["data"])  # type: ignore[arg-type]
        if not page["has_more"]:
            break
        page = _list(raw, container, after=page["last_id"])
    assert seen == LISTED
    exec_(raw, container, "rm -rf proj")
    after = _list(raw, container)
    assert (after["data"], after["workspace_truncated"]) == ([], False)


def test_renames_between_lists_cannot_grow_the_index(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    """Renaming a big dir between lists made 10,000 new records a list, forever (310,000 rows
    and lists 5x slower with a 20,000-file dir). Now what a listing covers is reconciled, and
    what it cannot reach is capped. (12,000 files: what the test workspace's inodes allow.)"""
    _tree(raw, container, "d0", 12000)
    _list(raw, container)
    assert _records(daemon, container) == LISTED
    timings = []
    for old, new in (("d0", "d1"), ("d1", "a0"), ("a0", "a1"), ("a1", "e0"), ("e0", "e1")):
        exec_(raw, container, f"mv {old} {new}")
        started = time.monotonic()
        body = _list(raw, container)
        timings.append(time.monotonic() - started)
        assert body["workspace_truncated"] is True
        rows = _records(daemon, container)
        assert rows <= RECORDS_CAP, (new, rows)
        assert _records(daemon, container, f"/mnt/data/{old}/%") == 0 or old > new, (old, new)
        assert _records(daemon, container, f"/mnt/data/{new}/%") == LISTED
    assert _records(daemon, container) == LISTED  # e1 sorts after everything it replaced
    assert max(timings) < 5 * min(timings) + 0.5, timings


def test_code_cells_that_rename_leave_no_stale_records(
    daemon: DaemonHandle, raw: httpx2.Client, container: str
) -> None:
    cell = code(
        raw, container, "import os\nos.makedirs('a')\nfor i in range(5): open(f'a/{i}', 'w')"
    )
    assert len(cell["files"]) == 5
    cell = code(raw, container, "os.rename('a', 'b')")
    assert sorted(f["path"] for f in cell["files"]) == [f"/mnt/data/b/{i}" for i in range(5)]
    assert _records(daemon, container, "/mnt/data/a/%") == 0  # no listing needed
    assert _records(daemon, container, "/mnt/data/b/%") == 5
