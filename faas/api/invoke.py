"""Invoke: the wire format of a synchronous invocation. Policy lives in `faas.invoke.router`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
from aiohttp import web

from faas.api.model import Reply, operation
from faas.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
)
from faas.invoke.router import InvokeRequest
from faas.logs import tail_base64
from faas.services import SERVICES, Services


def _check_json(payload: bytes) -> None:
    try:
        msgspec.json.decode(payload, type=msgspec.Raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from None


def _client_context(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
        if not isinstance(msgspec.json.decode(raw), dict):
            raise ValueError
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.") from None
    return raw


def check_sync_payload(svc: Services, payload: bytes, operation: str) -> None:
    """A synchronous invocation's payload: within the size limit (the model lists RequestTooLargeException for
    Invoke; boto3 has no class for the other spelling) and JSON."""
    limit = svc.config.limits.sync_payload_bytes
    if len(payload) > limit:
        raise RequestTooLargeException(f"Request must be smaller than {limit} bytes for the {operation} operation")
    if payload:
        _check_json(payload)


def check_async_payload(svc: Services, payload: bytes) -> None:
    limit = svc.config.limits.async_payload_bytes
    if len(payload) > limit:
        raise RequestTooLargeException(
            f"{len(payload)} byte payload is too large for the Event invocation type (limit {limit} bytes)"
        )
    if payload:
        _check_json(payload)


@operation("Invoke")
async def invoke(request: web.Request, p: dict[str, Any]) -> web.Response:
    status, headers, body = await invoke_reply(request.app[SERVICES], p, request["request_id"],
                                               request.headers.get("X-Amzn-Trace-Id"))
    return web.Response(body=body, status=status, headers=headers)


async def invoke_reply(svc: Services, p: dict[str, Any], request_id: str, trace_header: str | None) -> Reply:
    """Invoke's answer to validated input; shared by the aiohttp route and the invoke front
    (`faas.api.front`), which writes it to the connection itself."""
    ref = svc.arns.parse(p["FunctionName"], p.get("Qualifier"), for_invoke=True)
    payload: bytes = p.get("Payload") or b""
    invocation_type = p.get("InvocationType") or "RequestResponse"
    if invocation_type == "Event":
        check_async_payload(svc, payload)
        await svc.async_queue.enqueue(ref.name, ref.qualifier, payload, request_id=request_id)
        return 202, {"x-amzn-RequestId": request_id}, None
    check_sync_payload(svc, payload, "InvokeFunction")
    if invocation_type == "DryRun":
        fv = await svc.router.resolve(ref.name, ref.qualifier)
        return 204, {"X-Amz-Executed-Version": fv.version, "x-amzn-RequestId": request_id}, None
    if invocation_type != "RequestResponse":
        raise InvalidParameterValueException(f"InvocationType {invocation_type} is not supported by this server yet.")
    result = await svc.router.invoke(InvokeRequest(
        function_name=ref.name,
        qualifier=ref.qualifier,
        payload=payload,
        request_id=request_id,
        client_context=_client_context(p.get("ClientContext")),
        trace_id=trace_header,
    ))
    headers = {"X-Amz-Executed-Version": result.executed_version}
    if result.function_error:
        headers["X-Amz-Function-Error"] = result.function_error
    if p.get("LogType") == "Tail":
        headers["X-Amz-Log-Result"] = tail_base64(result.log)
    headers["Content-Type"] = "application/json"
    headers["x-amzn-RequestId"] = request_id
    return 200, headers, result.payload
