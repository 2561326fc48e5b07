"""sandboxd in-sandbox agent.

Runs as the first process (PID 1) of every sandbox, as the sandbox's unprivileged user, on
the sandbox's own Python (3.9+, standard library only; it imports nothing from sandboxd).
It serves the daemon over a listening unix socket that the daemon created on the host and
handed over as file descriptor 3, so nothing inside the sandbox can replace it. A backend that
cannot pass descriptors (docker) sets SANDBOXD_AGENT_SOCKET instead: the agent binds that path
(in a host directory bind-mounted for it) before anything else runs, and the daemon then takes
the directory away from the sandbox's uid, so sandbox code can neither reach nor replace it.

Wire protocol (version 1), one request at a time per connection, many connections:
  frame  = type (1 byte) + length (4 bytes, big endian) + payload (<= MAX_FRAME bytes)
  types  = J (JSON object), O (stdout bytes), E (stderr bytes), D (file bytes), Z (end of data)
On accept the agent sends J{"v": 1, "agent": "sandboxd-agent", ...}. Requests are J frames
with an "op"; see the handle_* functions for each op and its replies. Errors are
J{"error": {"code": ..., "message": ...}}.

Ops: ping, exec, list, read, write, delete, and (additive) code, sessions, session_delete,
cgroup (the daemon hands over, as SCM_RIGHTS on the one byte after the request, the cgroup
files that put everything the agent starts into the sandbox's work group, see
Reaper.spawn), configure (environment for every later command, and the egress relay: a listener on
127.0.0.1:3128 inside the sandbox whose every connection is relayed to the proxy's unix
socket bound into /.sandboxd/egress; the sandbox has no other way out).

Ops of background processes (process_start, _list, _get, _output, _input, _signal, _resize,
_delete, _wait, _pids_hit): see processes.py. port_connect (a TCP connection to the sandbox's own
loopback, after which the agent connection carries its raw bytes until either end closes):
see ports.py.

Modules beside this file, imported on first use (see load_module): sessions.py (the code ops:
Python in persistent sessions, each an interpreter.py process), egress.py (the relay),
processes.py (background processes that outlive their request) and ports.py (port_connect).
"""

# C modules only, besides os and sys: this file starts every sandbox, and the pure-Python
# modules it would otherwise use (socket, signal, selectors, threading, json -> re, enum,
# functools, collections, ctypes) take ~25 ms to import, against about 1 ms for these.
import _signal as signal
import _socket
import _stat as stat
import _struct as struct
import _thread
import os
import select
import sys
import time

try:
    from _json import encode_basestring, encode_basestring_ascii, make_encoder, make_scanner
except ImportError:  # not CPython: fall back on the json module below
    make_scanner = None

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20
MAX_JSON = 64 << 10
MAX_STDIN = 16 << 20
MAX_LIST = 10000
MAX_LIST_BYTES = 8 << 20  # a paged listing, all frames together
READ_CHUNK = 64 << 10
WORKSPACE = "/mnt/data"
UPLOAD_PREFIX = ".sandboxd-upload-"
LISTEN_FD = 3
LISTEN_PATH_ENV = "SANDBOXD_AGENT_SOCKET"
IMAGE_ENV_PREFIX = "SANDBOXD_IMAGE_ENV_"  # sandbox/host/agent.py: the image's environment
PR_SET_DUMPABLE = 4
DRAIN_GRACE_S = 0.2
# Sent instead of the hello when no thread can be had for a connection (the pids limit).
NO_THREAD = "The container is at its process limit: its agent had no thread for this call."

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "SHELL": "/bin/sh",
    "TMPDIR": "/tmp",
    # The system bundle holds the host's CAs and the egress proxy's: every TLS stack in the
    # sandbox trusts it, whichever of these it reads.
    "SSL_CERT_FILE": SYSTEM_CA_BUNDLE,
    "REQUESTS_CA_BUNDLE": SYSTEM_CA_BUNDLE,
    "CURL_CA_BUNDLE": SYSTEM_CA_BUNDLE,
    "NODE_EXTRA_CA_CERTS": SYSTEM_CA_BUNDLE,
    "GIT_SSL_CAINFO": SYSTEM_CA_BUNDLE,
    "PIP_CERT": SYSTEM_CA_BUNDLE,
}
PROCESS_OPS = frozenset(
    (
        "process_start", "process_list", "process_get", "process_output", "process_input",
        "process_signal", "process_resize", "process_delete", "process_wait", "process_pids_hit",
    )
)  # fmt: skip
# Set by the configure op (proxy variables, secret placeholders); merged over BASE_ENV.
CONFIG_ENV = {}
MAX_CONFIG_ENV = 256
# cgroup v2 (see Reaper.spawn): the child waits behind this until it is in the work group.
GATE_FD = 9
GATE_SCRIPT = 'read -r _ <&9; exec 9<&-; exec "$0" "$@"'
CHILD_DEFAULT_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGXFSZ,
)


class ProtocolError(Exception):
    pass


# ----------------------------------------------------------------------------- JSON, threads


class _DecodeContext:
    """What _json's scanner reads from json.JSONDecoder, with standard JSON only."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name):
        raise ValueError("not JSON: %s" % name)


def _not_serializable(obj):
    raise TypeError("%s is not JSON serializable" % type(obj).__name__)


if make_scanner is not None:
    _scan = make_scanner(_DecodeContext)
    _encoders = {
        ascii_only: make_encoder(None, _not_serializable, quote, None, ":", ",", False, False, True)
        for ascii_only, quote in ((True, encode_basestring_ascii), (False, encode_basestring))
    }

    def json_loads(text):
        """Like json.loads (ValueError on anything but one JSON value and whitespace)."""
        start = len(text) - len(text.lstrip(" \t\n\r"))
        try:
            obj, end = _scan(text, start)
        except StopIteration as exc:
            raise ValueError("expecting a value at %d" % exc.value) from None
        if text[end:].strip(" \t\n\r"):
            raise ValueError("extra data at %d" % end)
        return obj

    def json_dumps(obj, ensure_ascii=True):
        """Like json.dumps(obj, separators=(",", ":"), ensure_ascii=...)."""
        return "".join(_encoders[ensure_ascii](obj, 0))

else:
    import json

    def json_loads(text):
        # Standard JSON only, as the scanner above (no NaN, no Infinity).
        return json.loads(text, parse_constant=_DecodeContext.parse_constant)

    def json_dumps(obj, ensure_ascii=True):
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=ensure_ascii)


def start_thread(target, *args):
    """A daemon thread (the agent never waits for one); RuntimeError if none can be had."""
    _thread.start_new_thread(target, args)


EVENT_READ, EVENT_WRITE = 1, 2


class SelectorKey:
    __slots__ = ("data", "events", "fd", "fileobj")

    def __init__(self, fileobj, fd, events, data):
        self.fileobj, self.fd, self.events, self.data = fileobj, fd, events, data


class Poller:
    """The part of selectors.DefaultSelector this agent uses, on epoll directly."""

    def __init__(self):
        self._epoll = select.epoll()
        self._keys = {}

    @staticmethod
    def _fd(fileobj):
        return fileobj if isinstance(fileobj, int) else fileobj.fileno()

    @staticmethod
    def _mask(events):
        return (select.EPOLLIN if events & EVENT_READ else 0) | (
            select.EPOLLOUT if events & EVENT_WRITE else 0
        )

    def register(self, fileobj, events, data=None):
        fd = self._fd(fileobj)
        if fd in self._keys:
            raise KeyError("%r is already registered" % (fileobj,))
        self._epoll.register(fd, self._mask(events))
        self._keys[fd] = SelectorKey(fileobj, fd, events, data)

    def modify(self, fileobj, events):
        key = self._keys[self._fd(fileobj)]
        self._epoll.modify(key.fd, self._mask(events))
        key.events = events

    def unregister(self, fileobj):
        key = self._keys.pop(self._fd(fileobj))
        try:
            self._epoll.unregister(key.fd)
        except OSError:  # already closed
            pass

    def select(self, timeout=None):
        """[(key, events)], errors and hang-ups counting as both ways ready (as selectors)."""
        ready = self._epoll.poll(-1 if timeout is None else max(timeout, 0.0))
        out = []
        for fd, flags in ready:
            key = self._keys.get(fd)
            if key is None:
                continue
            events = (EVENT_WRITE if flags & ~select.EPOLLIN else 0) | (
                EVENT_READ if flags & ~select.EPOLLOUT else 0
            )
            if events & key.events:
                out.append((key, events & key.events))
        return out

    def close(self):
        self._epoll.close()
        self._keys.clear()


def accept(listener):
    """listener.accept() for a _socket.socket: (connection, address), close-on-exec."""
    fd, address = listener._accept()
    return _socket.socket(fileno=fd), address


class OpError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------- framing


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    header = recv_exact(sock, 5)
    kind = header[:1]
    (length,) = struct.unpack(">I", header[1:])
    if length > MAX_FRAME or (kind == b"J" and length > MAX_JSON):
        raise ProtocolError("frame too large")
    payload = recv_exact(sock, length) if length else b""
    return kind, payload


def recv_json(sock):
    kind, payload = recv_frame(sock)
    if kind != b"J":
        raise ProtocolError("expected a JSON frame")
    msg = json_loads(payload.decode("utf-8"))
    if not isinstance(msg, dict):
        raise ProtocolError("expected a JSON object")
    return msg


def send_frame(sock, kind, payload=b""):
    sock.sendall(kind + struct.pack(">I", len(payload)) + payload)


def send_json(sock, obj):
    send_frame(sock, b"J", json_dumps(obj).encode())


def send_error(sock, code, message):
    send_json(sock, {"error": {"code": code, "message": message}})


# ----------------------------------------------------------------------------- children


class Reaper:
    """Reaps every child (PID 1 inherits orphans) and hands statuses to their waiters."""

    def __init__(self):
        self.lock = _thread.allocate_lock()
        # Released by each spawn, taken by the reaper when it has no child to wait for: a
        # spawn is never missed, and the reaper looks again at least every second anyway.
        self.spawned = _thread.allocate_lock()
        self.spawned.acquire()
        self.waiters = {}
        # From the cgroup op: ("tasks", (work, home)) or ("procs", (work,)); None: no group.
        self.work_group = None

    def adopt_work_group(self, mode, fds):
        """Check the files work (v1: this thread moves in and back), then use them."""
        if mode == "tasks":
            os.write(fds[0], b"0")
            os.write(fds[1], b"0")
        with self.lock:
            old, self.work_group = self.work_group, (mode, fds)
        for fd in old[1] if old else ():
            os.close(fd)

    def run(self):
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                self.spawned.acquire(timeout=1.0)
                continue
            with self.lock:
                waiter = self.waiters.pop(pid, None)
                if waiter is not None:
                    waiter["status"] = status
                    if waiter["wake"] is not None:
                        os.write(waiter["wake"], b"x")

    def spawn(self, argv, env, cwd, fds, wake_fd, tty=None):
        """posix_spawn under the lock so the reaper cannot miss the registration.

        `tty`: the path of a terminal the child opens as its fd 0 (before the dup2s of
        `fds`): it is a new session's leader by then (setsid comes before the file actions),
        so the terminal becomes its controlling terminal and its group the foreground one.

        The child starts in the sandbox's work group, where an OOM never picks the agent:
        on cgroup v1 this thread moves itself there for the spawn (the child is born in it)
        and back; on v2 the child is spawned behind a gate (a shell that waits for a line on
        GATE_FD, then execs the command), moved, and only then let through: sandbox code
        never runs outside the work group."""
        waiter = {"status": None, "wake": wake_fd}
        with self.lock:
            mode, group = self.work_group or ("", ())
            gate = None
            if mode == "tasks":
                os.write(group[0], b"0")
            elif mode == "procs":
                gate = os.pipe()
                argv = ["/bin/sh", "-c", GATE_SCRIPT, *argv]
                fds = [*fds, (GATE_FD, gate[0])]  # last: no later dup2 reads fd GATE_FD
            pid = None
            os.chdir(cwd)
            try:
                file_actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in fds]
                if tty is not None:
                    file_actions.insert(0, (os.POSIX_SPAWN_OPEN, 0, tty, os.O_RDWR, 0))
                pid = os.posix_spawn(
                    argv[0],
                    argv,
                    env,
                    file_actions=file_actions,
                    setsid=True,
                    setsigdef=CHILD_DEFAULT_SIGNALS,
                    setsigmask=(),
                )
                if gate is not None:
                    os.write(group[0], b"%d" % pid)
                    os.write(gate[1], b"\n")
            except OSError:
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)  # never let it run beside the agent
                    self.waiters[pid] = {"status": None, "wake": None}  # reaped, dropped
                raise
            finally:
                os.chdir("/")
                if mode == "tasks":
                    os.write(group[1], b"0")
                for fd in gate or ():
                    os.close(fd)
            self.waiters[pid] = waiter
            try:
                self.spawned.release()
            except RuntimeError:
                pass  # already released: the reaper has not looked since the last spawn
        try:
            # The agent's own score is pinned low from the host; what it starts begins at 0
            # (raised from the agent's: the floor it inherits is 0, see sandbox/spec.py).
            with open("/proc/%d/oom_score_adj" % pid, "w") as f:
                f.write("0")
        except OSError:
            pass
        return pid, waiter


# ----------------------------------------------------------------------------- exec


def exit_fields(status):
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return {"exit_code": 128 - code, "signal": -code}
    return {"exit_code": code, "signal": None}


def recv_data(conn, expected):
    """Read D frames up to Z; exactly `expected` bytes (<= MAX_STDIN) or a protocol error."""
    buf = bytearray()
    while True:
        kind, payload = recv_frame(conn)
        if kind == b"Z":
            break
        if kind != b"D" or len(buf) + len(payload) > expected:
            raise ProtocolError("unexpected data frame")
        buf += payload
    if len(buf) != expected:
        raise ProtocolError("short data")
    return bytes(buf)


def handle_exec(reaper, conn, req):
    cmd, env, cwd, timeout_ms, cap, stdin_bytes = exec_request(conn, req)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    wake_r, wake_w = os.pipe()
    own = [out_r, out_w, err_r, err_w, in_r, in_w, wake_r, wake_w]
    started = time.monotonic()
    try:
        for fd in own:
            os.set_inheritable(fd, False)
        try:
            pid, waiter = reaper.spawn(
                ["/bin/sh", "-c", cmd], env, cwd, [(0, in_r), (1, out_w), (2, err_w)], wake_w
            )
        except OSError as exc:
            raise OpError("spawn_failed", os.strerror(exc.errno or 0)) from None
        for fd in (out_w, err_w, in_r):
            os.close(fd)
            own.remove(fd)
        try:
            pump = Pump(conn, pid, waiter, cap, started + timeout_ms / 1000.0, out_r, err_r, wake_r)
            if stdin_bytes:
                os.set_blocking(in_w, False)
                pump.feed(in_w, stdin_bytes, close_input=True)
            else:
                os.close(in_w)  # at once: the command reads an empty stdin
            own.remove(in_w)
            pump.run()
        finally:
            with reaper.lock:
                waiter["wake"] = None
    finally:
        for fd in own:
            try:
                os.close(fd)
            except OSError:
                pass
    result = {"ev": "exit", "timed_out": pump.timed_out, "truncated": pump.truncated, "pid": pid}
    result.update(exit_fields(pump.status))
    if pump.killed_by_request is not None:
        result["killed"] = pump.killed_by_request
    result["duration_ms"] = int((time.monotonic() - started) * 1000)
    send_json(conn, result)


def exec_request(conn, req):
    """(cmd, env, cwd, timeout_ms, max_output, stdin bytes) of an exec request, checked."""
    # stdin follows the request as data frames; read it first so the stream stays in sync.
    stdin_len = req.get("stdin_bytes") or 0
    if not isinstance(stdin_len, int) or not 0 <= stdin_len <= MAX_STDIN:
        raise ProtocolError("bad stdin_bytes")
    stdin_bytes = recv_data(conn, stdin_len) if stdin_len else b""
    timeout_ms = req.get("timeout_ms")
    cap = req.get("max_output")
    if not isinstance(timeout_ms, int) or not isinstance(cap, int) or cap < 0:
        raise OpError("bad_request", "timeout_ms and max_output must be integers")
    cmd, env, cwd = command_request(req)
    return cmd, env, cwd, timeout_ms, cap, stdin_bytes


def command_request(req):
    """(cmd, env, cwd) of a request that starts a shell command (exec, process_start),
    checked: the environment is BASE_ENV, then the configured one, then the request's."""
    cmd = req.get("cmd")
    env_extra = req.get("env") or {}
    cwd = req.get("cwd") or WORKSPACE
    if not isinstance(cmd, str) or not isinstance(env_extra, dict):
        raise OpError("bad_request", "cmd must be a string and env an object")
    if not isinstance(cwd, str):
        raise OpError("bad_request", "cwd must be a string")
    if not os.path.isdir(cwd):
        raise OpError("bad_cwd", "working directory does not exist: %s" % cwd)
    env = dict(BASE_ENV, **CONFIG_ENV)
    for key, value in env_extra.items():
        if not isinstance(key, str) or not isinstance(value, str) or "=" in key or "\0" in key:
            raise OpError("bad_request", "env must map names to strings")
        if "\0" in value:
            raise OpError("bad_request", "env values must not contain NUL")
        env[key] = value
    return cmd, env, cwd


class Pump:
    """The select loop of one child (an exec's shell, a code cell's interpreter): relays its
    stdout and stderr as O/E frames (at most `cap` bytes together, the rest read and dropped,
    `truncated`), feeds it one buffer of input, takes kill requests from the daemon and enforces
    the deadline. Exec uses it as it is; a code cell (sessions.py) overrides the hooks where a
    cell differs: how it stops, what it reads besides its output, and what a lost daemon means.

    The fds stay the caller's, but an input fd fed with close_input is closed when written
    (its end is how the child sees EOF)."""

    # A write error that means the reader is gone (the rest of the input is dropped).
    INPUT_GONE = BrokenPipeError

    def __init__(self, conn, pid, waiter, cap, deadline, out_r, err_r, wake_r):
        self.conn, self.pid, self.waiter = conn, pid, waiter
        self.cap, self.deadline = cap, deadline
        self.sent = 0  # output bytes relayed, against cap
        self.truncated = False
        self.relay = True  # False once the daemon can no longer be sent to
        self.status = None  # the child's wait status, once the reaper has it
        self.timed_out = False  # an exec killed at its deadline
        self.exited_at = None
        self.killed_by_request = None  # the reason of the daemon's kill op
        self.open_pipes = 2
        self.input_fd, self.pending, self.close_input = None, None, False
        self.sel = Poller()
        self.sel.register(out_r, EVENT_READ, b"O")
        self.sel.register(err_r, EVENT_READ, b"E")
        self.sel.register(wake_r, EVENT_READ, "wake")
        self.sel.register(conn, EVENT_READ, "conn")

    def feed(self, fd, data, close_input):
        """Write `data` to the child's input fd as it becomes writable."""
        self.input_fd, self.pending, self.close_input = fd, memoryview(data), close_input
        self.sel.register(fd, EVENT_WRITE, "input")

    def run(self):
        try:
            while True:
                timeout = self.tick(time.monotonic())
                if timeout is None:
                    break
                for key, _ in self.sel.select(timeout):
                    self.dispatch(key)
            self.finish()
        except (EOFError, OSError, ProtocolError, ValueError):
            # The daemon went away mid-run: do not leave the child running unattended.
            kill_group(self.pid)
            raise
        finally:
            self.sel.close()
            if self.close_input and self.input_fd is not None:
                os.close(self.input_fd)

    def tick(self, now):
        """Enforce the deadline; how long to wait for events, or None: the run is over.

        An exec is killed at its deadline, and once it has exited its pipes get
        DRAIN_GRACE_S to deliver what its leftover children still write."""
        if self.status is None and not self.timed_out and now >= self.deadline:
            self.timed_out = True
            kill_group(self.pid)
        if self.status is not None:
            if self.open_pipes == 0 or now - self.exited_at >= DRAIN_GRACE_S:
                return None
            return self.exited_at + DRAIN_GRACE_S - now
        return max(0.0, self.deadline - now) if not self.timed_out else 1.0

    def finish(self):
        """After the loop (a cell reads what was written before its reply here)."""

    def dispatch(self, key):
        tag = key.data
        if tag == "conn":
            self.from_daemon()
        elif tag == "input":
            self.write_input()
        elif tag == "wake":
            os.read(key.fd, 16)
            self.sel.unregister(key.fd)
            self.exited_at = time.monotonic()
            self.status = self.waiter["status"]
        elif tag in (b"O", b"E"):
            if not self.output(key.fd, tag):
                self.sel.unregister(key.fd)
                self.open_pipes -= 1
        else:
            self.other(key)

    def other(self, key):
        """An fd a subclass registered with its own tag."""
        raise ProtocolError("unexpected event %r" % (key.data,))

    def from_daemon(self):
        """A J frame from the daemon while the child runs; anything else is ignored."""
        kind, payload = recv_frame(self.conn)
        msg = json_loads(payload.decode("utf-8")) if kind == b"J" else {}
        if isinstance(msg, dict):
            self.request(msg.get("op"), msg)

    def request(self, op, msg):
        if op == "kill":
            self.killed_by_request = str(msg.get("reason") or "request")
            kill_group(self.pid)

    def write_input(self):
        fd = self.input_fd
        try:
            self.pending = self.pending[os.write(fd, self.pending[:65536]) :]
        except BlockingIOError:
            return
        except self.INPUT_GONE:
            self.pending = self.pending[:0]
        if not self.pending:
            self.sel.unregister(fd)
            if self.close_input:
                os.close(fd)
                self.input_fd = None

    def output(self, fd, tag, chunks=1):
        """Relay up to `chunks` reads of `fd`; False at its end of file."""
        for _ in range(chunks):
            try:
                chunk = os.read(fd, READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return True
            if not chunk:
                return False
            room = self.cap - self.sent
            if len(chunk) > room:
                chunk, self.truncated = chunk[: max(room, 0)], True
            if chunk and self.relay:
                self.sent += len(chunk)
                self.send(tag, chunk)
        return True

    def send(self, tag, chunk):
        send_frame(self.conn, tag, chunk)


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


# ----------------------------------------------------------------------------- files


def workspace_dev():
    return os.stat(WORKSPACE).st_dev


def check_name(name):
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogateescape")) > 255
        or name.startswith(UPLOAD_PREFIX)
    ):
        raise OpError("bad_name", "invalid file name")
    return name


def resolve_in_workspace(path):
    """Resolve `path` inside the sandbox's view and require it to stay in the workspace."""
    if not isinstance(path, str) or "\0" in path or not path.startswith("/"):
        raise OpError("bad_path", "path must be absolute")
    real = os.path.realpath(path)
    if real != WORKSPACE and not real.startswith(WORKSPACE + "/"):
        raise OpError("outside_workspace", "path resolves outside %s" % WORKSPACE)
    return real


def open_regular(path, flags):
    """Open a regular file on the workspace filesystem only (never /proc, never a FIFO)."""
    real = resolve_in_workspace(path)
    try:
        fd = os.open(real, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OpError("not_found", "no such file") from None
    except OSError as exc:
        raise OpError("io_error", os.strerror(exc.errno)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_dev != workspace_dev():
        os.close(fd)
        raise OpError("not_regular", "not a regular file in the workspace")
    os.set_blocking(fd, True)
    return fd, st


def walk_workspace(root, limit):
    """([(path, stat)] of regular files under `root` on the workspace filesystem, truncated).

    The files come in the byte order of their paths (a directory's entries sorted by name, a
    directory's name with its "/"), so a listing cut short at `limit` holds every file up to
    its last path: whatever else the caller knew up to there is gone. Entries are told apart
    by their directory entry type; only what is visited or listed is stat'ed."""
    dev = workspace_dev()
    found = []
    stack = [(root, True)]
    while stack:
        current, is_dir = stack.pop()
        try:
            st = os.stat(current, follow_symlinks=False)
        except OSError:
            continue
        if st.st_dev != dev:
            continue
        if not is_dir:
            if stat.S_ISREG(st.st_mode):
                if len(found) >= limit:
                    return found, True
                found.append((current, st))
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        children = []
        for entry in entries:
            if entry.name.startswith(UPLOAD_PREFIX) or (
                current == WORKSPACE and entry.name == "lost+found"
            ):
                continue
            key = entry.name.encode("utf-8", "surrogateescape")
            try:
                if entry.is_dir(follow_symlinks=False):
                    children.append((key + b"/", entry.path, True))
                elif entry.is_file(follow_symlinks=False):
                    children.append((key, entry.path, False))
            except OSError:
                continue
        children.sort(key=sort_key, reverse=True)  # the first in order is popped first
        stack.extend((path, is_dir) for _key, path, is_dir in children)
    return found, False


def sort_key(child):
    return child[0]


def handle_list(conn, req):
    """List files. A daemon that sets `page_bytes` gets J frames {"files": [...], "more": true}
    of at most that many bytes, then {"files": [...], "more": false, "truncated": ...,
    "ordered": true} (at most `max_bytes` in all); one that does not gets one frame."""
    root = resolve_in_workspace(req.get("root") or WORKSPACE)
    limit = min(int(req.get("max_entries") or MAX_LIST), MAX_LIST)
    found, truncated = walk_workspace(root, limit)
    page_bytes = req.get("page_bytes")
    if not page_bytes:
        files = [{"path": p, "bytes": st.st_size, "mtime": st.st_mtime} for p, st in found]
        send_json(conn, {"files": files, "truncated": truncated})
        return
    page_bytes = min(int(page_bytes), MAX_FRAME - 256)
    budget = min(int(req.get("max_bytes") or MAX_LIST_BYTES), MAX_LIST_BYTES)
    page, size = [], 0
    for path, st in found:
        item = json_dumps({"path": path, "bytes": st.st_size, "mtime": st.st_mtime})
        budget -= len(item) + 1
        if budget < 0:
            truncated = True  # what is sent is still every file up to the last one
            break
        if page and size + len(item) + 64 > page_bytes:
            send_frame(conn, b"J", ('{"files":[%s],"more":true}' % ",".join(page)).encode())
            page, size = [], 0
        page.append(item)
        size += len(item) + 1
    tail = '{"files":[%s],"more":false,"truncated":%s,"ordered":true}' % (
        ",".join(page),
        "true" if truncated else "false",
    )
    send_frame(conn, b"J", tail.encode())


def handle_read(conn, req):
    max_bytes = req.get("max_bytes")
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise OpError("bad_request", "max_bytes must be an integer")
    fd, st = open_regular(req.get("path"), os.O_RDONLY)
    try:
        if st.st_size > max_bytes:
            raise OpError("too_large", "file is larger than the download cap")
        send_json(conn, {"ok": True, "bytes": st.st_size})
        sent = 0
        while sent < st.st_size:
            chunk = os.read(fd, min(READ_CHUNK, st.st_size - sent))
            if not chunk:
                break
            sent += len(chunk)
            send_frame(conn, b"D", chunk)
        send_frame(conn, b"Z")
    finally:
        os.close(fd)


def handle_write(conn, req):
    name = check_name(req.get("name"))
    directory = resolve_in_workspace(req.get("dir") or WORKSPACE)
    max_bytes = req.get("max_bytes")
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise OpError("bad_request", "max_bytes must be an integer")
    tmp = os.path.join(directory, "%s%s" % (UPLOAD_PREFIX, os.urandom(8).hex()))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except OSError as exc:
        raise exc_to_op(exc) from None  # out of inodes is no_space too
    error = None
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            send_json(conn, {"ready": True})
            while True:
                kind, payload = recv_frame(conn)
                if kind == b"Z":
                    break
                if kind != b"D":
                    raise ProtocolError("expected data frames")
                written += len(payload)
                if written > max_bytes:
                    error = OpError("too_large", "upload exceeds the cap")
                    continue  # keep reading so the stream stays in sync
                if error is None:
                    try:
                        f.write(payload)
                    except OSError as exc:
                        error = exc_to_op(exc)
            if error is None:
                try:
                    f.flush()
                except OSError as exc:
                    error = exc_to_op(exc)
        if error is not None:
            raise error
        final = link_unique(tmp, directory, name)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    send_json(conn, {"ok": True, "path": final, "bytes": written})


def exc_to_op(exc):
    if exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return OpError("no_space", "the workspace is full")
    if exc.errno == 27:  # EFBIG
        return OpError("too_large", "file size limit exceeded")
    return OpError("io_error", os.strerror(exc.errno))


def link_unique(tmp, directory, name):
    stem, dot, ext = name.rpartition(".")
    if not stem:  # ".bashrc" or "README"
        stem, dot, ext = name, "", ""
    for n in range(1000):
        candidate = name if n == 0 else "%s (%d)%s%s" % (stem, n, dot, ext)
        target = os.path.join(directory, candidate)
        try:
            os.link(tmp, target)
            return target
        except FileExistsError:
            continue
        except OSError as exc:
            raise exc_to_op(exc) from None
    raise OpError("name_clash", "too many files with this name")


def handle_delete(conn, req):
    path = req.get("path")
    real_parent = resolve_in_workspace(os.path.dirname(path) if isinstance(path, str) else "")
    target = os.path.join(real_parent, check_name(os.path.basename(path)))
    try:
        st = os.lstat(target)
        if stat.S_ISDIR(st.st_mode):
            raise OpError("not_regular", "is a directory")
        os.unlink(target)
    except FileNotFoundError:
        raise OpError("not_found", "no such file") from None
    except OSError as exc:
        raise exc_to_op(exc) from None
    send_json(conn, {"ok": True})


# ----------------------------------------------------------------- code, egress, processes
# Their work is done in sessions.py, egress.py, processes.py and ports.py, imported on first use.


class CodeSessions:
    """The code ops (code, sessions, session_delete): sessions.py is imported, and the
    sandbox's session table made, by the first of them."""

    def __init__(self, reaper):
        self.reaper = reaper
        self.lock = _thread.allocate_lock()
        self.table = None

    def handle(self, conn, req):
        module = load_module("sessions")
        with self.lock:
            if self.table is None:
                self.table = module.Sessions(self.reaper)
        module.handle(self.table, conn, req)


class ProcessTable:
    """The process ops (process_*): processes.py is imported, and the sandbox's process
    table made, by the first start; a listing or a wait before any start answers without
    it (the daemon asks every sandbox for its processes when it restarts)."""

    def __init__(self, reaper):
        self.reaper = reaper
        self.lock = _thread.allocate_lock()
        self.table = None

    def handle(self, conn, req):
        op = req.get("op")
        if self.table is None and op in ("process_list", "process_wait", "process_pids_hit"):
            send_json(conn, {"processes": [], "seq": 0, "killed": None})
            return
        module = load_module("processes")
        with self.lock:
            if self.table is None:
                if op != "process_start":
                    raise OpError("process_not_found", "no such process")
                self.table = module.Processes(self.reaper)
        module.handle(self.table, conn, req)


def load_module(name):
    """A module beside this one, imported on first use (sessions.py, egress.py, ...): the agent
    starts every sandbox, and a sandbox should not pay at its start for what it may never
    use. They import this module as "agent", which it is made to be even when run as a
    script, so that they share its state (CONFIG_ENV) rather than load a second copy."""
    sys.modules.setdefault("agent", sys.modules[__name__])
    try:
        return __import__(name)
    except ImportError as exc:
        raise OpError("agent_incomplete", "agent module %s: %s" % (name, exc)) from None


class Config:
    lock = _thread.allocate_lock()
    relay = None


def handle_configure(conn, req):
    env = req.get("env") or {}
    egress = req.get("egress_socket")
    if not isinstance(env, dict) or len(env) > MAX_CONFIG_ENV:
        raise OpError("bad_request", "env must be an object of at most %d names" % MAX_CONFIG_ENV)
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key:
            raise OpError("bad_request", "env must map names to strings")
        if "\0" in key or "\0" in value:
            raise OpError("bad_request", "env must not contain NUL")
    if egress is not None and not isinstance(egress, str):
        raise OpError("bad_request", "egress_socket must be a path")
    with Config.lock:
        if egress and Config.relay is None:
            Config.relay = load_module("egress").start_relay(egress)
        CONFIG_ENV.clear()
        CONFIG_ENV.update(env)
    send_json(conn, {"ok": True, "egress": Config.relay is not None})


# ----------------------------------------------------------------------------- server


def handle_cgroup(reaper, conn, req):
    """The work-group files ride on the one byte after this request (see Reaper.spawn)."""
    mode = req.get("mode")
    wanted = {"tasks": 2, "procs": 1}.get(mode)
    if wanted is None:
        raise OpError("bad_request", "unknown cgroup mode")
    space = _socket.CMSG_SPACE(4 * wanted)
    data, ancillary, _flags, _address = conn.recvmsg(1, space, _socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack("%di" % (usable // 4), payload[:usable]))
    if data != b"C" or len(fds) != wanted:
        for fd in fds:
            os.close(fd)
        raise ProtocolError("cgroup op without its descriptors")
    try:
        reaper.adopt_work_group(mode, tuple(fds))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise OpError("cgroup_failed", "cannot use the work group: %s" % exc.strerror) from None
    send_json(conn, {"ok": True})


def serve_connection(reaper, sessions, processes, conn):
    handlers = {
        "list": handle_list,
        "read": handle_read,
        "write": handle_write,
        "delete": handle_delete,
    }
    try:
        send_json(
            conn,
            {
                "v": PROTOCOL_VERSION,
                "agent": "sandboxd-agent",
                "python": "%d.%d" % sys.version_info[:2],
            },
        )
        while True:
            req = recv_json(conn)
            op = req.get("op")
            try:
                if op == "ping":
                    send_json(conn, {"ok": True})
                elif op == "exec":
                    handle_exec(reaper, conn, req)
                elif op in ("code", "sessions", "session_delete"):
                    sessions.handle(conn, req)
                elif op in PROCESS_OPS:
                    processes.handle(conn, req)
                elif op == "port_connect":
                    load_module("ports").relay(conn, req)
                    return  # the connection carried the relayed bytes: it is used up
                elif op == "configure":
                    handle_configure(conn, req)
                elif op == "cgroup":
                    handle_cgroup(reaper, conn, req)
                elif op in ("kill", "interrupt"):
                    continue  # late: the exec or cell it was meant for has just ended
                elif op in handlers:
                    handlers[op](conn, req)
                else:
                    raise OpError("bad_op", "unknown op")
            except OpError as exc:
                send_error(conn, exc.code, exc.message)
    except (EOFError, ConnectionError, ProtocolError, ValueError):
        pass
    finally:
        conn.close()


def libc_prctl():
    """(prctl, get_errno), built from _ctypes as the ctypes package builds them (importing
    the package costs ~4 ms of every sandbox's start); the package itself if that fails."""
    try:
        import _ctypes

        class CInt(_ctypes._SimpleCData):
            _type_ = "i"

        class CFunction(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = CInt

        class Libc:
            _handle = _ctypes.dlopen(None, os.RTLD_NOW)

        return CFunction(("prctl", Libc)), _ctypes.get_errno
    except (ImportError, AttributeError, TypeError, OSError):  # private: fall back on the public
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl, ctypes.get_errno


def make_undumpable():
    prctl, get_errno = libc_prctl()
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def open_listener():
    """fd 3 from the daemon, or (no descriptor passing) a socket bound at $SANDBOXD_AGENT_SOCKET."""
    path = os.environ.pop(LISTEN_PATH_ENV, "")
    if not path:
        listener = _socket.socket(fileno=LISTEN_FD)
        os.set_inheritable(LISTEN_FD, False)
        return listener
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    return listener


def take_image_env(environ=os.environ):
    """The image's environment (a venv first on PATH, say), handed over by the runtime under
    IMAGE_ENV_PREFIX, becomes part of every command's base environment."""
    for key in [k for k in environ if k.startswith(IMAGE_ENV_PREFIX)]:
        BASE_ENV[key[len(IMAGE_ENV_PREFIX) :]] = environ.pop(key)


def main():
    # As PID 1, signals without a handler are ignored by the kernel: keep it that way.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
    take_image_env()
    make_undumpable()
    os.chdir("/")
    listener = open_listener()
    reaper = Reaper()
    sessions = CodeSessions(reaper)
    processes = ProcessTable(reaper)
    start_thread(reaper.run)
    while True:
        try:
            conn, _ = accept(listener)
        except InterruptedError:
            continue
        except OSError:
            time.sleep(0.05)
            continue
        try:
            start_thread(serve_connection, reaper, sessions, processes, conn)
        except RuntimeError:
            # No thread to be had (the sandbox's pids limit is full): say so instead of the
            # hello, refuse this connection and stay alive (the daemon answers "busy, retry").
            try:
                send_error(conn, "no_thread", NO_THREAD)
            except OSError:
                pass
            conn.close()
            time.sleep(0.05)


if __name__ == "__main__":
    main()
