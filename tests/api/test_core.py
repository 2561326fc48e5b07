"""The core scenario through the official SDK, on every backend: create, upload, run code that
reads the upload and writes a file, the file is listed as the assistant's, delete → 404, and
nothing of the container is left on the host (for docker: no container in the engine)."""

from __future__ import annotations

import openai
import pytest

from bench import dockerd
from sandbox.host.dirs import instance_of
from tests.api.conftest import DaemonHandle, exec_
from tests.hosttraces import sandbox_dirs

pytestmark = pytest.mark.root


def test_create_upload_exec_files_delete(daemon: DaemonHandle, client: openai.OpenAI, raw) -> None:  # type: ignore[no-untyped-def]
    box = client.containers.create(name="core")
    state = daemon.root / "state"
    assert sandbox_dirs(state)[box.id].is_dir()
    client.containers.files.create(box.id, file=("factor.txt", b"6"))
    out = exec_(
        raw,
        box.id,
        "python3 -c \"print(int(open('factor.txt').read()) * 7)\"",
        "python3 -c \"open('/mnt/data/answer.txt', 'w').write('42')\"",
    )["output"]
    assert out[0]["stdout"] == "42\n"  # type: ignore[index]
    assert out[1]["outcome"] == {"type": "exit", "exit_code": 0}  # type: ignore[index]
    files = {f.path: f for f in client.containers.files.list(box.id)}
    assert files["/mnt/data/factor.txt"].source == "user"
    assert files["/mnt/data/answer.txt"].source == "assistant"
    got = client.containers.files.content.retrieve(
        files["/mnt/data/answer.txt"].id, container_id=box.id
    )
    assert got.read() == b"42"
    if daemon.backend == "docker":
        mine = f"sandboxd.id={box.id}"
        assert [c["State"] for c in dockerd.containers(daemon.engine_url, mine)] == ["running"]

    client.containers.delete(box.id)

    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(box.id)
    assert box.id not in sandbox_dirs(state)
    if daemon.backend == "docker":
        label = f"sandboxd.instance={instance_of(daemon.root / 'state')}"
        assert dockerd.containers(daemon.engine_url, f"sandboxd.id={box.id}") == []
        assert dockerd.containers(daemon.engine_url, label) == []
