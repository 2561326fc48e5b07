"""The MCP server: the tools' names, descriptions and hints, and the stdio loop."""

from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from sandboxd_client.aio import AsyncClient
from sandboxd_client.discovery import Target
from sandboxd_client.mcp_server.tools import SandboxTools

INSTRUCTIONS = """\
sandboxd runs code in isolated Linux sandboxes on this machine. A sandbox has its own \
filesystem with a writable workspace at /mnt/data (the working directory of commands and \
Python), Python 3 with its standard library, no network unless created with \
allowed_domains, and it expires after a while unused. Use `exec` for shell commands, \
`run_python` for Python whose variables should persist between calls (figures come back as \
images), `write_file`/`read_file`/`list_files` for files."""

DEFAULT_NOTE = """ This server has a default sandbox ({ref}): leave `container` out to use \
it; it is created on first use."""

DESCRIPTIONS = {
    "create_sandbox": "Create a new isolated sandbox and return its id (pass it as `container` "
    "to the other tools). It starts with an empty /mnt/data and no network unless "
    "allowed_domains lists the HTTPS hosts it may reach; it expires after "
    "expires_after_minutes unused (default 20). `image` picks what it runs on (list_images: "
    "python-data has pandas, numpy, scipy, scikit-learn, matplotlib, office/PDF libraries "
    "and Node, where the host built it).",
    "list_images": "List the images a sandbox can run on (create_sandbox's `image`): name, "
    "description, Python and Node versions, which one is the default.",
    "list_sandboxes": "List the sandboxes that exist (newest first): id, name, status, "
    "memory, when each expires. Use it to find a sandbox made earlier.",
    "delete_sandbox": "Delete a sandbox and everything in it, stopping what runs there. "
    "Cannot be undone.",
    "exec": "Run shell commands (/bin/sh -c) in a sandbox, one after another, and return each "
    "one's exit code, stdout and stderr. The working directory is /mnt/data unless given. "
    "Each command is stopped at timeout_seconds (default 60); a timeout ends the batch. "
    "Nothing persists between calls but files (use run_python to keep Python state).",
    "run_python": "Run Python code in a persistent interpreter in a sandbox: variables, "
    "imports and the working directory (/mnt/data) carry over to the next call with the same "
    "session_id. Returns stdout, stderr, the repr of the last expression, the exception if "
    "one was raised, and the files the code wrote; matplotlib figures left open and images "
    "it saved come back as images.",
    "write_file": "Write a whole file in a sandbox, creating its directories and replacing "
    "what was there. Relative paths are under /mnt/data. Content is text (UTF-8), or base64 "
    "with encoding='base64' for binary data; at most 1 MiB.",
    "read_file": "Read a file from a sandbox: as text when it is UTF-8, else as base64 "
    "(encoding says which). At most max_bytes from offset; truncated=true means more "
    "follows, read again from offset + returned_bytes. Relative paths are under /mnt/data.",
    "list_files": "List the files in a sandbox's workspace /mnt/data (recursively), with "
    "their sizes: what was written, uploaded or produced by code. For other directories, "
    "use exec with ls.",
}

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
# Code a model writes may delete files or, with an allowlist, reach the network.
RUNS_CODE = ToolAnnotations(read_only_hint=False, destructive_hint=True)
DESTROYS = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


def build(tools: SandboxTools) -> MCPServer:
    instructions = INSTRUCTIONS
    if tools.default_ref is not None:
        instructions += DEFAULT_NOTE.format(ref=tools.default_ref)
    server: MCPServer = MCPServer("sandboxd", instructions=instructions, version="0.1.0")
    table: list[tuple[Callable[..., Any], ToolAnnotations]] = [
        (tools.create_sandbox, CHANGES),
        (tools.list_sandboxes, READ_ONLY),
        (tools.list_images, READ_ONLY),
        (tools.delete_sandbox, DESTROYS),
        (tools.exec, RUNS_CODE),
        (tools.run_python, RUNS_CODE),
        (tools.write_file, CHANGES),
        (tools.read_file, READ_ONLY),
        (tools.list_files, READ_ONLY),
    ]
    for method, hints in table:
        name = method.__name__
        server.add_tool(method, name=name, description=DESCRIPTIONS[name], annotations=hints)
    return server


def run(target: Target, container: str | None) -> None:
    """Serve on stdin/stdout until the host closes them."""

    async def main() -> None:
        # env={}: the target is already resolved; the environment must not override it.
        async with AsyncClient(
            socket=target.socket or None, url=target.url or None,
            api_key=target.api_key or None, env={},
        ) as client:  # fmt: skip
            await build(SandboxTools(client, container)).run_stdio_async()

    anyio.run(main)
