"""Invocation logs as Lambda writes them: START, the function's output, END and REPORT lines in the Text log
format, or platform.start / platform.runtimeDone / platform.report records in the JSON log format."""

from __future__ import annotations

import base64
import math

import msgspec
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
    json_format: bool = False,
    system_level: str | None = None,
) -> bytes:
    """The log lines of one invocation, as CloudWatch and `X-Amz-Log-Result` show them."""
    if json_format:
        return _json_log(request_id, version, output, duration_ms, memory_mb, max_memory_used_mb, init_ms,
                         init_output, timed_out_after, status_error, system_level)
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


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# Platform records are INFO; a SystemLogLevel above it leaves them out, as Lambda does.
_QUIET_SYSTEM_LEVELS = frozenset({"WARN", "ERROR", "FATAL"})


def _json_log(
    request_id: str, version: str, output: bytes, duration_ms: float, memory_mb: int, max_memory_used_mb: int,
    init_ms: float | None, init_output: bytes, timed_out_after: float | None, status_error: str | None,
    system_level: str | None,
) -> bytes:
    platform = (system_level or "INFO").upper() not in _QUIET_SYSTEM_LEVELS
    status = "timeout" if timed_out_after is not None else ("error" if status_error else "success")

    def record(kind: str, body: dict) -> bytes:
        return msgspec.json.encode({"time": _stamp(), "type": kind, "record": body}) + b"\n"

    parts = [init_output]
    if platform:
        parts.append(record("platform.start", {"requestId": request_id, "version": version}))
    parts.append(output)
    if output and not output.endswith(b"\n"):
        parts.append(b"\n")
    if platform:
        parts.append(record("platform.runtimeDone", {"requestId": request_id, "status": status}))
        metrics: dict = {
            "durationMs": round(duration_ms, 3), "billedDurationMs": max(1, math.ceil(duration_ms)),
            "memorySizeMB": memory_mb, "maxMemoryUsedMB": max_memory_used_mb,
        }
        if init_ms is not None:
            metrics["initDurationMs"] = round(init_ms, 3)
        report: dict = {"requestId": request_id, "metrics": metrics, "status": status}
        if status_error:
            report["errorType"] = status_error
        parts.append(record("platform.report", report))
    return b"".join(parts)


def tail_base64(log: bytes, limit: int = TAIL_BYTES) -> str:
    return base64.b64encode(log[-limit:]).decode()
