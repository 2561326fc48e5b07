"""`.venv/bin/python -m bench.images [--n 15] [--images DIR]`: creates on the `python-data`
image against `host`, cold and from the warm pool, and the first `import pandas`.

A real daemon (bench/daemon.py) whose state dir links the images built in DIR (default: the
tests' cache, /var/cache/sandboxd-tests; build them with `sandboxd image build python-data
--state-dir DIR`). Cold: 4g creates (no pool for 4g), the two images alternating. Pool hit:
1g creates, one pooled sandbox per image, each create waiting for its refill first. Prints
the summaries (ms), the ratios, and each image's size. Run as root from the repository root;
not part of `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.client import BenchError, Client
from bench.daemon import running_daemon
from bench.stats import Summary, summarize, timed_ms
from bench.workdir import workdir

IMAGES = ("host", "python-data")
DEFAULT_CACHE = Path("/var/cache/sandboxd-tests")


def _depth(client: Client, image: str) -> int:
    prefix = f'sandboxd_pool_depth{{image="{image}",tier="1g"}}'
    for line in client.text("/metrics").splitlines():
        if line.startswith(prefix):
            return int(float(line.split()[-1]))
    return 0


def _create(client: Client, image: str, tier: str) -> tuple[str, float]:
    body = {"name": "bench-images", "memory_limit": tier, "image": image}
    reply, ms = timed_ms(lambda: client.call("POST", "/v1/containers", body))
    return str(reply["id"]), ms


def _first_import(client: Client, cid: str) -> float:
    body = {"commands": ["python3 -c 'import pandas, matplotlib.pyplot'"]}
    out, ms = timed_ms(lambda: client.call("POST", f"/v1/containers/{cid}/exec", body))
    if out["output"][0]["outcome"]["exit_code"] != 0:
        raise BenchError(f"import pandas failed: {out['output'][0]['stderr'][-300:]}")
    return ms


def measure(client: Client, n: int) -> list[Summary]:
    cold: dict[str, list[float]] = {i: [] for i in IMAGES}
    hit: dict[str, list[float]] = {i: [] for i in IMAGES}
    first_import: list[float] = []
    for _ in range(n):
        for image in IMAGES:
            cid, ms = _create(client, image, "4g")
            cold[image].append(ms)
            if image == "python-data":
                first_import.append(_first_import(client, cid))
            client.call("DELETE", f"/v1/containers/{cid}")
            deadline = time.monotonic() + 60
            while _depth(client, image) < 1:
                if time.monotonic() > deadline:
                    raise BenchError(f"the pool never refilled {image}")
                time.sleep(0.05)
            cid, ms = _create(client, image, "1g")
            hit[image].append(ms)
            client.call("DELETE", f"/v1/containers/{cid}")
    found = []
    for image in IMAGES:
        found.append(summarize(f"cold_{image}", f"create, cold (4g), {image}", cold[image]))
        found.append(summarize(f"pool_{image}", f"create, pool hit (1g), {image}", hit[image]))
    found.append(
        summarize(
            "import_pandas", "first exec: import pandas, matplotlib (python-data)", first_import
        )
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__)
    parser.add_argument("--n", type=int, default=15, help="creates per image and path (15)")
    parser.add_argument("--images", type=Path, default=DEFAULT_CACHE, help="state dir with images")
    args = parser.parse_args()
    with workdir() as work:
        (work / "state" / "images").mkdir(parents=True, mode=0o700)
        (work / "state").chmod(0o700)
        (work / "state" / "images" / "python-data").symlink_to(args.images / "images/python-data")
        pool = '{ 1g = 1, "python-data:1g" = 1 }'
        with running_daemon(work, pool=pool) as daemon, Client(str(daemon.socket)) as client:
            summaries = measure(client, args.n)
            listed = client.call("GET", "/v1/images")["data"]
    print("| | n | p50 ms | p95 ms | min ms |")
    print("|---|---:|---:|---:|---:|")
    for s in summaries:
        print(f"| {s.label} | {s.n} | {s.median:.1f} | {s.p95:.1f} | {s.min:.1f} |")
    by = {s.key: s for s in summaries}
    for path in ("cold", "pool"):
        ratio = by[f"{path}_python-data"].median / by[f"{path}_host"].median
        print(f"\n{path}: python-data / host = {ratio:.2f}x (p50)")
    for image in listed:
        print(json.dumps({k: image[k] for k in ("name", "build_id", "size_bytes")}))


if __name__ == "__main__":
    main()
