"""What invocation logs cost: invoke throughput of a function printing 10 lines per call versus one printing
nothing, against a real server (`python -m faas serve --port 0`, temporary data dir, stopped at the end).

    python benchmarks/logging_cost.py [--seconds 5] [--concurrency 16] [--rounds 3] [--lines 10]

Load: `--concurrency` keep-alive connections (aiohttp, in this process; the server runs in its own) invoking
as fast as they can for `--seconds`, alternating quiet and chatty rounds so drift hits both alike. Reported
per function: invokes/s (median over rounds), p50/p99 round trip, the server process's CPU time per invoke,
and, at the end, the events the log store wrote and how many logs it dropped (from `/metrics`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile

import aiohttp
import boto3
from botocore.config import Config

from serve import start_server

QUIET = "def handler(event, context):\n    return 1\n"
CHATTY = (
    "def handler(event, context):\n"
    "    for i in range({lines}):\n"
    "        print('processing item', i, 'of request', context.aws_request_id)\n"
    "    return 1\n"
)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_zip(code: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", code)
    return buf.getvalue()


async def drive(url: str, name: str, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.post(f"{url}/2015-03-31/functions/{name}/invocations", data=b"{}") as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"invoke answered {resp.status}")
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def scrape(url: str, metric: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lines", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(os.path.join(tmp, "data"), FAAS_ACCOUNT__MEMORY_BUDGET_MB="65536")
        try:
            lam = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                               aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
            functions = {"quiet (0 lines)": QUIET, f"chatty ({args.lines} lines)": CHATTY.format(lines=args.lines)}
            names = {}
            for i, (label, code) in enumerate(functions.items()):
                names[label] = f"logcost-{i}"
                lam.create_function(FunctionName=names[label], Runtime="python3.11", Handler="app.handler",
                                    Role="arn:aws:iam::000000000000:role/r", Code={"ZipFile": make_zip(code)})
            lam.close()
            for label in functions:  # warm: one instance per connection
                asyncio.run(drive(url, names[label], 1.0, args.concurrency))
            results: dict[str, list[tuple[float, list[float], float]]] = {label: [] for label in functions}
            for _ in range(args.rounds):
                for label in functions:
                    cpu0 = cpu_seconds(proc.pid)
                    t0 = time.perf_counter()
                    lat = asyncio.run(drive(url, names[label], args.seconds, args.concurrency))
                    elapsed = time.perf_counter() - t0
                    results[label].append((len(lat) / elapsed, lat, (cpu_seconds(proc.pid) - cpu0) / len(lat)))
            time.sleep(0.5)  # the log writer's last flush
            stored = scrape(url, "faas_log_stored_bytes")
            dropped = scrape(url, "faas_log_records_dropped_total")
            db = os.path.join(tmp, "data", "logs.db")
            db_bytes = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{args.concurrency} connections, {args.rounds} rounds of {args.seconds:.0f} s each, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'function':<20} {'invokes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/invoke':>21}")
    summary = {}
    for label, rounds in results.items():
        rate = statistics.median(r[0] for r in rounds)
        lat = sorted(x for r in rounds for x in r[1])
        cpu = statistics.median(r[2] for r in rounds) * 1e6
        p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
        summary[label] = {"invokes_per_s": rate, "p50_ms": p50, "p99_ms": p99, "server_cpu_us": cpu}
        print(f"{label:<20} {rate:>10.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>21.0f}")
    print(f"log store: {stored / 1e6:.1f} MB of events (CloudWatch count), logs.db {db_bytes / 1e6:.1f} MB, "
          f"{dropped:.0f} invocation logs dropped")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
