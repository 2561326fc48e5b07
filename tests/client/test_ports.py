"""Ports through the client against a real daemon (runc sandboxes): the server's answers
(4xx included) come back as PortResponse, the daemon's refusals raise; blocking and asyncio."""

from __future__ import annotations

import asyncio
import time

import pytest
import sandboxd_client as sc

pytestmark = pytest.mark.root

SERVER = "exec python3 -m http.server 8000 --bind 127.0.0.1"


def test_ports_blocking(sbx: sc.Client) -> None:
    cid = sbx.containers.create("ports").id
    try:
        sbx.exec(cid, "echo hi > /mnt/data/a.txt")
        sbx.processes.start(cid, SERVER)
        deadline = time.monotonic() + 20
        while True:
            try:
                r = sbx.ports.request(cid, 8000, "GET", "/a.txt", params={"v": "1"})
                break
            except sc.ServerError:
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.1)
        assert (r.status_code, r.content, r.text) == (200, b"hi\n", "hi\n")
        assert r.header("content-length") == "3" and r.header("x-sandboxd-port") is None
        # The server's own 404 is its answer, not the daemon's error.
        missing = sbx.ports.request(cid, 8000, path="/nope")
        assert missing.status_code == 404 and b"File not found" in missing.content
        with pytest.raises(sc.ServerError) as closed:
            sbx.ports.request(cid, 8001)
        assert (closed.value.status, closed.value.code) == (502, "port_unreachable")
        with pytest.raises(ValueError, match="port"):
            sbx.ports.request(cid, 0)
    finally:
        sbx.containers.delete(cid)
    with pytest.raises(sc.NotFound):
        sbx.ports.request(cid, 8000)


async def test_ports_asyncio(asbx: sc.AsyncClient) -> None:
    cid = (await asbx.containers.create("ports-async")).id
    try:
        await asbx.processes.start(cid, SERVER)
        deadline = time.monotonic() + 20
        while True:
            try:
                r = await asbx.ports.request(cid, 8000, "HEAD", "/")
                break
            except sc.ServerError:
                assert time.monotonic() < deadline, "the server never listened"
                await asyncio.sleep(0.1)
        assert (r.status_code, r.content) == (200, b"")
        assert r.header("content-type") is not None
        r = await asbx.ports.request(cid, 8000, "POST", "/", content=b"x")
        assert r.status_code == 501  # http.server has no POST: its answer, relayed
    finally:
        await asbx.containers.delete(cid)
