"""An MCP server (stdio) that gives any MCP host sandboxd's sandboxes as tools.

    sandboxd-mcp [--container NAME|ID] [--socket PATH | --url URL]

The daemon is found as the `sandboxd` command line finds it ($SANDBOXD_URL with
$SANDBOXD_API_KEY, else $SANDBOXD_SOCKET, else the default socket). `--container` gives the
tools a default sandbox, found by id or name or created under that name on first use, so a
host can hand an agent "a sandbox" with no setup. The MCP SDK (`sandboxd-client[mcp]`) loads
only when the server starts: `--help` and a missing SDK answer at once.
"""

import argparse
import sys
from collections.abc import Sequence

from sandboxd_client.discovery import Target, discover

EX_UNAVAILABLE = 69  # what the sandboxd CLI answers when a piece it needs is not there


def serve(target: Target, container: str | None = None) -> int:
    """Serve MCP on stdin/stdout until the host closes them; the exit code."""
    try:
        from sandboxd_client.mcp_server.server import run
    except ModuleNotFoundError as exc:
        missing = exc.name or "mcp"
        if missing.startswith("sandboxd_client"):
            raise  # our own packaging, not the optional SDK
        sys.stderr.write(
            f"sandboxd-mcp: the MCP SDK is not installed ({missing} is missing): "
            "pip install 'sandboxd-client[mcp]'\n"
        )
        return EX_UNAVAILABLE
    run(target, container)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--container", metavar="NAME|ID",
        help="default sandbox for the tools: an id, or a name (the newest running sandbox of "
        "that name, else one created under it on first use)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sandboxd-mcp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--socket", metavar="PATH", help="daemon's unix socket")
    parser.add_argument("--url", metavar="URL", help="talk TCP instead (default $SANDBOXD_URL)")
    parser.add_argument(
        "--api-key", metavar="KEY",
        help="bearer key for --url (prefer $SANDBOXD_API_KEY: argv is visible to others)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.socket and args.url:
        parser.error("give either --socket or --url, not both")
    return serve(discover(args.socket, args.url, args.api_key), args.container)
