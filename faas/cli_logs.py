"""`faas logs FUNCTION`: a function's invocation logs, read through the server's CloudWatch Logs API.

    faas logs my-fn                     the last 10 minutes
    faas logs my-fn --since 1h --filter ERROR
    faas logs my-fn --follow            then new events as they arrive, until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, TextIO

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RESET = "\033[0m"
_DIM = "\033[2m"
_RED = "\033[31m"
_ERROR = re.compile(r"\[ERROR\]|Traceback \(most recent call last\)|Task timed out|Status: error|\bERROR\b")


def add_parser(sub: Any) -> None:
    """Add the `logs` subcommand to `faas`'s subparsers."""
    p = sub.add_parser("logs", help="print a function's logs (from the server's CloudWatch Logs API)")
    p.add_argument("function", help="function name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--since", default="10m", help="how far back: 30s, 10m, 1h, 2d, 1w or an ISO 8601 time")
    p.add_argument("--filter", dest="pattern", default="", help="a CloudWatch filter pattern")
    p.add_argument("--endpoint-url", default=None,
                   help="the server (default $FAAS_ENDPOINT_URL, $AWS_ENDPOINT_URL or http://127.0.0.1:9000)")
    p.add_argument("--log-group", default=None, help="log group (default /aws/lambda/FUNCTION)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --follow")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def parse_since(text: str, now: float | None = None) -> float:
    """`--since` as epoch seconds: a duration back from now, or an ISO 8601 time (UTC unless it says)."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"faas logs: --since {text!r}: expected e.g. 10m, 1h, 2d or 2024-05-01T12:00:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _client(endpoint: str) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "logs", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "faas"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "faas"),
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
    )


class Printer:
    def __init__(self, out: TextIO, color: bool):
        self.out = out
        self.color = color

    def event(self, e: dict[str, Any]) -> None:
        stamp = datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        stream = e.get("logStreamName", "").rsplit("/", 1)[-1]
        stream = stream[: stream.find("]") + 9] if "]" in stream else stream[:8]
        message = e["message"].rstrip("\n")
        if self.color:
            if _ERROR.search(message):
                message = f"{_RED}{message}{_RESET}"
            elif message.startswith(("START ", "END ", "REPORT ", "INIT_START ")):
                message = f"{_DIM}{message}{_RESET}"
            stamp, stream = f"{_DIM}{stamp}Z{_RESET}", f"{_DIM}{stream}{_RESET}"
        else:
            stamp += "Z"
        self.out.write(f"{stamp} {stream} {message}\n")


def _pages(client: Any, group: str, start_ms: int, pattern: str) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
    if pattern:
        kwargs["filterPattern"] = pattern
    while True:
        page = client.filter_log_events(**kwargs)
        yield from page.get("events", [])
        token = page.get("nextToken")
        if not token:
            return
        kwargs["nextToken"] = token


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError, EndpointConnectionError

    endpoint = (args.endpoint_url or os.environ.get("FAAS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
                or "http://127.0.0.1:9000")
    group = args.log_group or f"/aws/lambda/{args.function}"
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    printer = Printer(sys.stdout, color)
    client = _client(endpoint)
    start_ms = int(parse_since(args.since) * 1000)
    # Events at the newest timestamp printed so far: the next poll starts at that millisecond again.
    seen: set[str] = set()
    waiting_said = False
    try:
        while True:
            try:
                for e in _pages(client, group, start_ms, args.pattern):
                    if e["eventId"] in seen:
                        continue
                    if e["timestamp"] > start_ms:
                        start_ms, seen = e["timestamp"], set()
                    seen.add(e["eventId"])
                    printer.event(e)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                    print(f"faas logs: {exc}", file=sys.stderr)
                    return 1
                if not args.follow:
                    print(f"faas logs: no logs for {args.function} (log group {group} does not exist)", file=sys.stderr)
                    return 1
                if not waiting_said:
                    print(f"faas logs: waiting for log group {group}", file=sys.stderr)
                    waiting_said = True
            except EndpointConnectionError as exc:
                print(f"faas logs: cannot reach the server: {exc}", file=sys.stderr)
                return 1
            sys.stdout.flush()
            if not args.follow:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `faas logs fn | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        client.close()
