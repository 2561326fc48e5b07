"""Per-container images end to end, on both backends: a `python-data` container does the
code-interpreter staples (pandas on an uploaded CSV, a matplotlib PNG that shows up as a
container file, an .xlsx written and read back, a scikit-learn fit, Node), a `minimal` one in
the same daemon has no pandas, and GET /v1/images lists both with their packages. The images
are built once per machine (tests/imagecache.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from bench import dockerd
from sandbox import images
from sandbox.host.dirs import instance_of
from tests.e2e.harness import DaemonProcess
from tests.imagecache import IMAGE_CACHE, built, link_into

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow]

DATA_SCRIPT = r"""
import json, pandas as pd, numpy as np, matplotlib.pyplot as plt, openpyxl
from sklearn.linear_model import LinearRegression
df = pd.read_csv("/mnt/data/sales.csv")
totals = df.groupby("region")["amount"].sum().to_dict()
ax = df.groupby("region")["amount"].sum().plot.bar(title="Sales by région")
plt.savefig("/mnt/data/plot.png")
wb = openpyxl.Workbook(); wb.active["A1"] = "total"; wb.active["B1"] = sum(totals.values())
wb.save("/mnt/data/out.xlsx")
back = openpyxl.load_workbook("/mnt/data/out.xlsx").active["B1"].value
x = np.arange(10).reshape(-1, 1); model = LinearRegression().fit(x, 3 * x.ravel() + 1)
print(json.dumps({"totals": totals, "xlsx": back, "slope": round(float(model.coef_[0]), 6)}))
"""


@pytest.fixture(scope="module")
def cached() -> None:
    built("minimal")
    built("python-data")


@pytest.fixture(params=["oci", pytest.param("docker", marks=pytest.mark.docker)])
def daemon(request: pytest.FixtureRequest, cached: None) -> Iterator[DaemonProcess]:
    backend: str = request.param
    d = DaemonProcess(runtime={"backend": backend, "default_image": "minimal"})
    engine = ""
    if backend == "docker":
        engine = request.getfixturevalue("docker_engine")
        d.write_config(docker={"engine_url": engine, "cgroup_parent": f"{d.cgroup_parent}-docker"})
    link_into(d.root / "state", "minimal", "python-data")
    try:
        d.start()
        yield d
    finally:
        if engine:
            label = f"sandboxd.instance={instance_of(d.root / 'state')}"
            for c in dockerd.containers(engine, label):
                dockerd.remove_container(engine, c["Id"])
        d.cleanup()


def _exec(client: httpx2.Client, cid: str, command: str) -> dict[str, object]:
    r = client.post(
        f"/v1/containers/{cid}/exec", json={"commands": [command], "timeout_ms": 120_000}
    )
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()["output"][0]
    return out


def test_python_data_runs_the_code_interpreter_staples(daemon: DaemonProcess) -> None:
    with daemon.client(timeout_s=300) as c:
        listed = {i["name"]: i for i in c.get("/v1/images").json()["data"]}
        assert {"host", "minimal", "python-data"} <= set(listed)
        assert listed["minimal"]["default"] is True
        data = listed["python-data"]
        debian = " ".join(data["packages"]["debian"])
        assert "python3-pandas=" in debian and "nodejs=" in debian
        assert any(p.lower().startswith("python-pptx==") for p in data["packages"]["python"])
        assert data["python_version"].startswith("3.") and data["node_version"]
        assert data["size_bytes"] > listed["minimal"]["size_bytes"] > 0

        box = c.post("/v1/containers", json={"name": "data", "image": "python-data"}).json()
        assert box["image"] == "python-data"
        cid = box["id"]
        csv = b"region,amount\nnorth,10\nsouth,5\nnorth,7\n"
        up = c.post(f"/v1/containers/{cid}/files", files={"file": ("sales.csv", csv)})
        assert up.status_code == 200, up.text
        out = _exec(c, cid, f"python3 - <<'EOF'\n{DATA_SCRIPT}\nEOF")
        assert out["outcome"] == {"type": "exit", "exit_code": 0}, out
        result = json.loads(str(out["stdout"]).strip().splitlines()[-1])
        assert result == {"totals": {"north": 17, "south": 5}, "xlsx": 22, "slope": 3.0}
        files = c.get(f"/v1/containers/{cid}/files", params={"limit": 100}).json()["data"]
        plot = next(f for f in files if f["path"] == "/mnt/data/plot.png")
        png = c.get(f"/v1/containers/{cid}/files/{plot['id']}/content").content
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        node = _exec(c, cid, "node -e 'console.log(6*7)' && npm --version >/dev/null && echo ok")
        assert node["stdout"] == "42\nok\n", node

        small = c.post("/v1/containers", json={"name": "small"}).json()
        assert small["image"] == "minimal"
        bare = _exec(c, small["id"], "python3 -c 'import pandas' 2>&1; echo rc=$?")
        assert "ModuleNotFoundError" in str(bare["stdout"]) and "rc=1" in str(bare["stdout"])
        for box_id in (cid, small["id"]):
            assert c.delete(f"/v1/containers/{box_id}").status_code == 200


def _copy_build(state: Path, source: Path, build_id: str) -> Path:
    """A build of image `mini` made from a cached build's tree (hard links: cheap)."""
    target = images.build_dir(state, "mini", build_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)
    meta = json.loads((target / images.STAMP).read_text())
    (target / images.STAMP).unlink()  # a hard link to the cache's: write our own
    (target / images.STAMP).write_text(json.dumps({**meta, "name": "mini", "build_id": build_id}))
    return target


@pytest.mark.parametrize("backend", ["oci", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_rebuild_changes_only_new_containers(
    cached: None, backend: str, request: pytest.FixtureRequest
) -> None:
    """Running containers keep the build they started on; the old build (and the docker
    engine's copy of it) goes with the last of them."""
    d = DaemonProcess(runtime={"default_image": "mini", "backend": backend})
    engine = ""
    if backend == "docker":
        engine = request.getfixturevalue("docker_engine")
        d.write_config(docker={"engine_url": engine, "cgroup_parent": f"{d.cgroup_parent}-docker"})
    state = d.root / "state"
    source = images.load(IMAGE_CACHE, "minimal").rootfs.parent
    old = _copy_build(state, source, "b1")
    images.publish(state, "mini", "b1")
    try:
        d.start()
        with d.client() as c:
            first = c.post("/v1/containers", json={"name": "old"}).json()["id"]
            new = _copy_build(state, source, "b2")
            (new / "rootfs" / "etc" / "build-b2").write_text("b2\n")
            images.publish(state, "mini", "b2")
            assert c.get("/v1/images/mini").json()["build_id"] == "b2"
            second = c.post("/v1/containers", json={"name": "new"}).json()["id"]
            probe = "cat /etc/build-b2 2>/dev/null || echo none"
            assert _exec(c, first, probe)["stdout"] == "none\n"
            assert _exec(c, second, probe)["stdout"] == "b2\n"
            assert old.is_dir()  # in use
            assert c.delete(f"/v1/containers/{first}").status_code == 200
            deadline = time.monotonic() + 15
            while old.exists():
                assert time.monotonic() < deadline, "the unused old build was not collected"
                time.sleep(0.1)
            if engine:
                tags = [
                    t for i in dockerd.api_get(engine, "/images/json") for t in i["RepoTags"] or []
                ]
                assert "sandboxd/mini:b2" in tags and "sandboxd/mini:b1" not in tags
            assert _exec(c, second, probe)["stdout"] == "b2\n"
            assert c.delete(f"/v1/containers/{second}").status_code == 200
            assert new.is_dir()  # current: kept
    finally:
        if engine:
            label = f"sandboxd.instance={instance_of(d.root / 'state')}"
            for c in dockerd.containers(engine, label):
                dockerd.remove_container(engine, c["Id"])
            for ref in ("sandboxd/mini:b1", "sandboxd/mini:b2"):
                with contextlib.suppress(Exception):
                    dockerd.api_get(engine, f"/images/{ref}", method="DELETE")
        d.cleanup()
