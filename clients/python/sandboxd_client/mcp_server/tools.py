"""What the MCP tools do, on one AsyncClient: their arguments, their results, their errors.

Every failure a model can act on is a ToolError carrying our message (a client exception's
text names the request id), so the host shows it to the model and the server keeps serving.
Files are read and written by a few lines of Python run in the sandbox through exec: that
reaches any path the sandbox user may touch (not only /mnt/data), overwrites in place (an
upload beside an existing name would get ` (1)`), and keeps bytes exact (base64 on the wire).
"""

import base64
import binascii
import contextlib
import json
import re
import shlex
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent
from pydantic import BaseModel, Field

from sandboxd_client.aio import AsyncClient
from sandboxd_client.errors import NotFound, SandboxdError
from sandboxd_client.models import CodeResult, CommandResult, Container, ContainerFile

CONTAINER_ID = re.compile(r"cntr_[0-9a-f]{48}")
DEFAULT_OUTPUT = 100_000  # bytes of stdout+stderr per command: what a model's context can take
MAX_OUTPUT = 1 << 20  # the daemon's own default cap
DEFAULT_READ = 100_000
MAX_READ = 1 << 20
MAX_LISTED = 1000
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 4 << 20
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp"}  # fmt: skip
MEMORY = Literal["1g", "4g", "16g", "64g"]

# Run by the sandbox's own python3 (3.9+), so nothing newer. Errors are one line on stderr.
_WRITE = """\
import base64, os, sys
mode, path = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read()
if mode == "base64":
    data = base64.b64decode(data)
try:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
except OSError as e:
    sys.exit("%s: %s" % (e.strerror or e, e.filename or path))
print(os.path.abspath(path))
print(len(data))
"""
_READ = """\
import base64, json, os, sys
path, offset, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(offset)
        data = f.read(limit)
except OSError as e:
    sys.exit("%s: %s" % (e.strerror or e, e.filename or path))
print(json.dumps({"path": os.path.abspath(path), "size": size,
                  "data": base64.b64encode(data).decode()}))
"""

ContainerArg = Annotated[
    str | None,
    Field(
        description="The sandbox: its id (from create_sandbox or list_sandboxes) or its name. "
        "Leave it out to use the server's default sandbox, if it was started with one."
    ),
]
Seconds = Annotated[
    float | None,
    Field(gt=0, le=3600, description="Time limit in seconds (default 60); then it is stopped."),
]
OutputCap = Annotated[
    int,
    Field(ge=0, le=MAX_OUTPUT, description="Bytes of stdout+stderr kept; the rest is cut."),
]


class SandboxInfo(BaseModel):
    id: str
    name: str
    status: str = Field(description="running, or expired (then unusable; see status_reason)")
    memory_limit: str
    image: str = Field("host", description="What it runs on (see the list_images tool)")
    created_at: int
    last_active_at: int
    expires_at: int = Field(description="Unix time it expires unless used again")
    network_policy: dict[str, Any]
    status_reason: str | None = None
    default: bool = Field(False, description="This is the server's default sandbox")


class SandboxList(BaseModel):
    sandboxes: list[SandboxInfo]


class ImageInfo(BaseModel):
    name: str
    description: str
    default: bool = Field(description="What create_sandbox uses when no image is given")
    python_version: str | None
    node_version: str | None
    packages: int = Field(description="How many packages it has (Debian, Python, npm)")


class ImageList(BaseModel):
    images: list[ImageInfo]


class Deleted(BaseModel):
    id: str
    deleted: bool


class CommandOutput(BaseModel):
    command: str
    exit_code: int | None = Field(description="None when the command timed out")
    timed_out: bool
    killed: str | None = Field(None, description="oom, pids or shutdown when that stopped it")
    stdout: str
    stderr: str
    truncated: bool = Field(description="Output beyond max_output_bytes was cut")
    duration_ms: int


class ExecOutput(BaseModel):
    container: str
    results: list[CommandOutput]
    not_run: list[str] = Field(description="Commands after one that timed out or was killed")


class FileInfo(BaseModel):
    path: str
    bytes: int
    source: str = Field(description="user (uploaded or written by a tool) or assistant (code)")


class PythonOutput(BaseModel):
    container: str
    session_id: str
    status: str = Field(description="ok, error, timeout or killed")
    stdout: str
    stderr: str
    truncated: bool
    result: str | None = Field(description="repr() of the cell's last expression, if any")
    error: str | None = Field(description="The exception and its traceback, if the cell raised")
    state_lost: bool = Field(description="The session's variables are gone (it was killed)")
    restarted: bool = Field(description="This cell ran in a new interpreter (see reason)")
    restart_reason: str | None = None
    killed: str | None = None
    files: list[FileInfo] = Field(description="Files under /mnt/data the cell created or changed")
    images: list[str] = Field(description="Paths of the images returned as image content")


class WriteOutput(BaseModel):
    path: str
    bytes: int


class ReadOutput(BaseModel):
    path: str
    size: int = Field(description="The file's whole size in bytes")
    offset: int
    returned_bytes: int
    encoding: Literal["text", "base64"]
    content: str
    truncated: bool = Field(description="More of the file follows: read again from offset")


class FileList(BaseModel):
    container: str
    files: list[FileInfo]
    truncated: bool = Field(description=f"More than {MAX_LISTED} files: only the first shown")


@contextlib.contextmanager
def tool_errors() -> Iterator[None]:
    """A client exception becomes a tool error with its message (and request id)."""
    try:
        yield
    except SandboxdError as exc:
        raise ToolError(str(exc)) from exc


class SandboxTools:
    """The tools of one server: one client, and the default sandbox if it has one."""

    def __init__(self, client: AsyncClient, default: str | None = None) -> None:
        self._c = client
        self.default_ref = default
        self._default_id: str | None = None
        self._default_lock = anyio.Lock()

    # ------------------------------------------------------------ sandboxes

    async def create_sandbox(
        self,
        name: Annotated[str, Field(min_length=1, max_length=256)] = "mcp",
        memory_limit: MEMORY = "1g",
        expires_after_minutes: Annotated[
            int | None, Field(ge=1, le=1440, description="Idle minutes before it expires")
        ] = None,
        allowed_domains: Annotated[
            list[str] | None,
            Field(description="HTTPS hosts (or *.suffix) it may reach; default: no network"),
        ] = None,
        image: Annotated[
            str | None,
            Field(
                max_length=64,
                description="What it runs on, e.g. python-data (pandas, matplotlib, Node...);"
                " default: the server's (list_images)",
            ),
        ] = None,
    ) -> SandboxInfo:
        policy = None
        if allowed_domains:
            policy = {"type": "allowlist", "allowed_domains": allowed_domains}
        with tool_errors():
            box = await self._c.containers.create(
                name, memory_limit=memory_limit, expires_after_minutes=expires_after_minutes,
                network_policy=policy, image=image,
            )  # fmt: skip
        return self._info(box)

    async def list_images(self) -> ImageList:
        with tool_errors():
            found = await self._c.images.list()
        return ImageList(
            images=[
                ImageInfo(
                    name=i.name,
                    description=i.description,
                    default=i.default,
                    python_version=i.python_version,
                    node_version=i.node_version,
                    packages=sum(len(names) for names in i.packages.values()),
                )
                for i in found
            ]
        )

    async def list_sandboxes(self, include_expired: bool = False) -> SandboxList:
        found: list[SandboxInfo] = []
        with tool_errors():
            async for box in self._c.containers.list(order="desc"):
                if include_expired or box.status == "running":
                    found.append(self._info(box))
        return SandboxList(sandboxes=found)

    async def delete_sandbox(
        self, container: Annotated[str, Field(description="The sandbox's id or name")]
    ) -> Deleted:
        with tool_errors():
            cid = await self._resolve(container)
            gone = await self._c.containers.delete(cid)
        if cid == self._default_id:
            self._default_id = None  # the next call without `container` makes a new one
        return Deleted(id=gone.id, deleted=gone.deleted)

    # ------------------------------------------------------------ running code

    async def exec(
        self,
        commands: Annotated[
            str | list[str],
            Field(description="A shell command, or a list run one after another"),
        ],
        container: ContainerArg = None,
        timeout_seconds: Seconds = None,
        working_directory: Annotated[
            str | None, Field(description="Absolute path of an existing directory")
        ] = None,
        env: Annotated[
            dict[str, str] | None, Field(description="Environment variables to set")
        ] = None,
        max_output_bytes: OutputCap = DEFAULT_OUTPUT,
    ) -> ExecOutput:
        listed = [commands] if isinstance(commands, str) else list(commands)
        if not listed:
            raise ToolError("commands is empty: give at least one command")
        with tool_errors():
            cid = await self._container(container)
            result = await self._c.exec(
                cid, listed, timeout_ms=_ms(timeout_seconds), max_output_length=max_output_bytes,
                env=env, working_directory=working_directory,
            )  # fmt: skip
        # A timeout or a shutdown kill ends the batch: fewer results than commands.
        results = [_command_output(c, r) for c, r in zip(listed, result.output, strict=False)]
        return ExecOutput(container=cid, results=results, not_run=listed[len(results) :])

    async def run_python(
        self,
        code: Annotated[str, Field(description="Python source; the last expression's repr")],
        container: ContainerArg = None,
        session_id: Annotated[
            str | None,
            Field(
                pattern=r"^[A-Za-z0-9_-]{1,64}$",
                description="An independent interpreter to use (default: 'default')",
            ),
        ] = None,
        timeout_seconds: Seconds = None,
        max_output_bytes: OutputCap = DEFAULT_OUTPUT,
    ) -> Annotated[CallToolResult, PythonOutput]:
        with tool_errors():
            cid = await self._container(container)
            cell = await self._c.code(
                cid, code, session_id=session_id, timeout_ms=_ms(timeout_seconds),
                max_output_length=max_output_bytes,
            )  # fmt: skip
            images = await self._images(cid, cell.files)
        out = _python_output(cell, [path for path, _ in images])
        content: list[ContentBlock] = [TextContent(text=out.model_dump_json(indent=2))]
        content += [block for _, block in images]
        return CallToolResult(content=content, structured_content=out.model_dump(mode="json"))

    async def _images(
        self, cid: str, files: Sequence[ContainerFile]
    ) -> list[tuple[str, ImageContent]]:
        """The images a cell wrote (its figures among them), as image content."""
        found: list[tuple[str, ImageContent]] = []
        for f in files:
            kind = IMAGE_TYPES.get(_suffix(f.path))
            if kind is None or f.bytes > MAX_IMAGE_BYTES or len(found) >= MAX_IMAGES:
                continue
            try:
                data = await self._c.containers.files.content(cid, f.id)
            except SandboxdError:
                # The cell has run (its effects are real): an image that cannot be fetched
                # (gone already) is left out rather than failing the whole call.
                continue
            found.append(
                (f.path, ImageContent(data=base64.b64encode(data).decode(), mime_type=kind))
            )
        return found

    # ------------------------------------------------------------ files

    async def write_file(
        self,
        path: Annotated[str, Field(min_length=1, description="Absolute, or under /mnt/data")],
        content: Annotated[str, Field(description="The whole new content of the file")],
        container: ContainerArg = None,
        encoding: Annotated[
            Literal["text", "base64"],
            Field(description="text (written as UTF-8), or base64 for binary content"),
        ] = "text",
    ) -> WriteOutput:
        if encoding == "base64":
            try:
                base64.b64decode("".join(content.split()), validate=True)
            except binascii.Error as exc:
                raise ToolError(f"content is not valid base64: {exc}") from None
        command = f"python3 -c {shlex.quote(_WRITE)} {encoding} {shlex.quote(path)}"
        with tool_errors():
            cid = await self._container(container)
            done = await self._run(cid, command, stdin=content)
        written, count = done.splitlines()[-2:]
        return WriteOutput(path=written, bytes=int(count))

    async def read_file(
        self,
        path: Annotated[str, Field(min_length=1, description="Absolute, or under /mnt/data")],
        container: ContainerArg = None,
        offset: Annotated[int, Field(ge=0, description="Byte offset to start at")] = 0,
        max_bytes: Annotated[int, Field(ge=1, le=MAX_READ)] = DEFAULT_READ,
    ) -> ReadOutput:
        command = f"python3 -c {shlex.quote(_READ)} {shlex.quote(path)} {offset} {max_bytes}"
        with tool_errors():
            cid = await self._container(container)
            # base64 is 4/3 of the bytes; the rest of the line is small.
            done = await self._run(cid, command, output=max_bytes * 4 // 3 + 8192)
        got = json.loads(done)
        data = base64.b64decode(got["data"])
        size = int(got["size"])
        encoding: Literal["text", "base64"] = "text"
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            # A character cut by max_bytes is not binary: stop before it, the next read
            # starts there.
            cut = exc.reason == "unexpected end of data" and exc.start > len(data) - 4
            if cut and exc.start > 0:
                data = data[: exc.start]
                text = data.decode()
            else:
                text, encoding = got["data"], "base64"
        if encoding == "text" and "\x00" in text:
            text, encoding = base64.b64encode(data).decode(), "base64"
        return ReadOutput(
            path=got["path"], size=size, offset=offset, returned_bytes=len(data),
            encoding=encoding, content=text, truncated=offset + len(data) < size,
        )  # fmt: skip

    async def list_files(self, container: ContainerArg = None) -> FileList:
        files: list[FileInfo] = []
        truncated = False
        with tool_errors():
            cid = await self._container(container)
            async for f in self._c.containers.files.list(cid):
                if len(files) == MAX_LISTED:
                    truncated = True
                    break
                files.append(FileInfo(path=f.path, bytes=f.bytes, source=f.source))
        return FileList(container=cid, files=files, truncated=truncated)

    # ------------------------------------------------------------ helpers

    async def _run(self, cid: str, command: str, stdin: str = "", output: int = 65536) -> str:
        """One helper command's stdout; its stderr as the tool error when it fails."""
        result = await self._c.exec(cid, command, stdin=stdin, max_output_length=output)
        (r,) = result.output
        if r.exit_code != 0:
            detail = r.stderr.strip().splitlines()[-1:] or [f"exit {r.exit_code}"]
            raise ToolError(detail[0])
        if r.truncated:  # sized to fit; a cut answer would decode as garbage
            raise ToolError("the sandbox's answer was cut short; try a smaller max_bytes")
        return r.stdout

    async def _container(self, ref: str | None) -> str:
        """The id of the sandbox a call names, or of the server's default one."""
        if ref:
            return await self._resolve(ref)
        if self.default_ref is None:
            raise ToolError(
                "no sandbox given: pass `container` (an id from create_sandbox or "
                "list_sandboxes), or create one with create_sandbox"
            )
        async with self._default_lock:  # concurrent first calls make one sandbox
            if self._default_id is None:
                self._default_id = await self._find_default(self.default_ref)
            cid = self._default_id
        # It may have expired or been deleted since: say so once, then start afresh.
        try:
            box = await self._c.containers.retrieve(cid)
        except NotFound:
            box = None
        if box is None or box.status != "running":
            self._default_id = None
            why = "was deleted" if box is None else f"expired ({box.status_reason or 'idle'})"
            again = "" if CONTAINER_ID.fullmatch(self.default_ref) else "; call again for a new one"
            raise ToolError(f"the default sandbox {cid} {why}{again}")
        return cid

    async def _find_default(self, ref: str) -> str:
        if CONTAINER_ID.fullmatch(ref):
            return ref
        async for box in self._c.containers.list(order="desc", name=ref):
            if box.status == "running":
                return box.id
        return (await self._c.containers.create(ref)).id

    async def _resolve(self, ref: str) -> str:
        """An id as given; a name to the one running sandbox of that name."""
        if CONTAINER_ID.fullmatch(ref):
            return ref
        named = [b async for b in self._c.containers.list(name=ref) if b.status == "running"]
        if len(named) == 1:
            return named[0].id
        if named:
            ids = ", ".join(b.id for b in named[:5])
            raise ToolError(f"{len(named)} running sandboxes are named {ref!r} ({ids}): use an id")
        raise ToolError(f"no running sandbox has the id or name {ref!r}")

    def _info(self, box: Container) -> SandboxInfo:
        return SandboxInfo(
            id=box.id, name=box.name, status=box.status, memory_limit=box.memory_limit,
            image=box.image, created_at=box.created_at, last_active_at=box.last_active_at,
            expires_at=box.expires_at, network_policy=box.network_policy,
            status_reason=box.status_reason, default=box.id == self._default_id,
        )  # fmt: skip


def _command_output(command: str, r: CommandResult) -> CommandOutput:
    return CommandOutput(
        command=command, exit_code=r.exit_code, timed_out=r.timed_out, killed=r.killed,
        stdout=r.stdout, stderr=r.stderr, truncated=r.truncated, duration_ms=r.duration_ms,
    )  # fmt: skip


def _python_output(cell: CodeResult, images: list[str]) -> PythonOutput:
    error = None
    if cell.error is not None:
        trace = cell.error.traceback
        trace_text = "".join(trace) if isinstance(trace, list) else (trace or "")
        error = f"{cell.error.name}: {cell.error.value}\n{trace_text}".rstrip()
    return PythonOutput(
        container=cell.container_id, session_id=cell.session_id, status=cell.outcome.type,
        stdout=cell.stdout, stderr=cell.stderr, truncated=cell.truncated, result=cell.result,
        error=error, state_lost=cell.outcome.state_lost, restarted=cell.restarted,
        restart_reason=cell.restart_reason, killed=cell.killed,
        files=[FileInfo(path=f.path, bytes=f.bytes, source=f.source) for f in cell.files],
        images=images,
    )  # fmt: skip


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, round(seconds * 1000))


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind(".") :].lower() if "." in name else ""
