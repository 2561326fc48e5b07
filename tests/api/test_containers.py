"""Containers on a real daemon: the create/exec/delete round trip, memory tiers applied, and
unix peer-uid ownership. The API-only cases run in-process (tests/service/test_containers.py)."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.api.conftest import DaemonHandle, exec_

pytestmark = pytest.mark.root


def test_create_retrieve_list_delete(client: openai.OpenAI, raw: httpx2.Client) -> None:
    created = client.containers.create(name="x", expires_after={"anchor": "last_active_at",
                                                                "minutes": 5})  # fmt: skip
    assert created.id.startswith("cntr_") and len(created.id) == 5 + 48
    assert created.status == "running"
    assert created.object == "container"
    assert created.memory_limit == "1g"
    assert created.expires_after is not None and created.expires_after.minutes == 5
    assert created.network_policy is not None and created.network_policy.type == "disabled"
    got = client.containers.retrieve(created.id)
    assert got.id == created.id and got.name == "x"
    assert created.id in [c.id for c in client.containers.list(limit=100)]
    out = exec_(raw, created.id, "python3 -c 'print(6*7)'")
    assert out["output"] == [
        {"stdout": "42\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0},
         "truncated": False, "duration_ms": out["output"][0]["duration_ms"]}  # type: ignore[index]
    ]  # fmt: skip
    r = raw.delete(f"/v1/containers/{created.id}")
    assert r.json() == {"id": created.id, "object": "container.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(created.id)
    assert (
        raw.post(f"/v1/containers/{created.id}/exec", json={"commands": ["true"]}).status_code
        == 404
    )


def test_memory_tier_is_applied(client: openai.OpenAI, raw: httpx2.Client) -> None:
    c = client.containers.create(name="tier", memory_limit="4g")
    try:
        assert c.memory_limit == "4g"
        out = exec_(raw, c.id, "cat /proc/self/status | grep -c . >/dev/null; echo ok")
        assert out["output"][0]["stdout"] == "ok\n"  # type: ignore[index]
    finally:
        client.containers.delete(c.id)


def test_unix_peer_uid_ownership(daemon: DaemonHandle, client: openai.OpenAI) -> None:
    """Another uid on the socket sees only its own containers; root sees everyone's."""
    import subprocess

    script = f"""
import http.client, json, socket, sys
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect({daemon.socket!r})
def call(method, path, body=None):
    c = Conn("localhost")
    c.request(method, path, body=json.dumps(body) if body else None,
              headers={{"Content-Type": "application/json"}})
    r = c.getresponse()
    return r.status, json.loads(r.read())
mine = call("POST", "/v1/containers", {{"name": "uid-4242"}})[1]
listed = [x["id"] for x in call("GET", "/v1/containers?limit=100")[1]["data"]]
other = call("GET", "/v1/containers/" + sys.argv[1])[0]
delete_other = call("DELETE", "/v1/containers/" + sys.argv[1])[0]
print(json.dumps({{"mine": mine["id"], "listed": listed, "other": other, "del": delete_other}}))
"""
    root_box = client.containers.create(name="root-box")
    try:
        proc = subprocess.run(
            ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups",
             "/usr/bin/python3", "-c", script, root_box.id],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        import json

        seen = json.loads(proc.stdout)
        assert seen["listed"] == [seen["mine"]]
        assert seen["other"] == 404 and seen["del"] == 404
        assert seen["mine"] in [c.id for c in client.containers.list(limit=100)]  # root sees all
        client.containers.delete(seen["mine"])
        client.containers.retrieve(root_box.id)
    finally:
        client.containers.delete(root_box.id)
