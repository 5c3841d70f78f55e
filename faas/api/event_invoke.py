"""Asynchronous invocation settings (Put/Update/Get/Delete/ListFunctionEventInvokeConfigs) and the legacy
InvokeAsync operation."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from faas.api.invoke import check_async_payload
from faas.api.model import empty_response, json_response, operation
from faas.api.pagination import encode_marker, marker_int, page_size
from faas.arn import LATEST
from faas.errors import InvalidParameterValueException, ResourceNotFoundException
from faas.services import SERVICES, Services
from faas.store.async_events import EventInvokeConfig

_DESTINATION_SERVICES = ("sqs", "sns", "events", "lambda")


async def _target(svc: Services, p: dict[str, Any], *, must_exist: bool) -> tuple[str, str]:
    ref = svc.arns.parse(p["FunctionName"], p.get("Qualifier"))
    qualifier = ref.qualifier or LATEST
    if must_exist:
        try:
            await svc.router.resolve(ref.name, qualifier)
        except ResourceNotFoundException:
            raise ResourceNotFoundException("The function doesn't exist.") from None
    return ref.name, qualifier


def _no_config(svc: Services, name: str, qualifier: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(
        f"The function {svc.arns.function(name, qualifier)} doesn't have an EventInvokeConfig"
    )


async def _check_destination(svc: Services, name: str, arn: str | None, side: str, other: str | None) -> None:
    if not arn:
        return
    parts = arn.split(":")
    service = parts[2] if len(parts) > 5 else ""
    if service not in _DESTINATION_SERVICES:
        on_success = f"OnSuccess(destination={arn})" if side == "OnSuccess" else (
            f"OnSuccess(destination={other})" if other else "null")
        on_failure = f"OnFailure(destination={arn})" if side == "OnFailure" else (
            f"OnFailure(destination={other})" if other else "null")
        raise InvalidParameterValueException(
            f"The provided destination config DestinationConfig(onSuccess={on_success}, onFailure={on_failure}) "
            "is invalid."
        )
    if service == "lambda":
        ref = svc.arns.parse(arn) if ":function:" in arn else None
        if ref is None:
            raise InvalidParameterValueException(f"The destination ARN {arn} is invalid.")
        if ref.name == name:
            raise InvalidParameterValueException("You can't specify the function as a destination for itself.")
        try:
            await svc.router.resolve(ref.name, ref.qualifier)
        except ResourceNotFoundException:
            raise InvalidParameterValueException(f"The destination ARN {arn} is invalid.") from None


def _shape(svc: Services, config: EventInvokeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "LastModified": config.last_modified,
        "FunctionArn": svc.arns.function(config.function_name, config.qualifier),
    }
    if config.max_retries is not None:
        out["MaximumRetryAttempts"] = config.max_retries
    if config.max_age is not None:
        out["MaximumEventAgeInSeconds"] = config.max_age
    out["DestinationConfig"] = {
        "OnSuccess": {"Destination": config.on_success} if config.on_success else {},
        "OnFailure": {"Destination": config.on_failure} if config.on_failure else {},
    }
    return out


def _destinations(p: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    given = p.get("DestinationConfig")
    if given is None:
        return None, None, False
    success = (given.get("OnSuccess") or {}).get("Destination") or None
    failure = (given.get("OnFailure") or {}).get("Destination") or None
    return success, failure, True


async def _save(svc: Services, p: dict[str, Any], *, merge: bool) -> web.Response:
    name, qualifier = await _target(svc, p, must_exist=True)
    current = await svc.async_events.get_config(name, qualifier)
    if merge and current is None:
        raise _no_config(svc, name, qualifier)
    success, failure, given = _destinations(p)
    if not merge and p.get("MaximumRetryAttempts") is None and p.get("MaximumEventAgeInSeconds") is None \
            and not (success or failure):
        raise InvalidParameterValueException("You must specify at least one of error handling or destination setting.")
    base = current if merge and current is not None else EventInvokeConfig(name, qualifier)
    updated = msgspec.structs.replace(
        base,
        max_retries=p["MaximumRetryAttempts"] if p.get("MaximumRetryAttempts") is not None else base.max_retries,
        max_age=p["MaximumEventAgeInSeconds"] if p.get("MaximumEventAgeInSeconds") is not None else base.max_age,
        on_success=success if given else base.on_success,
        on_failure=failure if given else base.on_failure,
        last_modified=round(time.time(), 3),
    )
    await _check_destination(svc, name, updated.on_success, "OnSuccess", updated.on_failure)
    await _check_destination(svc, name, updated.on_failure, "OnFailure", updated.on_success)
    await svc.async_events.put_config(updated)
    return json_response(_shape(svc, updated))


@operation("PutFunctionEventInvokeConfig")
async def put_config(request: web.Request, p: dict[str, Any]) -> web.Response:
    return await _save(request.app[SERVICES], p, merge=False)


@operation("UpdateFunctionEventInvokeConfig")
async def update_config(request: web.Request, p: dict[str, Any]) -> web.Response:
    return await _save(request.app[SERVICES], p, merge=True)


@operation("GetFunctionEventInvokeConfig")
async def get_config(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name, qualifier = await _target(svc, p, must_exist=False)
    config = await svc.async_events.get_config(name, qualifier)
    if config is None:
        raise _no_config(svc, name, qualifier)
    return json_response(_shape(svc, config))


@operation("DeleteFunctionEventInvokeConfig")
async def delete_config(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name, qualifier = await _target(svc, p, must_exist=False)
    if not await svc.async_events.delete_config(name, qualifier):
        raise _no_config(svc, name, qualifier)
    return empty_response(204)


@operation("ListFunctionEventInvokeConfigs")
async def list_configs(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name, _ = await _target(svc, {"FunctionName": p["FunctionName"]}, must_exist=True)
    configs = await svc.async_events.list_configs(name)
    start = marker_int(p.get("Marker")) or 0
    limit = page_size(p.get("MaxItems"))
    out: dict[str, Any] = {"FunctionEventInvokeConfigs": [_shape(svc, c) for c in configs[start:start + limit]]}
    if start + limit < len(configs):
        out["NextMarker"] = encode_marker(str(start + limit))
    return json_response(out)


@operation("InvokeAsync")
async def invoke_async(request: web.Request, p: dict[str, Any]) -> web.Response:
    """The legacy asynchronous API: the same queue as InvocationType=Event."""
    svc = request.app[SERVICES]
    ref = svc.arns.parse(p["FunctionName"], for_invoke=True)
    payload = p.get("InvokeArgs") or b"{}"
    check_async_payload(svc, payload)
    await svc.async_queue.enqueue(ref.name, ref.qualifier, payload, request_id=request["request_id"])
    return json_response({"Status": 202}, status=202)
