"""Invocation logs in Lambda's text format: START, the function's output, END and REPORT."""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone

TAIL_BYTES = 4096


def invocation_log(
    request_id: str,
    version: str,
    output: bytes,
    *,
    duration_ms: float,
    memory_mb: int,
    max_memory_used_mb: int,
    init_ms: float | None = None,
    init_output: bytes = b"",
    timed_out_after: float | None = None,
    status_error: str | None = None,
) -> bytes:
    """The log lines of one invocation, as CloudWatch and `X-Amz-Log-Result` show them."""
    parts = [init_output, f"START RequestId: {request_id} Version: {version}\n".encode(), output]
    if output and not output.endswith(b"\n"):
        parts.append(b"\n")
    if timed_out_after is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        parts.append(f"{stamp} {request_id} Task timed out after {timed_out_after:.2f} seconds\n".encode())
    parts.append(f"END RequestId: {request_id}\n".encode())
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\tMemory Size: {memory_mb} MB\t"
        f"Max Memory Used: {max_memory_used_mb} MB\t"
    )
    if init_ms is not None:
        report += f"Init Duration: {init_ms:.2f} ms\t"
    if status_error:
        report += f"Status: error\tError Type: {status_error}"
    parts.append(report.encode() + b"\n")
    return b"".join(parts)


def tail_base64(log: bytes, limit: int = TAIL_BYTES) -> str:
    return base64.b64encode(log[-limit:]).decode()
