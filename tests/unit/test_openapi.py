"""daemon/openapi.json: valid, self-contained, and in step with the routes and limits we serve."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from daemon.api import code as code_api
from daemon.api import containers, execute, user_files
from daemon.api import processes as processes_api
from daemon.api.app import PUBLIC_PATHS, create_app
from daemon.api.context import Services
from daemon.api.validation import query_list_params
from daemon.config import MAX_AGENT_PROCESS_COMMAND, Config
from daemon.errors import HTTP_ERRORS
from daemon.processes import SIGNALS
from daemon.shutdown import ShutdownControl
from sandbox.agent_client import MAX_TERM_SIZE
from sandbox.spec import MEMORY_TIERS

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ERROR_REF = "#/components/schemas/Error"


def _text() -> str:
    return resources.files("daemon").joinpath("openapi.json").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = json.loads(_text())
    assert isinstance(loaded, dict)
    return loaded


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"non-local $ref {ref!r}"
    node: Any = doc
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"$ref {ref!r} goes through a non-object"
        assert key in node, f"$ref {ref!r} does not resolve"
        node = node[key]
    return node


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _resolve(doc, node["$ref"])
    return node


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema = doc["components"]["schemas"][name]
    assert isinstance(schema, dict)
    return schema


def test_document_parses_and_every_ref_resolves(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    assert [server["url"] for server in doc["servers"]] == ["http://localhost"]
    refs = [node["$ref"] for node in _walk(doc) if "$ref" in node]
    assert refs
    for ref in refs:
        _resolve(doc, ref)


def test_document_is_stably_formatted() -> None:
    text = _text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_paths_match_the_registered_routes(doc: dict[str, Any]) -> None:
    unused = {f.name: object() for f in dataclasses.fields(Services)}  # stored, never called
    app = create_app(Config(), Services(**unused), b"{}", ShutdownControl())  # type: ignore[arg-type]
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in _operations(doc)}
    assert documented == routes


def test_every_operation_has_an_id_and_error_responses(doc: dict[str, Any]) -> None:
    seen: set[str] = set()
    for method, path, operation in _operations(doc):
        where = f"{method} {path}"
        op_id = operation.get("operationId")
        assert op_id, f"{where} has no operationId"
        assert op_id not in seen, f"duplicate operationId {op_id}"
        seen.add(op_id)
        errors = {
            status: _deref(doc, response)
            for status, response in operation["responses"].items()
            if status == "default" or status[0] in "45"
        }
        assert errors, f"{where} documents no error response"
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, f"{where} {status} is not an Error"
            assert "x-request-id" in response["headers"], f"{where} {status}"


def test_public_operations_need_no_auth(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    public = {path for _, path, op in _operations(doc) if op.get("security") == []}
    assert public == set(PUBLIC_PATHS)


def test_error_statuses_and_codes_cover_the_error_table(doc: dict[str, Any]) -> None:
    documented = {
        status for _, _, op in _operations(doc) for status in op["responses"] if status[0] in "45"
    }
    assert {str(mapping.status) for mapping in HTTP_ERRORS.values()} <= documented
    code_doc = _schema(doc, "Error")["properties"]["error"]["properties"]["code"]["description"]
    for cls in HTTP_ERRORS:
        assert f"`{cls.code}`" in code_doc


def test_limits_match_the_parsers_and_config_defaults(doc: dict[str, Any]) -> None:
    cfg = Config()
    create = _schema(doc, "CreateContainerBody")
    assert set(create["properties"]) == containers.CREATE_KEYS
    assert create["properties"]["memory_limit"]["enum"] == list(MEMORY_TIERS)
    minutes = create["properties"]["expires_after"]["properties"]["minutes"]
    assert (minutes["minimum"], minutes["maximum"], minutes["default"]) == (
        1,
        cfg.containers.max_minutes,
        cfg.containers.default_minutes,
    )

    body = _schema(doc, "ExecContainerBody")["properties"]
    assert set(body) == execute.EXEC_KEYS
    commands = body["commands"]["oneOf"][1]
    assert commands["maxItems"] == cfg.exec.max_commands
    assert commands["items"]["maxLength"] == execute.MAX_COMMAND_CHARS
    assert (body["timeout_ms"]["maximum"], body["timeout_ms"]["default"]) == (
        cfg.exec.max_timeout_ms,
        cfg.exec.default_timeout_ms,
    )
    assert (body["max_output_length"]["maximum"], body["max_output_length"]["default"]) == (
        cfg.exec.max_output,
        cfg.exec.default_max_output,
    )
    assert body["env"]["maxProperties"] == execute.MAX_ENV
    assert body["stdin"]["maxLength"] == cfg.exec.max_stdin_bytes

    limit = doc["components"]["parameters"]["Limit"]["schema"]
    max_limit = inspect.signature(query_list_params).parameters["max_limit"].default
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, max_limit, 20)
    skills_limit = doc["components"]["parameters"]["SkillsLimit"]["schema"]
    assert (skills_limit["minimum"], skills_limit["maximum"]) == (0, max_limit)
    files_params = doc["paths"]["/v1/files"]["get"]["parameters"]
    files_limit = next(p for p in files_params if p.get("name") == "limit")["schema"]
    assert files_limit["default"] == files_limit["maximum"] == user_files.MAX_LIST_LIMIT


def test_validates_with_openapi_spec_validator(doc: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


def test_code_limits_match_the_parser_and_config_defaults(doc: dict[str, Any]) -> None:
    cfg = Config()
    body = _schema(doc, "CodeContainerBody")["properties"]
    assert set(body) == code_api.CODE_KEYS
    assert body["code"]["maxLength"] == cfg.code.max_code_bytes
    assert body["session_id"]["pattern"] == f"^{code_api.SESSION_ID.pattern}$"
    assert (body["timeout_ms"]["maximum"], body["timeout_ms"]["default"]) == (
        cfg.code.max_timeout_ms,
        cfg.code.default_timeout_ms,
    )
    assert (body["max_output_length"]["maximum"], body["max_output_length"]["default"]) == (
        cfg.exec.max_output,
        cfg.exec.default_max_output,
    )
    session = doc["components"]["parameters"]["SessionId"]["schema"]
    assert session["pattern"] == body["session_id"]["pattern"]


def test_process_limits_match_the_parsers_and_config_defaults(doc: dict[str, Any]) -> None:
    cfg = Config()
    body = _schema(doc, "CreateProcessBody")["properties"]
    assert set(body) == processes_api.CREATE_KEYS
    assert body["command"]["maxLength"] == MAX_AGENT_PROCESS_COMMAND
    assert body["env"]["maxProperties"] == execute.MAX_ENV
    data = _schema(doc, "ProcessInputBody")["properties"]["data"]
    assert data["maxLength"] == cfg.processes.max_input_bytes
    assert _schema(doc, "SignalProcessBody")["properties"]["signal"]["enum"] == list(SIGNALS)
    for schema in (body, _schema(doc, "ResizeProcessBody")["properties"]):
        for key in ("cols", "rows"):
            assert (schema[key]["minimum"], schema[key]["maximum"]) == (1, MAX_TERM_SIZE)
    assert (body["cols"]["default"], body["rows"]["default"]) == processes_api.DEFAULT_SIZE
