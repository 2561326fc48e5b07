"""`port-forward`: a local listener for a server inside a container (sandboxd_client's
PortForward: each request relayed through the ports route, WebSockets passed through)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
from typing import TYPE_CHECKING

from daemon.clitool.containers import CommandError, Console, resolve

if TYPE_CHECKING:  # the HTTP stack loads when dispatch makes the client
    from sandboxd_client import Client, Target

LOOPBACK = "127.0.0.1"


def parse_spec(spec: str) -> tuple[int, int]:
    """`[LOCAL:]PORT` -> (local port, container port); LOCAL 0 picks a free one, no LOCAL
    listens on PORT itself."""
    local_text, _, port_text = spec.rpartition(":")
    try:
        port = int(port_text)
        local = int(local_text) if local_text else port
    except ValueError:
        raise CommandError(f"expected [LOCAL:]PORT, got {spec!r}") from None
    if not 1 <= port <= 65535 or not 0 <= local <= 65535:
        raise CommandError(f"ports are 1..65535 (LOCAL may be 0: any free one), got {spec!r}")
    return local, port


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def port_forward(client: Client, args: argparse.Namespace, con: Console) -> int:
    local, port = parse_spec(args.spec)
    address = args.address or LOOPBACK
    if not is_loopback(address):
        con.error(
            f"listening on {address}: whoever reaches it reaches the server in the container, "
            "with your access"
        )
    cid = resolve(client, args.id)
    return asyncio.run(_serve(client.target, cid, port, address, local, con))


async def _serve(
    target: Target, cid: str, port: int, address: str, local: int, con: Console
) -> int:
    from sandboxd_client import AsyncClient, PortForward  # the asyncio side loads only here

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = AsyncClient(
        socket=target.socket or None, url=target.url or None, api_key=target.api_key,
        env={}, timeout=None, max_retries=0,
    )  # fmt: skip
    async with (
        client,
        PortForward(
            client, cid, port, host=address, local_port=local, on_error=con.error
        ) as forward,
    ):
        con.out.write(f"{forward.url}\n")
        con.out.flush()
        con.error(f"forwarding {forward.url} to port {port} of {cid}; Ctrl-C stops")
        await stop.wait()
    return 0
