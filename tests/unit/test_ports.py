"""The ports relay's HTTP/1.1 pieces without a sandbox: the request head it sends (hop-by-hop
headers, the names Connection lists and our Authorization dropped, Host and framing its
own, header bytes as the client sent them), the response heads it accepts, the port check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from daemon.errors import InvalidRequest, PortUnreachable
from daemon.ports import RelayRequest, check_port, parse_head, request_head


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield


def _req(
    headers: list[tuple[str, str]], *, length: int | None = None, chunked: bool = False
) -> RelayRequest:
    return RelayRequest("POST", "/a%20b?q=1", headers, length, chunked, _nothing())


def test_the_request_head_drops_hop_by_hop_and_our_key() -> None:
    headers = [
        ("Host", "localhost"),
        ("Authorization", "Bearer sk-ours"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "x"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "99"),
        ("Expect", "100-continue"),
        ("X-Kept", "yes"),
        ("Cookie", "a=1"),
        ("X-Bytes", "caf\udcc3\udca9"),  # aiohttp's decoding of b"caf\xc3\xa9"
    ]
    head = request_head(8000, _req(headers, length=5))
    assert head == (
        b"POST /a%20b?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nX-Kept: yes\r\nCookie: a=1\r\n"
        b"X-Bytes: caf\xc3\xa9\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    )
    chunked = request_head(1, _req([], chunked=True))
    assert b"\r\nTransfer-Encoding: chunked\r\n" in chunked
    assert b"Content-Length" not in chunked
    assert b"Content-Length" not in request_head(1, _req([]))


def test_a_header_that_cannot_be_sent_is_400() -> None:
    with pytest.raises(InvalidRequest):
        request_head(1, _req([("X", "\ud800")]))


def test_response_heads() -> None:
    head = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A:  b \r\n\r\n")
    assert (head.status, head.reason, head.headers) == (
        404,
        "Not Found",
        [("Content-Length", "3"), ("X-A", "b")],
    )
    assert parse_head(b"HTTP/1.0 200\r\n\r\n").reason == ""
    bad_heads = [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad name: x\r\n\r\n",
    ]
    for bad in bad_heads:
        with pytest.raises(PortUnreachable):
            parse_head(bad)


@pytest.mark.parametrize("text", ["0", "65536", "", "x", "+1", "1.0", "٣", "000001"])
def test_bad_ports(text: str) -> None:
    with pytest.raises(InvalidRequest):
        check_port(text)


@pytest.mark.parametrize(
    ("text", "port"), [("1", 1), ("8000", 8000), ("65535", 65535), ("080", 80)]
)
def test_good_ports(text: str, port: int) -> None:
    assert check_port(text) == port
