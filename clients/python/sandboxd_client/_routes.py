"""Every route of the API as a Call builder, shared by the sync and the async client (their
methods are these plus sending and parsing). Bodies carry only what the caller set, so the
daemon's defaults stay the daemon's."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from sandboxd_client._attach import attach_path
from sandboxd_client._core import Call, Multipart, Part, Source, skill_parts, upload_name

CONTAINERS = "/v1/containers"
FILES = "/v1/files"
SKILLS = "/v1/skills"


def _seg(value: str) -> str:
    """One path segment: an id from a caller must not reach another route."""
    return urllib.parse.quote(value, safe="")


def _query(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}


def _set(body: dict[str, Any], **values: Any) -> dict[str, Any]:
    body.update({k: v for k, v in values.items() if v is not None})
    return body


def healthz() -> Call:
    return Call("GET", "/healthz")


# ---------------------------------------------------------------- containers


def create_container(
    name: str,
    memory_limit: str | None,
    expires_after_minutes: int | None,
    network_policy: Mapping[str, Any] | None,
    file_ids: Sequence[str] | None,
    skills: Sequence[Mapping[str, Any]] | None,
    image: str | None = None,
) -> Call:
    body = _set(
        {"name": name},
        memory_limit=memory_limit,
        image=image,
        network_policy=dict(network_policy) if network_policy is not None else None,
        file_ids=list(file_ids) if file_ids is not None else None,
        skills=[dict(s) for s in skills] if skills is not None else None,
    )
    if expires_after_minutes is not None:
        body["expires_after"] = {"anchor": "last_active_at", "minutes": expires_after_minutes}
    return Call("POST", CONTAINERS, json=body, idempotent=True)


def list_images() -> Call:
    return Call("GET", "/v1/images")


def retrieve_image(name: str) -> Call:
    return Call("GET", f"/v1/images/{_seg(name)}")


def list_containers(
    limit: int | None, order: str | None, after: str | None, name: str | None
) -> Call:
    return Call("GET", CONTAINERS, params=_query(limit=limit, order=order, after=after, name=name))


def container(cid: str) -> str:
    return f"{CONTAINERS}/{_seg(cid)}"


def retrieve_container(cid: str) -> Call:
    return Call("GET", container(cid))


def delete_container(cid: str) -> Call:
    return Call("DELETE", container(cid))


def container_events(cid: str) -> Call:
    return Call("GET", f"{container(cid)}/events")


# ---------------------------------------------------------------- container files


def upload_container_file(cid: str, source: Source, filename: str | None) -> Call:
    part = Part("file", source, upload_name(source, filename))
    return Call("POST", f"{container(cid)}/files", multipart=Multipart([part]), idempotent=True)


def copy_file_to_container(cid: str, file_id: str) -> Call:
    return Call("POST", f"{container(cid)}/files", json={"file_id": file_id}, idempotent=True)


def list_container_files(cid: str, limit: int | None, order: str | None, after: str | None) -> Call:
    params = _query(limit=limit, order=order, after=after)
    return Call("GET", f"{container(cid)}/files", params=params)


def container_file(cid: str, file_id: str) -> str:
    return f"{container(cid)}/files/{_seg(file_id)}"


def retrieve_container_file(cid: str, file_id: str) -> Call:
    return Call("GET", container_file(cid, file_id))


def delete_container_file(cid: str, file_id: str) -> Call:
    return Call("DELETE", container_file(cid, file_id))


def container_file_content(cid: str, file_id: str) -> Call:
    return Call("GET", f"{container_file(cid, file_id)}/content")


# ---------------------------------------------------------------- exec and code


def exec_(
    cid: str,
    commands: str | Sequence[str],
    timeout_ms: int | None,
    max_output_length: int | None,
    env: Mapping[str, str] | None,
    working_directory: str | None,
    stdin: str | None,
    stream: bool,
) -> Call:
    body = _set(
        {"commands": [commands] if isinstance(commands, str) else list(commands)},
        timeout_ms=timeout_ms,
        max_output_length=max_output_length,
        env=dict(env) if env is not None else None,
        working_directory=working_directory,
        stdin=stdin,
    )
    if stream:
        body["stream"] = True
    return Call("POST", f"{container(cid)}/exec", json=body, stream=stream)


def code(
    cid: str,
    source: str,
    session_id: str | None,
    timeout_ms: int | None,
    max_output_length: int | None,
    stream: bool,
) -> Call:
    body = _set(
        {"code": source},
        session_id=session_id,
        timeout_ms=timeout_ms,
        max_output_length=max_output_length,
    )
    if stream:
        body["stream"] = True
    return Call("POST", f"{container(cid)}/code", json=body, stream=stream)


def list_code_sessions(cid: str) -> Call:
    return Call("GET", f"{container(cid)}/code/sessions")


def delete_code_session(cid: str, session_id: str) -> Call:
    return Call("DELETE", f"{container(cid)}/code/sessions/{_seg(session_id)}")


# ---------------------------------------------------------------- background processes


def processes(cid: str) -> str:
    return f"{container(cid)}/processes"


def start_process(
    cid: str,
    command: str,
    env: Mapping[str, str] | None,
    working_directory: str | None,
    tty: bool = False,
    cols: int | None = None,
    rows: int | None = None,
) -> Call:
    body = _set(
        {"command": command},
        env=dict(env) if env is not None else None,
        working_directory=working_directory,
        cols=cols,
        rows=rows,
    )
    if tty:
        body["tty"] = True
    return Call("POST", processes(cid), json=body, idempotent=True)


def list_processes(cid: str, limit: int | None, order: str | None, after: str | None) -> Call:
    return Call("GET", processes(cid), params=_query(limit=limit, order=order, after=after))


def process(cid: str, pid: str) -> str:
    return f"{processes(cid)}/{_seg(pid)}"


def retrieve_process(cid: str, pid: str) -> Call:
    return Call("GET", process(cid, pid))


def delete_process(cid: str, pid: str) -> Call:
    return Call("DELETE", process(cid, pid))


def process_output(cid: str, pid: str, offset: int, stream: bool) -> Call:
    params: dict[str, str | int] = {"offset": offset}
    if stream:
        params["stream"] = "true"
    return Call("GET", f"{process(cid, pid)}/output", params=params, stream=stream)


def process_input(cid: str, pid: str, data: str, eof: bool) -> Call:
    body: dict[str, Any] = {"data": data}
    if eof:
        body["eof"] = True
    return Call("POST", f"{process(cid, pid)}/input", json=body)


def signal_process(cid: str, pid: str, signal: str) -> Call:
    return Call("POST", f"{process(cid, pid)}/signal", json={"signal": signal})


def resize_process(cid: str, pid: str, cols: int, rows: int) -> Call:
    return Call("POST", f"{process(cid, pid)}/resize", json={"cols": cols, "rows": rows})


def attach_process(cid: str, pid: str, offset: int | None, mode: str) -> str:
    """The attach WebSocket's path and query (a raw connection, not a Call)."""
    return attach_path(f"{process(cid, pid)}/attach", offset, mode)


# ---------------------------------------------------------------- ports


def port_path(cid: str, port: int, path: str) -> str:
    """/ports/{port}/{path}: `path` as the server inside sees it (its own %-escapes kept).
    A `.` or `..` segment (%-escaped or not) is refused: HTTP stacks resolve them, so one
    would leave the ports route for another of the API's (a forwarded port would then
    reach the whole API with its user's credentials)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError("port must be an integer within 1..65535")
    segments = path.partition("?")[0].partition("#")[0].split("/")
    if any(urllib.parse.unquote(s) in (".", "..") for s in segments):
        raise ValueError("a path with a '.' or '..' segment is refused")
    return f"{container(cid)}/ports/{port}/{path.lstrip('/')}"


# ---------------------------------------------------------------- /v1/files


def create_file(
    source: Source, filename: str | None, purpose: str, expires_after_seconds: int | None
) -> Call:
    parts = [Part("purpose", purpose.encode())]
    if expires_after_seconds is not None:
        parts += [
            Part("expires_after[anchor]", b"created_at"),
            Part("expires_after[seconds]", str(expires_after_seconds).encode()),
        ]
    parts.append(Part("file", source, upload_name(source, filename)))
    return Call("POST", FILES, multipart=Multipart(parts), idempotent=True)


def list_files(
    limit: int | None, order: str | None, after: str | None, purpose: str | None
) -> Call:
    return Call("GET", FILES, params=_query(limit=limit, order=order, after=after, purpose=purpose))


def retrieve_file(file_id: str) -> Call:
    return Call("GET", f"{FILES}/{_seg(file_id)}")


def delete_file(file_id: str) -> Call:
    return Call("DELETE", f"{FILES}/{_seg(file_id)}")


def file_content(file_id: str) -> Call:
    return Call("GET", f"{FILES}/{_seg(file_id)}/content")


# ---------------------------------------------------------------- skills


def create_skill(source: Source, filename: str | None) -> Call:
    return Call("POST", SKILLS, multipart=Multipart(skill_parts(source, filename)), idempotent=True)


def list_skills(limit: int | None, order: str | None, after: str | None) -> Call:
    return Call("GET", SKILLS, params=_query(limit=limit, order=order, after=after))


def skill(sid: str) -> str:
    return f"{SKILLS}/{_seg(sid)}"


def retrieve_skill(sid: str) -> Call:
    return Call("GET", skill(sid))


def update_skill(sid: str, default_version: str | int) -> Call:
    return Call("POST", skill(sid), json={"default_version": str(default_version)})


def delete_skill(sid: str) -> Call:
    return Call("DELETE", skill(sid))


def skill_content(sid: str) -> Call:
    return Call("GET", f"{skill(sid)}/content")


def create_skill_version(
    sid: str, source: Source, filename: str | None, make_default: bool | None
) -> Call:
    parts = skill_parts(source, filename)
    if make_default is not None:
        parts.append(Part("default", b"true" if make_default else b"false"))
    return Call("POST", f"{skill(sid)}/versions", multipart=Multipart(parts), idempotent=True)


def list_skill_versions(sid: str, limit: int | None, order: str | None, after: str | None) -> Call:
    params = _query(limit=limit, order=order, after=after)
    return Call("GET", f"{skill(sid)}/versions", params=params)


def skill_version(sid: str, version: str | int) -> str:
    return f"{skill(sid)}/versions/{_seg(str(version))}"


def retrieve_skill_version(sid: str, version: str | int) -> Call:
    return Call("GET", skill_version(sid, version))


def delete_skill_version(sid: str, version: str | int) -> Call:
    return Call("DELETE", skill_version(sid, version))


def skill_version_content(sid: str, version: str | int) -> Call:
    return Call("GET", f"{skill_version(sid, version)}/content")
