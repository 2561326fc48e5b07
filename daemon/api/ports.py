"""/v1/containers/{id}/ports/{port}/{path} — an HTTP request relayed to 127.0.0.1:{port}
inside the container (daemon/ports.py), its response streamed back as the server sends it.

The request body is read from the client as it arrives, never as a JSON body: the server's
`max_json_bytes` does not apply to it (aiohttp's client_max_size bounds only whole-body reads,
which this handler never makes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from daemon.api.context import PORTS, caller_of
from daemon.ports import CHUNK, RELAYED, RelayRequest

ROUTE = "/ports/{port}/{path:.*}"


async def _client_body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


def relay_request(request: web.Request) -> RelayRequest:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    length = request.content_length if not chunked else None
    # The path as the client encoded it (match_info's is decoded: a %20 would become a space
    # on the request line), after /v1/containers/{id}/ports/{port}/, and the query as sent.
    path, sep, query = request.raw_path.partition("?")
    target = "/" + path.split("/", 6)[6] + sep + query
    return RelayRequest(
        method=request.method,
        target=target,
        headers=list(request.headers.items()),
        content_length=length,
        chunked=chunked,
        body=_client_body(request),
    )


async def relay(request: web.Request) -> web.StreamResponse:
    service = request.app[PORTS]
    cid = request.match_info["container_id"]
    req = relay_request(request)
    async with service.relay(caller_of(request), cid, request.match_info["port"], req) as reply:
        response = web.StreamResponse(status=reply.status, reason=reply.reason or None)
        for name, value in reply.headers:
            response.headers.add(name, value)
        # The server's answer, whatever its status: a client tells it from the daemon's errors.
        response.headers[RELAYED] = str(int(request.match_info["port"]))
        if reply.content_length is not None:
            response.content_length = reply.content_length
        await response.prepare(request)
        async for chunk in reply.body:
            await response.write(chunk)
        await response.write_eof()
    return response
