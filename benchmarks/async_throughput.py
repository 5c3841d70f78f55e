"""Asynchronous invocation throughput: how fast Event invokes are accepted (each committed to SQLite before
its 202) and how fast the queue drains through a no-op function.

    python benchmarks/async_throughput.py [--events 5000] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import tempfile
import threading
import time
import zipfile
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from serve import start_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            lam = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                               aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("app.py", "def handler(event, context):\n    return None\n")
            lam.create_function(FunctionName="noop", Runtime="python3.11", Handler="app.handler",
                                Role="arn:aws:iam::000000000000:role/r", Code={"ZipFile": buf.getvalue()})
            lam.invoke(FunctionName="noop")  # warm one instance
            parsed = urlparse(url)
            per_client = args.events // args.clients
            errors = []

            def client() -> None:
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
                body = b'{"payload": "' + b"x" * 64 + b'"}'
                for _ in range(per_client):
                    conn.request("POST", "/2015-03-31/functions/noop/invocations", body=body,
                                 headers={"X-Amz-Invocation-Type": "Event"})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 202:
                        errors.append(resp.status)
                conn.close()

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            accepted = time.perf_counter() - t0
            total = per_client * args.clients
            while True:
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
                conn.request("GET", "/_faas/async")
                stats = json.loads(conn.getresponse().read())
                conn.close()
                if not stats["queues"]:
                    break
                time.sleep(0.05)
            drained = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"accepted {total} Event invokes from {args.clients} clients in {accepted:.2f} s: "
          f"{total / accepted:.0f} events/s committed ({len(errors)} errors)")
    print(f"queue drained (no-op function) {drained:.2f} s after the first send: {total / drained:.0f} events/s")


if __name__ == "__main__":
    main()
