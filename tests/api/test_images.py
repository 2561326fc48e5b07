"""GET /v1/images and the `image` of a create on the shared API daemon (which has no built
image: only `host`); builds of real images are tests/e2e/test_images.py's."""

from __future__ import annotations

import httpx2
import openai

from tests.api.conftest import DaemonHandle


def test_host_is_listed_and_is_the_default(raw: httpx2.Client) -> None:
    r = raw.get("/v1/images")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["has_more"] is False
    host = body["data"][0]
    assert (host["id"], host["object"], host["name"], host["default"]) == (
        "host",
        "image",
        "host",
        True,
    )
    assert host["python_version"] and host["python_version"][0] == "3"
    one = raw.get("/v1/images/host")
    assert one.status_code == 200 and one.json() == host


def test_an_unknown_image_is_a_404(raw: httpx2.Client) -> None:
    for name in ("nope", "..", "python-data%2F..%2Fx"):
        r = raw.get(f"/v1/images/{name}")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_a_container_says_what_it_runs_on(raw: httpx2.Client, client: openai.OpenAI) -> None:
    r = raw.post("/v1/containers", json={"name": "img", "image": "host"})
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    try:
        assert r.json()["image"] == "host"
        assert raw.get(f"/v1/containers/{cid}").json()["image"] == "host"
        default = raw.post("/v1/containers", json={"name": "img2"})
        assert default.json()["image"] == "host"
        raw.delete(f"/v1/containers/{default.json()['id']}")
    finally:
        client.containers.delete(cid)


def test_an_unbuilt_image_is_refused_and_nothing_is_made(
    raw: httpx2.Client, daemon: DaemonHandle
) -> None:
    before = raw.get("/v1/containers", params={"limit": 100}).json()["data"]
    sandboxes = sorted(p.name for p in (daemon.root / "state" / "sandboxes").iterdir())
    for image, status in (("python-data", 400), ("Bad/Name", 400), (7, 400), ("x" * 65, 400)):
        r = raw.post("/v1/containers", json={"name": "img", "image": image})
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["param"] == "image" and error["type"] == "invalid_request_error"
    unknown = raw.post("/v1/containers", json={"name": "img", "image": "python-data"})
    assert "available images are host" in unknown.json()["error"]["message"]
    assert raw.get("/v1/containers", params={"limit": 100}).json()["data"] == before
    after = sorted(p.name for p in (daemon.root / "state" / "sandboxes").iterdir())
    assert after == sandboxes
