"""Wire shapes of our objects (OpenAI's, plus tolerated extra fields)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from daemon.api.output import Captured
from daemon.code import CodeRun
from daemon.images import ImageInfo
from daemon.models import (
    ContainerRecord,
    EventRecord,
    FileRecord,
    Page,
    SkillRecord,
    SkillVersionRecord,
    UserFileRecord,
)
from daemon.processes import Process
from sandbox.agent_client import AgentProcess, CodeSession
from sandbox.execution import CommandOutcome


def container(rec: ContainerRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "object": "container",
        "name": rec.name,
        "created_at": rec.created_at,
        "status": str(rec.status),
        "last_active_at": rec.last_active_at,
        "expires_after": {"anchor": "last_active_at", "minutes": rec.expires_minutes},
        "expires_at": rec.last_active_at + rec.expires_minutes * 60,
        "memory_limit": rec.memory_limit,
        "image": rec.image,
        "network_policy": rec.network_policy or {"type": "disabled"},
        **({"status_reason": rec.status_reason} if rec.status_reason else {}),
    }


def image(info: ImageInfo) -> dict[str, Any]:
    return {
        "id": info.name,
        "object": "image",
        "name": info.name,
        "description": info.description,
        "build_id": info.build_id,
        "created_at": info.created_at,
        "size_bytes": info.size_bytes,
        "python_version": info.python_version,
        "node_version": info.node_version,
        "packages": {kind: list(names) for kind, names in info.packages.items()},
        "default": info.default,
    }


def event(cid: str, rec: EventRecord) -> dict[str, Any]:
    return {
        "object": "container.event",
        "container_id": cid,
        "type": rec.type,
        "created_at": rec.created_at,
        "detail": rec.detail,
    }


def container_file(rec: FileRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "object": "container.file",
        "container_id": rec.container_id,
        "created_at": rec.created_at,
        "bytes": rec.bytes,
        "path": rec.path,
        "source": rec.source,
    }


def user_file(rec: UserFileRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "object": "file",
        "bytes": rec.bytes,
        "created_at": rec.created_at,
        "filename": rec.filename,
        "purpose": rec.purpose,
        "status": "processed",
        "expires_at": rec.expires_at,
        "status_details": None,
    }


def page[T](p: Page[T], fn: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    data: Sequence[dict[str, Any]] = [fn(item) for item in p.items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": p.has_more,
    }


def deleted(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


def skill(rec: SkillRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "object": "skill",
        "created_at": rec.created_at,
        "name": rec.name,
        "description": rec.description,
        "default_version": str(rec.default_version),
        "latest_version": str(rec.latest_version),
    }


def skill_version(rec: SkillVersionRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "object": "skill.version",
        "skill_id": rec.skill_id,
        "version": str(rec.version),
        "created_at": rec.created_at,
        "name": rec.name,
        "description": rec.description,
    }


def output_item(
    o: CommandOutcome, stdout: Captured | None = None, stderr: Captured | None = None
) -> dict[str, Any]:
    """One `output` item (shell_call_output's shape); without output for stream events."""
    outcome: dict[str, Any] = (
        {"type": "timeout"} if o.timed_out else {"type": "exit", "exit_code": o.exit_code}
    )
    item: dict[str, Any] = {} if stdout is None else {"stdout": stdout, "stderr": stderr}
    item.update(outcome=outcome, truncated=o.truncated, duration_ms=o.duration_ms)
    if o.killed is not None:
        item["killed"] = o.killed
    return item


def code_result(run: CodeRun, cid: str, output: dict[str, Captured]) -> dict[str, Any]:
    """The reply; `output` holds stdout and stderr (none for the stream's result event)."""
    body: dict[str, Any] = {
        "object": "container.code_result",
        "container_id": cid,
        "session_id": run.session_id,
        **output,
        "truncated": run.truncated,
        "result": run.result,
        "result_truncated": run.result_truncated,
        "error": None,
        "outcome": {"type": run.outcome, "state_lost": run.state_lost},
        "restarted": run.restarted,
        "files": [container_file(f) for f in run.files],
        "files_truncated": run.files_truncated,
        "duration_ms": run.duration_ms,
    }
    if run.error is not None:
        e = run.error
        body["error"] = {"name": e.name, "value": e.value, "traceback": e.traceback}
    if run.killed is not None:
        body["killed"] = run.killed
    if run.restarted:
        body["restart_reason"] = run.restart_reason or "killed"
    return body


def code_session(session: CodeSession, cid: str) -> dict[str, Any]:
    return {
        "id": session.id,
        "object": "container.code_session",
        "container_id": cid,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "status": session.status,
    }


def process_info(info: AgentProcess, cid: str, killed: str | None = None) -> dict[str, Any]:
    """A background process (`killed`: oom or pids, when we saw it killed for that)."""
    body: dict[str, Any] = {
        "id": info.id,
        "object": "container.process",
        "container_id": cid,
        "command": info.command,
        "tty": info.size is not None,
        "status": "running" if info.running else "exited",
        "exit_code": info.exit_code,
        "created_at": info.created_at,
        "ended_at": info.ended_at,
        "output_bytes": info.output_bytes,
    }
    if info.size is not None:
        body["cols"], body["rows"] = info.size
    if killed is not None:
        body["killed"] = killed
    return body


def process(p: Process, cid: str) -> dict[str, Any]:
    return process_info(p.info, cid, p.killed)
