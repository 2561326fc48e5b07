"""daemon/api/output.py against a real aiohttp server: captured output becomes the same text
whether it goes out whole, in slices or as events (characters split anywhere, bytes that are
not UTF-8 as raw U+FFFD), and other strings keep JSON's ASCII escapes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.api.output import SLICE, Captured, SseReply, json_reply, sse_response
from daemon.errors import SandboxBusy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EURO = "\u20ac".encode()  # 3 bytes
# A euro sign straddling a chunk boundary and a slice boundary, bytes that are not UTF-8,
# and an incomplete character at the very end.
CHUNKS = [
    b"a" + EURO[:1],
    EURO[1:] + b"\xff\xfe",
    b"b" * (SLICE - 1) + EURO + b"c" * SLICE,
    b"\xe2\x82",
]
WHOLE = b"".join(CHUNKS).decode("utf-8", "replace")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[TestClient]]]:
    clients: list[TestClient] = []

    async def start(handler: Handler) -> TestClient:
        app = web.Application()
        app.router.add_get("/", handler)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def _captured(chunks: list[bytes]) -> Captured:
    captured = Captured()
    for chunk in chunks:
        captured.add(chunk)
    return captured


async def test_a_json_reply_carries_the_text_of_its_output(
    serve: Callable[[Handler], Awaitable[TestClient]],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        out = _captured(CHUNKS)
        return await json_reply(request, {"out": out, "path": "x\udcff", "n": [1, None, out]})

    client = await serve(handler)
    r = await client.get("/")
    raw = await r.read()
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "Content-Length" not in r.headers  # more than a slice: streamed
    assert json.loads(raw) == {"out": WHOLE, "path": "x\udcff", "n": [1, None, WHOLE]}
    assert b"\\ufffd" not in raw and "\ufffd".encode() in raw  # raw U+FFFD, 3 bytes
    assert b'"x\\udcff"' in raw  # a lone surrogate keeps its escape


async def test_a_small_reply_goes_out_whole(
    serve: Callable[[Handler], Awaitable[TestClient]],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await json_reply(request, {"out": _captured([b"hi\xff"]), "empty": Captured()})

    client = await serve(handler)
    r = await client.get("/")
    assert r.headers["Content-Length"] == str(len(await r.read()))
    assert await r.json() == {"out": "hi\ufffd", "empty": ""}


async def test_events_carry_the_same_text(
    serve: Callable[[Handler], Awaitable[TestClient]],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        events = await SseReply.open(request)
        for chunk in [*CHUNKS, "\u2028\x85".encode()]:
            await events.output("k", chunk, type="stdout", command_index=3)
        await events.flush("k")
        await events.send({"type": "done", "path": "x\udcff"})
        return await events.close()

    client = await serve(handler)
    r = await client.get("/")
    raw = await r.read()
    assert raw.endswith(b"\n\n")
    events = [json.loads(e.removeprefix(b"data: ")) for e in raw[:-2].split(b"\n\n")]
    assert all(e.count(b"\n") == 0 for e in raw[:-2].split(b"\n\n"))
    text = "".join(e["data"] for e in events[:-1])
    assert text == (b"".join(CHUNKS) + "\u2028\x85".encode()).decode("utf-8", "replace")
    assert {(e["type"], e["command_index"]) for e in events[:-1]} == {("stdout", 3)}
    assert all(len(e["data"].encode()) <= 3 * SLICE for e in events[:-1])
    assert events[-1] == {"type": "done", "path": "x\udcff"}
    assert "\u2028".encode() not in raw  # escaped: line splitters keep each event whole


async def test_a_quiet_stream_sends_keepalive_comments_and_ends_with_its_final_event(
    serve: Callable[[Handler], Awaitable[TestClient]],
) -> None:
    async def run(events: SseReply) -> dict[str, object]:
        await asyncio.sleep(0.35)  # a command with nothing to say for a while
        await events.output("k", b"late" + EURO[:2], type="stdout")  # ends mid-character
        return {"type": "done"}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, run, keepalive_s=0.1)

    client = await serve(handler)
    raw = await (await client.get("/")).read()
    frames = raw[:-2].split(b"\n\n")
    comments = [f for f in frames if f.startswith(b":")]
    assert len(comments) >= 2 and set(comments) == {b": keepalive"}
    events = [json.loads(f.removeprefix(b"data: ")) for f in frames if not f.startswith(b":")]
    # the decoder's tail goes out before the final event
    assert events == [
        {"type": "stdout", "data": "late"},
        {"type": "stdout", "data": "\ufffd"},
        {"type": "done"},
    ]


async def test_a_domain_error_ends_the_stream_with_an_error_event(
    serve: Callable[[Handler], Awaitable[TestClient]],
) -> None:
    async def run(events: SseReply) -> dict[str, object]:
        await events.output("k", b"partial " + EURO[:1], type="stderr")
        raise SandboxBusy("busy")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, run, keepalive_s=10)

    client = await serve(handler)
    r = await client.get("/")
    assert r.status == 200
    frames = (await r.read())[:-2].split(b"\n\n")
    events = [json.loads(f.removeprefix(b"data: ")) for f in frames]
    assert [e["type"] for e in events] == ["stderr", "stderr", "error"]
    assert events[-1]["error"]["code"] == "sandbox_busy"


async def test_output_read_at_offsets_says_where_a_reconnect_resumes(
    serve: Callable[[Handler], Awaitable[TestClient]],
) -> None:
    """A process's ring, stdout and stderr interleaved at absolute offsets: every text event's
    `next_offset` is where a reconnect resumes without losing a byte, also for a chunk split
    into several events and for a character one stream's decoder still holds when the other
    stream writes (then, and only then, the other stream's text before it comes again)."""
    big = b"x" * (SLICE + 100) + EURO + b"y" * (SLICE - 1) + EURO
    ring = [
        ("stdout", b"a" + EURO[:2]),  # held: the rest comes after a stderr chunk
        ("stderr", b"err1\n"),
        ("stdout", EURO[2:] + b"b\n"),
        ("stderr", big),  # several events of one chunk
        ("stdout", b"end" + EURO[:1]),  # incomplete at the very end: flushed as U+FFFD
    ]
    start = 1000  # the ring's first retained byte

    async def run(events: SseReply) -> dict[str, object]:
        at = start
        for stream, data in ring:
            await events.output(stream, data, at=at, type=stream)
            at += len(data)
        return {"type": "exit", "next_offset": at}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, run, keepalive_s=10)

    client = await serve(handler)
    raw = await (await client.get("/")).read()
    events = [json.loads(f.removeprefix(b"data: ")) for f in raw[:-2].split(b"\n\n")]
    assert len(events) > len(ring)  # the big chunk went out in slices

    def decoded_upto(end: int) -> dict[str, str]:
        """Each stream's text of the ring's bytes before `end` (complete characters only)."""
        kept: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        at = start
        for stream, data in ring:
            kept[stream] += data[: max(0, end - at)]
            at += len(data)
        return {s: b.decode("utf-8", "ignore") for s, b in kept.items()}

    seen = {"stdout": "", "stderr": ""}
    offsets = []
    for event in events[:-1]:
        seen[event["type"]] += event["data"]
        offsets.append(event["next_offset"])
        before = decoded_upto(event["next_offset"])
        for stream in seen:  # everything before the offset was seen: nothing is lost
            assert seen[stream].startswith(before[stream].rstrip("\ufffd")), event
        if event["next_offset"] not in (1001, 1006):  # while stdout holds half a euro sign
            assert before == {s: t.rstrip("\ufffd") for s, t in seen.items()}, event
    assert offsets == sorted(offsets) and offsets[-1] == events[-1]["next_offset"]
    assert seen["stderr"] == "err1\n" + big.decode()
    assert seen["stdout"] == "a\u20acb\nend\ufffd"
