"""The client's own logic, without a daemon: SSE decoding, the retry rule, discovery, error
mapping and lenient typed parsing; and retries against a tiny local server that answers 429
first (no root, no sandbox)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sandboxd_client as sc
from aiohttp import web
from sandboxd_client import models
from sandboxd_client._core import Multipart, Part, Resume, RetryPolicy, SseDecoder
from sandboxd_client.discovery import discover
from sandboxd_client.errors import api_error


def test_sse_decoder_skips_keepalives_and_joins_split_events() -> None:
    decoder = SseDecoder()
    stream = b': keepalive\n\ndata: {"type": "stdout", "data": "a"}\n\n: keepalive\n\n'
    stream += b'data: {"type":"done",\r\ndata: "max_output_length": 5}\r\n\r\n'
    events = []
    for i in range(0, len(stream), 7):  # chunk boundaries anywhere, even inside a line
        events += decoder.feed(stream[i : i + 7])
    assert events == [{"type": "stdout", "data": "a"}, {"type": "done", "max_output_length": 5}]


def test_sse_decoder_refuses_what_is_not_an_event_object() -> None:
    with pytest.raises(sc.ProtocolError):
        SseDecoder().feed(b"data: [1]\n\n")
    with pytest.raises(sc.ProtocolError):
        SseDecoder().feed(b"data: {nope\n\n")


@pytest.mark.parametrize(
    ("status", "headers", "attempt", "expected"),
    [
        (429, {"x-should-retry": "true", "retry-after": "1"}, 0, 1.0),
        (429, {"x-should-retry": "false"}, 0, None),  # quota: retrying cannot help
        (409, {"x-should-retry": "true", "retry-after": "0"}, 1, 0.0),
        (429, {"x-should-retry": "true", "retry-after": "1"}, 2, None),  # attempts spent
        (400, {}, 0, None),
        (503, {"x-should-retry": "true", "retry-after": "600"}, 0, None),  # too long to hide
    ],
)
def test_retry_follows_the_daemons_headers(
    status: int, headers: dict[str, str], attempt: int, expected: float | None
) -> None:
    assert RetryPolicy(max_retries=2).delay(attempt, status, headers) == expected


def test_retry_backs_off_without_retry_after() -> None:
    delay = RetryPolicy().delay(1, 503, {})
    assert delay is not None and 0.75 <= delay <= 1.0


def test_discovery_uses_the_clis_rules(tmp_path: Path) -> None:
    env = {"SANDBOXD_URL": "http://127.0.0.1:9", "SANDBOXD_API_KEY": "k", "XDG_RUNTIME_DIR": "/x"}
    assert discover(env=env, euid=1000) == sc.Target(url="http://127.0.0.1:9", api_key="k")
    # a socket named explicitly wins over $SANDBOXD_URL
    assert discover(socket="/s", env=env, euid=1000) == sc.Target(socket="/s")
    assert discover(env={"SANDBOXD_SOCKET": "/e"}, euid=0) == sc.Target(socket="/e")
    assert discover(env={}, euid=0).socket == "/run/sandboxd/sandboxd.sock"
    assert discover(env={"XDG_RUNTIME_DIR": "/x"}, euid=1000).socket == "/x/sandboxd.sock"
    assert discover(env={}, euid=1000).socket == "/tmp/sandboxd-1000/sandboxd.sock"
    with pytest.raises(ValueError, match="not both"):
        discover(socket="/s", url="http://127.0.0.1:9", env={})


def test_errors_map_codes_and_carry_the_request_id() -> None:
    body = {"error": {"message": "No such.", "type": "invalid_request_error", "code": "not_found"}}
    exc = api_error(404, body, "req_1")
    assert isinstance(exc, sc.NotFound) and exc.message == "No such."
    assert str(exc) == "No such. (request req_1)" and exc.request_id == "req_1"
    busy = api_error(429, {"error": {"message": "m", "code": "insufficient_capacity"}}, "r")
    assert isinstance(busy, sc.CapacityExceeded) and isinstance(busy, sc.QuotaExceeded)
    assert isinstance(api_error(502, None, "r", b"<html>bad gateway"), sc.ServerError)
    assert "bad gateway" in str(api_error(502, None, "r", b"<html>bad gateway"))
    assert type(api_error(418, {"error": {"message": "m", "code": "new_code"}}, None)) is (
        sc.APIError
    )


def test_models_tolerate_new_fields_and_refuse_wrong_types() -> None:
    raw = {
        "id": "cntr_1", "object": "container", "name": "n", "status": "running",
        "created_at": 1, "last_active_at": 2, "expires_at": 3, "memory_limit": "1g",
        "expires_after": {"anchor": "last_active_at", "minutes": 20}, "new_field": [1],
    }  # fmt: skip
    box = sc.Container.parse(raw)
    assert box.expires_after == sc.ExpiresAfter("last_active_at", 20)
    assert box.raw["new_field"] == [1] and box.status_reason is None
    with pytest.raises(sc.ProtocolError, match="created_at"):
        sc.Container.parse({**raw, "created_at": "1"})
    with pytest.raises(sc.ProtocolError, match="missing"):
        sc.Container.parse({k: v for k, v in raw.items() if k != "id"})
    result = sc.CommandResult.parse(
        {"outcome": {"type": "timeout"}, "truncated": False, "duration_ms": 5, "stdout": "x"}
    )
    assert result.timed_out and result.exit_code is None and result.stderr == ""


def test_multipart_length_matches_what_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 300_000)
    body = Multipart([Part("purpose", b"user_data"), Part("file", path, "dätä.bin")])
    sent = b"".join(body.chunks())
    assert len(sent) == body.length()
    assert b"filename*=UTF-8''d%C3%A4t%C3%A4.bin" in sent


# ---------------------------------------------------------------- retries, on a local server


class Flaky:
    """Answers the first `refusals` requests with a retryable 429, then 200; keeps headers."""

    def __init__(self, refusals: int, retry: str = "true") -> None:
        self.refusals = refusals
        self.retry = retry
        self.seen: list[dict[str, str]] = []
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        self.bodies.append(await request.read())
        if len(self.seen) <= self.refusals:
            error = {"message": "Busy.", "type": "rate_limit_exceeded", "code": "sandbox_busy"}
            return web.json_response(
                {"error": {**error, "param": None}},
                status=429,
                headers={"x-should-retry": self.retry, "Retry-After": "0",
                         "x-request-id": f"req_{len(self.seen)}"},
            )  # fmt: skip
        made = {"id": "file_1", "object": "file", "bytes": 2, "created_at": 1}
        return web.json_response({**made, "filename": "a.txt", "purpose": "user_data"})


@pytest.fixture
async def flaky_server(tmp_path: Path) -> AsyncIterator[tuple[str, Flaky]]:
    flaky = Flaky(refusals=2)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "flaky.sock")
    site = web.UnixSite(runner, sock)
    await site.start()
    yield sock, flaky
    await runner.cleanup()


async def test_a_429_is_retried_with_one_idempotency_key(flaky_server: tuple[str, Flaky]) -> None:
    sock, flaky = flaky_server
    async with sc.AsyncClient(socket=sock, env={}) as sbx:
        made = await sbx.files.create(b"hi", filename="a.txt")
    assert made.id == "file_1"
    assert len(flaky.seen) == 3
    keys = {h.get("Idempotency-Key") for h in flaky.seen}
    assert len(keys) == 1 and None not in keys  # one key, sent on every attempt
    assert len(set(flaky.bodies)) == 1 and b"hi" in flaky.bodies[0]  # the body re-sent whole


async def test_retries_end_with_the_error_and_its_request_id(
    flaky_server: tuple[str, Flaky],
) -> None:
    sock, flaky = flaky_server
    flaky.refusals = 10
    async with sc.AsyncClient(socket=sock, env={}, max_retries=1) as sbx:
        with pytest.raises(sc.SandboxBusy) as caught:
            await sbx.containers.retrieve("cntr_x")
    assert len(flaky.seen) == 2 and caught.value.request_id == "req_2"
    assert "(request req_2)" in str(caught.value) and caught.value.status == 429
    assert "Idempotency-Key" not in flaky.seen[0]  # a GET creates nothing


async def test_no_retry_where_the_daemon_says_so(flaky_server: tuple[str, Flaky]) -> None:
    sock, flaky = flaky_server
    flaky.retry = "false"
    # the blocking client, on a thread: the server runs on this test's loop

    def call() -> None:
        with sc.Client(socket=sock, env={}) as sbx, pytest.raises(sc.SandboxBusy):
            sbx.files.create(b"x", filename="a.txt")

    await asyncio.to_thread(call)
    assert len(flaky.seen) == 1


def test_process_events_and_how_a_follower_resumes() -> None:
    start = models.process_event({"type": "start", "offset": 10, "dropped": 10})
    chunk = models.process_event({"type": "stdout", "data": "a", "next_offset": 11})
    end = models.process_event({"type": "end", "reason": "shutdown", "next_offset": 11})
    assert isinstance(start, sc.OutputStart) and isinstance(chunk, sc.ProcessChunk)
    assert isinstance(end, sc.OutputEnd) and models.process_event({"type": "new"}) is None
    resume = Resume(0, max_reconnects=2)
    resume.seen(start)
    assert resume.offset == 10
    lost = sc.ConnectionFailed("gone")
    assert resume.retry_in(lost) == 0.5 and resume.retry_in(sc.StreamEnded("cut")) == 1.0
    assert resume.retry_in(lost) is None  # two failures in a row without output: give up
    resume.seen(end)  # neither a start nor the daemon's end is progress
    assert resume.retry_in(lost) is None
    resume.seen(chunk)
    assert resume.offset == 11 and resume.retry_in(lost) == 0.5
    stale = models.process_event({"type": "stdout", "data": "b", "next_offset": 3})
    assert stale is not None
    resume.seen(stale)
    assert resume.offset == 11  # never back: what was shown is not shown again
    assert resume.retry_in(sc.SocketPermissionDenied("no")) is None
    assert resume.retry_in(api_error(404, {"error": {"message": "m"}}, None)) is None
