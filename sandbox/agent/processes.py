"""sandboxd in-sandbox agent: background processes (the process_* ops).

A process is a shell command that the agent starts and keeps: it outlives the request that
started it, the daemon's connection and the daemon itself (the agent is the sandbox's PID 1).
Each has a pump thread that reads its stdout and stderr into one bounded ring (the two streams
interleaved in the order they were read, every chunk tagged with its stream) and feeds it the
input the daemon sends. Output is addressed by absolute byte offsets: offset N is the N-th
byte the process ever wrote (both streams together); the ring keeps the last `ring_bytes` of
them, and a read from an offset the ring no longer holds is told how much was dropped.

A process started with `tty` runs on a pseudo-terminal of its own: the agent opens the pair,
sets its size, and the child (a new session's leader, see agent.Reaper.spawn) opens the
terminal as its stdin, stdout and stderr, so it is its controlling terminal (job control, ^C).
Input goes to the master, output comes from it into the ring (one stream, tagged O); a read
of the master fails with EIO once no one holds the terminal any more: the end of the output.

Ops (J requests, J replies unless said):
  process_start  {id, cmd, env, cwd, ring_bytes, max_processes[, tty, cols, rows,
                 max_terminals]} -> {process}
  process_list   -> {processes: [...]} (oldest first)
  process_get    {id} -> {process}
  process_output {id, offset, max_bytes, follow} -> J{ev: head, offset, dropped}, then O/E
                 frames (contiguous bytes from `offset`), J{ev: gap, offset, dropped} where a
                 slow follower lost bytes to the ring, and J{ev: end, next_offset, process}.
                 `follow` keeps sending until the process has ended and its pipes are drained.
  process_input  {id, data_bytes, eof} + D frames up to Z -> {ok, pending} (no eof for a
                 terminal: its end of input is a character, ^D)
  process_signal {id, signal} -> {process}: the signal goes to the process group (a
                 terminal's foreground group; SIGKILL to all of a terminal's session)
  process_resize {id, cols, rows} -> {process}: a terminal's new size (the kernel sends
                 SIGWINCH to its foreground group)
  process_pids_hit -> {killed}: the sandbox hit its pids limit: kill the process behind it,
                 if it is one of these (see handle_pids_hit)
  process_delete {id}: kill the process group, then forget the process
  process_wait   {since, timeout_ms} -> {seq, processes}: at once if the table's sequence
                 (bumped by every start, exit and delete) differs from `since`, else when it
                 changes or the timeout passes (the daemon's watch of exits)

Imported by agent.py on the first process op (see agent.Processes). Python 3.9+, standard
library only, and none of the modules the agent avoids for its start time (no threading:
waiters sleep on _thread locks of their own; fcntl and termios are C modules).
"""

import _signal as signal
import _struct
import _thread
import errno
import fcntl
import os
import termios
import time
from _bisect import bisect_right

from agent import (
    DRAIN_GRACE_S,
    EVENT_READ,
    EVENT_WRITE,
    READ_CHUNK,
    OpError,
    Poller,
    ProtocolError,
    command_request,
    exit_fields,
    json_dumps,
    kill_group,
    recv_data,
    send_frame,
    send_json,
)

MAX_PROCESSES = 32  # kept per sandbox, running or ended
MAX_RING = 16 << 20  # one process's output ring
MAX_RING_TOTAL = 32 << 20  # all rings together: they live in the agent's memory reserve
MAX_PROCESS_INPUT = 1 << 20  # written to a process's stdin but not yet taken by it
MAX_INPUT_TOTAL = 4 << 20  # all processes' input not yet taken: the agent's memory again
MAX_PROCESS_COMMAND = 16 << 10  # bytes of one command
MAX_WAIT_MS = 60000
MERGE_BELOW = 4096  # a chunk this small takes the next read of its stream into it
FOLLOW_CHECK_S = 1.0  # a follower this quiet checks that the daemon is still there
MAX_TERM_SIZE = 1000  # columns or rows of a terminal
SIGNALS = {
    int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP,
                     signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
}  # fmt: skip
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class Proc:
    """One process and its ring; every field is guarded by the table's lock."""

    def __init__(self, pid_id, command, ring_bytes, size):
        self.id = pid_id
        self.command = command
        self.ring_bytes = ring_bytes
        self.size = size  # (cols, rows) of its terminal; None: pipes, no terminal
        self.master = None  # the terminal's master while its pump runs
        self.created_at = int(time.time())
        self.ended_at = None
        self.exited_mono = None
        self.pid = None
        self.waiter = None
        self.status = None  # the wait status, once it has exited
        # The ring: chunks [tag, bytes] and their offsets, oldest first from index `first`
        # (the list is compacted now and then, not at every drop).
        self.chunks = []
        self.offsets = []
        self.first = 0
        self.start = 0  # offset of the oldest byte kept
        self.end = 0  # offset after the newest byte: every byte it ever wrote
        self.pending = bytearray()  # input not yet written
        self.eof = False  # close stdin once `pending` is written
        self.drained = False  # the pump is done: no more output will come
        self.forgotten = False
        self.deleted_running = False  # forgotten while it ran: described as it was then
        self.ctl_w = None  # written to wake the pump (input, delete)

    def append(self, tag, data):
        last = self.chunks[-1] if len(self.chunks) > self.first else None
        if last is not None and last[0] == tag and len(last[1]) < MERGE_BELOW:
            last[1] += data  # a trickle of small writes stays a few chunks, not one per write
        else:
            self.chunks.append([tag, data])
            self.offsets.append(self.end)
        self.end += len(data)
        while self.end - self.start > self.ring_bytes:
            head = self.chunks[self.first]
            over = self.end - self.start - self.ring_bytes
            if len(head[1]) <= over:
                self.start += len(head[1])
                self.chunks[self.first] = None
                self.first += 1
            else:
                head[1] = head[1][over:]
                self.start += over
                self.offsets[self.first] = self.start
        if self.first > 64 and self.first * 2 > len(self.chunks):
            del self.chunks[: self.first]
            del self.offsets[: self.first]
            self.first = 0

    def read(self, offset, max_bytes):
        """[(tag, bytes)] from `offset` (start <= offset <= end), at most `max_bytes`."""
        out = []
        i = max(bisect_right(self.offsets, offset, self.first) - 1, self.first)
        while i < len(self.chunks) and max_bytes > 0:
            tag, data = self.chunks[i]
            piece = data[offset - self.offsets[i] :][:max_bytes]
            if piece:
                out.append((tag, piece))
                offset += len(piece)
                max_bytes -= len(piece)
            i += 1
        return out

    def kill(self):
        """SIGKILL its group; a terminal's whole session (its jobs are groups of their own),
        the leader's group first: a shell that saw its job die first would exit 137 itself."""
        kill_group(self.pid)
        if self.size is not None:
            for group in {group for group, session, _ in tasks() if session == self.pid}:
                if group != self.pid:
                    kill_group(group)

    def signal(self, sig):
        """`sig` to its group; on a terminal, to its foreground group, as a key press sends
        it (SIGKILL: the whole session)."""
        if sig == signal.SIGKILL:
            self.kill()
            return
        group = self.pid
        if self.master is not None:
            try:
                group = os.tcgetpgrp(self.master)
            except OSError:
                pass
        try:
            os.killpg(group, sig)
        except OSError:
            pass  # its group is empty: it is ending anyway

    def describe(self):
        # A process deleted while it ran is described as it was then (its follower may end
        # before or after the kill's status arrives: either way the same answer).
        status = None if self.deleted_running else self.status
        item = {
            "id": self.id,
            "command": self.command,
            "status": "running" if status is None else "exited",
            "exit_code": None,
            "signal": None,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "output_bytes": self.end,
            "retained_from": self.start,
            "tty": self.size is not None,
        }
        if self.size is not None:
            item["cols"], item["rows"] = self.size
        if status is not None:
            item.update(exit_fields(status))
        return item


class Processes:
    """The process table of this sandbox (the agent serves each connection in a thread:
    everything here happens under `lock`)."""

    def __init__(self, reaper):
        self.reaper = reaper
        self.lock = _thread.allocate_lock()
        self.table = {}  # id -> Proc, oldest first
        self.seq = 0
        self.waiters = []  # locks held by sleeping waiters, released by notify()

    def notify(self, bump=False):
        """Wake every waiter (new output, an exit); `bump`: the table changed. Under lock."""
        if bump:
            self.seq += 1
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w.release()

    def sleep(self, timeout):
        """Wait (lock held on entry and on return) until notify() or `timeout`."""
        w = _thread.allocate_lock()
        w.acquire()
        self.waiters.append(w)
        self.lock.release()
        try:
            w.acquire(True, max(timeout, 0.0))
        finally:
            self.lock.acquire()
            if w in self.waiters:
                self.waiters.remove(w)

    def get(self, pid_id):
        p = self.table.get(pid_id)
        if p is None:
            raise OpError("process_not_found", "no such process")
        return p

    def start(self, req):
        pid_id, ring_bytes, cap = req.get("id"), req.get("ring_bytes"), req.get("max_processes")
        cmd, env, cwd = command_request(req)
        if (
            not isinstance(pid_id, str)
            or not 0 < len(pid_id) <= 64
            or not ID_CHARS.issuperset(pid_id)
        ):
            raise OpError("bad_request", "invalid process id")
        if not all(isinstance(v, int) and v > 0 for v in (ring_bytes, cap)):
            raise OpError("bad_request", "ring_bytes and max_processes must be integers")
        try:
            size = len(cmd.encode("utf-8"))
        except UnicodeEncodeError:
            raise OpError("bad_request", "the command is not UTF-8") from None
        if size > MAX_PROCESS_COMMAND or "\0" in cmd:
            raise OpError("bad_request", "the command is too long or holds NUL")
        ring_bytes = min(ring_bytes, MAX_RING)
        cap = min(cap, MAX_PROCESSES)
        size, terminals = None, 0
        if req.get("tty") is True:
            size, terminals = terminal_size(req), req.get("max_terminals")
            if not isinstance(terminals, int) or terminals <= 0:
                raise OpError("bad_request", "max_terminals must be an integer")
            env.setdefault("TERM", "xterm-256color")
        with self.lock:
            if pid_id in self.table:
                raise OpError("bad_request", "a process with this id exists")
            if size is not None:
                running = [q for q in self.table.values() if q.size and q.status is None]
                if len(running) >= terminals:
                    raise OpError(
                        "too_many_terminals", "all %d terminals are in use" % len(running)
                    )
            self.make_room(cap, ring_bytes)
            p = self.table[pid_id] = Proc(pid_id, cmd, ring_bytes, size)
            self.notify(bump=True)
        try:
            self.spawn(p, cmd, env, cwd)
        except BaseException:
            with self.lock:
                self.table.pop(pid_id, None)
                self.notify(bump=True)
            raise
        with self.lock:
            return p.describe()

    def make_room(self, cap, ring_bytes):
        """Forget the oldest ended processes while the table is full (by count or by ring
        memory); too_many_processes if the running ones alone fill it. Under lock."""
        while True:
            running = [p for p in self.table.values() if p.status is None]
            rings = sum(p.ring_bytes for p in self.table.values()) + ring_bytes
            if len(self.table) < cap and rings <= MAX_RING_TOTAL:
                return
            ended = [p for p in self.table.values() if p.status is not None]
            if not ended:
                raise OpError(
                    "too_many_processes",
                    "all %d processes this container may keep are running" % len(running),
                )
            self.forget(ended[0])

    def spawn(self, p, cmd, env, cwd):
        own, tty = [], None  # every fd is close-on-exec: the child gets only what is dup'ed
        try:
            for _ in range(2):
                own.extend(os.pipe())
            if p.size is None:
                for _ in range(3):
                    own.extend(os.pipe())
                out_r, out_w, err_r, err_w, in_r, in_w = own[4:]
                child, given = [(0, in_r), (1, out_w), (2, err_w)], (out_w, err_w, in_r)
                fds = {"out": out_r, "err": err_r, "in": in_w}
            else:
                own.extend(os.openpty())
                own.append(os.dup(own[4]))  # the master again: the poller watches it for input
                master, slave, in_w = own[4:]
                set_size(master, p.size)
                tty, child, given = os.ttyname(slave), [(1, 0), (2, 0)], (slave,)
                fds = {"out": master, "in": in_w}
        except OSError as exc:  # out of descriptors, or of terminals
            for fd in own:
                os.close(fd)
            raise OpError("spawn_failed", os.strerror(exc.errno or 0)) from None
        wake_r, wake_w, ctl_r, ctl_w = own[:4]
        try:
            # On a terminal the shell runs the command as a job of its own (-m): the job is
            # the terminal's foreground group, so ^C reaches the command but not the shell,
            # which lives on to report the command's own status.
            argv = ["/bin/sh", "-c" if tty is None else "-mc", cmd]
            pid, waiter = self.reaper.spawn(argv, env, cwd, child, wake_w, tty)
        except OSError as exc:
            for fd in own:
                os.close(fd)
            raise OpError("spawn_failed", os.strerror(exc.errno or 0)) from None
        for fd in given:
            os.close(fd)
        for fd in fds.values():
            os.set_blocking(fd, False)
        with self.lock:
            p.pid, p.waiter, p.ctl_w = pid, waiter, ctl_w
            p.master = fds["out"] if tty else None
            if p.forgotten:
                p.kill()  # deleted while it was being started
        fds.update(wake=wake_r, wake_w=wake_w, ctl=ctl_r, ctl_w=ctl_w)
        try:
            _thread.start_new_thread(self.pump, (p, fds))
        except RuntimeError:
            # No thread to be had (the pids limit): the process cannot be served; end it.
            kill_group(pid)
            with self.reaper.lock:
                waiter["wake"] = None
            with self.lock:
                p.ctl_w = p.master = None
            for fd in fds.values():
                os.close(fd)
            raise OpError("spawn_failed", "no thread for the process (pids limit)") from None

    def pump(self, p, fds):
        """The process's own thread: output into the ring, input out of `pending`, its exit;
        it closes every fd of the process when it ends."""
        sel, in_fd, writing, open_pipes = None, fds["in"], False, 1 + ("err" in fds)
        try:
            sel = Poller()
            sel.register(fds["out"], EVENT_READ, b"O")
            if "err" in fds:
                sel.register(fds["err"], EVENT_READ, b"E")
            sel.register(fds["wake"], EVENT_READ, "wake")
            sel.register(fds["ctl"], EVENT_READ, "ctl")
            while True:
                with self.lock:
                    if p.forgotten or (
                        p.status is not None
                        and (open_pipes == 0 or time.monotonic() - p.exited_mono >= DRAIN_GRACE_S)
                    ):
                        return  # what the group's leftovers still write goes nowhere
                    want = bool(p.pending)
                    close_in = p.eof and not p.pending
                    running = p.status is None
                if in_fd is not None and (want != writing or close_in):
                    if writing:
                        sel.unregister(in_fd)
                    elif want:
                        sel.register(in_fd, EVENT_WRITE, "in")
                    writing = want and not writing
                    if close_in:
                        os.close(in_fd)  # how the process sees the end of its input
                        in_fd, writing = None, False
                for key, _ in sel.select(None if running else DRAIN_GRACE_S / 4):
                    tag = key.data
                    if tag in (b"O", b"E"):
                        if not self.read_output(p, key.fd, tag):
                            sel.unregister(key.fd)
                            open_pipes -= 1
                    elif tag == "wake":
                        os.read(key.fd, 16)
                        sel.unregister(key.fd)
                        with self.lock:
                            p.status = p.waiter["status"]
                            p.ended_at, p.exited_mono = int(time.time()), time.monotonic()
                            self.notify(bump=True)
                    elif tag == "ctl":
                        os.read(key.fd, 64)
                    elif tag == "in" and not self.write_input(p, in_fd):
                        sel.unregister(in_fd)
                        os.close(in_fd)
                        in_fd, writing = None, False
        finally:
            if sel is not None:
                sel.close()
            with self.reaper.lock:
                p.waiter["wake"] = None
            with self.lock:
                p.drained, p.ctl_w, p.master = True, None, None
                self.notify()
            for name, fd in fds.items():
                if name != "in" or in_fd is not None:
                    os.close(fd)

    def read_output(self, p, fd, tag):
        """One read of a pipe into the ring; False at its end."""
        try:
            chunk = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            if exc.errno == errno.EIO:
                return False  # a terminal's master: no one holds the terminal any more
            raise
        if not chunk:
            return False
        with self.lock:
            p.append(tag, chunk)
            self.notify()
        return True

    def write_input(self, p, fd):
        """Write what stdin takes of `pending`; False when the reader is gone."""
        with self.lock:
            data = bytes(p.pending[:65536])
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            return True
        except OSError:
            with self.lock:
                p.pending.clear()
            return False
        with self.lock:
            del p.pending[:n]
        return True

    def wake(self, p):
        """Wake the process's pump (under lock): its input or its fate changed."""
        if p.ctl_w is not None:
            try:
                os.write(p.ctl_w, b"x")
            except OSError:
                pass

    def forget(self, p):
        """Kill the group and drop the process (under lock); its pump closes its fds."""
        if p.status is None and p.pid is not None:
            p.kill()
        p.deleted_running = p.status is None
        p.forgotten = True
        self.table.pop(p.id, None)
        self.wake(p)
        self.notify(bump=True)


def handle_output(table, conn, req):
    offset, max_bytes, follow = req.get("offset"), req.get("max_bytes"), req.get("follow")
    if not isinstance(offset, int) or offset < 0 or not isinstance(max_bytes, int):
        raise OpError("bad_request", "offset and max_bytes must be integers")
    follow = follow is True
    budget = max_bytes if not follow else float("inf")  # a follow ends with the process
    with table.lock:
        p = table.get(req.get("id"))
        if offset > p.end:
            raise OpError("bad_offset", "offset %d is beyond the output (%d)" % (offset, p.end))
        dropped = max(0, p.start - offset)
        offset += dropped
    send_json(conn, {"ev": "head", "offset": offset, "dropped": dropped})
    last_check = time.monotonic()
    while True:
        gap, quiet = None, False
        with table.lock:
            if p.start > offset:  # a slow follower: the ring moved on meanwhile
                gap = {"ev": "gap", "offset": p.start, "dropped": p.start - offset}
                offset = p.start
            pieces = p.read(offset, min(budget, READ_CHUNK)) if budget > 0 else []
            if not pieces and gap is None:
                if not follow or budget <= 0 or ended(p):
                    end = {"ev": "end", "next_offset": offset, "process": p.describe()}
                    break
                table.sleep(FOLLOW_CHECK_S)
                quiet = True
        if gap is not None:
            send_json(conn, gap)
        for tag, piece in pieces:
            send_frame(conn, tag, piece)
            offset += len(piece)
            budget -= len(piece)
        if quiet and time.monotonic() - last_check >= FOLLOW_CHECK_S:
            last_check = time.monotonic()
            daemon_gone(conn)
    reply(conn, end)


def ended(p):
    """No more output will come (under lock)."""
    return p.forgotten or p.drained


def reply(conn, obj):
    """A J frame whose strings (commands) go raw: UTF-8 is shorter than escapes."""
    send_frame(conn, b"J", json_dumps(obj, ensure_ascii=False).encode("utf-8"))


def daemon_gone(conn):
    """Raise EOFError if the daemon closed the connection of a quiet follow (its thread
    would otherwise wait for output that may never come)."""
    ready = Poller()
    try:
        ready.register(conn, EVENT_READ)
        if ready.select(0):
            raise EOFError
    finally:
        ready.close()


def handle_input(table, conn, req):
    size, eof = req.get("data_bytes"), req.get("eof")
    if not isinstance(size, int) or not 0 <= size <= MAX_PROCESS_INPUT:
        raise ProtocolError("bad data_bytes")
    data = recv_data(conn, size) if size else b""
    with table.lock:
        p = table.get(req.get("id"))
        if p.status is not None or p.eof:
            raise OpError("process_exited", "the process has ended or its input is closed")
        if eof is True and p.size is not None:
            raise OpError("bad_request", "a terminal has no end of input: send its EOF (^D)")
        waiting = sum(len(q.pending) for q in table.table.values())
        if len(p.pending) + len(data) > MAX_PROCESS_INPUT or waiting + len(data) > MAX_INPUT_TOTAL:
            raise OpError("input_full", "the process is not reading its input")
        p.pending += data
        p.eof = eof is True
        pending = len(p.pending)
        table.wake(p)
    send_json(conn, {"ok": True, "pending": pending})


def handle_signal(table, conn, req):
    sig = req.get("signal")
    if sig not in SIGNALS:
        raise OpError("bad_request", "signal not allowed")
    with table.lock:
        p = table.get(req.get("id"))
        if p.status is not None:
            raise OpError("process_exited", "the process has ended")
        p.signal(sig)
        item = p.describe()
    reply(conn, {"process": item})


def tasks():
    """(process group, session, threads) of every process of the sandbox, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)"
            # state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
            # stime cutime cstime priority nice num_threads
            found.append((int(fields[2]), int(fields[3]), int(fields[17])))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def handle_pids_hit(table, conn):
    """The sandbox ran into its pids limit: kill the running process whose session holds the
    most tasks (processes and threads), if the largest session of the sandbox is one of
    theirs (an exec's or a cell's is ended by its own watch) -> {killed: id or null}."""
    sizes = {}
    for _, session, threads in tasks():
        if session > 1:  # not the agent's own
            sizes[session] = sizes.get(session, 0) + threads
    victim = None
    with table.lock:
        if sizes:
            largest = max(sizes, key=sizes.get)
            for p in table.table.values():
                if p.status is None and p.pid == largest:
                    victim = p
                    p.kill()
    reply(conn, {"killed": victim.id if victim is not None else None})


def terminal_size(req):
    """(cols, rows) of a request, checked."""
    size = req.get("cols"), req.get("rows")
    if not all(isinstance(v, int) and 0 < v <= MAX_TERM_SIZE for v in size):
        raise OpError("bad_request", "cols and rows must be 1..%d" % MAX_TERM_SIZE)
    return size


def set_size(fd, size):
    """TIOCSWINSZ: the kernel tells the terminal's foreground group (SIGWINCH) if it changed."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _struct.pack("HHHH", size[1], size[0], 0, 0))


def handle_resize(table, conn, req):
    size = terminal_size(req)
    with table.lock:
        p = table.get(req.get("id"))
        if p.size is None:
            raise OpError("not_a_terminal", "the process has no terminal")
        if p.status is not None or p.master is None:
            raise OpError("process_exited", "the process has ended")
        set_size(p.master, size)
        p.size = size
        item = p.describe()
    reply(conn, {"process": item})


def handle_wait(table, conn, req):
    since, timeout_ms = req.get("since"), req.get("timeout_ms")
    if not isinstance(since, int) or not isinstance(timeout_ms, int):
        raise OpError("bad_request", "since and timeout_ms must be integers")
    deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_WAIT_MS) / 1000.0
    with table.lock:
        while table.seq == since and time.monotonic() < deadline:
            table.sleep(deadline - time.monotonic())
        found = {"seq": table.seq, "processes": [p.describe() for p in table.table.values()]}
    reply(conn, found)


def handle(table, conn, req):
    """The process ops, for agent.ProcessTable."""
    op = req.get("op")
    if op == "process_start":
        reply(conn, {"process": table.start(req)})
    elif op == "process_list":
        with table.lock:
            items = [p.describe() for p in table.table.values()]
        reply(conn, {"processes": items})
    elif op == "process_get":
        with table.lock:
            item = table.get(req.get("id")).describe()
        reply(conn, {"process": item})
    elif op == "process_output":
        handle_output(table, conn, req)
    elif op == "process_input":
        handle_input(table, conn, req)
    elif op == "process_signal":
        handle_signal(table, conn, req)
    elif op == "process_resize":
        handle_resize(table, conn, req)
    elif op == "process_pids_hit":
        handle_pids_hit(table, conn)
    elif op == "process_delete":
        with table.lock:
            table.forget(table.get(req.get("id")))
        send_json(conn, {"ok": True})
    elif op == "process_wait":
        handle_wait(table, conn, req)
    else:
        raise OpError("bad_op", "unknown op")
