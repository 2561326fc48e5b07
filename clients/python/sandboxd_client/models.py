"""Typed views of the API's objects.

Parsing is lenient where the API may grow (fields the client does not know are ignored, and
kept whole in `raw`) and strict where a typed field would lie (a wrong type is a
ProtocolError, not a str that holds a number).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, Union

from sandboxd_client.errors import ProtocolError

T = TypeVar("T")
M = TypeVar("M", bound="Model")


@dataclass(frozen=True)
class Model:
    """Base of every API object: `raw` is the JSON object it was parsed from."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    @classmethod
    def parse(cls: type[M], data: Any) -> M:
        return _parse_model(cls, data, cls.__name__)


@dataclass(frozen=True)
class ExpiresAfter(Model):
    anchor: str
    minutes: int


@dataclass(frozen=True)
class Container(Model):
    id: str
    name: str
    status: str  # running | expired
    created_at: int
    last_active_at: int
    expires_at: int
    memory_limit: str
    expires_after: ExpiresAfter | None = None
    network_policy: dict[str, Any] = field(default_factory=dict)
    status_reason: str | None = None  # why it expired
    image: str = "host"  # what it runs on (`client.images`)


@dataclass(frozen=True)
class Image(Model):
    """An image containers may run on: built on the host by `sandboxd image build RECIPE`,
    or `host` (the host's own /usr)."""

    id: str
    name: str
    description: str
    build_id: str
    created_at: int
    size_bytes: int | None = None
    python_version: str | None = None
    node_version: str | None = None
    packages: dict[str, list[str]] = field(default_factory=dict)  # debian, python, npm
    default: bool = False  # what a create without `image` gets


@dataclass(frozen=True)
class ContainerEvent(Model):
    container_id: str
    type: str
    created_at: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerFile(Model):
    id: str
    container_id: str
    created_at: int
    bytes: int
    path: str
    source: str = "user"


@dataclass(frozen=True)
class FileObject(Model):
    """An uploaded file of /v1/files."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None


@dataclass(frozen=True)
class Skill(Model):
    id: str
    created_at: int
    name: str
    description: str
    default_version: str
    latest_version: str


@dataclass(frozen=True)
class SkillVersion(Model):
    id: str
    skill_id: str
    version: str
    created_at: int
    name: str
    description: str


@dataclass(frozen=True)
class Deleted(Model):
    id: str
    object: str
    deleted: bool


@dataclass(frozen=True)
class Outcome(Model):
    """How a command ended: `exit` with its code, or `timeout`."""

    type: str
    exit_code: int | None = None


@dataclass(frozen=True)
class CommandResult(Model):
    """One command of an exec: its output, how it ended, and whether output was cut."""

    outcome: Outcome
    truncated: bool
    duration_ms: int
    stdout: str = ""
    stderr: str = ""
    killed: str | None = None  # oom | pids | shutdown

    @property
    def exit_code(self) -> int | None:
        return self.outcome.exit_code

    @property
    def timed_out(self) -> bool:
        return self.outcome.type == "timeout"


@dataclass(frozen=True)
class ExecResult(Model):
    output: list[CommandResult]
    max_output_length: int


@dataclass(frozen=True)
class OutputChunk(Model):
    """A piece of a stream's output, as it arrived (`command_index` is None for /code)."""

    type: Literal["stdout", "stderr"]
    data: str
    command_index: int | None = None


@dataclass(frozen=True)
class CommandFinished(Model):
    """An exec stream's per-command outcome (its output came before, as chunks)."""

    command_index: int
    outcome: Outcome
    truncated: bool
    duration_ms: int
    killed: str | None = None

    @property
    def exit_code(self) -> int | None:
        return self.outcome.exit_code


@dataclass(frozen=True)
class ExecDone(Model):
    """The last event of an exec stream; `commands` repeats the per-command outcomes."""

    max_output_length: int
    commands: list[CommandFinished] = field(default_factory=list)


@dataclass(frozen=True)
class CodeError(Model):
    name: str
    value: str
    traceback: list[str] | str | None = None


@dataclass(frozen=True)
class CodeOutcome(Model):
    type: str  # ok | error | timeout | killed
    state_lost: bool = False


@dataclass(frozen=True)
class CodeResult(Model):
    """A /code call's result; a stream's last event has it without stdout and stderr."""

    container_id: str
    session_id: str
    outcome: CodeOutcome
    truncated: bool
    duration_ms: int
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    result_truncated: bool = False
    error: CodeError | None = None
    restarted: bool = False
    restart_reason: str | None = None
    files: list[ContainerFile] = field(default_factory=list)
    files_truncated: bool = False
    killed: str | None = None


@dataclass(frozen=True)
class CodeSession(Model):
    id: str
    container_id: str
    created_at: int
    last_used_at: int
    status: str  # idle | busy | dead


@dataclass(frozen=True)
class Process(Model):
    """A background process (`killed`: oom or pids, when the daemon saw it die of that)."""

    id: str
    container_id: str
    command: str
    status: str  # running | exited
    created_at: int
    output_bytes: int  # every byte it wrote, both streams: the end of its output
    exit_code: int | None = None  # 128 + n when signal n ended it
    ended_at: int | None = None
    killed: str | None = None
    tty: bool = False
    cols: int | None = None  # a tty's size
    rows: int | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class ProcessOutputItem(Model):
    stream: Literal["stdout", "stderr"]
    data: str


@dataclass(frozen=True)
class ProcessOutput(Model):
    """A read of a process's output: from `offset` (after `dropped` bytes the ring no longer
    held) to `next_offset`, where the next read continues; `process` as it was then."""

    process_id: str
    offset: int
    dropped: int
    next_offset: int
    output: list[ProcessOutputItem]
    process: Process

    @property
    def stdout(self) -> str:
        return "".join(item.data for item in self.output if item.stream == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(item.data for item in self.output if item.stream == "stderr")


@dataclass(frozen=True)
class ProcessInput(Model):
    """What a write to a process's stdin did (`pending_bytes`: written, not yet read)."""

    id: str
    bytes: int
    eof: bool
    pending_bytes: int


@dataclass(frozen=True)
class OutputStart(Model):
    """The first event of each output stream (and again after a reader fell behind the
    ring): the output continues at `offset`, `dropped` bytes were lost before it."""

    offset: int
    dropped: int


@dataclass(frozen=True)
class ProcessChunk(Model):
    """Output of a process as it arrives; a stream reconnected at `next_offset` goes on
    after it."""

    type: Literal["stdout", "stderr"]
    data: str
    next_offset: int


@dataclass(frozen=True)
class ProcessExit(Model):
    """The last event of an output stream: the process has ended and its output is drained."""

    next_offset: int
    process: Process


@dataclass(frozen=True)
class OutputEnd(Model):
    """An output stream the daemon ended without the process ending (`reason`: shutdown);
    reconnecting at `next_offset` goes on where it stopped."""

    reason: str
    next_offset: int


@dataclass(frozen=True)
class Attached(Model):
    """The first event of an attachment: the output that follows starts at `offset`;
    `writer`: this attachment's input reaches the process (the newest `rw` one writes)."""

    process: Process
    offset: int
    writer: bool


@dataclass(frozen=True)
class Dropped(Model):
    """The requested offset was older than the ring retains: `bytes` were lost before it."""

    bytes: int


@dataclass(frozen=True)
class WriterChanged(Model):
    """This attachment's role changed (a newer `rw` attachment took over writing)."""

    writer: bool


@dataclass(frozen=True)
class AttachError(Model):
    """A refused message (`not_writer`, `invalid_message`, ...); the attachment stays open."""

    code: str
    message: str


@dataclass(frozen=True)
class AttachExit(Model):
    """The process ended and all its output was sent (`offset`: the end of it); the daemon
    closes the attachment after this."""

    exit_code: int | None
    offset: int
    killed: str | None = None


ExecEvent = Union[OutputChunk, CommandFinished, ExecDone]  # runs on 3.10
CodeEvent = Union[OutputChunk, CodeResult]
ProcessEvent = Union[OutputStart, ProcessChunk, ProcessExit, OutputEnd]
AttachEvent = Union[Attached, Dropped, WriterChanged, AttachError, AttachExit]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list endpoint."""

    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def parse_page(item: type[M], data: Any) -> Page[M]:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ProtocolError("a list reply without a 'data' array")
    first, last = data.get("first_id"), data.get("last_id")
    return Page(
        [item.parse(entry) for entry in data["data"]],
        bool(data.get("has_more")),
        first if isinstance(first, str) else None,
        last if isinstance(last, str) else None,
    )


def exec_event(data: dict[str, Any]) -> ExecEvent | None:
    """The typed event of an exec stream; None for a kind this client does not know."""
    kind = data.get("type")
    if kind in ("stdout", "stderr"):
        return OutputChunk.parse(data)
    if kind == "outcome":
        return CommandFinished.parse(data)
    if kind == "done":
        return ExecDone.parse(data)
    return None


def code_event(data: dict[str, Any]) -> CodeEvent | None:
    kind = data.get("type")
    if kind in ("stdout", "stderr"):
        return OutputChunk.parse(data)
    if kind == "result":
        return CodeResult.parse(data)
    return None


def process_event(data: dict[str, Any]) -> ProcessEvent | None:
    """The typed event of a process's output stream; None for a kind this client does not
    know."""
    kind = data.get("type")
    if kind in ("stdout", "stderr"):
        return ProcessChunk.parse(data)
    if kind == "start":
        return OutputStart.parse(data)
    if kind == "exit":
        return ProcessExit.parse(data)
    if kind == "end":
        return OutputEnd.parse(data)
    return None


def attach_event(data: dict[str, Any]) -> AttachEvent | None:
    """The typed control message of an attachment; None for a kind this client does not
    know."""
    kind = data.get("type")
    if kind == "attached":
        return Attached.parse(data)
    if kind == "dropped":
        return Dropped.parse(data)
    if kind == "writer":
        return WriterChanged.parse(data)
    if kind == "error":
        return AttachError.parse(data)
    if kind == "exit":
        return AttachExit.parse(data)
    return None


# ------------------------------------------------------------------ the parser


@functools.cache
def _hints(cls: Any) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, required) of a model's fields, `raw` left out."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "raw":
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hints[f.name], required))
    return tuple(out)


def _parse_model(cls: type[M], data: Any, where: str) -> M:
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for name, hint, required in _hints(typing.cast(Any, cls)):
        if name not in data:
            if required:
                raise ProtocolError(f"{where}: the field {name!r} is missing")
            continue
        values[name] = _value(hint, data[name], f"{where}.{name}")
    return cls(**values, raw=data)


def _value(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _value(option, value, where)
            except ProtocolError:
                continue
        raise ProtocolError(f"{where}: unexpected value {value!r:.80}")
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise ProtocolError(f"{where}: unexpected value {value!r:.80}")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected an array")
        (item,) = typing.get_args(hint)
        return [_value(item, v, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        return value
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, Model):
        return _parse_model(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str and isinstance(value, str):
        return value
    raise ProtocolError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r:.80}")


@dataclass(frozen=True)
class PortResponse:
    """A server's response inside a container, relayed through the ports route: its status
    (any, 4xx and 5xx included: they are the server's), headers and whole body."""

    status_code: int
    headers: list[tuple[str, str]]
    content: bytes

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        low = name.lower()
        return next((value for key, value in self.headers if key.lower() == low), None)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")
