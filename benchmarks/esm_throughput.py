"""End-to-end throughput of event source mappings: records/s from PutRecords (a stream with 4 shards) or
SendMessageBatch (a queue) to the function, and the lag at that rate (function start time minus the
record's arrival time), measured with a function that only counts.

    python benchmarks/esm_throughput.py [--records 20000] [--messages 5000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config

from serve import start_server

COUNTER = """
import json, os, time
def handler(event, context):
    now = time.time()
    records = event["Records"]
    if "kinesis" in records[0]:
        arrivals = [r["kinesis"]["approximateArrivalTimestamp"] for r in records]
    else:
        arrivals = [int(r["attributes"]["SentTimestamp"]) / 1000 for r in records]
    with open(os.environ["OUT"], "a") as fh:
        fh.write(json.dumps({"n": len(records), "lag": now - min(arrivals), "t": now}) + "\\n")
"""


def wait_total(out: Path, total: int, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        if sum(r["n"] for r in rows) >= total:
            return rows
        time.sleep(0.05)
    raise RuntimeError("not all records arrived")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--messages", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir, FAAS_MAPPINGS__IDLE_POLL="0.05")
        try:
            kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
                      config=Config(retries={"max_attempts": 1}))
            lam, kinesis, sqs = boto3.client("lambda", **kw), boto3.client("kinesis", **kw), boto3.client("sqs", **kw)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("app.py", COUNTER)
            results = {}
            for kind in ("stream", "queue"):
                out = Path(data_dir) / f"{kind}.jsonl"
                lam.create_function(FunctionName=kind, Runtime="python3.11", Handler="app.handler",
                                    Role="arn:aws:iam::000000000000:role/r", Code={"ZipFile": buf.getvalue()},
                                    Environment={"Variables": {"OUT": str(out)}})
                if kind == "stream":
                    kinesis.create_stream(StreamName="bench", ShardCount=4)
                    arn = kinesis.describe_stream_summary(StreamName="bench")["StreamDescriptionSummary"]["StreamARN"]
                    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=kind, BatchSize=100,
                                                    StartingPosition="LATEST")
                    time.sleep(1.0)  # LATEST is pinned when the pollers start
                    total = args.records
                    t0 = time.time()
                    for start in range(0, total, 500):
                        kinesis.put_records(StreamName="bench", Records=[
                            {"Data": b"x" * 100, "PartitionKey": str(i)} for i in range(start, min(total, start + 500))])
                else:
                    qurl = sqs.create_queue(QueueName="bench")["QueueUrl"]
                    arn = sqs.get_queue_attributes(QueueUrl=qurl, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=kind, BatchSize=10)
                    total = args.messages
                    t0 = time.time()
                    for start in range(0, total, 10):
                        sqs.send_message_batch(QueueUrl=qurl, Entries=[
                            {"Id": str(i), "MessageBody": "x" * 100} for i in range(10)])
                sent = time.time() - t0
                rows = wait_total(out, total)
                done = max(r["t"] for r in rows) - t0
                lags = [r["lag"] for r in rows]
                results[kind] = (total, sent, done, statistics.median(lags), max(lags))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for kind, (total, sent, done, lag50, lagmax) in results.items():
        print(f"{kind}: {total} records sent in {sent:.2f} s ({total / sent:.0f}/s); all through the function "
              f"after {done:.2f} s ({total / done:.0f} records/s end to end); lag p50 {lag50 * 1000:.0f} ms, "
              f"max {lagmax * 1000:.0f} ms")


if __name__ == "__main__":
    main()
