"""The WebSocket client frames of the ports relay (daemon/websocket.py): masked frames the
server can unmask, the server's messages joined across fragments with a ping between them,
and what is refused (masked or reserved-bit frames, fragments out of order, size)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from daemon import websocket


def _unmask(data: bytes) -> tuple[int, bytes]:
    b0, b1 = data[0], data[1]
    assert b0 & 0x80 and b1 & 0x80  # final, masked
    n, at = b1 & 0x7F, 2
    if n == 126:
        (n,), at = struct.unpack("!H", data[2:4]), 4
    elif n == 127:
        (n,), at = struct.unpack("!Q", data[2:10]), 10
    mask, body = data[at : at + 4], data[at + 4 :]
    assert len(body) == n
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_frames_unmask_to_the_payload(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert _unmask(websocket.frame(websocket.BINARY, payload)) == (websocket.BINARY, payload)


def test_the_accept_of_rfc_6455s_example() -> None:
    assert websocket.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _server_frame(opcode: int, data: bytes, *, fin: bool = True, extra: int = 0) -> bytes:
    n = len(data)
    head = bytes([(0x80 if fin else 0) | extra | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + data


def _reader(data: bytes) -> websocket.MessageReader:
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    return websocket.MessageReader(stream)


async def test_fragments_are_joined_around_a_ping() -> None:
    reader = _reader(
        _server_frame(websocket.TEXT, b"he", fin=False)
        + _server_frame(websocket.PING, b"?")
        + _server_frame(websocket.CONTINUATION, b"llo")
        + _server_frame(websocket.BINARY, b"\x00" * 70000)
        + _server_frame(websocket.CLOSE, struct.pack("!H", 1000))
    )
    got = [await reader.next() for _ in range(4)]
    assert got == [
        websocket.Message(websocket.PING, b"?"),
        websocket.Message(websocket.TEXT, b"hello"),
        websocket.Message(websocket.BINARY, b"\x00" * 70000),
        websocket.Message(websocket.CLOSE, struct.pack("!H", 1000)),
    ]
    with pytest.raises(asyncio.IncompleteReadError):
        await reader.next()


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x81, 0x81]) + b"mask" + b"x",  # a masked frame from the server
        _server_frame(websocket.TEXT, b"x", extra=0x40),  # a reserved bit
        _server_frame(websocket.CONTINUATION, b"x"),  # nothing to continue
        _server_frame(websocket.TEXT, b"a", fin=False) + _server_frame(websocket.TEXT, b"b"),
        _server_frame(websocket.PING, b"x" * 126),  # a control frame over 125 bytes
        _server_frame(3, b"x"),  # an unknown opcode
        bytes([0x82, 127]) + struct.pack("!Q", websocket.MAX_MESSAGE + 1),
    ],
)
async def test_broken_frames_are_refused(data: bytes) -> None:
    with pytest.raises(websocket.WebSocketError):
        await _reader(data).next()
