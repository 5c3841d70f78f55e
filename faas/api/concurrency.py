"""Reserved concurrency (Put/Get/DeleteFunctionConcurrency) and provisioned concurrency
(Put/Get/Delete/ListProvisionedConcurrencyConfigs)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.model import empty_response, json_response, operation
from faas.api.pagination import encode_marker, marker_int, page_size
from faas.arn import LATEST
from faas.errors import (
    InvalidParameterValueException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceNotFoundException,
    function_not_found,
)
from faas.services import SERVICES, Services
from faas.store.provisioned import ProvisionedSetting
from faas.store.records import aws_timestamp


def _unqualified(svc: Services, value: str) -> str:
    ref = svc.arns.parse(value)
    if ref.qualifier is not None:
        raise InvalidParameterValueException(
            "This operation is permitted on Lambda functions only. Aliases and versions do not support this "
            "operation. Please specify either a function name or an unqualified function ARN."
        )
    return ref.name


async def _provisioned_total(svc: Services, name: str) -> int:
    return sum(s.requested for s in await svc.concurrency.provisioned(name))


@operation("PutFunctionConcurrency")
async def put_function_concurrency(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _unqualified(svc, p["FunctionName"])
    if await svc.registry.get_version(name) is None:
        raise function_not_found(svc.arns.function(name, LATEST))
    value = p["ReservedConcurrentExecutions"]
    account = svc.config.account
    others = sum(v for k, v in svc.pools.reserved.items() if k != name)
    if account.concurrent_executions - others - value < account.minimum_unreserved:
        raise InvalidParameterValueException(
            "Specified ReservedConcurrentExecutions for function decreases account's "
            f"UnreservedConcurrentExecution below its minimum value of [{account.minimum_unreserved}].",
            body_type=None,
        )
    provisioned = await _provisioned_total(svc, name)
    if value < provisioned:
        raise InvalidParameterValueException(
            f" ReservedConcurrentExecutions  {value} should not be lower than function's total provisioned "
            f"concurrency [{provisioned}].",
            body_type=None,
        )
    await svc.concurrency.set_reserved(name, value)
    svc.pools.reserved[name] = value
    return json_response({"ReservedConcurrentExecutions": value})


@operation("GetFunctionConcurrency")
async def get_function_concurrency(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _unqualified(svc, p["FunctionName"])
    record = await svc.registry.get_function(name)
    if record is None:
        raise function_not_found(svc.arns.function(name))
    if record.reserved_concurrency is None:
        return json_response({})
    return json_response({"ReservedConcurrentExecutions": record.reserved_concurrency})


@operation("DeleteFunctionConcurrency")
async def delete_function_concurrency(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _unqualified(svc, p["FunctionName"])
    if not await svc.concurrency.set_reserved(name, None):
        raise function_not_found(svc.arns.function(name))
    svc.pools.reserved.pop(name, None)
    return empty_response(204)


async def _target(svc: Services, p: dict[str, Any], latest_message: str) -> tuple[str, str]:
    """The function and the published version or alias a provisioned concurrency call is about."""
    ref = svc.arns.parse(p["FunctionName"], p.get("Qualifier"))
    qualifier = ref.qualifier
    if qualifier is None or qualifier == LATEST:
        raise InvalidParameterValueException(latest_message)
    if qualifier.isdigit():
        if await svc.registry.get_version(ref.name, qualifier) is None:
            raise function_not_found(svc.arns.function(ref.name, qualifier))
    elif await svc.registry.aliases.get(ref.name, qualifier) is None:
        raise ResourceNotFoundException(f"Cannot find alias arn: {svc.arns.function(ref.name, qualifier)}")
    return ref.name, qualifier


def _config_shape(svc: Services, setting: ProvisionedSetting, *, with_arn: bool = False) -> dict[str, Any]:
    status = svc.provisioner.status(setting.function_name, setting.qualifier)
    allocated = min(status.allocated, setting.requested)
    out: dict[str, Any] = {}
    if with_arn:
        out["FunctionArn"] = svc.arns.function(setting.function_name, setting.qualifier)
    out.update(
        RequestedProvisionedConcurrentExecutions=setting.requested,
        AvailableProvisionedConcurrentExecutions=allocated if status.status == "READY" else 0,
        AllocatedProvisionedConcurrentExecutions=allocated if status.status == "READY" else 0,
        Status=status.status,
        LastModified=setting.last_modified,
    )
    if status.reason:
        out["StatusReason"] = status.reason
    return out


@operation("PutProvisionedConcurrencyConfig")
async def put_provisioned(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name, qualifier = await _target(
        svc, p, "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
    )
    value = p["ProvisionedConcurrentExecutions"]
    await svc.provisioner.check(name, qualifier, value, svc.config.account.minimum_unreserved)
    setting = ProvisionedSetting(name, qualifier, value, aws_timestamp())
    await svc.concurrency.put_provisioned(setting)
    svc.provisioner.changed(name, qualifier, value)
    return json_response(_config_shape(svc, setting), status=202)


@operation("GetProvisionedConcurrencyConfig")
async def get_provisioned(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name, qualifier = await _target(svc, p, "The function resource provided must be an alias or a published version.")
    for setting in await svc.concurrency.provisioned(name):
        if setting.qualifier == qualifier:
            return json_response(_config_shape(svc, setting))
    raise ProvisionedConcurrencyConfigNotFoundException("No Provisioned Concurrency Config found for this function")


@operation("DeleteProvisionedConcurrencyConfig")
async def delete_provisioned(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name, qualifier = await _target(svc, p, "The function resource provided must be an alias or a published version.")
    if await svc.concurrency.delete_provisioned(name, qualifier):
        svc.provisioner.changed(name, qualifier, None)
        await svc.pools.unprovision(name, qualifier)
    return empty_response(204)


@operation("ListProvisionedConcurrencyConfigs")
async def list_provisioned(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = svc.arns.parse(p["FunctionName"]).name
    if await svc.registry.get_version(name) is None:
        raise function_not_found(svc.arns.function(name))
    settings = await svc.concurrency.provisioned(name)
    start = marker_int(p.get("Marker")) or 0
    limit = page_size(p.get("MaxItems"))
    page = settings[start:start + limit]
    out: dict[str, Any] = {"ProvisionedConcurrencyConfigs": [_config_shape(svc, s, with_arn=True) for s in page]}
    if start + limit < len(settings):
        out["NextMarker"] = encode_marker(str(start + limit))
    return json_response(out)
