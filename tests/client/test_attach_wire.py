"""The attachment's wire, without a daemon (no root, no sandbox): the sans-IO WebSocket
decoder on frames cut anywhere, the handshake's checks and a refusal's error, and both
attachments (blocking, asyncio) against a local aiohttp WebSocket server that plays the
attach contract, on a unix socket and on TCP with a bearer key."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import sandboxd_client as sc
from aiohttp import web
from sandboxd_client import websocket as ws
from sandboxd_client._attach import MAX_INPUT_FRAME, Endpoint, Session

KEY = "sk-wire"
PROCESS = {
    "id": "proc_" + "1" * 32,
    "object": "container.process",
    "container_id": "cntr_x",
    "command": "cat",
    "status": "running",
    "created_at": 1,
    "output_bytes": 0,
    "tty": True,
    "cols": 80,
    "rows": 24,
}


def server_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked frame, as a server sends."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        return struct.pack("!BB", b0, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


def test_the_decoder_joins_fragments_around_control_frames_cut_anywhere() -> None:
    big = bytes(range(256)) * 300  # a 16-bit length, then a 64-bit one
    huge = b"x" * 70000
    stream = (
        server_frame(ws.TEXT, b"hel", fin=False)
        + server_frame(ws.PING, b"?")
        + server_frame(ws.CONTINUATION, b"lo")
        + server_frame(ws.BINARY, big)
        + server_frame(ws.BINARY, huge)
        + server_frame(ws.CLOSE, struct.pack("!H", 1000))
    )
    decoder = ws.Decoder(1 << 20)
    got: list[ws.Message] = []
    for i in range(0, len(stream), 7):
        got += decoder.feed(stream[i : i + 7])
    assert got == [
        ws.Message(ws.PING, b"?"),
        ws.Message(ws.TEXT, b"hello"),
        ws.Message(ws.BINARY, big),
        ws.Message(ws.BINARY, huge),
        ws.Message(ws.CLOSE, struct.pack("!H", 1000)),
    ]
    assert ws.close_code(got[-1].data) == 1000


@pytest.mark.parametrize(
    "frame",
    [
        server_frame(ws.TEXT, b"x", rsv=0x40),  # a compressed frame: none was negotiated
        bytes([0x82, 0x81]) + b"mask" + b"x",  # a masked frame from the server
        server_frame(ws.PING, b"x", fin=False),  # a fragmented control frame
        server_frame(3, b"x"),  # an unknown opcode
        server_frame(ws.CONTINUATION, b"x"),  # a continuation of nothing
        server_frame(ws.BINARY, b"y" * 101),  # over the cap
    ],
)
def test_the_decoder_refuses_what_breaks_the_protocol(frame: bytes) -> None:
    with pytest.raises(ws.WebSocketError):
        ws.Decoder(100).feed(frame)


def test_our_frames_are_masked_and_decode_back() -> None:
    for payload in (b"", b"a" * 125, b"b" * 126, b"c" * 70000):
        frame = ws.frame(ws.BINARY, payload)
        assert frame[1] & 0x80
        start = {126: 4, 127: 10}.get(frame[1] & 0x7F, 2)
        mask, body = frame[start : start + 4], frame[start + 4 :]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload


def test_input_is_split_under_the_daemons_frame_cap() -> None:
    session = Session(Endpoint.of(sc.Target(socket="/x")), "/p")
    data = session.input(b"z" * (2 * MAX_INPUT_FRAME + 1))
    sizes, at = [], 0
    while at < len(data):
        n = data[at + 1] & 0x7F
        start = {126: 4, 127: 10}.get(n, 2)
        n = struct.unpack_from("!H", data, at + 2)[0] if n == 126 else n
        sizes.append(n)
        at += start + 4 + n
    assert sizes == [MAX_INPUT_FRAME, MAX_INPUT_FRAME, 1]


def test_a_refusal_before_the_upgrade_is_the_daemons_error() -> None:
    session = Session(Endpoint.of(sc.Target(url="http://127.0.0.1:1/base", api_key=KEY)), "/p")
    request = session.request.decode()
    assert request.startswith("GET /base/p HTTP/1.1\r\n")
    assert f"Authorization: Bearer {KEY}\r\n" in request and "Host: 127.0.0.1:1\r\n" in request
    body = json.dumps(
        {"error": {"message": "No process.", "type": "invalid_request_error", "code": None}}
    ).encode()
    reply = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        b"x-request-id: req_1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert session.handshake(reply[:30]) is None
    with pytest.raises(sc.NotFound) as refused:
        session.handshake(reply[30:])
    assert refused.value.message == "No process." and refused.value.request_id == "req_1"
    wrong = Session(Endpoint.of(sc.Target(socket="/x")), "/p")
    with pytest.raises(sc.ProtocolError):
        wrong.handshake(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n"
        )


# ---------------------------------------------------------------- a server of the contract


@dataclass
class Seen:
    """What the fake daemon received on its attachments."""

    input: bytearray = field(default_factory=bytearray)
    controls: list[dict[str, object]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)


SEEN = web.AppKey("seen", Seen)
TCP = web.AppKey("tcp", bool)


async def attach_route(request: web.Request) -> web.StreamResponse:
    seen = request.app[SEEN]
    seen.auth.append(request.headers.get("Authorization"))
    seen.queries.append(dict(request.query))
    if request.app[TCP] and request.headers.get("Authorization") != f"Bearer {KEY}":
        return web.json_response({"error": {"message": "bad key", "code": None}}, status=401)
    if request.match_info["pid"] != PROCESS["id"]:
        error = {"message": "No process found.", "type": "invalid_request_error", "code": None}
        return web.json_response({"error": error}, status=404)
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    await sock.send_str(json.dumps({"type": "attached", "process": PROCESS, "offset": 5,
                                    "writer": True}))  # fmt: skip
    await sock.send_str(json.dumps({"type": "dropped", "bytes": 5}))
    await sock.send_bytes(b"hello ")
    await sock.ping(b"p")
    await sock.send_bytes(b"world")
    async for msg in sock:
        if msg.type == aiohttp.WSMsgType.BINARY:
            seen.input += msg.data
            await sock.send_bytes(msg.data)  # an echo, as a terminal's
        elif msg.type == aiohttp.WSMsgType.TEXT:
            control = json.loads(msg.data)
            seen.controls.append(control)
            if control["type"] == "signal":
                await sock.send_str(json.dumps({"type": "writer", "writer": False}))
                await sock.send_str(json.dumps({"type": "error", "code": "not_writer",
                                                "message": "not the writer"}))  # fmt: skip
            if control["type"] == "eof":
                await sock.send_str(json.dumps({"type": "exit", "exit_code": 3,
                                                "killed": None, "offset": 99}))  # fmt: skip
                await sock.close(code=1000)
    return sock


@pytest.fixture(params=["unix", "tcp"])
async def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[sc.Target, Seen]]:
    tcp = request.param == "tcp"
    app = web.Application()
    app[SEEN], app[TCP] = Seen(), tcp
    app.router.add_get("/v1/containers/{cid}/processes/{pid}/attach", attach_route)
    runner = web.AppRunner(app)
    await runner.setup()
    if tcp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        site: web.BaseSite = web.TCPSite(runner, "127.0.0.1", port)
        target = sc.Target(url=f"http://127.0.0.1:{port}", api_key=KEY)
    else:
        sock = str(tmp_path / "d.sock")
        site = web.UnixSite(runner, sock)
        target = sc.Target(socket=sock)
    await site.start()
    try:
        yield target, app[SEEN]
    finally:
        await runner.cleanup()


def client_args(target: sc.Target) -> dict[str, str | None]:
    if target.url:
        return {"url": target.url, "api_key": target.api_key}
    return {"socket": target.socket}


def expect_conversation(items: list[object], seen: Seen, big: bytes) -> None:
    output = b"".join(i for i in items if isinstance(i, bytes))
    events = [i for i in items if not isinstance(i, bytes)]
    assert output == b"hello world" + big
    assert [type(e) for e in events] == [
        sc.Attached, sc.Dropped, sc.WriterChanged, sc.AttachError, sc.AttachExit,
    ]  # fmt: skip
    attached, _, _, error, ended = events
    assert isinstance(attached, sc.Attached) and attached.process.tty and attached.offset == 5
    assert isinstance(error, sc.AttachError) and error.code == "not_writer"
    assert isinstance(ended, sc.AttachExit) and (ended.exit_code, ended.offset) == (3, 99)
    assert seen.input == big
    assert seen.controls == [
        {"type": "resize", "cols": 100, "rows": 40},
        {"type": "signal", "signal": "INT"},
        {"type": "eof"},
    ]
    assert seen.queries[-1] == {"mode": "rw", "offset": "0"}


async def test_the_asyncio_attachment_plays_the_contract(
    server: tuple[sc.Target, Seen],
) -> None:
    target, seen = server
    big = b"k" * (3 * MAX_INPUT_FRAME)
    async with sc.AsyncClient(**client_args(target), env={}) as client:  # type: ignore[arg-type]
        with pytest.raises(sc.NotFound):
            await client.processes.attach("cntr_x", "proc_other")
        async with await client.processes.attach("cntr_x", str(PROCESS["id"]), offset=0) as a:
            items: list[object] = [await a.recv() for _ in range(4)]  # through "world"
            assert a.writer
            await a.send(big)
            await a.resize(100, 40)
            while len(b"".join(i for i in items if isinstance(i, bytes))) < 11 + len(big):
                items.append(await a.recv())
            await a.signal("INT")
            items += [await a.recv(), await a.recv()]  # the writer change and the error
            assert not a.writer
            await a.eof()
            items += [item async for item in a]
            assert a.close_code == 1000 and a.exit is not None
    expect_conversation(items, seen, big)
    assert seen.auth[-1] == (f"Bearer {KEY}" if target.url else None)


async def test_the_blocking_attachment_plays_the_contract(
    server: tuple[sc.Target, Seen],
) -> None:
    target, seen = server
    big = b"k" * (3 * MAX_INPUT_FRAME)

    def converse() -> list[object]:
        with sc.Client(**client_args(target), env={}) as client:  # type: ignore[arg-type]
            with pytest.raises(sc.NotFound):
                client.processes.attach("cntr_x", "proc_other")
            pid = str(PROCESS["id"])
            with client.processes.attach("cntr_x", pid, offset=0, timeout=10) as a:
                items: list[object] = [a.recv() for _ in range(4)]
                a.send(big)
                a.resize(100, 40)
                while len(b"".join(i for i in items if isinstance(i, bytes))) < 11 + len(big):
                    items.append(a.recv())
                a.signal("INT")
                items += [a.recv(), a.recv()]
                a.eof()
                items += list(a)
                assert a.close_code == 1000 and a.recv() is None
                with pytest.raises(sc.ConnectionFailed):
                    a.send(b"late")  # closed: nothing more goes out
            return items

    items = await asyncio.to_thread(converse)
    expect_conversation(items, seen, big)
