"""sandboxd-mcp driven by the official MCP client (ClientSession over stdio, the server a
subprocess with the daemon's socket in its environment) against a real daemon."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sandboxd_client as sc
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, ImageContent, TextContent

from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root

SERVER = str(Path(sys.executable).with_name("sandboxd-mcp"))  # this venv's console scripts
SANDBOXD = str(Path(sys.executable).with_name("sandboxd"))
TOOLS = {
    "create_sandbox", "list_sandboxes", "delete_sandbox", "exec", "run_python", "write_file",
    "read_file", "list_files", "list_images",
}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@contextlib.asynccontextmanager
async def mcp_session(
    daemon: DaemonHandle, log: Path, *args: str, command: str = SERVER
) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=command, args=list(args), env={"SANDBOXD_SOCKET": daemon.socket}
    )
    with log.open("a") as errlog:  # the server's own log (stderr): read it when a test fails
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A successful call's structured result (checked against the text the model reads)."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    first = result.content[0]
    assert isinstance(first, TextContent)
    assert json.loads(first.text) == result.structured_content
    return result.structured_content


async def error_of(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, result
    (block,) = result.content
    assert isinstance(block, TextContent)
    return block.text


@pytest.mark.parametrize("command", [[SERVER], [SANDBOXD, "mcp"]], ids=["sandboxd-mcp", "cli"])
async def test_the_tools_are_listed_with_their_schemas(
    daemon: DaemonHandle, tmp_path: Path, command: list[str]
) -> None:
    log = tmp_path / "server.log"
    async with mcp_session(daemon, log, *command[1:], command=command[0]) as session:
        init = await session.initialize()  # the handshake's result, kept by the session
        assert init.instructions and "/mnt/data" in init.instructions
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():
        assert tool.description and len(tool.description) > 60, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, tool.name
    exec_ = listed["exec"].input_schema
    assert exec_["required"] == ["commands"]
    assert set(exec_["properties"]) == {
        "commands", "container", "timeout_seconds", "working_directory", "env",
        "max_output_bytes",
    }  # fmt: skip
    assert exec_["properties"]["timeout_seconds"]["anyOf"][0]["maximum"] == 3600
    assert listed["read_file"].input_schema["required"] == ["path"]
    encoding = listed["write_file"].input_schema["properties"]["encoding"]
    assert encoding["enum"] == ["text", "base64"]
    assert listed["delete_sandbox"].input_schema["required"] == ["container"]
    assert listed["delete_sandbox"].annotations is not None
    assert listed["delete_sandbox"].annotations.destructive_hint is True
    assert "images" in listed["run_python"].output_schema["properties"]  # type: ignore[index]


async def test_a_session_from_csv_to_figure(daemon: DaemonHandle, tmp_path: Path) -> None:
    async with mcp_session(daemon, tmp_path / "server.log") as session:
        box = await call(session, "create_sandbox", name="mcp-tour", expires_after_minutes=5)
        cid = box["id"]
        assert box["status"] == "running" and box["name"] == "mcp-tour"
        try:
            rows = "city,temp\noslo,4\nrome,18\nlima,20\n"
            wrote = await call(session, "write_file", container=cid, path="data.csv", content=rows)
            assert wrote == {"path": "/mnt/data/data.csv", "bytes": len(rows)}

            # A stateful session: the first cell loads, the second plots from its variables.
            await call(
                session, "run_python", container=cid,
                code="import csv\nrows = list(csv.DictReader(open('data.csv')))",
            )  # fmt: skip
            plotted = await session.call_tool(
                "run_python",
                {
                    "container": cid,
                    "code": "import matplotlib.pyplot as plt\n"
                    "temps = [int(r['temp']) for r in rows]\n"
                    "plt.bar([r['city'] for r in rows], temps)\n"
                    "print('cities:', len(rows))\n"
                    "sum(temps)",
                },
            )
            assert not plotted.is_error, plotted.content
            out = plotted.structured_content
            assert out is not None
            assert out["status"] == "ok" and out["stdout"] == "cities: 3\n"
            assert out["result"] == "42"
            assert out["images"] == ["/mnt/data/figure-1.png"]
            assert "/mnt/data/figure-1.png" in [f["path"] for f in out["files"]]
            images = [b for b in plotted.content if isinstance(b, ImageContent)]
            assert len(images) == 1 and images[0].mime_type == "image/png"
            assert base64.b64decode(images[0].data).startswith(PNG_MAGIC)

            failed = await call(session, "run_python", container=cid, code="1 / 0")
            assert failed["status"] == "error"
            assert failed["error"].startswith("ZeroDivisionError: division by zero")

            text = await call(session, "read_file", container=cid, path="/mnt/data/data.csv")
            assert text["encoding"] == "text" and text["content"] == rows
            assert text["size"] == len(rows) and not text["truncated"]
            part = await call(session, "read_file", container=cid, path="data.csv", max_bytes=5)
            assert part["content"] == "city," and part["truncated"]
            png = await call(session, "read_file", container=cid, path="figure-1.png")
            assert png["encoding"] == "base64"
            assert base64.b64decode(png["content"]).startswith(PNG_MAGIC)

            blob = bytes(range(256))
            await call(
                session, "write_file", container=cid, path="/mnt/data/sub/blob.bin",
                content=base64.b64encode(blob).decode(), encoding="base64",
            )  # fmt: skip
            again = await call(session, "read_file", container=cid, path="sub/blob.bin")
            assert base64.b64decode(again["content"]) == blob

            listed = await call(session, "list_files", container=cid)
            paths = {f["path"]: f["bytes"] for f in listed["files"]}
            assert paths["/mnt/data/data.csv"] == len(rows)
            assert paths["/mnt/data/sub/blob.bin"] == 256
            assert "/mnt/data/figure-1.png" in paths

            ran = await call(
                session, "exec", container=cid,
                commands=["wc -l < /mnt/data/data.csv", "echo $X; pwd"],
                env={"X": "from-env"}, working_directory="/tmp",
            )  # fmt: skip
            assert [r["stdout"] for r in ran["results"]] == ["4\n", "from-env\n/tmp\n"]
            assert [r["exit_code"] for r in ran["results"]] == [0, 0]
            slow = await call(
                session, "exec", container=cid, commands=["sleep 5", "echo never"],
                timeout_seconds=0.5,
            )  # fmt: skip
            assert slow["results"][0]["timed_out"] and slow["not_run"] == ["echo never"]

            mine = await call(session, "list_sandboxes")
            assert cid in [b["id"] for b in mine["sandboxes"]]
            assert [b["image"] for b in mine["sandboxes"] if b["id"] == cid] == ["host"]
            images = (await call(session, "list_images"))["images"]
            assert images[0]["name"] == "host" and images[0]["default"] is True
        finally:
            gone = await call(session, "delete_sandbox", container=cid)
        assert gone == {"id": cid, "deleted": True}
        mine = await call(session, "list_sandboxes")
        assert cid not in [b["id"] for b in mine["sandboxes"]]


async def test_errors_are_tool_errors_and_the_server_keeps_serving(
    daemon: DaemonHandle, tmp_path: Path
) -> None:
    missing = "cntr_" + "0" * 48
    async with mcp_session(daemon, tmp_path / "server.log") as session:
        bad = await error_of(
            session, "exec", container=missing, commands="true", timeout_seconds=-1
        )
        assert "timeout_seconds" in bad  # the schema's check: the daemon was not asked
        gone = await error_of(session, "exec", container=missing, commands="true")
        assert "No container found" in gone and "(request req_" in gone  # the daemon's message
        assert "no sandbox given" in await error_of(session, "run_python", code="1")
        assert "running sandbox" in await error_of(session, "list_files", container="nosuch")
        assert "commands" in await error_of(session, "exec", container=missing)
        box = await call(session, "create_sandbox", name="mcp-errors")
        try:
            nofile = await error_of(session, "read_file", container=box["id"], path="nope.txt")
            assert "No such file or directory" in nofile
            notb64 = await error_of(
                session, "write_file", container=box["id"], path="x", content="***",
                encoding="base64",
            )  # fmt: skip
            assert "not valid base64" in notb64
            tool = await error_of(session, "exec", container=box["id"], commands=["true"] * 65)
            assert "commands" in tool and "(request req_" in tool
        finally:
            await call(session, "delete_sandbox", container=box["id"])
        # Still serving after all that.
        assert isinstance((await call(session, "list_sandboxes"))["sandboxes"], list)


async def test_the_default_sandbox(daemon: DaemonHandle, tmp_path: Path) -> None:
    name = f"mcp-default-{secrets.token_hex(4)}"
    log = tmp_path / "server.log"
    async with mcp_session(daemon, log, "--container", name) as session:
        init_note = await call(session, "write_file", path="note.txt", content="kept")
        assert init_note["path"] == "/mnt/data/note.txt"
        ran = await call(session, "exec", commands="cat note.txt")
        first = ran["container"]
        assert ran["results"][0]["stdout"] == "kept"
    # A new server with the same --container finds the same sandbox by its name.
    async with mcp_session(daemon, log, "--container", name) as session:
        cell = await call(session, "run_python", code="open('note.txt').read()")
        assert cell["container"] == first and cell["result"] == "'kept'"
        listed = await call(session, "list_sandboxes")
        (mine,) = [b for b in listed["sandboxes"] if b["name"] == name]
        assert mine["id"] == first and mine["default"] is True
        await call(session, "delete_sandbox", container=name)
        fresh = await call(session, "list_files")  # a new one, made on first use again
        assert fresh["container"] != first and fresh["files"] == []
        # Deleted behind the server's back: said once, and the next call makes a new one.
        with sc.Client(socket=daemon.socket, env={}) as direct:
            direct.containers.delete(fresh["container"])
        assert "was deleted; call again" in await error_of(session, "list_files")
        third = await call(session, "list_files")
        assert third["container"] not in (first, fresh["container"])
        await call(session, "delete_sandbox", container=third["container"])
