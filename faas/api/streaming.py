"""InvokeWithResponseStream: the function's response in AWS's event-stream framing, chunk by chunk as the
function writes it, so boto3's `invoke_with_response_stream` iterates the chunks as they are produced.

Each message is binary: total length and headers length (big-endian u32), the CRC32 of those 8 bytes, the
headers (name length u8, name, type 7 = string, value length u16, value), the payload, and the CRC32 of all
that precedes it. `PayloadChunk` events carry the bytes; one `InvokeComplete` event (JSON) ends the stream,
with `ErrorCode` (the error type) and `ErrorDetails` (the error payload) when the function failed, and
`LogResult` with `LogType=Tail`. The HTTP `Content-Type` is the stream's own content type (botocore reads it as
`ResponseStreamContentType`): application/octet-stream unless the function set one. Errors found before the
function runs (not found, throttled, payload too large) are ordinary JSON error responses.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgspec
from aiohttp import web

from faas.api.invoke import _client_context, check_sync_payload
from faas.api.model import operation
from faas.errors import InvalidParameterValueException
from faas.invoke.router import InvokeRequest, InvokeResult
from faas.logs import tail_base64
from faas.services import SERVICES

STREAM_CONTENT_TYPE = "application/octet-stream"
_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">II")
_encoder = msgspec.json.Encoder()


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes((len(n),)) + n + b"\x07" + struct.pack(">H", len(v)) + v


def _headers(event_type: str, content_type: str) -> bytes:
    return _header(":event-type", event_type) + _header(":content-type", content_type) + \
        _header(":message-type", "event")


_CHUNK_HEADERS = _headers("PayloadChunk", "application/octet-stream")
_COMPLETE_HEADERS = _headers("InvokeComplete", "application/json")


def event_message(headers: bytes, payload: bytes) -> bytes:
    """One event-stream message with already encoded headers."""
    prelude = _PRELUDE.pack(12 + len(headers) + len(payload) + 4, len(headers))
    message = prelude + _U32.pack(zlib.crc32(prelude)) + headers + payload
    return message + _U32.pack(zlib.crc32(message))


def payload_chunk(data: bytes) -> bytes:
    return event_message(_CHUNK_HEADERS, data)


def invoke_complete(result: InvokeResult, tail: bool) -> bytes:
    done: dict[str, Any] = {}
    if result.function_error:
        done["ErrorCode"] = result.error_type or result.function_error
        done["ErrorDetails"] = result.payload.decode("utf-8", "replace")
    if tail:
        done["LogResult"] = tail_base64(result.log)
    return event_message(_COMPLETE_HEADERS, _encoder.encode(done))


class _EventStreamResponse:
    """The HTTP response, started at the first chunk (its content type is known then). A client that goes
    away ends nothing: the function runs to completion and its instance stays reusable."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response: web.StreamResponse | None = None
        self.gone = False

    async def _start(self, content_type: str, version: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": content_type,
            "X-Amz-Executed-Version": version,
            "x-amzn-RequestId": self.request["request_id"],
        })
        response.enable_chunked_encoding()
        await response.prepare(self.request)
        self.response = response
        return response

    async def _send(self, message: bytes, content_type: str, version: str) -> None:
        if self.gone:
            return
        try:
            response = self.response or await self._start(content_type, version)
            await response.write(message)
        except ConnectionError:
            self.gone = True

    async def chunk(self, data: bytes, content_type: str | None, version: str) -> None:
        await self._send(payload_chunk(data), content_type or STREAM_CONTENT_TYPE, version)

    async def complete(self, result: InvokeResult, tail: bool) -> web.StreamResponse:
        version = result.executed_version
        if not result.streamed:
            content_type = result.content_type or "application/json"
            if result.function_error is None and result.payload:
                await self._send(payload_chunk(result.payload), content_type, version)
        else:
            content_type = result.content_type or STREAM_CONTENT_TYPE
        await self._send(invoke_complete(result, tail), content_type, version)
        return await end_stream(self.response, self.gone)


async def end_stream(response: web.StreamResponse | None, gone: bool) -> web.StreamResponse:
    """The end of a streamed answer: an empty 200 when the client left before anything was sent, the stream
    closed unless the client has gone."""
    if response is None:
        return web.Response(status=200)
    if not gone:
        try:
            await response.write_eof()
        except ConnectionError:
            pass
    return response


@operation("InvokeWithResponseStream")
async def invoke_with_response_stream(request: web.Request, p: dict[str, Any]) -> web.StreamResponse:
    svc = request.app[SERVICES]
    ref = svc.arns.parse(p["FunctionName"], p.get("Qualifier"), for_invoke=True)
    payload: bytes = p.get("Payload") or b""
    check_sync_payload(svc, payload, "InvokeWithResponseStream")
    invocation_type = p.get("InvocationType") or "RequestResponse"
    if invocation_type == "DryRun":
        fv = await svc.router.resolve(ref.name, ref.qualifier)
        return web.Response(status=204, headers={"X-Amz-Executed-Version": fv.version})
    if invocation_type != "RequestResponse":
        raise InvalidParameterValueException(f"Unsupported invocation type {invocation_type}")
    stream = _EventStreamResponse(request)
    result = await svc.router.invoke(
        InvokeRequest(
            function_name=ref.name,
            qualifier=ref.qualifier,
            payload=payload,
            request_id=request["request_id"],
            client_context=_client_context(p.get("ClientContext")),
            trace_id=request.headers.get("X-Amzn-Trace-Id"),
        ),
        on_chunk=stream.chunk,
    )
    return await stream.complete(result, p.get("LogType") == "Tail")
