"""Cold and warm invoke latency of a hello-world Python function.

Starts a real server (`python -m faas serve --port 0`) with a temporary data dir, creates functions with
boto3, then times Invoke requests over one keep-alive HTTP connection (so the figures are the server's,
not boto3's request building). Cold = the first invoke of a freshly created function (a new worker process,
its interpreter start and module import); warm = later invokes of the same function.

    python benchmarks/invoke_latency.py [--cold 20] [--warm 2000] [--runtime python3.11] [--spawner fork|exec]

`--spawner` sets `FAAS_RUNTIME__SPAWNER` for the server: fork instances from a zygote (the default) or exec a
fresh interpreter for each.

The harness (`python -m benchmarks cold` / `warm`, see README.md) measures the same things and more; this
script stays as the quick check behind the first rows of RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import statistics
import tempfile
import time
import zipfile
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from serve import start_server

HELLO = "def handler(event, context):\n    return {'hello': 'world'}\n"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=int, default=20, help="functions created, each invoked once cold")
    ap.add_argument("--warm", type=int, default=2000, help="sequential warm invokes")
    ap.add_argument("--runtime", default="python3.11")
    ap.add_argument("--spawner", choices=("fork", "exec"), help="how the server starts Python workers")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir, **({"FAAS_RUNTIME__SPAWNER": f'"{args.spawner}"'} if args.spawner else {}))
        try:
            lam = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                               aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("app.py", HELLO)
            parsed = urlparse(url)
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port)

            def invoke(name: str) -> float:
                t0 = time.perf_counter()
                conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=b"{}")
                resp = conn.getresponse()
                body = resp.read()
                elapsed = (time.perf_counter() - t0) * 1000
                assert resp.status == 200 and json.loads(body) == {"hello": "world"}, body
                assert resp.getheader("X-Amz-Function-Error") is None
                return elapsed

            cold = []
            for i in range(args.cold):
                name = f"bench-cold-{i}"
                lam.create_function(FunctionName=name, Runtime=args.runtime, Handler="app.handler",
                                    Role="arn:aws:iam::000000000000:role/r", Code={"ZipFile": buf.getvalue()})
                cold.append(invoke(name))
            name = "bench-cold-0"
            for _ in range(50):
                invoke(name)
            warm = [invoke(name) for _ in range(args.warm)]
            conn.close()
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"runtime {args.runtime}, spawner {args.spawner or 'default'}")
    print(f"cold first invoke (n={len(cold)}): p50 {statistics.median(cold):.1f} ms, "
          f"p90 {percentile(cold, 90):.1f} ms, min {min(cold):.1f} ms")
    print(f"warm invoke (n={len(warm)}, sequential, keep-alive): p50 {statistics.median(warm):.2f} ms, "
          f"p99 {percentile(warm, 99):.2f} ms, {len(warm) / (sum(warm) / 1000):.0f} invokes/s")


if __name__ == "__main__":
    main()
