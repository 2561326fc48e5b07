"""Tools for the OpenAI Agents SDK that act in one sandbox (`pip install sandboxd-client[agents]`).

import asyncio
from agents import Agent, Runner
from sandboxd_client import AsyncClient
from sandboxd_client.agents import sandbox_tools

async def main() -> None:
    async with AsyncClient() as sbx:
        box = await sbx.containers.create("agent")
        agent = Agent(name="coder", tools=sandbox_tools(sbx, box.id))
        print((await Runner.run(agent, "How many primes are below 1000?")).final_output)

asyncio.run(main())

`sandbox_tools` gives the three tools an agent written for OpenAI's hosted tools expects: a
`ShellTool` whose commands run in the sandbox (our exec's reply is already the SDK's
`shell_call_output` shape), an `ApplyPatchTool` that edits text files under /mnt/data, and a
`run_python` function tool on the container's stateful /code session. Either client works:
`AsyncClient` on the run's event loop, `Client` (for `Runner.run_sync`) in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from agents import (
        ApplyPatchOperation,
        ApplyPatchResult,
        ApplyPatchTool,
        FunctionTool,
        ShellCallOutcome,
        ShellCommandOutput,
        ShellCommandRequest,
        ShellResult,
        ShellTool,
        Tool,
        apply_diff,
        function_tool,
    )
except ModuleNotFoundError as exc:
    if exc.name != "agents":
        raise
    # The SDK is the optional extra, not a dependency of the client: say how to get it.
    raise ModuleNotFoundError(
        "sandboxd_client.agents needs the OpenAI Agents SDK: pip install 'sandboxd-client[agents]'",
        name="agents",
    ) from exc

from sandboxd_client.aio import AsyncClient
from sandboxd_client.client import Client
from sandboxd_client.models import CodeResult, CommandResult, ExecResult

WORKSPACE = "/mnt/data"

# The editor's file operations are shell lines run through exec, with the path in the
# environment, never spliced into the line, so no file name can be read as shell syntax.
# Reading goes through base64: exec decodes output as UTF-8 with replacement characters, and
# the editor must see the file's exact bytes to refuse one that is not UTF-8 rather than write
# back a lossy copy of it.
_READ = 'base64 -- "$SANDBOXD_PATH"'
# Writing takes the new text on stdin. Creating refuses an existing path, as the SDK's own
# editors do (an update_file is how a model changes a file); `set -C` closes the race between
# the test and the write.
_WRITE = 'mkdir -p -- "${SANDBOXD_PATH%/*}" && cat > "$SANDBOXD_PATH"'
_CREATE = (
    'if [ -e "$SANDBOXD_PATH" ] || [ -L "$SANDBOXD_PATH" ]; then '
    'echo "it already exists (change it with update_file)" >&2; exit 1; fi; '
    'mkdir -p -- "${SANDBOXD_PATH%/*}" && set -C && cat > "$SANDBOXD_PATH"'
)
# A move writes the new path first: a failure half way loses no text.
_MOVE = 'mkdir -p -- "${SANDBOXD_TO%/*}" && cat > "$SANDBOXD_TO" && rm -f -- "$SANDBOXD_PATH"'
_DELETE = 'rm -- "$SANDBOXD_PATH"'


def sandbox_tools(
    client: AsyncClient | Client,
    container_id: str,
    *,
    timeout_ms: int | None = None,
    max_output_length: int | None = None,
    session_id: str | None = None,
) -> list[Tool]:
    """A `ShellTool`, an `ApplyPatchTool` and a `run_python` tool, all in `container_id`.

    `timeout_ms` and `max_output_length` are the defaults for a shell call that names none and
    for each Python cell (None: the daemon's); `session_id` picks the /code session (None: the
    container's default one), whose variables live from one `run_python` call to the next.
    """
    return [
        ShellTool(
            executor=SandboxShellExecutor(
                client, container_id, timeout_ms=timeout_ms, max_output_length=max_output_length
            )
        ),
        ApplyPatchTool(editor=SandboxEditor(client, container_id)),
        run_python_tool(
            client,
            container_id,
            session_id=session_id,
            timeout_ms=timeout_ms,
            max_output_length=max_output_length,
        ),
    ]


class _Sandbox:
    """The two calls the tools make, awaitable whichever client was given."""

    def __init__(self, client: AsyncClient | Client, container_id: str) -> None:
        self.client = client
        self.container_id = container_id

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The client's method `name`: awaited on the async client; the blocking one waits in
        a worker thread (on the run's event loop it would stall every other tool call and
        the model's own requests)."""
        method = getattr(self.client, name)
        if isinstance(self.client, AsyncClient):
            return await method(*args, **kwargs)
        return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

    async def exec(
        self,
        commands: Sequence[str],
        *,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        result: ExecResult = await self._call(
            "exec",
            self.container_id,
            commands,
            timeout_ms=timeout_ms,
            max_output_length=max_output_length,
            env=env,
            stdin=stdin,
        )
        return result

    async def code(
        self,
        source: str,
        *,
        session_id: str | None,
        timeout_ms: int | None,
        max_output_length: int | None,
    ) -> CodeResult:
        code_result: CodeResult = await self._call(
            "code",
            self.container_id,
            source,
            session_id=session_id,
            timeout_ms=timeout_ms,
            max_output_length=max_output_length,
        )
        return code_result


# ------------------------------------------------------------------ shell


class SandboxShellExecutor:
    """A `ShellTool` executor: the call's commands run one after another in the sandbox.

    The call's `timeout_ms` and `max_output_length` go to exec as they are (ours where the call
    names none), and each command's stdout, stderr and outcome come back as the SDK's
    `ShellCommandOutput`, which it sends to the model as `shell_call_output`.
    """

    def __init__(
        self,
        client: AsyncClient | Client,
        container_id: str,
        *,
        timeout_ms: int | None = None,
        max_output_length: int | None = None,
    ) -> None:
        self._sandbox = _Sandbox(client, container_id)
        self._timeout_ms = timeout_ms
        self._max_output_length = max_output_length

    async def __call__(self, request: ShellCommandRequest) -> ShellResult:
        action = request.data.action
        limit = action.max_output_length
        if limit is None:
            limit = self._max_output_length
        result = await self._sandbox.exec(
            action.commands,
            # The SDK already reads a zero timeout as none given.
            timeout_ms=action.timeout_ms or self._timeout_ms,
            # The SDK reads a negative length as zero; exec would refuse it.
            max_output_length=None if limit is None else max(0, limit),
        )
        outputs = [
            _shell_output(command, out)
            for command, out in zip(action.commands, result.output, strict=False)
        ]
        # No max_output_length of ours: the SDK then echoes the call's own, as the hosted
        # tool's output does, and exec has already held each command to it.
        return ShellResult(output=outputs)


def _shell_output(command: str, out: CommandResult) -> ShellCommandOutput:
    outcome = (
        ShellCallOutcome(type="timeout")
        if out.timed_out
        else ShellCallOutcome(type="exit", exit_code=out.exit_code)
    )
    return ShellCommandOutput(
        stdout=out.stdout, stderr=out.stderr, outcome=outcome, command=command
    )


# ------------------------------------------------------------------ apply_patch


class _PatchFailed(Exception):
    """An operation the model asked for that cannot be done: told to the model as it is."""


def workspace_path(path: str) -> str:
    """The absolute path under /mnt/data that a patch's path names (relative paths are taken
    from /mnt/data); ValueError for one that leaves it."""
    full = posixpath.normpath(posixpath.join(WORKSPACE, path))
    if not full.startswith(WORKSPACE + "/"):
        raise ValueError(f"{path!r} is not a file under {WORKSPACE}")
    return full


class SandboxEditor:
    """An `ApplyPatchTool` editor for the text files under /mnt/data in the sandbox.

    A create writes the diff's lines to a new file, an update reads the file, applies the
    SDK's own V4A diff to it (`agents.apply_diff`) and writes the result (then removes the
    old path when the operation moves the file), a delete removes it. What cannot be done (a
    path outside /mnt/data, a missing file, a diff that does not match, a file that is not
    UTF-8 text or is too large to read back whole) is a failed operation whose output says
    why; an error from the daemon is raised, and the SDK reports it to the model the same way.
    """

    def __init__(self, client: AsyncClient | Client, container_id: str) -> None:
        self._sandbox = _Sandbox(client, container_id)

    async def create_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        try:
            path = workspace_path(operation.path)
            text = apply_diff("", operation.diff or "", mode="create")
            await self._run(_CREATE, {"SANDBOXD_PATH": path}, text, f"cannot create {path}")
        except (_PatchFailed, ValueError) as exc:
            return ApplyPatchResult(status="failed", output=str(exc))
        return ApplyPatchResult(status="completed", output=f"Created {path}")

    async def update_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        try:
            path = workspace_path(operation.path)
            target = path if operation.move_to is None else workspace_path(operation.move_to)
            try:
                text = apply_diff(await self._read(path), operation.diff or "")
            except ValueError as exc:
                raise _PatchFailed(f"the diff does not apply to {path}: {exc}") from None
            env = {"SANDBOXD_PATH": path, "SANDBOXD_TO": target}
            await self._run(
                _WRITE if target == path else _MOVE, env, text, f"cannot write {target}"
            )
        except (_PatchFailed, ValueError) as exc:
            return ApplyPatchResult(status="failed", output=str(exc))
        done = f"Updated {path}" if target == path else f"Updated {path} and moved it to {target}"
        return ApplyPatchResult(status="completed", output=done)

    async def delete_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        try:
            path = workspace_path(operation.path)
            await self._run(_DELETE, {"SANDBOXD_PATH": path}, None, f"cannot delete {path}")
        except (_PatchFailed, ValueError) as exc:
            return ApplyPatchResult(status="failed", output=str(exc))
        return ApplyPatchResult(status="completed", output=f"Deleted {path}")

    async def _read(self, path: str) -> str:
        result = await self._sandbox.exec([_READ], env={"SANDBOXD_PATH": path})
        out = _succeeded(result, f"cannot read {path}")
        if out.truncated:
            limit = result.max_output_length * 3 // 4  # what base64 of that length holds
            raise _PatchFailed(f"{path} is too large to patch here (more than {limit} bytes)")
        try:
            return base64.b64decode(out.stdout).decode("utf-8")
        except UnicodeDecodeError:
            raise _PatchFailed(f"{path} is not UTF-8 text") from None

    async def _run(
        self, command: str, env: Mapping[str, str], stdin: str | None, failure: str
    ) -> None:
        _succeeded(await self._sandbox.exec([command], env=env, stdin=stdin), failure)


def _succeeded(result: ExecResult, failure: str) -> CommandResult:
    out = result.output[0]
    if out.timed_out:
        raise _PatchFailed(f"{failure}: timed out")
    if out.exit_code != 0:
        raise _PatchFailed(f"{failure}: {out.stderr.strip() or f'exit code {out.exit_code}'}")
    return out


# ------------------------------------------------------------------ run_python


def run_python_tool(
    client: AsyncClient | Client,
    container_id: str,
    *,
    session_id: str | None = None,
    timeout_ms: int | None = None,
    max_output_length: int | None = None,
) -> FunctionTool:
    """A `run_python` function tool: a cell in the container's /code session (`session_id`,
    else the default one), whose variables, imports and open files live between calls."""
    sandbox = _Sandbox(client, container_id)

    async def run_python(code: str) -> str:
        """Run Python code in a persistent session inside the sandbox: variables, imports and
        definitions stay from one call to the next, the working directory is /mnt/data, and
        files written there (charts with matplotlib, CSV, ...) are listed in the reply. The
        reply is JSON: `outcome` (ok, error, timeout or killed), `stdout`, `stderr`, `result`
        (the repr of the last expression), `error` and `traceback`, `files` (paths written),
        each only when there is something to say.

        Args:
            code: The Python source to run, like a notebook cell.
        """
        cell = await sandbox.code(
            code, session_id=session_id, timeout_ms=timeout_ms, max_output_length=max_output_length
        )
        return json.dumps(code_report(cell), ensure_ascii=False)

    return function_tool(run_python)


def code_report(cell: CodeResult) -> dict[str, Any]:
    """What the model is told about a cell: its outcome and what is not empty of the rest."""
    report: dict[str, Any] = {"outcome": cell.outcome.type}
    if cell.stdout:
        report["stdout"] = cell.stdout
    if cell.stderr:
        report["stderr"] = cell.stderr
    if cell.truncated:
        report["output_truncated"] = True
    if cell.result is not None:
        report["result"] = cell.result
    if cell.error is not None:
        report["error"] = f"{cell.error.name}: {cell.error.value}"
        trace = cell.error.traceback
        if trace:
            report["traceback"] = "".join(trace) if isinstance(trace, list) else trace
    if cell.files:
        report["files"] = [f.path for f in cell.files]
    if cell.outcome.state_lost:
        # The interpreter died with this cell: the next one starts with nothing defined.
        report["state_lost"] = True
    if cell.restarted:
        # This cell ran in a fresh interpreter: what earlier cells defined is gone.
        report["session_restarted"] = cell.restart_reason or True
    if cell.killed:
        report["killed"] = cell.killed
    return report
