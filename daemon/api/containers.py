"""Handlers for /v1/containers: parse, call the service, serialise."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemon import ids
from daemon.api import serialize
from daemon.api.context import CONFIG, CONTAINERS, caller_of, read_json
from daemon.api.validation import (
    get_enum,
    get_int,
    get_str,
    query_list_params,
    reject_unknown,
)
from daemon.config import Config
from daemon.containers import CreateParams
from daemon.errors import InvalidRequest
from daemon.skills import SkillRef
from sandbox.policy import PolicyError, parse_network_policy
from sandbox.spec import MEMORY_TIERS

MAX_FILE_IDS = 100
CREATE_KEYS = {
    "name", "memory_limit", "expires_after", "network_policy", "file_ids", "skills", "image",
}  # fmt: skip


def parse_create(body: dict[str, Any], cfg: Config) -> CreateParams:
    reject_unknown(body, CREATE_KEYS)
    name = get_str(body, "name", max_len=256)
    memory_limit = get_enum(body, "memory_limit", default="1g", allowed=tuple(MEMORY_TIERS))
    minutes = cfg.containers.default_minutes
    expires = body.get("expires_after")
    if expires is not None:
        if not isinstance(expires, dict):
            raise InvalidRequest(
                "Invalid type for 'expires_after': expected an object.", param="expires_after"
            )
        reject_unknown(expires, {"anchor", "minutes"}, "expires_after.")
        get_enum(
            expires,
            "anchor",
            default="last_active_at",
            allowed=("last_active_at",),
            param="expires_after.anchor",
        )
        minutes = get_int(
            expires,
            "minutes",
            default=minutes,
            lo=1,
            hi=cfg.containers.max_minutes,
            param="expires_after.minutes",
        )
    try:
        network = parse_network_policy(body.get("network_policy"))
    except PolicyError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from None
    for key in ("file_ids", "skills"):
        value = body.get(key)
        if value is not None and not isinstance(value, list):
            raise InvalidRequest(f"Invalid type for '{key}': expected an array.", param=key)
    return CreateParams(
        name=name,
        memory_limit=memory_limit,
        expires_minutes=minutes,
        file_ids=parse_file_ids(body.get("file_ids") or []),
        skills=parse_skills(body.get("skills") or [], cfg.skills.max_skills_per_container),
        network=network,
        image=None if body.get("image") is None else get_str(body, "image", max_len=64),
    )


def parse_skills(value: list[Any], cap: int) -> tuple[SkillRef, ...]:
    if len(value) > cap:
        raise InvalidRequest(f"At most {cap} 'skills' are accepted.", param="skills")
    refs = []
    for i, item in enumerate(value):
        where = f"skills[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid type for '{where}': expected an object.", param=where)
        kind = get_enum(
            item, "type", default="", allowed=("skill_reference", "inline"), param=f"{where}.type"
        )
        if kind == "skill_reference":
            reject_unknown(item, {"type", "skill_id", "version"}, f"{where}.")
            skill_id = get_str(item, "skill_id", max_len=64, param=f"{where}.skill_id")
            version = item.get("version")
            if isinstance(version, int) and not isinstance(version, bool):
                version = str(version)
            if version is not None:
                version = get_str(item, "version", max_len=20, param=f"{where}.version")
            refs.append(SkillRef(skill_id=skill_id, version=version))
            continue
        reject_unknown(item, {"type", "name", "description", "source"}, f"{where}.")
        get_str(item, "name", max_len=64, param=f"{where}.name")
        get_str(item, "description", max_len=1024, param=f"{where}.description")
        source = item.get("source")
        if not isinstance(source, dict):
            raise InvalidRequest(
                f"Missing or invalid parameter: '{where}.source'.", param=f"{where}.source"
            )
        reject_unknown(source, {"type", "media_type", "data"}, f"{where}.source.")
        get_enum(
            source, "type", default="base64", allowed=("base64",), param=f"{where}.source.type"
        )
        get_enum(
            source,
            "media_type",
            default="application/zip",
            allowed=("application/zip",),
            param=f"{where}.source.media_type",
        )
        data = get_str(source, "data", max_len=1 << 30, param=f"{where}.source.data")
        refs.append(SkillRef(inline_zip=data))
    return tuple(refs)


def parse_file_ids(value: list[Any]) -> tuple[str, ...]:
    if len(value) > MAX_FILE_IDS:
        raise InvalidRequest(f"At most {MAX_FILE_IDS} 'file_ids' are accepted.", param="file_ids")
    for item in value:
        if not isinstance(item, str) or not 1 <= len(item) <= 128:
            raise InvalidRequest("Invalid 'file_ids': expected file id strings.", param="file_ids")
    if len(set(value)) != len(value):
        raise InvalidRequest("'file_ids' lists a file twice.", param="file_ids")
    return tuple(value)


async def create(request: web.Request) -> web.Response:
    params = parse_create(await read_json(request), request.app[CONFIG])
    rec = await request.app[CONTAINERS].create(caller_of(request), params)
    return web.json_response(serialize.container(rec))


async def list_(request: web.Request) -> web.Response:
    after, limit, desc = query_list_params(request.query, ids.CONTAINER_ID)
    name = request.query.get("name")
    page = await request.app[CONTAINERS].list_containers(
        caller_of(request), name, after, limit, desc
    )
    return web.json_response(serialize.page(page, serialize.container))


async def retrieve(request: web.Request) -> web.Response:
    rec = await request.app[CONTAINERS].get(caller_of(request), request.match_info["container_id"])
    return web.json_response(serialize.container(rec))


async def delete(request: web.Request) -> web.Response:
    cid = request.match_info["container_id"]
    await request.app[CONTAINERS].delete(caller_of(request), cid)
    return web.json_response(serialize.deleted(cid, "container"))


async def events(request: web.Request) -> web.Response:
    cid = request.match_info["container_id"]
    found = await request.app[CONTAINERS].events(caller_of(request), cid)
    data = [serialize.event(cid, e) for e in found]
    return web.json_response({"object": "list", "data": data, "has_more": False})
