"""sandboxd code interpreter: one persistent Python session, driven by the in-sandbox agent.

The agent starts one of these per code session as `python3 -I -B interpreter.py`, as the
sandbox's unprivileged user, in its own process group, with cwd /mnt/data. Standard library
only, Python 3.9+; it imports nothing from sandboxd.

Descriptors: 0 is /dev/null; 1 and 2 are pipes the agent relays as the call's stdout and
stderr (subprocesses of the code write there too); 3 carries requests from the agent and 4
carries replies, both framed as a 4-byte big-endian length + a UTF-8 JSON object:
  request  {"code": str}
  reply    {"status": "ok" | "error", "result": str | null, "result_truncated": bool,
            "error": {"name", "value", "traceback"} | null}
A cell runs in the session's `__main__` namespace; when its last statement is an expression,
its value's repr is the result (None gives null). SIGINT raises KeyboardInterrupt in the
running cell, never in this file's own bookkeeping. Matplotlib figures still open after a cell
(or passed to `plt.show()`) are saved as /mnt/data/figure-<n>.png and closed.
"""

import __future__

import ast
import builtins
import collections
import json
import linecache
import os
import signal
import struct
import sys
import traceback
import types

CTL_IN = 3
CTL_OUT = 4
WORKSPACE = "/mnt/data"
MAX_REQUEST = 32 << 20  # a cell of up to 4 MiB, JSON-escaped
MAX_RESULT = 10 << 10  # characters of a result's repr
MAX_ERROR_VALUE = 4 << 10
MAX_TRACEBACK = 32 << 10
MAX_SOURCES = 8 << 20  # cell sources kept for tracebacks
FUTURE_FLAGS = [getattr(__future__, name).compiler_flag for name in __future__.all_feature_names]


def cap(text, limit):
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def read_request():
    (length,) = struct.unpack(">I", read_exact(CTL_IN, 4))
    if length > MAX_REQUEST:
        raise ValueError("request too large")
    msg = json.loads(read_exact(CTL_IN, length).decode("utf-8"))
    if not isinstance(msg, dict) or not isinstance(msg.get("code"), str):
        raise ValueError("bad request")
    return msg


def write_reply(reply):
    data = json.dumps(reply, separators=(",", ":")).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(CTL_OUT, view) :]


class Session:
    def __init__(self):
        self.main = types.ModuleType("__main__")
        self.main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = self.main
        self.flags = 0  # __future__ features seen so far, as in the interactive interpreter
        self.cells = 0
        self.figures = 0
        self.sources = collections.deque()
        self.source_bytes = 0
        self.interruptible = False

    def on_sigint(self, signum, frame):
        if self.interruptible:
            raise KeyboardInterrupt
        # Between cells an interrupt has nothing to stop.

    def remember(self, filename, source):
        """Keep the cell's source for tracebacks (linecache), within a byte budget."""
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        self.sources.append((filename, len(source)))
        self.source_bytes += len(source)
        while self.source_bytes > MAX_SOURCES and len(self.sources) > 1:
            old, size = self.sources.popleft()
            linecache.cache.pop(old, None)
            self.source_bytes -= size

    def compile(self, node, filename, mode):
        code = compile(node, filename, mode, self.flags, True)
        for flag in FUTURE_FLAGS:
            if code.co_flags & flag:
                self.flags |= flag
        return code

    def run(self, source):
        self.cells += 1
        filename = "<cell-%d>" % self.cells
        self.remember(filename, source)
        reply = {"status": "ok", "result": None, "result_truncated": False, "error": None}
        self.interruptible = True
        try:
            try:
                tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST | self.flags, True)
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = ast.Expression(tree.body.pop().value)
                namespace = self.main.__dict__
                exec(self.compile(tree, filename, "exec"), namespace)
                if last is not None:
                    value = eval(self.compile(last, filename, "eval"), namespace)
                    if value is not None:
                        reply["result"], reply["result_truncated"] = cap(repr(value), MAX_RESULT)
            except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: cell errors
                reply["status"] = "error"
                reply["error"] = describe(exc)
            self.save_figures()
        except BaseException as exc:  # noqa: BLE001 - an interrupt landing in the handler above
            reply["status"] = "error"
            reply["error"] = describe(exc)
        finally:
            self.interruptible = False
        return reply

    def save_figures(self):
        """Save every open pyplot figure as a new PNG in the workspace, then close it."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        try:
            for num in pyplot.get_fignums():
                figure = pyplot.figure(num)
                try:
                    with os.fdopen(self.new_png(), "wb") as f:
                        figure.savefig(f, format="png")
                finally:
                    pyplot.close(figure)
        except Exception:  # noqa: BLE001 - user figures may fail to render: say why, go on
            traceback.print_exc()

    def new_png(self):
        while True:
            self.figures += 1
            path = os.path.join(WORKSPACE, "figure-%d.png" % self.figures)
            try:
                return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                continue


class PyplotHook:
    """A meta path finder that makes `matplotlib.pyplot.show` save figures once it loads."""

    def __init__(self, session):
        self.session = session

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            load = spec.loader.exec_module
            save = self.session.save_figures

            def exec_module(module):
                load(module)
                module.show = lambda *args, **kwargs: save()

            spec.loader.exec_module = exec_module
            return spec
        except Exception:  # noqa: BLE001 - the normal import machinery takes over
            return None


def describe(exc):
    """{name, value, traceback} of an exception, without this file's own frames."""
    try:
        value = str(exc)
    except Exception:  # noqa: BLE001 - user-defined __str__
        value = "<unprintable %s>" % type(exc).__name__
    report = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    frames = [frame for frame in report.stack if frame.filename != __file__]
    report.stack = traceback.StackSummary.from_list(frames)
    text = "".join(report.format())
    if len(text) > MAX_TRACEBACK:
        text = "[... traceback truncated ...]\n" + text[-MAX_TRACEBACK:]
    return {
        "name": type(exc).__name__,
        "value": cap(value, MAX_ERROR_VALUE)[0],
        "traceback": text,
    }


def flush_output():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the code may have replaced or closed them
            pass


def main():
    for fd in (CTL_IN, CTL_OUT):
        os.set_inheritable(fd, False)  # subprocesses of the code get stdout/stderr only
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # lines stream out as a terminal shows them
    session = Session()
    signal.signal(signal.SIGINT, session.on_sigint)
    sys.argv = [""]
    sys.path.insert(0, "")  # as in an interactive interpreter: modules in the cwd import
    sys.meta_path.insert(0, PyplotHook(session))
    while True:
        try:
            request = read_request()
        except (EOFError, OSError, ValueError):
            return  # the agent closed the session (or broke the protocol)
        try:
            reply = session.run(request["code"])
        except KeyboardInterrupt:  # landed between the handlers and `finally`
            session.interruptible = False
            reply = {
                "status": "error",
                "result": None,
                "result_truncated": False,
                "error": {"name": "KeyboardInterrupt", "value": "", "traceback": ""},
            }
        flush_output()
        write_reply(reply)


if __name__ == "__main__":
    main()
