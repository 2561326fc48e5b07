"""Wire shapes of our objects (OpenAI's, plus tolerated extra fields)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from daemon.models import ContainerRecord, EventRecord, FileRecord, Page, UserFileRecord


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
        "network_policy": rec.network_policy or {"type": "disabled"},
        **({"status_reason": rec.status_reason} if rec.status_reason else {}),
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
