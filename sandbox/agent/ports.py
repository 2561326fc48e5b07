"""sandboxd in-sandbox agent: ports (see agent.py, the port_connect op).

The sandbox has no network interface the host could reach: a server inside listens on its
own loopback. The daemon reaches it by asking the agent to connect there (port_connect
{"port", "timeout_ms"}); the agent answers J{"ok": true} once connected (or an error:
port_refused, port_timeout, port_failed), and from then on the agent connection carries the
TCP stream's raw bytes both ways, unframed, until either end closes: the daemon closing its
end closes the TCP connection; the server closing (or resetting) its end closes the agent
connection after what was already read from it has been sent on.

Imported by agent.py on the first port_connect: a sandbox whose ports are never reached never
loads it. Python 3.9+, standard library only, like agent.py.
"""

import _socket

from agent import EVENT_READ, EVENT_WRITE, OpError, Poller, send_json

PORT_BUFFER = 64 << 10  # bytes in flight per direction (a full buffer stops reading)
MAX_CONNECT_MS = 60000


def connect(port, timeout_ms):
    """A TCP connection to 127.0.0.1:port inside the sandbox, or OpError."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(timeout_ms / 1000.0)
    try:
        sock.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        sock.close()
        raise OpError(
            "port_refused", "nothing listens on 127.0.0.1:%d in the sandbox" % port
        ) from None
    except _socket.timeout:
        sock.close()
        raise OpError("port_timeout", "port %d did not accept in time" % port) from None
    except OSError as exc:
        sock.close()
        raise OpError("port_failed", "port %d: %s" % (port, exc.strerror or exc)) from None
    sock.setblocking(False)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return sock


def relay(conn, req):
    """The port_connect op: connect, answer, then pipe bytes until either end closes. The
    agent connection is used up by it (the caller closes it)."""
    port = req.get("port")
    timeout_ms = req.get("timeout_ms")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise OpError("bad_request", "port must be an integer within 1..65535")
    if not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= MAX_CONNECT_MS:
        raise OpError("bad_request", "timeout_ms must be within 1..%d" % MAX_CONNECT_MS)
    upstream = connect(port, timeout_ms)
    try:
        send_json(conn, {"ok": True})
        conn.setblocking(False)
        Pipe(conn, upstream).run()
    finally:
        upstream.close()


class Pipe:
    """Two sockets relayed to each other on one thread, at most PORT_BUFFER bytes buffered
    per direction. Ends when either side closes or fails: the server's bytes already read
    are flushed to the daemon first (its EOF is how a response without a length ends)."""

    def __init__(self, daemon_side, server_side):
        self.socks = (daemon_side, server_side)
        self.pending = {daemon_side: bytearray(), server_side: bytearray()}  # to write to it
        self.sel = Poller()

    def other(self, sock):
        return self.socks[1] if sock is self.socks[0] else self.socks[0]

    def events(self, sock):
        events = 0
        if len(self.pending[self.other(sock)]) < PORT_BUFFER:
            events |= EVENT_READ
        if self.pending[sock]:
            events |= EVENT_WRITE
        return events

    def run(self):
        registered = {}
        try:
            while True:
                for sock in self.socks:
                    events = self.events(sock)
                    if events != registered.get(sock, 0):
                        if not events:
                            self.sel.unregister(sock)
                        elif registered.get(sock):
                            self.sel.modify(sock, events)
                        else:
                            self.sel.register(sock, events)
                        registered[sock] = events
                for key, ready in self.sel.select():
                    if not self.pump(key.fileobj, ready):
                        self.flush(self.socks[0])
                        return
        except OSError:
            return
        finally:
            self.sel.close()

    def pump(self, sock, ready):
        """False once `sock` has closed its end."""
        if ready & EVENT_WRITE and self.pending[sock]:
            try:
                sent = sock.send(self.pending[sock])
                del self.pending[sock][:sent]
            except (BlockingIOError, InterruptedError):
                pass
        if ready & EVENT_READ:
            other = self.pending[self.other(sock)]
            try:
                data = sock.recv(PORT_BUFFER - len(other))
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if not data:
                return False
            other += data
        return True

    def flush(self, sock):
        """What is still buffered for `sock`, sent blocking within a bound (a daemon that
        stopped reading gets its connection closed instead)."""
        if not self.pending[sock]:
            return
        try:
            sock.settimeout(5.0)
            sock.sendall(bytes(self.pending[sock]))
        except OSError:
            pass
