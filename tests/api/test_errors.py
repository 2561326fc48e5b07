"""Bad input gets a clear OpenAI-style error and changes nothing, on a real daemon: exec bodies,
uploads into a real workspace, unknown ids. Create bodies and list queries run in-process
(tests/service/test_errors.py, test_validation.py)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle
from tests.apifixtures import assert_error

pytestmark = pytest.mark.root


def test_bad_exec_bodies(raw: httpx2.Client, container: str) -> None:
    url = f"/v1/containers/{container}/exec"
    assert_error(raw.post(url, json={"commands": []}), 400, "commands")
    assert_error(raw.post(url, json={"commands": [1]}), 400, "commands")
    assert_error(raw.post(url, json={"commands": ["true"], "timeout_ms": -1}), 400, "timeout_ms")
    assert_error(raw.post(url, json={"commands": ["true"], "env": {"A-B": "x"}}), 400, "env")
    assert_error(raw.post(url, json={"commands": ["true"], "what": 1}), 400, "what")
    assert_error(raw.post(url, json={"commands": ["true"], "stream": "yes"}), 400, "stream")


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "..", ".", "x\\y", ""])
def test_path_traversal_in_upload_names(
    daemon: DaemonHandle, raw: httpx2.Client, container: str, name: str
) -> None:
    r = raw.post(f"/v1/containers/{container}/files", files={"file": (name, b"evil")})
    assert_error(r, 400, "file")
    assert not Path("/etc/x").exists()
    listing = raw.get(f"/v1/containers/{container}/files").json()["data"]
    assert listing == []


def test_oversized_upload_leaves_nothing(
    client: openai.OpenAI, raw: httpx2.Client, container: str
) -> None:
    r = raw.post(f"/v1/containers/{container}/files", files={"file": ("big.bin", b"x" * (9 << 20))})
    assert_error(r, 413)
    assert client.containers.files.list(container).data == []
    out = raw.post(f"/v1/containers/{container}/exec", json={"commands": ["ls -A | wc -l"]})
    assert out.json()["output"][0]["stdout"] == "0\n"


def test_upload_without_file_part(raw: httpx2.Client, container: str) -> None:
    r = raw.post(f"/v1/containers/{container}/files", files={"other": ("a.txt", b"x")})
    assert_error(r, 400, "file")
    r = raw.post(f"/v1/containers/{container}/files", json={"file_id": "file-abc"})
    assert_error(r, 404, "file_id")


def test_unknown_ids(raw: httpx2.Client, container: str) -> None:
    for path in (
        "/v1/containers/cntr_" + "0" * 48,
        "/v1/containers/../../etc/passwd",
        "/v1/containers/not-an-id",
        f"/v1/containers/{container}/files/cfile_" + "0" * 32,
        f"/v1/containers/{container}/files/cfile_" + "0" * 32 + "/content",
        f"/v1/containers/{container}/files/garbage",
    ):
        assert_error(raw.get(path), 404)
