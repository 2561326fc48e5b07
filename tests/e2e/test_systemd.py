"""The systemd contract: sd_notify READY/STOPPING, and serving on an activated socket."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e]


def test_ready_only_when_serving_and_stopping_on_sigterm() -> None:
    d = DaemonProcess()
    notify_path = str(d.root / "notify.sock")
    received: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(30)
        connectable_at_ready: list[bool] = []

        def watch() -> None:
            while "READY=1" not in received:
                received.extend(notify.recv(4096).decode().split("\n"))
            with socket.socket(socket.AF_UNIX) as probe:  # one try, no retry
                connectable_at_ready.append(probe.connect_ex(d.socket) == 0)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            d.start(env={"NOTIFY_SOCKET": notify_path})
            watcher.join(timeout=30)
            assert connectable_at_ready == [True]  # READY=1 came after the API was up
            with d.client() as c:
                assert c.get("/healthz").json() == {"status": "ok"}
            assert "STOPPING=1" not in received
            assert d.proc is not None
            d.proc.send_signal(15)
            deadline = time.monotonic() + 30
            while "STOPPING=1" not in received and time.monotonic() < deadline:
                received += notify.recv(4096).decode().split("\n")
            assert d.proc.wait(timeout=30) == 0
            d.proc = None
            assert received.index("READY=1") < received.index("STOPPING=1")
        finally:
            d.cleanup()


def test_serves_on_a_socket_passed_by_systemd() -> None:
    d = DaemonProcess()
    try:
        # systemd-socket-activate binds the path and passes it as fd 3 with LISTEN_FDS=1.
        d.start(prefix=("systemd-socket-activate", "--listen", d.socket))
        with d.client() as c:
            r = c.post("/v1/containers", json={"name": "activated"})
            assert r.status_code == 200, r.text
            assert c.delete(f"/v1/containers/{r.json()['id']}").status_code == 200
        log = d.log.read_text()
        assert "sandboxd serving" in log
    finally:
        d.cleanup()
