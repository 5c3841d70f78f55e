"""Traces of invocations, exported as OpenTelemetry spans.

A function with `TracingConfig.Mode = Active`, or any invocation whose caller sent a sampled
`X-Amzn-Trace-Id`, records one trace: a root span for the invocation with the children `Initialization`
(cold starts only), `Invocation` and `Overhead`, as Lambda's X-Ray segments are laid out. Ids are X-Ray's
(`Root=1-<8 hex epoch>-<24 hex>`); the OpenTelemetry trace id is the same 32 hex digits, so the function,
which sees `_X_AMZN_TRACE_ID=Root=...;Parent=<Invocation span id>;Sampled=1`, can continue the trace with
either an X-Ray or an OpenTelemetry SDK.

Spans are encoded as OTLP/JSON (`ExportTraceServiceRequest`) by hand rather than with opentelemetry-sdk: every
span here is complete when the invocation ends, so there is no span API to offer, and the SDK's batch
processor runs its own thread and the OTLP exporter brings protobuf and requests. `SpanExporter` batches them
on the event loop and sends each batch to an OTLP/HTTP collector (aiohttp's client) and/or appends it, one
request per line, to a file. Like logs, spans are best-effort: a batch the collector refuses is dropped
and counted, not retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from faas.tasks import finish_or_cancel

log = logging.getLogger(__name__)

_ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")
_MAX_BATCH = 512  # spans one export request carries
_MAX_PENDING = 65536  # spans waiting beyond this are dropped (a collector that cannot keep up)
_SCOPE = {"name": "faas", "version": "1"}

# OTLP span kinds and status codes.
KIND_INTERNAL = 1
KIND_SERVER = 2
STATUS_ERROR = 2


class TraceHeader(msgspec.Struct, frozen=True):
    """The fields of an `X-Amzn-Trace-Id` header this server uses. `sampled` is None when the caller left
    the decision to us."""

    root: str | None = None
    parent: str | None = None
    sampled: bool | None = None


def parse_trace_header(value: str | None) -> TraceHeader:
    """`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`, fields in any order;
    malformed fields are ignored."""
    if not value:
        return TraceHeader()
    root = parent = None
    sampled: bool | None = None
    for part in value.split(";"):
        key, _, val = part.strip().partition("=")
        key, val = key.strip().lower(), val.strip()
        if key == "root" and _ROOT.fullmatch(val):
            root = val.lower()
        elif key == "parent" and _SPAN_ID.fullmatch(val):
            parent = val.lower()
        elif key == "sampled" and val in ("0", "1"):
            sampled = val == "1"
    return TraceHeader(root, parent, sampled)


def new_root(now: float | None = None) -> str:
    return f"1-{int(time.time() if now is None else now):08x}-{secrets.token_hex(12)}"


def otel_trace_id(root: str) -> str:
    """`1-5759e988-bd862e3fe1be46a994272793` -> `5759e988bd862e3fe1be46a994272793`."""
    return root[2:10] + root[11:]


def new_span_id() -> str:
    return secrets.token_hex(8)


class Trace:
    """One traced invocation in progress. The router marks when it got an instance and when the function
    ran; times are taken from one monotonic clock and placed on the wall clock at `begin`."""

    __slots__ = (
        "_perf_ns",
        "_wall_ns",
        "acquired_ns",
        "invocation_span_id",
        "invoke_end_ns",
        "invoke_start_ns",
        "parent",
        "root",
        "span_id",
    )

    def __init__(self, root: str, parent: str | None):
        self.root = root
        self.parent = parent  # the caller's span, if it sent one
        self.span_id = new_span_id()
        self.invocation_span_id = new_span_id()
        self._wall_ns = time.time_ns()
        self._perf_ns = time.perf_counter_ns()
        self.acquired_ns: int | None = None
        self.invoke_start_ns: int | None = None
        self.invoke_end_ns: int | None = None

    @property
    def header(self) -> str:
        """The `_X_AMZN_TRACE_ID` (and Lambda-Runtime-Trace-Id) the function sees."""
        return f"Root={self.root};Parent={self.invocation_span_id};Sampled=1"

    def _now(self) -> int:
        return self._wall_ns + time.perf_counter_ns() - self._perf_ns

    def acquired(self) -> None:
        self.acquired_ns = self._now()

    def invoking(self) -> None:
        self.invoke_start_ns = self._now()

    def invoked(self) -> None:
        self.invoke_end_ns = self._now()

    def spans(self, *, function: str, version: str, arn: str, request_id: str, cold: bool,
              init_ms: float | None, error_type: str | None) -> list[dict[str, Any]]:
        """The finished trace as OTLP/JSON spans: the root first."""
        trace_id = otel_trace_id(self.root)
        start = self._wall_ns
        end = self._now()
        root_attrs = [
            _attr("faas.invocation_id", request_id), _attr("faas.name", function), _attr("faas.version", version),
            _attr("faas.coldstart", cold), _attr("cloud.resource_id", arn), _attr("aws.xray.trace_id", self.root),
        ]
        if error_type:
            root_attrs.append(_attr("error.type", error_type))
        spans = [_span(trace_id, self.span_id, self.parent, function, KIND_SERVER, start, end, root_attrs,
                       error_type)]
        acquired = self.acquired_ns if self.acquired_ns is not None else end
        if cold and init_ms is not None:
            init_start = max(start, acquired - int(init_ms * 1_000_000))
            spans.append(_span(trace_id, new_span_id(), self.span_id, "Initialization", KIND_INTERNAL,
                               init_start, acquired, [], None))
        if self.invoke_start_ns is not None:
            invoke_end = self.invoke_end_ns if self.invoke_end_ns is not None else end
            spans.append(_span(trace_id, self.invocation_span_id, self.span_id, "Invocation", KIND_INTERNAL,
                               self.invoke_start_ns, invoke_end, [], error_type))
            spans.append(_span(trace_id, new_span_id(), self.span_id, "Overhead", KIND_INTERNAL,
                               invoke_end, end, [], None))
        return spans


def _attr(key: str, value: str | bool | float) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # int64 is a string in OTLP/JSON
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _span(trace_id: str, span_id: str, parent: str | None, name: str, kind: int, start_ns: int, end_ns: int,
          attributes: list[dict[str, Any]], error_type: str | None) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id, "spanId": span_id, "name": name, "kind": kind,
        "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(max(start_ns, end_ns)),
        "attributes": attributes,
        "status": {"code": STATUS_ERROR, "message": error_type} if error_type else {},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


class Tracer:
    """Decides which invocations are traced and hands finished traces to the exporter (None: ids are still
    propagated to functions, nothing is exported)."""

    def __init__(self, exporter: SpanExporter | None):
        self.exporter = exporter

    def begin(self, tracing_mode: str, trace_header: str | None) -> Trace | None:
        """A trace for an Active function unless the caller decided not to sample; for any function when the
        caller sampled (Lambda's PassThrough)."""
        header = parse_trace_header(trace_header)
        if header.sampled is False or (header.sampled is None and tracing_mode != "Active"):
            return None
        return Trace(header.root or new_root(), header.parent if header.root else None)

    def finish(self, trace: Trace, *, function: str, version: str, arn: str, request_id: str, cold: bool,
               init_ms: float | None, error_type: str | None) -> None:
        if self.exporter is None:
            return
        spans = trace.spans(function=function, version=version, arn=arn, request_id=request_id, cold=cold,
                            init_ms=init_ms, error_type=error_type)
        self.exporter.add((function, version), spans)


def export_request(batch: dict[tuple[str, str], list[dict[str, Any]]], region: str = "",
                   account_id: str = "") -> dict[str, Any]:
    """An OTLP ExportTraceServiceRequest: one resourceSpans per function version, named as OpenTelemetry's
    Lambda resource detector names them (service.name is the function)."""
    common = [_attr("cloud.provider", "aws"), _attr("cloud.platform", "aws_lambda")]
    if region:
        common.append(_attr("cloud.region", region))
    if account_id:
        common.append(_attr("cloud.account.id", account_id))
    return {"resourceSpans": [
        {
            "resource": {"attributes": [_attr("service.name", function), _attr("faas.name", function),
                                        _attr("faas.version", version), *common]},
            "scopeSpans": [{"scope": _SCOPE, "spans": spans}],
        }
        for (function, version), spans in batch.items()
    ]}


class SpanExporter:
    """Sends finished spans in batches: every `batch_interval` seconds, or sooner when a full batch waits.
    `run_once()` exports what is waiting; `close()` flushes it."""

    def __init__(self, *, otlp_endpoint: str = "", file: Path | None = None, batch_interval: float = 1.0,
                 region: str = "", account_id: str = "", timeout: float = 10.0):
        endpoint = otlp_endpoint.rstrip("/")
        if endpoint and not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        self.endpoint = endpoint
        self.file = file
        self.batch_interval = batch_interval
        self.timeout = timeout
        self.region = region
        self.account_id = account_id
        self.exported = 0  # spans written to the file or accepted by the collector
        self.dropped = 0  # spans lost: too many waiting, or refused by the collector
        self._pending: collections.deque[tuple[tuple[str, str], list[dict[str, Any]]]] = collections.deque()
        self._pending_spans = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint or self.file)

    def add(self, key: tuple[str, str], spans: list[dict[str, Any]]) -> None:
        """Called on the invocation path: appends to memory, nothing awaited."""
        if self._pending_spans + len(spans) > _MAX_PENDING:
            self.dropped += len(spans)
            return
        self._pending.append((key, spans))
        self._pending_spans += len(spans)
        if self._pending_spans >= _MAX_BATCH:
            self._wake.set()

    def start(self) -> None:
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._export_forever(), name="faas-trace-export")

    async def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        self._wake.set()
        await finish_or_cancel(self._task, timeout)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _export_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.batch_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.run_once():
                    pass
            except Exception:
                log.exception("trace export failed")
            if self._closing:
                return

    async def run_once(self) -> int:
        """Export up to one batch of waiting spans; the number of spans taken."""
        if not self._pending:
            return 0
        taken = 0
        batch: dict[tuple[str, str], list[dict[str, Any]]] = {}
        while self._pending and taken < _MAX_BATCH:
            key, spans = self._pending.popleft()
            batch.setdefault(key, []).extend(spans)
            taken += len(spans)
        self._pending_spans -= taken
        body = msgspec.json.encode(export_request(batch, self.region, self.account_id))
        if self.file is not None:
            await asyncio.to_thread(_append_line, self.file, body)
        if not self.endpoint or await self._post(body, taken):
            self.exported += taken
        return taken

    async def _post(self, body: bytes, count: int) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.endpoint, data=body,
                                          headers={"Content-Type": "application/json"}) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
            self.dropped += count
            if not self._failing:  # one warning per outage, not one per batch
                log.warning("could not export %d spans to %s: %s", count, self.endpoint, exc)
            self._failing = True
            return False
        self._failing = False
        return True


def _append_line(path: Path, body: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(body + b"\n")


def trace_file(setting: str, data_path: Path) -> Path | None:
    """The `[tracing] file` setting: "" is off; a relative path is under the data directory."""
    if not setting:
        return None
    return data_path / setting
