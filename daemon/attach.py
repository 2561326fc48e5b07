"""Attachments (GET /v1/containers/{id}/processes/{pid}/attach): a client's live connection to
a background process, its output as it comes and its input as the client types.

An attachment follows the process's output ring from an offset (one agent connection each, like
an output stream) and passes the client's input, resizes and signals through the process
routes' own agent operations. Several may be open on one process; the newest read-write one is
its writer, and only the writer's input, resizes, signals and end of input reach the process
(a reconnecting client is never locked out by its own stale connection). When the writer leaves
no one writes until another read-write attachment arrives. An open attachment holds its
container active; at most `processes.max_attachments` are open per container (409 beyond).

The WebSocket itself (messages, close codes) is the API's: daemon/api/attach.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator

from daemon.config import Config
from daemon.containers import Caller, ContainerService
from daemon.errors import DomainError, InvalidRequest, TooManyAttachments
from daemon.metrics import Metrics
from daemon.processes import Output, Process, ProcessService
from daemon.shutdown import ShutdownControl
from sandbox.agent_client import OutputEnd

logger = logging.getLogger(__name__)


class NotWriter(DomainError):
    """Input, a resize, a signal or an end of input from an attachment that is not the
    process's writer (an attachment message, never an HTTP answer)."""

    code = "not_writer"


class Attachment:
    """One open attachment: its process, its role (`writer`; when a newer one takes it,
    `role_changed` is set) and the bytes it relayed."""

    def __init__(self, service: AttachService, caller: Caller, cid: str, process: Process) -> None:
        self._service = service
        self._caller = caller
        self.cid = cid
        self.process = process
        self.pid = process.info.id
        self.writer = False
        self.role_changed = asyncio.Event()
        self.stopping = service.stopping  # the daemon's shutdown ends the attachment
        self.bytes_in = 0
        self.bytes_out = 0

    def demote(self) -> None:
        self.writer = False
        self.role_changed.set()

    def output(self, offset: int) -> contextlib.AbstractAsyncContextManager[Output]:
        """The process's output from `offset` until it has ended (its OutputEnd last)."""
        return self._service.processes.follow(self.cid, self.pid, offset)

    def sent(self, n: int) -> None:
        """`n` bytes of output went to the client."""
        self.bytes_out += n
        self._service.metrics.attach_bytes.labels("out").inc(n)

    def _check_writer(self) -> None:
        if not self.writer:
            raise NotWriter(
                "This attachment is not the process's writer (read-only, or a newer read-write "
                "attachment took over)."
            )

    async def send_input(self, data: bytes) -> None:
        self._check_writer()
        await self._service.processes.send_input(self._caller, self.cid, self.pid, data, False)
        self.bytes_in += len(data)
        self._service.metrics.attach_bytes.labels("in").inc(len(data))

    async def close_input(self) -> None:
        """Close its stdin (a terminal has none to close: 400 from the agent)."""
        self._check_writer()
        await self._service.processes.send_input(self._caller, self.cid, self.pid, b"", True)

    async def resize(self, cols: int, rows: int) -> None:
        self._check_writer()
        await self._service.processes.resize(self._caller, self.cid, self.pid, cols, rows)

    async def signal(self, name: str) -> None:
        self._check_writer()
        await self._service.processes.send_signal(self._caller, self.cid, self.pid, name)

    async def ended(self, end: OutputEnd) -> Process:
        """The process as it ended (with why it was killed, when we saw it killed)."""
        return await self._service.processes.ended(self.cid, end.process)


class AttachService:
    def __init__(
        self, config: Config, containers: ContainerService, processes: ProcessService,
        shutdown: ShutdownControl, metrics: Metrics,
    ) -> None:  # fmt: skip
        self._cap = config.processes.max_attachments
        # Set when the daemon stops: attachments end at once (the processes run on).
        self.stopping = shutdown.stop_streams
        self._containers = containers
        self.processes = processes
        self.metrics = metrics
        self._open: collections.Counter[str] = collections.Counter()  # per container
        self._writers: dict[tuple[str, str], Attachment] = {}
        metrics.attachments_open.set_function(self.open_count)

    def open_count(self) -> int:
        return sum(self._open.values())

    @contextlib.asynccontextmanager
    async def attach(
        self, caller: Caller, cid: str, pid: str, offset: int | None, rw: bool
    ) -> AsyncIterator[Attachment]:
        """An attachment for the block, its container held active. What must hold for it is
        checked first (the caller's container, the process, the offset, a free slot: 404, 400,
        409), so the caller upgrades its connection inside the block. A read-write one takes
        the writer's role from whichever attachment had it."""
        process = await self.processes.get(caller, cid, pid)
        if offset is not None and offset > process.info.output_bytes:
            raise InvalidRequest(
                "Invalid value for 'offset': the process has written "
                f"{process.info.output_bytes} bytes.",
                param="offset",
            )
        if self._open[cid] >= self._cap:
            raise TooManyAttachments(
                f"At most {self._cap} attachments may be open per container; close one first."
            )
        att = Attachment(self, caller, cid, process)
        key = (cid, att.pid)
        self._open[cid] += 1
        try:
            async with self._containers.active(cid):
                if rw:
                    old = self._writers.get(key)
                    if old is not None:
                        old.demote()
                    self._writers[key] = att
                    att.writer = True
                logger.info("attached", extra={"process_id": att.pid, "mode": "rw" if rw else "ro"})
                try:
                    yield att
                finally:
                    if self._writers.get(key) is att:
                        del self._writers[key]
                    logger.info(
                        "detached",
                        extra={"process_id": att.pid, "bytes_in": att.bytes_in,
                               "bytes_out": att.bytes_out},
                    )  # fmt: skip
        finally:
            self._open[cid] -= 1
            if self._open[cid] <= 0:
                del self._open[cid]
