"""Requests/s and latency of the same no-op function through Invoke and through its function URL.

Starts a real server (`python -m faas serve --port 0`) with a temporary data dir, creates one hello-world
function with boto3, gives it a BUFFERED and a RESPONSE_STREAM URL, then, for each concurrency level, sends
the same number of requests each way from one aiohttp session (keep-alive connections, one per worker):

* invoke      `POST /2015-03-31/functions/<name>/invocations` with `{}`
* url         `GET /?q=1` with `Host: <url-id>.lambda-url.<region>.localhost:<port>` (a BUFFERED URL: payload
              format 2.0 event built, response shape inferred)
* url-stream  the same against the RESPONSE_STREAM URL (chunked response, the handler answers whole)

    python benchmarks/url_throughput.py [--requests 3000] [--concurrency 1,8,32] [--rounds 5] [--runtime python3.11]

Each level starts with a warm-up of `--concurrency` x 20 requests per mode, so every instance it needs is warm;
then the modes take turns (`--rounds`), so other load on the machine does not favour one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import tempfile
import time
import zipfile
from urllib.parse import urlsplit

import aiohttp
import boto3
from botocore.config import Config

from serve import start_server

HELLO = "def handler(event, context):\n    return {'hello': 'world'}\n"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run(session: aiohttp.ClientSession, send, total: int, concurrency: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies in ms) for `total` requests by `concurrency` workers."""
    latencies: list[float] = []
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await send(session)
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def senders(server: str, name: str, urls: dict[str, str]):
    invoke_path = f"{server}/2015-03-31/functions/{name}/invocations"

    async def invoke(session: aiohttp.ClientSession) -> None:
        async with session.post(invoke_path, data=b"{}") as resp:
            body = await resp.read()
            assert resp.status == 200 and body == b'{"hello":"world"}', body

    def by_url(url: str):
        host = urlsplit(url).netloc

        async def send(session: aiohttp.ClientSession) -> None:
            async with session.get(f"{server}/?q=1", headers={"Host": host}) as resp:
                body = await resp.read()
                assert resp.status == 200 and body == b'{"hello":"world"}', body

        return send

    return {"invoke": invoke, "url": by_url(urls["BUFFERED"]), "url-stream": by_url(urls["RESPONSE_STREAM"])}


async def measure(server: str, name: str, urls: dict[str, str], total: int, levels: list[int],
                  rounds: int) -> list[tuple]:
    """Per level, the modes take turns in `rounds` rounds, so load from elsewhere on the machine falls on
    all of them alike."""
    rows = []
    modes = senders(server, name, urls)
    connector = aiohttp.TCPConnector(limit=max(levels))
    async with aiohttp.ClientSession(connector=connector) as session:
        for concurrency in levels:
            walls = dict.fromkeys(modes, 0.0)
            latencies: dict[str, list[float]] = {mode: [] for mode in modes}
            for send in modes.values():
                await run(session, send, concurrency * 20, concurrency)
            for _ in range(rounds):
                for mode, send in modes.items():
                    wall, took = await run(session, send, total // rounds, concurrency)
                    walls[mode] += wall
                    latencies[mode] += took
            for mode in modes:
                took = latencies[mode]
                rows.append((mode, concurrency, len(took) / walls[mode], statistics.median(took),
                             percentile(took, 99)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000, help="measured requests per mode and level")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--rounds", type=int, default=5, help="turns each mode takes per level")
    ap.add_argument("--runtime", default="python3.11")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as data_dir:
        proc, server = start_server(data_dir)
        try:
            lam = boto3.client("lambda", endpoint_url=server, region_name="us-east-1", aws_access_key_id="x",
                               aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("app.py", HELLO)
            name = "bench-url"
            lam.create_function(FunctionName=name, Runtime=args.runtime, Handler="app.handler",
                                Role="arn:aws:iam::000000000000:role/r", Code={"ZipFile": buf.getvalue()})
            lam.publish_version(FunctionName=name)
            lam.create_alias(FunctionName=name, Name="stream", FunctionVersion="1")
            urls = {
                "BUFFERED": lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"],
                "RESPONSE_STREAM": lam.create_function_url_config(
                    FunctionName=name, Qualifier="stream", AuthType="NONE", InvokeMode="RESPONSE_STREAM",
                )["FunctionUrl"],
            }
            rows = asyncio.run(measure(server, name, urls, args.requests, levels, args.rounds))
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"runtime {args.runtime}, {args.requests} requests per row")
    print(f"{'mode':<11} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for mode, concurrency, rate, p50, p99 in rows:
        print(f"{mode:<11} {concurrency:>7} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
