"""The asyncio client: `AsyncClient`, its resources, and how it sends a Call.

It mirrors client.py method for method (a change there belongs here); what differs is only
how it waits: on the caller's event loop, with disk reads and writes in threads.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import os
import ssl
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx2

from sandboxd_client import _attach, _core, _routes
from sandboxd_client._core import PAGE, UNSET, Call, Destination, RetryPolicy, Source
from sandboxd_client.discovery import Target, discover
from sandboxd_client.errors import ConnectionFailed, SandboxdError, StreamEnded, Timeout
from sandboxd_client.models import (
    AttachExit,
    CodeEvent,
    CodeResult,
    CodeSession,
    CommandFinished,
    Container,
    ContainerEvent,
    ContainerFile,
    Deleted,
    ExecDone,
    ExecEvent,
    ExecResult,
    FileObject,
    Image,
    Model,
    OutputEnd,
    Page,
    PortResponse,
    Process,
    ProcessEvent,
    ProcessExit,
    ProcessInput,
    ProcessOutput,
    Skill,
    SkillVersion,
    code_event,
    exec_event,
    parse_page,
    process_event,
)

M = TypeVar("M", bound=Model)


class AsyncClient:
    """An asyncio client of one daemon (the same arguments as `Client`).

    With no arguments it finds the daemon as the `sandboxd` command line does ($SANDBOXD_URL,
    $SANDBOXD_SOCKET, then the default socket); `socket=` names a unix socket, `url=` (with
    `api_key=`) a TCP listener. `timeout` bounds each read and write of a call (None: no
    bound); exec and code calls wait as long as their own `timeout_ms` unless given one.
    Refusals the daemon marks retryable (`x-should-retry`) are retried up to `max_retries`
    times, after its `Retry-After` where it sends one.
    """

    def __init__(
        self,
        *,
        socket: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = _core.DEFAULT_TIMEOUT_S,
        max_retries: int = _core.DEFAULT_MAX_RETRIES,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.target: Target = discover(socket, url, api_key, env)
        self.retry = RetryPolicy(max_retries)
        # TLS only for an https URL: building a verifying context loads the CA store,
        # which a command line would pay on every start for nothing.
        tls = self.target.url.startswith("https:")
        transport = None
        if not self.target.url:
            transport = httpx2.AsyncHTTPTransport(uds=self.target.socket, verify=False)
        self._http = httpx2.AsyncClient(
            base_url=_core.base_url(self.target),
            headers=_core.default_headers(self.target),
            transport=transport,
            verify=tls,
            timeout=_core.timeout(timeout),
            trust_env=False,  # a local daemon: no proxy from the environment
        )
        self.containers = Containers(self)
        self.files = Files(self)
        self.skills = Skills(self)
        self.processes = Processes(self)
        self.ports = Ports(self)
        self.images = Images(self)

    # ------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ routes

    async def healthz(self) -> bool:
        body = await self._json(_routes.healthz())
        return isinstance(body, dict) and body.get("status") == "ok"

    async def exec(
        self,
        container_id: str,
        commands: str | Sequence[str],
        *,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
        env: Mapping[str, str] | None = None,
        working_directory: str | None = None,
        stdin: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run commands one after another; every command's output and outcome."""
        call = _routes.exec_(
            container_id, commands, timeout_ms, max_output_length, env, working_directory,
            stdin, stream=False,
        )  # fmt: skip
        return ExecResult.parse(await self._json(call, timeout))

    async def exec_stream(
        self,
        container_id: str,
        commands: str | Sequence[str],
        *,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
        env: Mapping[str, str] | None = None,
        working_directory: str | None = None,
        stdin: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[ExecEvent, None]:
        """Output chunks as they happen, each command's CommandFinished, then ExecDone.

        The request goes out when iteration starts; close the iterator (or run it to its
        end) to let go of the connection."""
        call = _routes.exec_(
            container_id, commands, timeout_ms, max_output_length, env, working_directory,
            stdin, stream=True,
        )  # fmt: skip
        finished: list[CommandFinished] = []
        events = self._events(call, timeout)
        try:  # closed here, on every way out: the connection goes with it
            async for raw in events:
                event = exec_event(raw)
                if isinstance(event, CommandFinished):
                    finished.append(event)
                if isinstance(event, ExecDone):
                    yield dataclasses.replace(event, commands=finished)
                    return
                if event is not None:
                    yield event
        finally:
            await events.aclose()
        raise StreamEnded("the exec stream ended before its last event")

    async def code(
        self,
        container_id: str,
        code: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
        timeout: float | None = None,
    ) -> CodeResult:
        """Run a cell in a persistent Python session (`session_id`, else the default one)."""
        call = _routes.code(
            container_id, code, session_id, timeout_ms, max_output_length, stream=False
        )
        return CodeResult.parse(await self._json(call, timeout))

    async def code_stream(
        self,
        container_id: str,
        code: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[CodeEvent, None]:
        """Output chunks as they happen, then the CodeResult (without stdout and stderr)."""
        call = _routes.code(
            container_id, code, session_id, timeout_ms, max_output_length, stream=True
        )
        events = self._events(call, timeout)
        try:
            async for raw in events:
                event = code_event(raw)
                if isinstance(event, CodeResult):
                    yield event
                    return
                if event is not None:
                    yield event
        finally:
            await events.aclose()
        raise StreamEnded("the code stream ended before its result")

    async def code_sessions(self, container_id: str) -> list[CodeSession]:
        page = parse_page(CodeSession, await self._json(_routes.list_code_sessions(container_id)))
        return page.data

    async def delete_code_session(self, container_id: str, session_id: str) -> Deleted:
        return Deleted.parse(
            await self._json(_routes.delete_code_session(container_id, session_id))
        )

    # ------------------------------------------------------------ sending

    async def _open(self, call: Call, timeout: float | None = UNSET) -> httpx2.Response:
        """Send `call` (retrying what the daemon says may be retried); the open response."""
        key = _core.new_idempotency_key() if call.idempotent else None
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=call.multipart.achunks() if call.multipart is not None else None,
                headers=call.headers(key),
                timeout=httpx2.USE_CLIENT_DEFAULT if timeout is UNSET else _core.timeout(timeout),
            )
            try:
                response = await self._http.send(request, stream=True)
                if response.status_code < 400:
                    return response
                try:
                    raw = await _read_capped(response)
                finally:
                    await response.aclose()
            except httpx2.HTTPError as exc:
                raise _core.translate(exc, self.target) from None
            delay = self.retry.delay(attempt, response.status_code, response.headers)
            if delay is None:
                raise _core.error_for(response, raw)
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: Call, timeout: float | None = UNSET) -> Any:
        return _core.decode_json(await self._bytes(call, timeout), call.path)

    async def _events(
        self, call: Call, timeout: float | None = UNSET
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The SSE events of a call's reply as they arrive; an `error` event is raised."""
        response = await self._open(call, timeout)
        rid = response.headers.get("x-request-id")
        decoder = _core.SseDecoder()
        try:
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    if event.get("type") == "error":
                        raise _core.stream_error(event, rid)
                    yield event
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            await response.aclose()

    async def _bytes(self, call: Call, timeout: float | None = UNSET) -> bytes:
        response = await self._open(call, timeout)
        try:
            return await response.aread()
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            await response.aclose()

    async def _download(self, call: Call, dest: Destination) -> int:
        """Stream a content route into `dest` (a file object, or a path written whole or not
        at all); the byte count. Disk writes run in threads, off the event loop."""
        response = await self._open(call)
        try:
            if isinstance(dest, str | os.PathLike):
                return await _to_path(response.aiter_bytes(), Path(dest))
            total = 0
            async for chunk in response.aiter_bytes():
                await asyncio.to_thread(dest.write, chunk)
                total += len(chunk)
            return total
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            await response.aclose()

    async def _model(self, model: type[M], call: Call) -> M:
        return model.parse(await self._json(call))

    async def _pages(self, model: type[M], first: Call) -> AsyncIterator[M]:
        """Every item of a list route, page after page (`after` the last id of each)."""
        call = first
        while True:
            page = parse_page(model, await self._json(call))
            for item in page.data:
                yield item
            if not page.has_more or not page.last_id:
                return
            call = dataclasses.replace(call, params={**(call.params or {}), "after": page.last_id})


async def _read_capped(response: httpx2.Response) -> bytes:
    """An error reply's body, at most MAX_ERROR_BODY of it."""
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= _core.MAX_ERROR_BODY:
            break
    return bytes(kept[: _core.MAX_ERROR_BODY])


async def _to_path(chunks: AsyncIterator[bytes], target: Path) -> int:
    """Write into a temp file beside `target`, then rename: never half a file at `target`."""
    fd, tmp = await asyncio.to_thread(
        tempfile.mkstemp, prefix=f".{target.name}.", dir=target.parent
    )
    total = 0
    try:
        sink = os.fdopen(fd, "wb")
        try:
            async for chunk in chunks:
                await asyncio.to_thread(sink.write, chunk)
                total += len(chunk)
        finally:
            await asyncio.to_thread(sink.close)
        await asyncio.to_thread(_publish, tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return total


def _publish(tmp: str, target: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would have made it
    os.replace(tmp, target)


# ---------------------------------------------------------------- resources


class Containers:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client
        self.files = ContainerFiles(client)

    async def create(
        self,
        name: str,
        *,
        memory_limit: str | None = None,
        expires_after_minutes: int | None = None,
        network_policy: Mapping[str, Any] | None = None,
        file_ids: Sequence[str] | None = None,
        skills: Sequence[Mapping[str, Any]] | None = None,
        image: str | None = None,
    ) -> Container:
        """`image`: a name from `client.images.list()` (default: the daemon's)."""
        call = _routes.create_container(
            name, memory_limit, expires_after_minutes, network_policy, file_ids, skills, image
        )
        return await self._c._model(Container, call)

    def list(
        self, *, order: str = "asc", name: str | None = None, page_size: int = PAGE
    ) -> AsyncIterator[Container]:
        """Every container (oldest first by default), fetched a page at a time."""
        return self._c._pages(Container, _routes.list_containers(page_size, order, None, name))

    async def page(
        self,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        name: str | None = None,
    ) -> Page[Container]:
        call = _routes.list_containers(limit, order, after, name)
        return parse_page(Container, await self._c._json(call))

    async def retrieve(self, container_id: str) -> Container:
        return await self._c._model(Container, _routes.retrieve_container(container_id))

    async def delete(self, container_id: str) -> Deleted:
        return await self._c._model(Deleted, _routes.delete_container(container_id))

    async def events(self, container_id: str) -> builtins.list[ContainerEvent]:
        """The container's lifecycle events, oldest first."""
        body = await self._c._json(_routes.container_events(container_id))
        return parse_page(ContainerEvent, body).data


class ContainerFiles:
    """Files in a container's /mnt/data."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def upload(
        self, container_id: str, source: Source, *, filename: str | None = None
    ) -> ContainerFile:
        """Upload a local file (a path, streamed) or bytes (give `filename`) to /mnt/data."""
        call = _routes.upload_container_file(container_id, source, filename)
        return await self._c._model(ContainerFile, call)

    async def copy(self, container_id: str, file_id: str) -> ContainerFile:
        """Copy a file of /v1/files into the container."""
        return await self._c._model(
            ContainerFile, _routes.copy_file_to_container(container_id, file_id)
        )

    def list(
        self, container_id: str, *, order: str = "asc", page_size: int = PAGE
    ) -> AsyncIterator[ContainerFile]:
        call = _routes.list_container_files(container_id, page_size, order, None)
        return self._c._pages(ContainerFile, call)

    async def page(
        self,
        container_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
    ) -> Page[ContainerFile]:
        call = _routes.list_container_files(container_id, limit, order, after)
        return parse_page(ContainerFile, await self._c._json(call))

    async def retrieve(self, container_id: str, file_id: str) -> ContainerFile:
        call = _routes.retrieve_container_file(container_id, file_id)
        return await self._c._model(ContainerFile, call)

    async def content(self, container_id: str, file_id: str) -> bytes:
        """The whole file in memory; `download` streams it instead."""
        return await self._c._bytes(_routes.container_file_content(container_id, file_id))

    async def download(self, container_id: str, file_id: str, dest: Destination) -> int:
        """Stream the file to a path or a binary file object; the byte count."""
        return await self._c._download(_routes.container_file_content(container_id, file_id), dest)

    async def delete(self, container_id: str, file_id: str) -> Deleted:
        return await self._c._model(Deleted, _routes.delete_container_file(container_id, file_id))


class Processes:
    """A container's background processes: commands that run on after the call that
    started them, with their output kept in a ring to read from any offset."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def start(
        self,
        container_id: str,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        working_directory: str | None = None,
        tty: bool = False,
        cols: int | None = None,
        rows: int | None = None,
    ) -> Process:
        """Start `command` (one shell line) in the background; it runs until it ends, is
        signalled or deleted, or the container goes. `tty`: on a terminal of its own (a
        PTY, `cols` x `rows`, default 80x24; stdout and stderr are one stream), for
        programs that want one (a shell, a REPL, top); drive it with `attach`."""
        call = _routes.start_process(container_id, command, env, working_directory, tty, cols, rows)
        return await self._c._model(Process, call)

    def list(
        self, container_id: str, *, order: str = "asc", page_size: int = PAGE
    ) -> AsyncIterator[Process]:
        """Every process the daemon keeps for the container, running and ended."""
        call = _routes.list_processes(container_id, page_size, order, None)
        return self._c._pages(Process, call)

    async def page(
        self,
        container_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
    ) -> Page[Process]:
        call = _routes.list_processes(container_id, limit, order, after)
        return parse_page(Process, await self._c._json(call))

    async def retrieve(self, container_id: str, process_id: str) -> Process:
        return await self._c._model(Process, _routes.retrieve_process(container_id, process_id))

    async def delete(self, container_id: str, process_id: str) -> Deleted:
        """SIGKILL to its whole group, then the daemon forgets it and its output."""
        return await self._c._model(Deleted, _routes.delete_process(container_id, process_id))

    async def read(self, container_id: str, process_id: str, *, offset: int = 0) -> ProcessOutput:
        """Its output from byte `offset` on (a bounded slice: go on from `next_offset`)."""
        call = _routes.process_output(container_id, process_id, offset, stream=False)
        return await self._c._model(ProcessOutput, call)

    async def stream(
        self,
        container_id: str,
        process_id: str,
        *,
        offset: int = 0,
        timeout: float | None = UNSET,
    ) -> AsyncGenerator[ProcessEvent, None]:
        """One connection's output events from `offset`: OutputStart, ProcessChunks as they
        arrive, then ProcessExit once the process has ended (or OutputEnd when the daemon
        stops). A lost connection raises; `follow` reconnects instead."""
        call = _routes.process_output(container_id, process_id, offset, stream=True)
        events = self._c._events(call, timeout)
        try:  # closed here, on every way out: the connection goes with it
            async for raw in events:
                event = process_event(raw)
                if event is not None:
                    yield event
                if isinstance(event, ProcessExit | OutputEnd):
                    return
        finally:
            await events.aclose()
        raise StreamEnded("the output stream ended before the process did")

    async def follow(
        self,
        container_id: str,
        process_id: str,
        *,
        offset: int = 0,
        max_reconnects: int = _core.MAX_RECONNECTS,
    ) -> AsyncGenerator[ProcessEvent, None]:
        """Output events from `offset` until the process ends (the last is ProcessExit),
        across lost connections and a daemon restart: each reconnect resumes at the last
        `next_offset` (an OutputStart begins each connection), after a growing wait; it
        gives up after `max_reconnects` failures in a row without output."""
        resume = _core.Resume(offset, max_reconnects)
        while True:
            events = self.stream(container_id, process_id, offset=resume.offset)
            try:
                async for event in events:
                    resume.seen(event)
                    if isinstance(event, OutputEnd):
                        raise StreamEnded(f"the daemon ended the output stream ({event.reason})")
                    yield event
                    if isinstance(event, ProcessExit):
                        return
            except SandboxdError as exc:
                delay = resume.retry_in(exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
            finally:
                await events.aclose()

    async def write(
        self, container_id: str, process_id: str, data: str, *, eof: bool = False
    ) -> ProcessInput:
        """Text to its stdin; `eof` closes its stdin after it."""
        call = _routes.process_input(container_id, process_id, data, eof)
        return await self._c._model(ProcessInput, call)

    async def signal(self, container_id: str, process_id: str, signal: str = "TERM") -> Process:
        """A signal (INT, TERM, KILL, HUP, QUIT, USR1, USR2, WINCH) to its process group."""
        call = _routes.signal_process(container_id, process_id, signal)
        return await self._c._model(Process, call)

    async def attach(
        self,
        container_id: str,
        process_id: str,
        *,
        offset: int | None = None,
        mode: str = "rw",
    ) -> AsyncAttachment:
        """A live attachment (a WebSocket) to the process's terminal or stdin and output:
        from byte `offset` of what the ring retains, else from now on; `mode` rw (the newest
        rw attachment writes) or ro. The daemon's refusals (404, 409 at the cap) raise
        before it opens. Closing it detaches. `async with await ….attach(…) as a:`."""
        path = _routes.attach_process(container_id, process_id, offset, mode)
        return await AsyncAttachment.open(self._c.target, path)

    async def resize(self, container_id: str, process_id: str, cols: int, rows: int) -> Process:
        """A tty process's terminal size (its foreground programs get SIGWINCH)."""
        call = _routes.resize_process(container_id, process_id, cols, rows)
        return await self._c._model(Process, call)


class Files:
    """/v1/files: uploads kept by the daemon, to copy into containers."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
        self,
        source: Source,
        *,
        filename: str | None = None,
        purpose: str = "user_data",
        expires_after_seconds: int | None = None,
    ) -> FileObject:
        call = _routes.create_file(source, filename, purpose, expires_after_seconds)
        return await self._c._model(FileObject, call)

    def list(
        self, *, order: str = "asc", purpose: str | None = None, page_size: int = PAGE
    ) -> AsyncIterator[FileObject]:
        return self._c._pages(FileObject, _routes.list_files(page_size, order, None, purpose))

    async def page(
        self,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        purpose: str | None = None,
    ) -> Page[FileObject]:
        return parse_page(
            FileObject, await self._c._json(_routes.list_files(limit, order, after, purpose))
        )

    async def retrieve(self, file_id: str) -> FileObject:
        return await self._c._model(FileObject, _routes.retrieve_file(file_id))

    async def content(self, file_id: str) -> bytes:
        return await self._c._bytes(_routes.file_content(file_id))

    async def download(self, file_id: str, dest: Destination) -> int:
        return await self._c._download(_routes.file_content(file_id), dest)

    async def delete(self, file_id: str) -> Deleted:
        return await self._c._model(Deleted, _routes.delete_file(file_id))


class Skills:
    """/v1/skills: a skill is a zip (or a directory) holding a SKILL.md; versions of it."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client
        self.versions = SkillVersions(client)

    async def create(self, source: Source, *, filename: str | None = None) -> Skill:
        """From a zip (a path or bytes) or a directory path."""
        return await self._c._model(Skill, _routes.create_skill(source, filename))

    def list(self, *, order: str = "asc", page_size: int = PAGE) -> AsyncIterator[Skill]:
        return self._c._pages(Skill, _routes.list_skills(page_size, order, None))

    async def page(
        self, *, limit: int | None = None, order: str | None = None, after: str | None = None
    ) -> Page[Skill]:
        return parse_page(Skill, await self._c._json(_routes.list_skills(limit, order, after)))

    async def retrieve(self, skill_id: str) -> Skill:
        return await self._c._model(Skill, _routes.retrieve_skill(skill_id))

    async def update(self, skill_id: str, *, default_version: str | int) -> Skill:
        return await self._c._model(Skill, _routes.update_skill(skill_id, default_version))

    async def delete(self, skill_id: str) -> Deleted:
        return await self._c._model(Deleted, _routes.delete_skill(skill_id))

    async def content(self, skill_id: str) -> bytes:
        """The default version's zip."""
        return await self._c._bytes(_routes.skill_content(skill_id))

    async def download(self, skill_id: str, dest: Destination) -> int:
        return await self._c._download(_routes.skill_content(skill_id), dest)


class SkillVersions:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
        self,
        skill_id: str,
        source: Source,
        *,
        filename: str | None = None,
        default: bool | None = None,
    ) -> SkillVersion:
        call = _routes.create_skill_version(skill_id, source, filename, default)
        return await self._c._model(SkillVersion, call)

    def list(
        self, skill_id: str, *, order: str = "asc", page_size: int = PAGE
    ) -> AsyncIterator[SkillVersion]:
        call = _routes.list_skill_versions(skill_id, page_size, order, None)
        return self._c._pages(SkillVersion, call)

    async def retrieve(self, skill_id: str, version: str | int) -> SkillVersion:
        return await self._c._model(SkillVersion, _routes.retrieve_skill_version(skill_id, version))

    async def delete(self, skill_id: str, version: str | int) -> Deleted:
        return await self._c._model(Deleted, _routes.delete_skill_version(skill_id, version))

    async def content(self, skill_id: str, version: str | int) -> bytes:
        return await self._c._bytes(_routes.skill_version_content(skill_id, version))

    async def download(self, skill_id: str, version: str | int, dest: Destination) -> int:
        return await self._c._download(_routes.skill_version_content(skill_id, version), dest)


class Ports:
    """Servers inside a container, reached through the ports route: a request relayed to
    127.0.0.1:{port} inside it (the container has no network interface of its own)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def request(
        self,
        container_id: str,
        port: int,
        method: str = "GET",
        path: str = "/",
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = UNSET,
    ) -> PortResponse:
        """Send one request to the server on `port` and read its whole response. Whatever
        status the server answers is returned; the daemon's own refusals (404 for an unknown
        container, 502 when nothing listens on the port, 504 when the server is slow) raise
        as every call's do. Sent once: a request to a server is not retried."""
        c = self._c
        request = c._http.build_request(
            method.upper(),
            _routes.port_path(container_id, port, path),
            params=params,
            headers=headers,
            content=content,
            timeout=httpx2.USE_CLIENT_DEFAULT if timeout is UNSET else _core.timeout(timeout),
        )
        try:
            response = await c._http.send(request, stream=True)
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, c.target) from None
        if response.status_code >= 400 and not _core.relayed(response):
            raise _core.error_for(response, raw)
        return _core.port_response(response, raw)


# ---------------------------------------------------------------- attachments


async def open_stream(
    target: Target, endpoint: _attach.Endpoint
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to the daemon (the attach WebSocket, a forwarded upgrade)."""
    try:
        if endpoint.socket:
            opening = asyncio.open_unix_connection(endpoint.socket, limit=_attach.CHUNK)
        else:
            tls = ssl.create_default_context() if endpoint.tls else None
            host = endpoint.host if endpoint.tls else None
            opening = asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=tls, server_hostname=host, limit=_attach.CHUNK
            )
        return await asyncio.wait_for(opening, _core.CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise _attach.connect_error(exc, target) from None


class AsyncAttachment:
    """The asyncio twin of `Attachment` (sandboxd_client.attach): `await recv()` returns
    output bytes or a control event (Attached first), None once the daemon has closed it;
    `async for` yields the same; send, resize, signal and eof write to the process; `await
    close()` (or `async with`) detaches, the process runs on. Pings are answered while
    `recv` reads. One task reads at a time: settle a reading task before closing (close
    reads the daemon's answer to its close)."""

    def __init__(self, session: _attach.Session) -> None:
        self._session = session
        self._ready: collections.deque[_attach.AttachItem] = collections.deque()
        self._lock = asyncio.Lock()  # one frame at a time, whichever task sends
        self._ended = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, target: Target, path: str) -> AsyncAttachment:
        endpoint = _attach.Endpoint.of(target)
        self = cls(_attach.Session(endpoint, path))
        self._reader, self._writer = await open_stream(target, endpoint)
        try:
            await asyncio.wait_for(self._upgrade(), _attach.UPGRADE_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._writer.close()
            raise Timeout("the daemon did not answer the attach handshake in time") from None
        except BaseException:
            self._writer.close()
            raise
        return self

    async def _upgrade(self) -> None:
        await self._send(self._session.request)
        while True:
            data = await self._read()
            if not data:
                raise self._session.handshake_ended()
            rest = self._session.handshake(data)
            if rest is not None:
                self._ready.extend(self._session.receive(rest))
                return

    async def _read(self) -> bytes:
        assert self._reader is not None
        try:
            return await self._reader.read(_attach.CHUNK)
        except OSError as exc:
            raise ConnectionFailed(f"the attachment broke off: {exc}") from None

    async def _send(self, data: bytes) -> None:
        assert self._writer is not None
        if not data:
            return
        async with self._lock:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except OSError as exc:
                raise ConnectionFailed(f"the attachment broke off: {exc}") from None

    @property
    def writer(self) -> bool:
        """Whether this attachment's input reaches the process, as the daemon last said."""
        return self._session.writer

    @property
    def exit(self) -> AttachExit | None:
        """How the process ended, once the daemon said so."""
        return self._session.exit

    @property
    def close_code(self) -> int | None:
        """The daemon's close code (1000 after the process ended, 1001: it shut down)."""
        return self._session.close_code

    async def recv(self) -> _attach.AttachItem | None:
        while not self._ready:
            if self._ended:
                return None
            data = await self._read()
            if not data:
                self._ended = True
                continue
            self._ready.extend(self._session.receive(data))
            if self._session.closed:  # our answer to its close is a courtesy: it may be gone
                self._ended = True
                with contextlib.suppress(ConnectionFailed):
                    await self._send(self._session.take())
            else:
                await self._send(self._session.take())  # pongs
        return self._ready.popleft()

    def __aiter__(self) -> AsyncIterator[_attach.AttachItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[_attach.AttachItem]:
        while (item := await self.recv()) is not None:
            yield item

    async def send(self, data: bytes) -> None:
        """Bytes to the process's input (its PTY or stdin); only the writer's arrive."""
        await self._send(self._session.input(data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(self._session.resize(cols, rows))

    async def signal(self, name: str) -> None:
        """INT, TERM, KILL, HUP, QUIT, USR1, USR2 or WINCH, to the process's group."""
        await self._send(self._session.signal(name))

    async def eof(self) -> None:
        """Close the process's stdin (a process without a tty)."""
        await self._send(self._session.eof())

    async def close(self) -> None:
        """Detach (the process runs on): our close, the daemon's answer awaited briefly."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        try:
            frame = self._session.close(_attach.NORMAL)
            if frame and not self._ended:
                await self._send(frame)
                await asyncio.wait_for(self._drain_close(), _attach.CLOSE_WAIT_S)
        except (OSError, ConnectionFailed, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _drain_close(self) -> None:
        while not self._session.closed and (data := await self._read()):
            self._session.receive(data)

    async def __aenter__(self) -> AsyncAttachment:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Images:
    """What containers may run on (the same for every caller)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> list[Image]:
        body = await self._c._json(_routes.list_images())
        return [Image.parse(item) for item in body["data"]]

    async def retrieve(self, name: str) -> Image:
        return await self._c._model(Image, _routes.retrieve_image(name))
