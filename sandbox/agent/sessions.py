"""sandboxd in-sandbox agent: code sessions (the code, sessions and session_delete ops).

`code` runs Python in a persistent session: one interpreter.py process per session, beside
this file, talking over pipes (its own framing, see interpreter.py). Like exec it streams O/E
frames (through agent.Pump) and ends with one J result; the daemon may send
J{"op": "interrupt"|"kill"} meanwhile.

Imported by agent.py only when the first code op arrives: a sandbox that never runs a cell
never loads it. Python 3.9+, standard library only, like agent.py; it finds agent.py
(already imported, by that name) beside it in the agent's directory.
"""

import _signal as signal
import _struct as struct
import _thread
import fcntl
import os
import sys
import time

from agent import (
    BASE_ENV,
    CONFIG_ENV,
    EVENT_READ,
    MAX_JSON,
    MAX_LIST,
    READ_CHUNK,
    WORKSPACE,
    OpError,
    ProtocolError,
    Pump,
    exit_fields,
    json_dumps,
    json_loads,
    kill_group,
    recv_data,
    send_frame,
    send_json,
    walk_workspace,
)

INTERPRETER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interpreter.py")
MAX_SESSIONS = 64
MAX_CODE = 4 << 20
MAX_REPLY = 1 << 20  # an interpreter's reply; it runs sandbox code, so it is untrusted
MAX_CHANGED = 1000
INTERRUPT_GRACE_S = 2.0
F_DUPFD_CLOEXEC = getattr(fcntl, "F_DUPFD_CLOEXEC", 1030)  # Linux's value
SESSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class Session:
    def __init__(self, sid):
        self.id = sid
        self.created_at = self.last_used_at = int(time.time())
        self.busy = _thread.allocate_lock()  # one call at a time
        self.proc = None  # {"pid", "waiter", fds...} of the live interpreter
        self.lost = None  # why the previous interpreter died; reported by the next call
        self.deleted = False


class Sessions:
    """The code sessions of this sandbox: one interpreter process (group) each."""

    def __init__(self, reaper):
        self.reaper = reaper
        self.lock = _thread.allocate_lock()
        self.table = {}

    def acquire(self, sid, cap):
        with self.lock:
            s = self.table.get(sid)
            if s is None:
                if len(self.table) >= min(cap, MAX_SESSIONS):
                    raise OpError("too_many_sessions", "at most %d sessions" % cap)
                s = self.table[sid] = Session(sid)
            if not s.busy.acquire(blocking=False):
                raise OpError("session_busy", "the session is running another call")
            return s

    def delete(self, sid):
        with self.lock:
            s = self.table.pop(sid, None)
        if s is None:
            raise OpError("session_not_found", "no such session")
        s.deleted, s.lost = True, "deleted"
        if s.proc is not None:
            kill_group(s.proc["pid"])  # a running call sees it die and cleans up
        if s.busy.acquire(blocking=False):
            self.stop(s)
            s.busy.release()

    def start(self, s):
        own = [fd for pair in [os.pipe() for _ in range(5)] for fd in pair]
        out_r, out_w, err_r, err_w, req_r, req_w, rep_r, rep_w, wake_r, wake_w = own
        child = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)]
        try:
            # Above 4, so the posix_spawn dup2s onto 0..4 cannot collide with a source fd.
            for fd in (out_w, err_w, req_r, rep_w):
                child.append(fcntl.fcntl(fd, F_DUPFD_CLOEXEC, 10))
            env = dict(BASE_ENV, **CONFIG_ENV)
            env["MPLBACKEND"] = "Agg"
            argv = [sys.executable or "/usr/bin/python3", "-I", "-B", INTERPRETER]
            try:
                pid, waiter = self.reaper.spawn(argv, env, WORKSPACE, enumerate(child), wake_w)
            except OSError as exc:
                raise OpError("spawn_failed", os.strerror(exc.errno or 0)) from None
        except BaseException:
            for fd in own:
                os.close(fd)
            raise
        finally:
            for fd in child:
                os.close(fd)
        for fd in (out_w, err_w, req_r, rep_w):
            os.close(fd)
        for fd in (out_r, err_r, req_w, rep_r):
            os.set_blocking(fd, False)
        s.proc = {"pid": pid, "waiter": waiter, "out": out_r, "err": err_r, "req": req_w,
                  "rep": rep_r, "wake": wake_r, "wake_w": wake_w}  # fmt: skip

    def stop(self, s):
        p, s.proc = s.proc, None
        if p is None:
            return
        kill_group(p["pid"])
        with self.reaper.lock:
            p["waiter"]["wake"] = None
        for key in ("out", "err", "req", "rep", "wake", "wake_w"):
            os.close(p[key])

    def describe(self):
        with self.lock:
            sessions = list(self.table.values())  # oldest first
        found = []
        for s in sessions:
            status = "idle"
            if s.busy.locked():
                status = "busy"
            elif s.lost or (s.proc and s.proc["waiter"]["status"] is not None):
                status = "dead"
            found.append(
                {"id": s.id, "created_at": s.created_at, "last_used_at": s.last_used_at,
                 "status": status}
            )  # fmt: skip
        return found


def snapshot():
    found, truncated = walk_workspace(WORKSPACE, MAX_LIST)
    return {p: (st.st_size, st.st_mtime_ns, st.st_ino) for p, st in found}, truncated


def handle_code(sessions, conn, req):
    sid, code, timeout_ms, cap, max_sessions = code_request(conn, req)
    s = sessions.acquire(sid, max_sessions)
    started = time.monotonic()
    try:
        s.last_used_at = int(time.time())
        if s.proc is not None and exited(s.proc):
            s.lost = s.lost or death_reason(s.proc["waiter"]["status"])
            sessions.stop(s)
        restart_reason, s.lost = s.lost, None
        if s.proc is None:
            sessions.start(s)
        before, _ = snapshot()
        try:
            result = run_cell(conn, s, code, started + timeout_ms / 1000.0, cap)
        except BaseException:
            s.lost = "agent_error"  # the cell may still run: never reuse this process
            sessions.stop(s)
            raise
        if result["status"] == "died":
            result["stop"] = result["stop"] or s.lost  # "deleted" while running
            s.lost = result["stop"] or death_reason(s.proc["waiter"]["status"])
            sessions.stop(s)
        after, after_truncated = snapshot()
    finally:
        if s.deleted:
            sessions.stop(s)
        s.last_used_at = int(time.time())
        s.busy.release()
    files, files_truncated, removed = changed_files(before, after, after_truncated)
    result.update(
        ev="code",
        restarted=restart_reason is not None,
        restart_reason=restart_reason,
        files=files,
        files_truncated=files_truncated,
        removed=removed,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    send_json(conn, result)


def code_request(conn, req):
    """(session id, code, timeout_ms, max_output, max_sessions) of a code request, checked;
    the code follows the request as data frames."""
    size = req.get("code_bytes") or 0
    if not isinstance(size, int) or not 0 <= size <= MAX_CODE:
        raise ProtocolError("bad code_bytes")
    source = recv_data(conn, size) if size else b""
    sid, timeout_ms, cap = req.get("session"), req.get("timeout_ms"), req.get("max_output")
    max_sessions = req.get("max_sessions") or MAX_SESSIONS
    if not isinstance(sid, str) or not 0 < len(sid) <= 64 or not SESSION_CHARS.issuperset(sid):
        raise OpError("bad_session", "invalid session id")
    if not all(isinstance(v, int) and v >= 0 for v in (timeout_ms, cap, max_sessions)):
        raise OpError("bad_request", "timeout_ms, max_output and max_sessions must be integers")
    try:
        code = source.decode("utf-8")
    except UnicodeDecodeError:
        raise OpError("bad_request", "code is not UTF-8") from None
    return sid, code, timeout_ms, cap, max_sessions


def changed_files(before, after, after_truncated):
    """(files, files_truncated, removed) between two snapshots, within the reply's budget."""
    files, budget, files_truncated = [], MAX_JSON * 8, after_truncated
    for path, meta in after.items():
        if before.get(path) != meta:
            budget -= len(json_dumps(path)) + 32
            if len(files) >= MAX_CHANGED or budget < 0:
                files_truncated = True
                break
            files.append({"path": path, "bytes": meta[0]})
    return files, files_truncated, removed_files(before, after, after_truncated, budget)


def removed_files(before, after, after_truncated, budget):
    """Paths the call removed (or renamed away), as far as both snapshots saw (best effort:
    what does not fit the budget is found by the next listing)."""
    upto = None
    if after_truncated:
        last = next(reversed(after), None) if after else None
        upto = last.encode("utf-8", "surrogateescape") if last is not None else b""
    removed = []
    for path in before:
        if path in after:
            continue
        if upto is not None and path.encode("utf-8", "surrogateescape") > upto:
            continue  # beyond what the second snapshot saw
        budget -= len(json_dumps(path)) + 4
        if len(removed) >= MAX_CHANGED or budget < 0:
            break
        removed.append(path)
    return removed


def exited(p):
    """Has the interpreter died (even if the reaper has not collected it yet)?"""
    if p["waiter"]["status"] is None:
        try:
            if os.waitid(os.P_PID, p["pid"], os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return False  # alive
        except ChildProcessError:
            pass  # being reaped right now
        deadline = time.monotonic() + 1.0
        while p["waiter"]["status"] is None and time.monotonic() < deadline:
            time.sleep(0.002)
    return p["waiter"]["status"] is not None


def death_reason(status):
    return "killed" if os.waitstatus_to_exitcode(status) < 0 else "exited"


class CellPump(Pump):
    """A code cell's pump: the cell ends with the interpreter's reply (or its death), its
    deadline interrupts it (SIGINT) and kills it INTERRUPT_GRACE_S later, the daemon may ask
    for either meanwhile, and a lost daemon stops the cell without losing the session."""

    INPUT_GONE = OSError  # the request pipe: the interpreter is gone

    def __init__(self, conn, p, cap, deadline):
        super().__init__(conn, p["pid"], p["waiter"], cap, deadline, p["out"], p["err"], p["wake"])
        self.p = p
        self.reply, self.buf = None, bytearray()
        self.stop, self.interrupted_at, self.killed = None, None, False
        self.sel.register(p["rep"], EVENT_READ, "rep")

    def tick(self, now):
        if self.reply is not None or self.status is not None:
            return None
        if now >= self.deadline:
            self.interrupt("timeout")
        grace_end = None if self.interrupted_at is None else self.interrupted_at + INTERRUPT_GRACE_S
        if grace_end is not None and not self.killed and now >= grace_end:
            self.kill()
        if self.killed:
            return 1.0
        return max(0.0, (self.deadline if grace_end is None else grace_end) - now)

    def finish(self):
        for fd, tag in ((self.p["out"], b"O"), (self.p["err"], b"E")):
            self.output(fd, tag, 256)  # what was written before the reply (bounded: a thread
            # may still be printing)

    def interrupt(self, reason):
        if self.stop is None:
            self.stop = reason
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
            try:
                os.killpg(self.pid, signal.SIGINT)
            except OSError:
                pass

    def kill(self, reason=None):
        self.stop = reason or self.stop
        self.killed = True
        kill_group(self.pid)

    def from_daemon(self):
        try:
            super().from_daemon()
        except (EOFError, OSError, ProtocolError, ValueError):
            # The daemon went away: stop the cell, keep the session if we can.
            self.sel.unregister(self.conn)
            self.relay = False
            self.interrupt("disconnected")

    def request(self, op, msg):
        if op == "kill":
            self.kill(str(msg.get("reason") or "request")[:32])
        elif op == "interrupt":
            self.interrupt(str(msg.get("reason") or "request")[:32])

    def send(self, tag, chunk):
        try:
            send_frame(self.conn, tag, chunk)
        except OSError:
            self.relay = False

    def other(self, key):
        """The reply pipe: one length-prefixed JSON object, at most MAX_REPLY bytes."""
        chunk = os.read(key.fd, READ_CHUNK)
        self.buf += chunk
        buf = self.buf
        if not chunk or len(buf) > MAX_REPLY + 4:
            self.sel.unregister(key.fd)  # closed or oversized: the process goes
            if chunk:
                self.kill(self.stop or "bad_reply")
        elif len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            self.reply = parse_reply(bytes(buf[4:]))
            if self.reply is None:
                self.kill(self.stop or "bad_reply")


def run_cell(conn, s, code, deadline, cap):
    """Send one cell, relay its output, enforce the deadline; the result without files."""
    p = s.proc
    data = json_dumps({"code": code}, ensure_ascii=False).encode()
    try:
        while os.read(p["rep"], READ_CHUNK):
            pass  # stale bytes (something in the sandbox wrote to the reply pipe)
    except BlockingIOError:
        pass
    pump = CellPump(conn, p, cap, deadline)
    pump.feed(p["req"], struct.pack(">I", len(data)) + data, close_input=False)
    pump.run()
    if pump.reply is None:
        result = {"status": "died", "result": None, "result_truncated": False, "exception": None}
        result.update(exit_fields(pump.status))
    else:
        result = pump.reply
        if pump.stop is not None:
            result["status"] = "interrupted"
    result.update(stop=pump.stop, truncated=pump.truncated)
    return result


def parse_reply(data):
    try:
        msg = json_loads(data.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("status") not in ("ok", "error"):
        return None
    value, error = msg.get("result"), msg.get("error")
    reply = {
        "status": msg["status"],
        "result": value[: 16 << 10] if isinstance(value, str) else None,
        "result_truncated": msg.get("result_truncated") is True,
        "exception": None,  # not "error": that key means the op failed
    }
    if isinstance(error, dict):
        reply["exception"] = {
            key: str(error.get(key, ""))[:limit]
            for key, limit in (("name", 200), ("value", 8 << 10), ("traceback", 64 << 10))
        }
    return reply


def handle_sessions(sessions, conn, req):
    op = req.get("op")
    if op == "sessions":
        send_json(conn, {"sessions": sessions.describe()})
    else:
        sessions.delete(req.get("session"))
        send_json(conn, {"ok": True})


def handle(sessions, conn, req):
    """The code ops, for agent.CodeSessions."""
    if req.get("op") == "code":
        handle_code(sessions, conn, req)
    else:
        handle_sessions(sessions, conn, req)
