"""The blocking client: `Client`, its resources, and how it sends a Call.

The async client (aio.py) mirrors this file method for method; a change here belongs there.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx2

from sandboxd_client import _core, _routes
from sandboxd_client._core import PAGE, UNSET, Call, Destination, RetryPolicy, Source
from sandboxd_client.attach import Attachment
from sandboxd_client.discovery import Target, discover
from sandboxd_client.errors import SandboxdError, StreamEnded
from sandboxd_client.models import (
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


class Client:
    """A blocking client of one daemon.

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
            transport = httpx2.HTTPTransport(uds=self.target.socket, verify=False)
        self._http = httpx2.Client(
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

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ routes

    def healthz(self) -> bool:
        body = self._json(_routes.healthz())
        return isinstance(body, dict) and body.get("status") == "ok"

    def exec(
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
        return ExecResult.parse(self._json(call, timeout))

    def exec_stream(
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
    ) -> Generator[ExecEvent, None, None]:
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
            for raw in events:
                event = exec_event(raw)
                if isinstance(event, CommandFinished):
                    finished.append(event)
                if isinstance(event, ExecDone):
                    yield dataclasses.replace(event, commands=finished)
                    return
                if event is not None:
                    yield event
        finally:
            events.close()
        raise StreamEnded("the exec stream ended before its last event")

    def code(
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
        return CodeResult.parse(self._json(call, timeout))

    def code_stream(
        self,
        container_id: str,
        code: str,
        *,
        session_id: str | None = None,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
        timeout: float | None = None,
    ) -> Generator[CodeEvent, None, None]:
        """Output chunks as they happen, then the CodeResult (without stdout and stderr)."""
        call = _routes.code(
            container_id, code, session_id, timeout_ms, max_output_length, stream=True
        )
        events = self._events(call, timeout)
        try:
            for raw in events:
                event = code_event(raw)
                if isinstance(event, CodeResult):
                    yield event
                    return
                if event is not None:
                    yield event
        finally:
            events.close()
        raise StreamEnded("the code stream ended before its result")

    def code_sessions(self, container_id: str) -> list[CodeSession]:
        page = parse_page(CodeSession, self._json(_routes.list_code_sessions(container_id)))
        return page.data

    def delete_code_session(self, container_id: str, session_id: str) -> Deleted:
        return Deleted.parse(self._json(_routes.delete_code_session(container_id, session_id)))

    # ------------------------------------------------------------ sending

    def _open(self, call: Call, timeout: float | None = UNSET) -> httpx2.Response:
        """Send `call` (retrying what the daemon says may be retried); the open response."""
        key = _core.new_idempotency_key() if call.idempotent else None
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=call.multipart.chunks() if call.multipart is not None else None,
                headers=call.headers(key),
                timeout=httpx2.USE_CLIENT_DEFAULT if timeout is UNSET else _core.timeout(timeout),
            )
            try:
                response = self._http.send(request, stream=True)
                if response.status_code < 400:
                    return response
                try:
                    raw = _read_capped(response)
                finally:
                    response.close()
            except httpx2.HTTPError as exc:
                raise _core.translate(exc, self.target) from None
            delay = self.retry.delay(attempt, response.status_code, response.headers)
            if delay is None:
                raise _core.error_for(response, raw)
            time.sleep(delay)
            attempt += 1

    def _json(self, call: Call, timeout: float | None = UNSET) -> Any:
        response = self._open(call, timeout)
        try:
            raw = response.read()
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            response.close()
        return _core.decode_json(raw, call.path)

    def _events(
        self, call: Call, timeout: float | None = UNSET
    ) -> Generator[dict[str, Any], None, None]:
        """The SSE events of a call's reply as they arrive; an `error` event is raised."""
        response = self._open(call, timeout)
        rid = response.headers.get("x-request-id")
        decoder = _core.SseDecoder()
        try:
            for chunk in response.iter_raw():
                for event in decoder.feed(chunk):
                    if event.get("type") == "error":
                        raise _core.stream_error(event, rid)
                    yield event
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            response.close()

    def _bytes(self, call: Call) -> bytes:
        response = self._open(call)
        try:
            return response.read()
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            response.close()

    def _download(self, call: Call, dest: Destination) -> int:
        """Stream a content route into `dest` (a file object, or a path written whole or not
        at all); the byte count."""
        response = self._open(call)
        try:
            if isinstance(dest, str | os.PathLike):
                return _to_path(response.iter_bytes(), Path(dest))
            total = 0
            for chunk in response.iter_bytes():
                dest.write(chunk)
                total += len(chunk)
            return total
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, self.target) from None
        finally:
            response.close()

    def _model(self, model: type[M], call: Call) -> M:
        return model.parse(self._json(call))

    def _pages(self, model: type[M], first: Call) -> Iterator[M]:
        """Every item of a list route, page after page (`after` the last id of each)."""
        call = first
        while True:
            page = parse_page(model, self._json(call))
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            call = dataclasses.replace(call, params={**(call.params or {}), "after": page.last_id})


def _read_capped(response: httpx2.Response) -> bytes:
    """An error reply's body, at most MAX_ERROR_BODY of it."""
    kept = bytearray()
    for chunk in response.iter_raw():
        kept += chunk
        if len(kept) >= _core.MAX_ERROR_BODY:
            break
    return bytes(kept[: _core.MAX_ERROR_BODY])


def _to_path(chunks: Iterator[bytes], target: Path) -> int:
    """Write into a temp file beside `target`, then rename: never half a file at `target`."""
    import tempfile  # a download's own import, off the command line's start

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    total = 0
    try:
        with os.fdopen(fd, "wb") as sink:
            for chunk in chunks:
                sink.write(chunk)
                total += len(chunk)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would have made it
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return total


# ---------------------------------------------------------------- resources


class Containers:
    def __init__(self, client: Client) -> None:
        self._c = client
        self.files = ContainerFiles(client)

    def create(
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
        return self._c._model(Container, call)

    def list(
        self, *, order: str = "asc", name: str | None = None, page_size: int = PAGE
    ) -> Iterator[Container]:
        """Every container (oldest first by default), fetched a page at a time."""
        return self._c._pages(Container, _routes.list_containers(page_size, order, None, name))

    def page(
        self,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        name: str | None = None,
    ) -> Page[Container]:
        call = _routes.list_containers(limit, order, after, name)
        return parse_page(Container, self._c._json(call))

    def retrieve(self, container_id: str) -> Container:
        return self._c._model(Container, _routes.retrieve_container(container_id))

    def delete(self, container_id: str) -> Deleted:
        return self._c._model(Deleted, _routes.delete_container(container_id))

    def events(self, container_id: str) -> builtins.list[ContainerEvent]:
        """The container's lifecycle events, oldest first."""
        body = self._c._json(_routes.container_events(container_id))
        return parse_page(ContainerEvent, body).data


class ContainerFiles:
    """Files in a container's /mnt/data."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def upload(
        self, container_id: str, source: Source, *, filename: str | None = None
    ) -> ContainerFile:
        """Upload a local file (a path, streamed) or bytes (give `filename`) to /mnt/data."""
        call = _routes.upload_container_file(container_id, source, filename)
        return self._c._model(ContainerFile, call)

    def copy(self, container_id: str, file_id: str) -> ContainerFile:
        """Copy a file of /v1/files into the container."""
        return self._c._model(ContainerFile, _routes.copy_file_to_container(container_id, file_id))

    def list(
        self, container_id: str, *, order: str = "asc", page_size: int = PAGE
    ) -> Iterator[ContainerFile]:
        call = _routes.list_container_files(container_id, page_size, order, None)
        return self._c._pages(ContainerFile, call)

    def page(
        self,
        container_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
    ) -> Page[ContainerFile]:
        call = _routes.list_container_files(container_id, limit, order, after)
        return parse_page(ContainerFile, self._c._json(call))

    def retrieve(self, container_id: str, file_id: str) -> ContainerFile:
        call = _routes.retrieve_container_file(container_id, file_id)
        return self._c._model(ContainerFile, call)

    def content(self, container_id: str, file_id: str) -> bytes:
        """The whole file in memory; `download` streams it instead."""
        return self._c._bytes(_routes.container_file_content(container_id, file_id))

    def download(self, container_id: str, file_id: str, dest: Destination) -> int:
        """Stream the file to a path or a binary file object; the byte count."""
        return self._c._download(_routes.container_file_content(container_id, file_id), dest)

    def delete(self, container_id: str, file_id: str) -> Deleted:
        return self._c._model(Deleted, _routes.delete_container_file(container_id, file_id))


class Processes:
    """A container's background processes: commands that run on after the call that
    started them, with their output kept in a ring to read from any offset."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def start(
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
        return self._c._model(Process, call)

    def list(
        self, container_id: str, *, order: str = "asc", page_size: int = PAGE
    ) -> Iterator[Process]:
        """Every process the daemon keeps for the container, running and ended."""
        call = _routes.list_processes(container_id, page_size, order, None)
        return self._c._pages(Process, call)

    def page(
        self,
        container_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
    ) -> Page[Process]:
        call = _routes.list_processes(container_id, limit, order, after)
        return parse_page(Process, self._c._json(call))

    def retrieve(self, container_id: str, process_id: str) -> Process:
        return self._c._model(Process, _routes.retrieve_process(container_id, process_id))

    def delete(self, container_id: str, process_id: str) -> Deleted:
        """SIGKILL to its whole group, then the daemon forgets it and its output."""
        return self._c._model(Deleted, _routes.delete_process(container_id, process_id))

    def read(self, container_id: str, process_id: str, *, offset: int = 0) -> ProcessOutput:
        """Its output from byte `offset` on (a bounded slice: go on from `next_offset`)."""
        call = _routes.process_output(container_id, process_id, offset, stream=False)
        return self._c._model(ProcessOutput, call)

    def stream(
        self,
        container_id: str,
        process_id: str,
        *,
        offset: int = 0,
        timeout: float | None = UNSET,
    ) -> Generator[ProcessEvent, None, None]:
        """One connection's output events from `offset`: OutputStart, ProcessChunks as they
        arrive, then ProcessExit once the process has ended (or OutputEnd when the daemon
        stops). A lost connection raises; `follow` reconnects instead."""
        call = _routes.process_output(container_id, process_id, offset, stream=True)
        events = self._c._events(call, timeout)
        try:  # closed here, on every way out: the connection goes with it
            for raw in events:
                event = process_event(raw)
                if event is not None:
                    yield event
                if isinstance(event, ProcessExit | OutputEnd):
                    return
        finally:
            events.close()
        raise StreamEnded("the output stream ended before the process did")

    def follow(
        self,
        container_id: str,
        process_id: str,
        *,
        offset: int = 0,
        max_reconnects: int = _core.MAX_RECONNECTS,
    ) -> Generator[ProcessEvent, None, None]:
        """Output events from `offset` until the process ends (the last is ProcessExit),
        across lost connections and a daemon restart: each reconnect resumes at the last
        `next_offset` (an OutputStart begins each connection), after a growing wait; it
        gives up after `max_reconnects` failures in a row without output."""
        resume = _core.Resume(offset, max_reconnects)
        while True:
            events = self.stream(container_id, process_id, offset=resume.offset)
            try:
                for event in events:
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
                time.sleep(delay)
            finally:
                events.close()

    def write(
        self, container_id: str, process_id: str, data: str, *, eof: bool = False
    ) -> ProcessInput:
        """Text to its stdin; `eof` closes its stdin after it."""
        call = _routes.process_input(container_id, process_id, data, eof)
        return self._c._model(ProcessInput, call)

    def signal(self, container_id: str, process_id: str, signal: str = "TERM") -> Process:
        """A signal (INT, TERM, KILL, HUP, QUIT, USR1, USR2, WINCH) to its process group."""
        return self._c._model(Process, _routes.signal_process(container_id, process_id, signal))

    def attach(
        self,
        container_id: str,
        process_id: str,
        *,
        offset: int | None = None,
        mode: str = "rw",
        timeout: float | None = None,
    ) -> Attachment:
        """A live attachment (a WebSocket) to the process's terminal or stdin and output:
        from byte `offset` of what the ring retains, else from now on; `mode` rw (the newest
        rw attachment writes) or ro. `timeout` bounds each read (None: wait). The daemon's
        refusals (404, 409 at the cap) raise before it opens. Closing it detaches."""
        path = _routes.attach_process(container_id, process_id, offset, mode)
        return Attachment(self._c.target, path, timeout)

    def resize(self, container_id: str, process_id: str, cols: int, rows: int) -> Process:
        """A tty process's terminal size (its foreground programs get SIGWINCH)."""
        call = _routes.resize_process(container_id, process_id, cols, rows)
        return self._c._model(Process, call)


class Files:
    """/v1/files: uploads kept by the daemon, to copy into containers."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        source: Source,
        *,
        filename: str | None = None,
        purpose: str = "user_data",
        expires_after_seconds: int | None = None,
    ) -> FileObject:
        call = _routes.create_file(source, filename, purpose, expires_after_seconds)
        return self._c._model(FileObject, call)

    def list(
        self, *, order: str = "asc", purpose: str | None = None, page_size: int = PAGE
    ) -> Iterator[FileObject]:
        return self._c._pages(FileObject, _routes.list_files(page_size, order, None, purpose))

    def page(
        self,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        purpose: str | None = None,
    ) -> Page[FileObject]:
        return parse_page(
            FileObject, self._c._json(_routes.list_files(limit, order, after, purpose))
        )

    def retrieve(self, file_id: str) -> FileObject:
        return self._c._model(FileObject, _routes.retrieve_file(file_id))

    def content(self, file_id: str) -> bytes:
        return self._c._bytes(_routes.file_content(file_id))

    def download(self, file_id: str, dest: Destination) -> int:
        return self._c._download(_routes.file_content(file_id), dest)

    def delete(self, file_id: str) -> Deleted:
        return self._c._model(Deleted, _routes.delete_file(file_id))


class Skills:
    """/v1/skills: a skill is a zip (or a directory) holding a SKILL.md; versions of it."""

    def __init__(self, client: Client) -> None:
        self._c = client
        self.versions = SkillVersions(client)

    def create(self, source: Source, *, filename: str | None = None) -> Skill:
        """From a zip (a path or bytes) or a directory path."""
        return self._c._model(Skill, _routes.create_skill(source, filename))

    def list(self, *, order: str = "asc", page_size: int = PAGE) -> Iterator[Skill]:
        return self._c._pages(Skill, _routes.list_skills(page_size, order, None))

    def page(
        self, *, limit: int | None = None, order: str | None = None, after: str | None = None
    ) -> Page[Skill]:
        return parse_page(Skill, self._c._json(_routes.list_skills(limit, order, after)))

    def retrieve(self, skill_id: str) -> Skill:
        return self._c._model(Skill, _routes.retrieve_skill(skill_id))

    def update(self, skill_id: str, *, default_version: str | int) -> Skill:
        return self._c._model(Skill, _routes.update_skill(skill_id, default_version))

    def delete(self, skill_id: str) -> Deleted:
        return self._c._model(Deleted, _routes.delete_skill(skill_id))

    def content(self, skill_id: str) -> bytes:
        """The default version's zip."""
        return self._c._bytes(_routes.skill_content(skill_id))

    def download(self, skill_id: str, dest: Destination) -> int:
        return self._c._download(_routes.skill_content(skill_id), dest)


class SkillVersions:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        skill_id: str,
        source: Source,
        *,
        filename: str | None = None,
        default: bool | None = None,
    ) -> SkillVersion:
        call = _routes.create_skill_version(skill_id, source, filename, default)
        return self._c._model(SkillVersion, call)

    def list(
        self, skill_id: str, *, order: str = "asc", page_size: int = PAGE
    ) -> Iterator[SkillVersion]:
        call = _routes.list_skill_versions(skill_id, page_size, order, None)
        return self._c._pages(SkillVersion, call)

    def retrieve(self, skill_id: str, version: str | int) -> SkillVersion:
        return self._c._model(SkillVersion, _routes.retrieve_skill_version(skill_id, version))

    def delete(self, skill_id: str, version: str | int) -> Deleted:
        return self._c._model(Deleted, _routes.delete_skill_version(skill_id, version))

    def content(self, skill_id: str, version: str | int) -> bytes:
        return self._c._bytes(_routes.skill_version_content(skill_id, version))

    def download(self, skill_id: str, version: str | int, dest: Destination) -> int:
        return self._c._download(_routes.skill_version_content(skill_id, version), dest)


class Ports:
    """Servers inside a container, reached through the ports route: a request relayed to
    127.0.0.1:{port} inside it (the container has no network interface of its own)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def request(
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
            response = c._http.send(request, stream=True)
            try:
                raw = response.read()
            finally:
                response.close()
        except httpx2.HTTPError as exc:
            raise _core.translate(exc, c.target) from None
        if response.status_code >= 400 and not _core.relayed(response):
            raise _core.error_for(response, raw)
        return _core.port_response(response, raw)


class Images:
    """What containers may run on (the same for every caller)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[Image]:
        body = self._c._json(_routes.list_images())
        return [Image.parse(item) for item in body["data"]]

    def retrieve(self, name: str) -> Image:
        return self._c._model(Image, _routes.retrieve_image(name))
