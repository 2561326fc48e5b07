"""Egress from real sandboxes of a real daemon, through the real proxy, to loopback upstreams.

The daemon runs as a subprocess in this private network namespace; its proxy resolves the
test names through `proxy.hosts` and may dial only the upstreams' `ip:443` pairs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from bench import dockerd
from bench.upstream import ThrowawayCA, Upstreams, header
from sandbox.cgroups import CgroupError, CgroupLayout
from sandbox.host.dirs import instance_of
from tests.e2e.harness import DaemonProcess
from tests.egress.conftest import HOSTS, PRIVATE_HOSTS

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

SECRET = "sk-live-0123456789abcdefSECRET"
OTHER = "other-value-ZYXW9876"


def daemon_config(test_ca: ThrowawayCA, **proxy: Any) -> dict[str, Any]:
    hosts = dict(HOSTS)
    hosts.update({name: ",".join(addrs) for name, addrs in PRIVATE_HOSTS.items()})
    return {
        "proxy": {
            "hosts": hosts,
            "allow_upstreams": sorted({f"{a}:443" for a in HOSTS.values()}),
            "upstream_ca_bundle": str(test_ca.cert_path),
            "health_interval_s": 0.5,
            **proxy,
        }
    }


@pytest.fixture(scope="module", params=["oci", pytest.param("docker", marks=pytest.mark.docker)])
def module_backend(request: pytest.FixtureRequest) -> str:
    """The runtime backend of this module's daemon: every case runs on each backend."""
    return str(request.param)


@pytest.fixture(scope="module")
def daemon(
    request: pytest.FixtureRequest, module_backend: str, test_ca: ThrowawayCA, upstreams: Upstreams
) -> Iterator[DaemonProcess]:
    sections = daemon_config(test_ca)
    engine_url = ""
    engine_parent = f"/sandboxd-egress-{secrets.token_hex(4)}-docker"
    if module_backend == "docker":
        engine_url = request.getfixturevalue("docker_engine")
        sections["runtime"] = {"backend": "docker"}
        sections["docker"] = {"engine_url": engine_url, "cgroup_parent": engine_parent}
    d = DaemonProcess(**sections)
    try:
        d.start()
        yield d
    finally:
        state = d.root / "state"
        d.cleanup()
        if engine_url:  # what a failed test may have left on the engine
            label = f"sandboxd.instance={instance_of(state)}"
            for container in dockerd.containers(engine_url, label):
                dockerd.remove_container(engine_url, container["Id"])
            with contextlib.suppress(CgroupError):  # the engine leaves its parent groups
                CgroupLayout.detect().reader(engine_parent).remove()


@pytest.fixture(scope="module")
def api(daemon: DaemonProcess) -> Iterator[httpx2.Client]:
    with daemon.client() as client:
        yield client


def create(
    api: httpx2.Client,
    domains: list[str],
    secrets: list[dict[str, str]] | None = None,
    **extra: Any,
) -> str:
    policy: dict[str, Any] = {"type": "allowlist", "allowed_domains": domains}
    if secrets:
        policy["domain_secrets"] = secrets
    r = api.post("/v1/containers", json={"name": "egress", "network_policy": policy, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "domain_secrets" not in json.dumps(body)
    assert body["network_policy"] == {"type": "allowlist", "allowed_domains": domains}
    return str(body["id"])


def sh(
    api: httpx2.Client, cid: str, cmd: str, stdin: str = "", timeout_ms: int = 30_000
) -> tuple[str, str, int]:
    r = api.post(
        f"/v1/containers/{cid}/exec",
        json={"commands": [cmd], "timeout_ms": timeout_ms, "stdin": stdin},
    )
    assert r.status_code == 200, r.text
    out = r.json()["output"][0]
    code = out["outcome"].get("exit_code", -1)
    return out["stdout"], out["stderr"], code


@pytest.fixture(scope="module")
def secret_box(api: httpx2.Client, test_ca: ThrowawayCA) -> Iterator[str]:
    cid = create(
        api,
        ["api.allowed.test", "other.allowed.test", "index.allowed.test"],
        [
            {"name": "API_KEY", "domain": "api.allowed.test", "value": SECRET},
            {"name": "OTHER_KEY", "domain": "other.allowed.test", "value": OTHER},
        ],
    )
    # Relayed (no-secret) hosts present the test CA's certificates end to end.
    r = api.post(
        f"/v1/containers/{cid}/files",
        files={"file": ("test-ca.pem", test_ca.cert_path.read_bytes())},
    )
    assert r.status_code == 200, r.text
    yield cid
    api.delete(f"/v1/containers/{cid}")


def test_secret_reaches_its_host_and_never_the_sandbox(
    api: httpx2.Client, secret_box: str, upstreams: Upstreams, daemon: DaemonProcess
) -> None:
    up = upstreams.servers["api.allowed.test"]
    up.requests.clear()
    out, err, code = sh(
        api,
        secret_box,
        'curl -sS --fail-with-body -H "Authorization: Bearer $API_KEY" https://api.allowed.test/',
    )
    assert code == 0, err
    assert header(up.requests[-1], "Authorization") == [f"Bearer {SECRET}"]
    placeholder, _, _ = sh(api, secret_box, 'printf %s "$API_KEY"')
    assert re.fullmatch(r"sbxd_ph_[a-z2-7]{32}", placeholder)
    assert placeholder in out and SECRET not in out  # the echo came back as the placeholder
    # Nowhere in the sandbox: env and cmdline of every process, its files, /tmp.
    found, _, code = sh(
        api, secret_box,
        "grep -rlsF -f /dev/stdin /proc/[0-9]*/environ /proc/[0-9]*/cmdline /mnt/data /tmp "
        "/etc /.sandboxd 2>/dev/null; true",
        stdin=SECRET + "\n",
    )  # fmt: skip
    assert found.strip() == ""
    # Nor in the daemon's log, its database (sealed) or its metrics.
    assert SECRET not in daemon.log.read_text()
    assert SECRET.encode() not in (daemon.root / "state" / "sandboxd.db").read_bytes()
    wal = daemon.root / "state" / "sandboxd.db-wal"
    assert not wal.exists() or SECRET.encode() not in wal.read_bytes()
    assert SECRET not in api.get("/metrics").text


def test_placeholder_to_another_allowed_host_is_refused(
    api: httpx2.Client, secret_box: str, upstreams: Upstreams
) -> None:
    up = upstreams.servers["other.allowed.test"]
    up.requests.clear()
    out, _, _ = sh(
        api,
        secret_box,
        'curl -sS -o /dev/null -w "%{http_code}" '
        '-H "Authorization: Bearer $API_KEY" https://other.allowed.test/',
    )
    assert out == "403"
    assert up.requests == []
    out, _, _ = sh(api, secret_box, "curl -sS -o /dev/null -w '%{http_code}' https://evil.test/")
    assert out == "000"  # CONNECT refused with 403: curl reports no HTTP status


def test_pip_download_from_an_allowed_index(
    api: httpx2.Client, secret_box: str, upstreams: Upstreams
) -> None:
    wheel = _wheel("tinypkg", "1.0")
    name = "tinypkg-1.0-py3-none-any.whl"
    digest = hashlib.sha256(wheel).hexdigest()
    index = upstreams.servers["index.allowed.test"]
    index.files["/simple/tinypkg/"] = (
        "text/html",
        f'<html><body><a href="/files/{name}#sha256={digest}">{name}</a></body></html>'.encode(),
    )
    index.files[f"/files/{name}"] = ("application/octet-stream", wheel)
    out, err, code = sh(
        api, secret_box,
        "REQUESTS_CA_BUNDLE=/mnt/data/test-ca.pem PIP_CERT=/mnt/data/test-ca.pem "
        "python3 -m pip download --no-deps --disable-pip-version-check --no-cache-dir "
        "--index-url https://index.allowed.test/simple/ "
        "-d /tmp/dl tinypkg && ls /tmp/dl",
        timeout_ms=60_000,
    )  # fmt: skip
    assert code == 0, out + err
    assert name in out


def test_no_route_no_resolver_no_host_sockets(api: httpx2.Client, secret_box: str) -> None:
    """Cases 18 and 24: only the relay leads out; nothing of the host is reachable."""
    script = r"""
import socket, time, json, os
res = {}
def attempt(name, fn):
    t = time.monotonic()
    try:
        fn(); res[name] = "ok"
    except OSError as e:
        res[name] = type(e).__name__
    res[name + "_s"] = round(time.monotonic() - t, 3)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("1.1.1.1", 443))
def dns():
    socket.getaddrinfo("example.com", 443)
def tcp():
    socket.create_connection(("1.1.1.1", 443), timeout=5)
def tcp6():
    socket.create_connection(("2606:4700::1111", 443), timeout=5)
def metrics():
    socket.create_connection(("127.0.0.1", 9464), timeout=5)
for n, f in [("udp", udp), ("dns", dns), ("tcp", tcp), ("tcp6", tcp6), ("local", metrics)]:
    attempt(n, f)
res["ifaces"] = [n for _, n in socket.if_nameindex()]
res["sockets"] = sorted(
    os.path.join(d, f) for d in ("/run", "/.sandboxd", "/tmp", "/var/run")
    if os.path.isdir(d) for f in os.listdir(d))
print(json.dumps(res))
"""
    out, err, code = sh(api, secret_box, "python3 -", stdin=script)
    assert code == 0, err
    res = json.loads(out)
    for name in ("udp", "dns", "tcp", "tcp6", "local"):
        assert res[name] != "ok", res
        assert res[name + "_s"] < 1.0, res
    assert res["ifaces"] == ["lo"]
    assert not any("api.sock" in p or "sandboxd.sock" in p for p in res["sockets"]), res


def test_egress_survives_a_daemon_restart(
    api: httpx2.Client, secret_box: str, upstreams: Upstreams, daemon: DaemonProcess
) -> None:
    assert daemon.stop() == 0
    daemon.start()
    up = upstreams.servers["api.allowed.test"]
    up.requests.clear()
    with daemon.client() as fresh:
        _, err, code = sh(
            fresh,
            secret_box,
            'curl -sS -H "Authorization: Bearer $API_KEY" https://api.allowed.test/',
        )
    assert code == 0, err
    assert header(up.requests[-1], "Authorization") == [f"Bearer {SECRET}"]


def _proxy_pid(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == daemon.proc.pid and b"proxy" in argv:
            pids.append(int(entry.name))
    assert len(pids) == 1, pids
    return pids[0]


def test_killed_proxy_fails_closed_and_comes_back(
    api: httpx2.Client, secret_box: str, daemon: DaemonProcess
) -> None:
    with daemon.client() as client:
        os.kill(_proxy_pid(daemon), signal.SIGKILL)
        out, _, code = sh(
            client,
            secret_box,
            "curl -sS -m 5 -o /dev/null -w '%{http_code}' https://api.allowed.test/",
        )
        assert code != 0 and out in ("000", "")  # a connection error, never a response
        deadline = time.monotonic() + 15
        while True:
            out, _, code = sh(
                client,
                secret_box,
                "curl -sS -m 5 -o /dev/null -w '%{http_code}' https://api.allowed.test/",
            )
            if code == 0:
                break
            assert time.monotonic() < deadline, "the proxy did not come back"
            time.sleep(0.3)
        assert out == "200"
        metrics = client.get("/metrics").text
    restarts = re.search(r"^sandboxd_proxy_restarts_total (\S+)$", metrics, re.M)
    assert restarts and float(restarts.group(1)) >= 1
    assert re.search(r"^sandboxd_proxy_up 1\.0$", metrics, re.M)


def test_flood_from_one_sandbox_does_not_delay_another(api: httpx2.Client, secret_box: str) -> None:
    flooder = create(api, ["api.allowed.test"])
    try:
        flood = r"""
import socket, time
held = []
for i in range(2000):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=2)
        s.send(b"CONNECT api.allowed.test:443 HTTP/1.1\r\n")  # never finished: slowloris
        held.append(s)
    except OSError:
        pass
    if len(held) > 900:
        for s in held: s.close()
        held = []
print("flooded")
time.sleep(3)
"""
        start = api.post(
            f"/v1/containers/{flooder}/exec",
            json={
                "commands": ["python3 - &\nsleep 1; echo started"],
                "stdin": flood,
                "timeout_ms": 20_000,
            },
        )
        assert start.status_code == 200, start.text
        times = []
        for _ in range(5):
            out, err, code = sh(
                api,
                secret_box,
                "curl -sS --cacert /mnt/data/test-ca.pem -o /dev/null "
                "-w '%{time_total}' https://index.allowed.test/",
            )
            assert code == 0, err
            times.append(float(out))
        assert max(times) < 1.0, times
    finally:
        api.delete(f"/v1/containers/{flooder}")


def test_pooled_sandbox_gets_its_policy_at_claim(
    test_ca: ThrowawayCA, upstreams: Upstreams
) -> None:
    d = DaemonProcess(pool={"sizes": {"1g": 1}}, **daemon_config(test_ca))
    try:
        d.start()
        with d.client() as client:
            for _ in range(100):  # wait for the pool to fill
                if re.search(
                    r'^sandboxd_pool_depth\{image="host",tier="1g"\} 1\.0$',
                    client.get("/metrics").text,
                    re.M,
                ):
                    break
                time.sleep(0.1)
            cid = create(
                client,
                ["api.allowed.test"],
                [{"name": "API_KEY", "domain": "api.allowed.test", "value": SECRET}],
            )
            events = client.get(f"/v1/containers/{cid}/events")
            up = upstreams.servers["api.allowed.test"]
            up.requests.clear()
            _, err, code = sh(
                client,
                cid,
                'curl -sS -H "Authorization: Bearer $API_KEY" https://api.allowed.test/',
            )
            assert code == 0, err
            assert header(up.requests[-1], "Authorization") == [f"Bearer {SECRET}"]
            del events
    finally:
        d.cleanup()


def _wheel(name: str, version: str) -> bytes:
    buf = io.BytesIO()
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = (
        "".join(
            f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
            for path, data in files.items()
        )
        + f"{dist}/RECORD,,\n"
    )
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{dist}/RECORD", record)
    return buf.getvalue()
