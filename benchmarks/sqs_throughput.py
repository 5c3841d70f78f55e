"""Throughput of the built-in SQS with ONE boto3 client (sequential requests, as one simple producer or
consumer would make them).

Starts a real server (`python -m faas serve --port 0`) with a temporary data dir, then measures:
  - SendMessage: one message a request;
  - ReceiveMessage + DeleteMessage: one message a receive, each deleted by its own request;
  - SendMessageBatch, and ReceiveMessage (10) + DeleteMessageBatch: ten messages a request.
Every accepted message is committed to SQLite before its answer. Each phase stops after --seconds, so the
whole run stays under a minute.

    python benchmarks/sqs_throughput.py [--messages 2000] [--body-bytes 256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable

import boto3
from botocore.config import Config

from serve import start_server


def timed(limit: float, total: int, step: Callable[[], int]) -> tuple[int, float]:
    """Run `step` (which handles some messages and says how many) until `total` are done or `limit` seconds
    pass; returns (messages, seconds)."""
    done = 0
    t0 = time.perf_counter()
    while done < total and time.perf_counter() - t0 < limit:
        n = step()
        if n == 0:
            break
        done += n
    return done, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000, help="messages per phase")
    ap.add_argument("--body-bytes", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0, help="time limit per phase")
    args = ap.parse_args()
    body = "x" * args.body_bytes
    results: list[tuple[str, int, float]] = []

    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                               aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
            queue = sqs.create_queue(QueueName="bench")["QueueUrl"]
            for _ in range(50):  # warm the connection and the server's code paths
                sqs.send_message(QueueUrl=queue, MessageBody=body)
            sqs.purge_queue(QueueUrl=queue)

            def send_one() -> int:
                sqs.send_message(QueueUrl=queue, MessageBody=body)
                return 1

            sent, seconds = timed(args.seconds, args.messages, send_one)
            results.append(("SendMessage", sent, seconds))

            def receive_delete_one() -> int:
                got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1).get("Messages", [])
                for m in got:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                return len(got)

            results.append(("ReceiveMessage(1) + DeleteMessage", *timed(args.seconds, sent, receive_delete_one)))

            entries = [{"Id": str(i), "MessageBody": body} for i in range(10)]

            def send_batch() -> int:
                r = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
                return len(r["Successful"])

            batched, seconds = timed(args.seconds, args.messages, send_batch)
            results.append(("SendMessageBatch(10)", batched, seconds))

            def receive_delete_batch() -> int:
                got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
                if got:
                    sqs.delete_message_batch(QueueUrl=queue, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
                return len(got)

            results.append(("ReceiveMessage(10) + DeleteMessageBatch", *timed(args.seconds, batched,
                                                                             receive_delete_batch)))
            sqs.close()
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"one boto3 client, sequential requests, {args.body_bytes}-byte bodies")
    for name, count, seconds in results:
        print(f"{name:42s} {count:6d} msgs in {seconds:5.2f} s: {count / seconds:8.0f} msgs/s")


if __name__ == "__main__":
    main()
