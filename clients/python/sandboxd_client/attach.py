"""The blocking attachment to a process: a WebSocket on a socket of its own (the unix socket,
or TCP with TLS for https), the protocol in _attach.py. Its asyncio twin is in aio.py."""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

from sandboxd_client._attach import (
    CHUNK,
    CLOSE_WAIT_S,
    NORMAL,
    UPGRADE_TIMEOUT_S,
    AttachItem,
    Endpoint,
    Session,
    connect_error,
)
from sandboxd_client._core import CONNECT_TIMEOUT_S
from sandboxd_client.discovery import Target
from sandboxd_client.errors import ConnectionFailed, Timeout
from sandboxd_client.models import AttachExit


def open_socket(target: Target, endpoint: Endpoint, timeout: float | None) -> socket.socket:
    """A connected socket to the daemon (each read and write bounded by `timeout`)."""
    sock: socket.socket | None = None
    try:
        if endpoint.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(endpoint.socket)
        else:
            sock = socket.create_connection((endpoint.host, endpoint.port), CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
        sock.settimeout(timeout)
        return sock
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise connect_error(exc, target) from None


class Attachment:
    """An open attachment: `recv()` returns output bytes or a control event (Attached
    first), None once the daemon has closed it (after AttachExit, or 1001 when it shuts
    down: `close_code` says which); `send`, `resize`, `signal`, `eof` write to the process.
    Iterating yields what `recv` returns until the end. Close it (or use `with`): that
    detaches, the process runs on.

    Pings from the daemon are answered while `recv` reads: a caller that stops reading for
    longer than the daemon's keepalive may be dropped."""

    def __init__(self, target: Target, path: str, timeout: float | None = None) -> None:
        endpoint = Endpoint.of(target)
        self._session = Session(endpoint, path)
        self._ready: collections.deque[AttachItem] = collections.deque()
        self._lock = threading.Lock()  # one frame at a time, whichever thread sends
        self._ended = False
        self._sock = open_socket(target, endpoint, UPGRADE_TIMEOUT_S)
        try:
            self._upgrade()
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise

    def _upgrade(self) -> None:
        self._sock.sendall(self._session.request)
        while True:
            data = self._read()
            if not data:
                raise self._session.handshake_ended()
            rest = self._session.handshake(data)
            if rest is not None:
                self._ready.extend(self._session.receive(rest))
                return

    def _read(self) -> bytes:
        try:
            return self._sock.recv(CHUNK)
        except TimeoutError:
            raise Timeout("the daemon sent nothing on the attachment within the timeout") from None
        except OSError as exc:
            raise ConnectionFailed(f"the attachment broke off: {exc}") from None

    def _send(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise ConnectionFailed(f"the attachment broke off: {exc}") from None

    @property
    def writer(self) -> bool:
        """Whether this attachment's input reaches the process, as the daemon last said."""
        return self._session.writer

    @property
    def exit(self) -> AttachExit | None:
        """How the process ended, once the daemon said so."""
        return self._session.exit

    @property
    def close_code(self) -> int | None:
        """The daemon's close code (1000 after the process ended, 1001: it shut down)."""
        return self._session.close_code

    def recv(self) -> AttachItem | None:
        while not self._ready:
            if self._ended:
                return None
            data = self._read()
            if not data:
                self._ended = True
                continue
            self._ready.extend(self._session.receive(data))
            if self._session.closed:  # our answer to its close is a courtesy: it may be gone
                self._ended = True
                with contextlib.suppress(ConnectionFailed):
                    self._send(self._session.take())
            else:
                self._send(self._session.take())  # pongs
        return self._ready.popleft()

    def __iter__(self) -> Iterator[AttachItem]:
        while (item := self.recv()) is not None:
            yield item

    def send(self, data: bytes) -> None:
        """Bytes to the process's input (its PTY or stdin); only the writer's arrive."""
        self._send(self._session.input(data))

    def resize(self, cols: int, rows: int) -> None:
        self._send(self._session.resize(cols, rows))

    def signal(self, name: str) -> None:
        """INT, TERM, KILL, HUP, QUIT, USR1, USR2 or WINCH, to the process's group."""
        self._send(self._session.signal(name))

    def eof(self) -> None:
        """Close the process's stdin (a process without a tty)."""
        self._send(self._session.eof())

    def close(self) -> None:
        """Detach (the process runs on): our close, the daemon's answer awaited briefly."""
        if self._sock.fileno() < 0:
            return
        try:
            frame = self._session.close(NORMAL)
            if frame and not self._ended:
                self._send(frame)
                self._sock.settimeout(CLOSE_WAIT_S)
                while not self._session.closed and (data := self._read()):
                    self._session.receive(data)
        except (OSError, ConnectionFailed):
            pass
        finally:
            self._sock.close()

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
