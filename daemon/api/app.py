"""The aiohttp application: routes, request ids, identity and the error boundary.

The routes are described for users in docs/api.md (the contract is daemon/openapi.json).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from daemon import ids
from daemon import metrics as metrics_mod
from daemon.api import (
    attach,
    container_files,
    containers,
    execute,
    images,
    ports,
    processes,
    skills,
    user_files,
)
from daemon.api import code as code_api
from daemon.api.context import (
    CALLER,
    CONFIG,
    CONTAINERS,
    METRICS,
    OPENAPI,
    SHUTDOWN,
    Services,
    install,
)
from daemon.api.idempotent import idempotent
from daemon.api.identity import identify
from daemon.config import Config
from daemon.errors import UNEXPECTED, DomainError, ShuttingDown, error_body, http_error
from daemon.logs import container_id, request_id
from daemon.ports import METHODS as PORT_METHODS
from daemon.shutdown import ShutdownControl

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/metrics"})
HTTP_ERROR_TYPES = {401: "invalid_request_error", 404: "invalid_request_error"}


NO_RETRY = {"x-should-retry": "false"}


def _json_error(status: int, body: object, rid: str, retry: dict[str, str]) -> web.Response:
    return web.json_response(body, status=status, headers={"x-request-id": rid, **retry})


@web.middleware
async def boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, identity, one log line per request, and every error in OpenAI's shape."""
    rid = ids.request_id()
    request_id.set(rid)
    container_id.set(request.match_info.get("container_id"))
    started = time.monotonic()
    status = 500
    shutdown = request.app[SHUTDOWN]
    shutdown.enter()
    try:
        if shutdown.draining:
            raise ShuttingDown("The daemon is shutting down; retry shortly.")
        if request.path not in PUBLIC_PATHS:
            request[CALLER] = identify(request, request.app[CONFIG].server)
        response = await handler(request)
        status = response.status
        return response
    except DomainError as exc:
        status, body, retry = http_error(exc)
        if _response_started(request):
            return _break_off(request, exc.code)
        return _json_error(status, body, rid, retry)
    except web.HTTPException as exc:
        status = exc.status
        message = exc.reason if exc.status != 404 else f"Unknown route {request.path}."
        body = error_body(message, HTTP_ERROR_TYPES.get(exc.status, "invalid_request_error"), None)
        return _json_error(status, body, rid, NO_RETRY)
    except ConnectionResetError:
        logger.info("client went away")
        return _break_off(request, None)
    except Exception:
        logger.exception("unhandled error")
        status = UNEXPECTED.status
        if _response_started(request):
            return _break_off(request, None)
        body = error_body(f"Internal error (request {rid}).", UNEXPECTED.type, None)
        return _json_error(status, body, rid, NO_RETRY)
    finally:
        shutdown.leave()
        elapsed = time.monotonic() - started
        route = _route_label(request)
        metrics = request.app[METRICS]
        metrics.api_requests.labels(route, str(status)).inc()
        metrics.api_seconds.labels(route).observe(elapsed)
        logger.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round(elapsed * 1000, 1),
            },
        )


def _response_started(request: web.Request) -> bool:
    """Bytes of a reply (a download, a stream) are out: no error reply can follow them."""
    return request.writer.output_size > 0


def _break_off(request: web.Request, code: str | None) -> web.Response:
    """End a reply that failed midway: close the connection, so the client sees a cut-off
    body (short of its Content-Length, or an unfinished chunked stream), never a second
    response spliced into the first."""
    if code is not None:
        logger.warning("reply broken off", extra={"code": code})
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # aiohttp cannot send it: the connection is closed


def _route_label(request: web.Request) -> str:
    """The route template (a small closed set), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, streamed ones included, carries the request id."""
    rid = request_id.get()
    if rid and "x-request-id" not in response.headers:
        response.headers["x-request-id"] = rid


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    await request.app[CONTAINERS].refresh_metrics()
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": metrics_mod.CONTENT_TYPE}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def create_app(
    config: Config, services: Services, openapi_doc: bytes, shutdown: ShutdownControl
) -> web.Application:
    app = web.Application(
        middlewares=[boundary], client_max_size=config.server.max_json_bytes, handler_args={}
    )
    app[CONFIG] = config
    install(app, services)
    app[OPENAPI] = openapi_doc
    app[SHUTDOWN] = shutdown
    app.on_response_prepare.append(_stamp_request_id)
    cid = "/v1/containers/{container_id}"
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/openapi.json", openapi),
            web.get("/metrics", metrics),
            web.post("/v1/containers", idempotent(containers.create)),
            web.get("/v1/containers", containers.list_),
            web.get(cid, containers.retrieve),
            web.delete(cid, containers.delete),
            web.get(f"{cid}/events", containers.events),
            web.post(f"{cid}/files", idempotent(container_files.upload)),
            web.get(f"{cid}/files", container_files.list_),
            web.get(cid + "/files/{file_id}", container_files.retrieve),
            web.delete(cid + "/files/{file_id}", container_files.delete),
            web.get(cid + "/files/{file_id}/content", container_files.content),
            web.post(f"{cid}/exec", execute.exec_),
            web.post(f"{cid}/code", code_api.run),
            web.get(f"{cid}/code/sessions", code_api.list_sessions),
            web.delete(cid + "/code/sessions/{session_id}", code_api.delete_session),
            web.post(f"{cid}/processes", idempotent(processes.create)),
            web.get(f"{cid}/processes", processes.list_),
            web.get(cid + "/processes/{process_id}", processes.retrieve),
            web.delete(cid + "/processes/{process_id}", processes.delete),
            web.get(cid + "/processes/{process_id}/output", processes.output),
            web.post(cid + "/processes/{process_id}/input", processes.send_input),
            web.post(cid + "/processes/{process_id}/signal", processes.send_signal),
            web.post(cid + "/processes/{process_id}/resize", processes.resize),
            web.get(cid + "/processes/{process_id}/attach", attach.attach),
            # aiohttp's GET route answers HEAD too (the relay forwards it as HEAD).
            *(
                web.route(m, cid + ports.ROUTE, ports.relay)
                for m in sorted(PORT_METHODS - {"HEAD"})
            ),
            web.get("/v1/images", images.list_),
            web.get("/v1/images/{name}", images.retrieve),
            web.post("/v1/files", idempotent(user_files.create)),
            web.get("/v1/files", user_files.list_),
            web.get("/v1/files/{file_id}", user_files.retrieve),
            web.delete("/v1/files/{file_id}", user_files.delete),
            web.get("/v1/files/{file_id}/content", user_files.content),
            web.post("/v1/skills", idempotent(skills.create)),
            web.get("/v1/skills", skills.list_),
            web.get("/v1/skills/{skill_id}", skills.retrieve),
            web.post("/v1/skills/{skill_id}", skills.update),
            web.delete("/v1/skills/{skill_id}", skills.delete),
            web.get("/v1/skills/{skill_id}/content", skills.content),
            web.post("/v1/skills/{skill_id}/versions", idempotent(skills.create_version)),
            web.get("/v1/skills/{skill_id}/versions", skills.list_versions),
            web.get("/v1/skills/{skill_id}/versions/{version}", skills.retrieve_version),
            web.delete("/v1/skills/{skill_id}/versions/{version}", skills.delete_version),
            web.get("/v1/skills/{skill_id}/versions/{version}/content", skills.version_content),
        ]
    )
    return app


def create_metrics_app(services: Services) -> web.Application:
    """The optional loopback listener: /metrics only, for Prometheus."""
    app = web.Application()
    install(app, services)
    app.add_routes([web.get("/metrics", metrics)])
    return app
