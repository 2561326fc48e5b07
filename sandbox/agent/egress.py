"""sandboxd in-sandbox agent: the egress relay (see agent.py, the configure op).

Imported by agent.py only when the daemon first configures an egress socket: a sandbox
without egress never loads it. Python 3.9+, standard library only, like agent.py; it finds
agent.py (already imported, by that name) beside it in the agent's directory.
"""

import _socket

from agent import EVENT_READ, EVENT_WRITE, OpError, Poller, accept, start_thread

EGRESS_LISTEN = ("127.0.0.1", 3128)
EGRESS_MAX_CONNECTIONS = 256
EGRESS_BUFFER = 64 << 10


class EgressRelay:
    """127.0.0.1:3128 inside the sandbox -> the proxy's unix socket, one selector thread.

    Bounded: at most EGRESS_MAX_CONNECTIONS relayed connections (later ones are closed at
    once) and EGRESS_BUFFER bytes in flight per direction (a full buffer stops reading).
    """

    def __init__(self, target):
        self.target = target
        self.listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self.listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self.listener.bind(EGRESS_LISTEN)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.sel = Poller()
        self.peer = {}  # socket -> its other end
        self.pending = {}  # socket -> bytes waiting to be written to it
        self.events = {}  # socket -> the selector events it is registered for

    def start(self):
        start_thread(self.run)

    def run(self):
        self.sel.register(self.listener, EVENT_READ)
        while True:
            for key, _ in self.sel.select():
                sock = key.fileobj
                try:
                    if sock is self.listener:
                        self.accept()
                    else:
                        self.pump(sock)
                except OSError:
                    self.drop(sock)

    def accept(self):
        while True:
            try:
                client, _ = accept(self.listener)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of fds: later connections get their turn
            if len(self.peer) >= 2 * EGRESS_MAX_CONNECTIONS:
                client.close()
                continue
            upstream = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)  # a unix connect completes (or fails) at once
            except OSError:
                client.close()
                upstream.close()
                continue
            for sock in (client, upstream):
                sock.setblocking(False)
                self.pending[sock] = bytearray()
            self.peer[client], self.peer[upstream] = upstream, client
            for sock in (client, upstream):
                self.sel.register(sock, EVENT_READ)
                self.events[sock] = EVENT_READ

    def watch(self, sock):
        """Read while the other end's buffer has room, write while ours has bytes."""
        if sock not in self.peer:
            return
        events = 0
        if len(self.pending[self.peer[sock]]) < EGRESS_BUFFER:
            events |= EVENT_READ
        if self.pending[sock]:
            events |= EVENT_WRITE
        registered = self.events.get(sock, 0)
        if events == registered:
            return
        if not events:
            self.sel.unregister(sock)  # the other end's buffer is full: wait for it to drain
        elif not registered:
            self.sel.register(sock, events)
        else:
            self.sel.modify(sock, events)
        self.events[sock] = events

    def pump(self, sock):
        other = self.peer.get(sock)
        if other is None:
            return
        if self.pending[sock]:
            sent = sock.send(self.pending[sock])
            del self.pending[sock][:sent]
        if len(self.pending[other]) < EGRESS_BUFFER:
            try:
                data = sock.recv(EGRESS_BUFFER - len(self.pending[other]))
            except (BlockingIOError, InterruptedError):
                data = None
            if data == b"":
                self.drop(sock)
                return
            if data:
                self.pending[other] += data
                try:
                    sent = other.send(self.pending[other])
                    del self.pending[other][:sent]
                except (BlockingIOError, InterruptedError):
                    pass
        self.watch(sock)
        self.watch(other)

    def drop(self, sock):
        """Close both ends (after a last attempt to flush what is already buffered)."""
        other = self.peer.pop(sock, None)
        if other is not None:
            self.peer.pop(other, None)
        for s in (sock, other):
            if s is None:
                continue
            buffered = self.pending.pop(s, None)
            if buffered:
                try:
                    s.send(buffered)
                except OSError:
                    pass
            if self.events.pop(s, 0):
                self.sel.unregister(s)
            s.close()


def start_relay(target):
    """The relay to the proxy's socket at `target`, listening and running (the configure op)."""
    try:
        relay = EgressRelay(target)
    except OSError as exc:
        raise OpError("egress_failed", "egress listener: %s" % exc) from None
    relay.start()
    return relay
