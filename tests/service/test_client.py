"""sandboxd_client on the in-process daemon (no root, no sandbox): pagination over many pages,
owners kept apart on TCP, typed errors with their request ids, idempotent creates."""

from __future__ import annotations

import pytest
import sandboxd_client as sc
from sandboxd_client import _routes

from tests.service.conftest import InProcessDaemon
from tests.skillzips import make_zip, skill_md


def test_every_container_over_many_pages_in_both_orders(daemon: InProcessDaemon) -> None:
    with sc.Client(socket=daemon.socket, env={}) as sbx:
        made = [sbx.containers.create(f"pager-{i}").id for i in range(7)]
        assert [c.id for c in sbx.containers.list(page_size=2)] == made  # four pages
        assert [c.id for c in sbx.containers.list(order="desc", page_size=3)] == made[::-1]
        assert [c.id for c in sbx.containers.list(name="pager-3")] == [made[3]]
        first = sbx.containers.page(limit=2, order="asc")
        assert first.has_more and first.last_id == made[1]
        # the daemon's default order is newest first
        assert [c.id for c in sbx.containers.page(limit=2, after=first.last_id).data] == [made[0]]
        assert [c.id for c in sbx.containers.page(limit=2, order="asc", after=made[1]).data] == (
            made[2:4]
        )


async def test_async_pages_of_files_and_skills(daemon: InProcessDaemon) -> None:
    async with sc.AsyncClient(url=daemon.tcp_url, api_key=daemon.keys["alice"], env={}) as sbx:
        files = [(await sbx.files.create(b"p", filename=f"p{i}.txt")).id for i in range(5)]
        assert [f.id async for f in sbx.files.list(page_size=2)] == files
        skills = []
        for i in range(3):
            zipped = make_zip({f"s{i}/SKILL.md": skill_md(f"pager-{i}")})
            skills.append((await sbx.skills.create(zipped)).id)
        assert [s.id async for s in sbx.skills.list(page_size=1)] == skills


def test_owners_errors_and_request_ids(daemon: InProcessDaemon) -> None:
    alice = sc.Client(url=daemon.tcp_url, api_key=daemon.keys["alice"], env={})
    bob = sc.Client(url=daemon.tcp_url, api_key=daemon.keys["bob"], env={})
    with alice, bob:
        box = alice.containers.create("alices")
        with pytest.raises(sc.NotFound) as caught:
            bob.containers.retrieve(box.id)
        assert caught.value.request_id and f"(request {caught.value.request_id})" in str(
            caught.value
        )
        assert caught.value.code == "not_found" and caught.value.status == 404
        assert [c.id for c in bob.containers.list()] == []
        with pytest.raises(sc.InvalidRequest) as bad:
            alice.containers.create("x", expires_after_minutes=0)
        assert bad.value.param is not None and bad.value.request_id
        with pytest.raises(sc.InvalidRequest):
            alice.containers.page(limit=1000)
    with sc.Client(url=daemon.tcp_url, api_key="sk-nobody", env={}) as nobody:
        with pytest.raises(sc.Unauthorized) as refused:
            nobody.containers.page()
        assert refused.value.request_id


def test_creating_calls_carry_an_idempotency_key(daemon: InProcessDaemon) -> None:
    """Two calls are two creates (a key per call); one call's retries share its key, which
    the daemon replays: shown by sending one call's request twice."""
    with sc.Client(socket=daemon.socket, env={}) as sbx:
        assert sbx.files.create(b"a", filename="a").id != sbx.files.create(b"a", filename="a").id
        call = _routes.create_container("twice", None, None, None, None, None)
        key = "fixed-key-for-this-test"
        replies = []
        for _ in range(2):
            response = sbx._http.post(call.path, json=call.json, headers=call.headers(key))
            replies.append(response)
        assert replies[0].json()["id"] == replies[1].json()["id"]
        assert replies[1].headers.get("Idempotent-Replayed") == "true"
