"""CreateAlias, GetAlias, UpdateAlias, DeleteAlias and ListAliases, with weighted routing."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from faas.api.model import empty_response, json_response, operation
from faas.api.pagination import decode_marker, encode_marker, page_size
from faas.arn import LATEST
from faas.errors import (
    REVISION_MISMATCH,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceNotFoundException,
    function_not_found,
)
from faas.services import SERVICES, Services
from faas.store.aliases import Alias


def alias_shape(svc: Services, alias: Alias) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AliasArn": svc.arns.function(alias.function_name, alias.name),
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    }
    if alias.routing:
        out["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.routing)}
    return out


def _routing(p: dict[str, Any]) -> dict[str, float] | None:
    """The weights map from the request, None when RoutingConfig was not sent."""
    if "RoutingConfig" not in p:
        return None
    weights = (p["RoutingConfig"] or {}).get("AdditionalVersionWeights") or {}
    if len(weights) > 1:
        raise InvalidParameterValueException("Number of items in AdditionalVersionWeights cannot be greater than 1")
    return {str(k): float(v) for k, v in weights.items()}


async def _check_versions(svc: Services, name: str, version: str, routing: dict[str, float]) -> None:
    if routing and version == LATEST:
        raise InvalidParameterValueException(
            "$LATEST is not supported for an alias pointing to more than 1 version", body_type=None
        )
    if version in routing:
        raise InvalidParameterValueException(
            f"Invalid function version {version}. Function version {version} is already included in routing "
            "configuration."
        )
    for wanted in (version, *routing):
        if await svc.registry.get_version(name, wanted) is None:
            raise function_not_found(svc.arns.function(name, wanted))


def _function_name(svc: Services, p: dict[str, Any]) -> str:
    return svc.arns.parse(p["FunctionName"]).name


@operation("CreateAlias")
async def create_alias(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p)
    routing = _routing(p) or {}
    await _check_versions(svc, name, p["FunctionVersion"], routing)
    alias = await svc.registry.aliases.create(
        Alias(function_name=name, name=p["Name"], function_version=p["FunctionVersion"],
              description=p.get("Description") or "", routing=routing),
        conflict_message=f"Alias already exists: {svc.arns.function(name, p['Name'])}",
    )
    return json_response(alias_shape(svc, alias), status=201)


@operation("GetAlias")
async def get_alias(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p)
    alias = await svc.registry.aliases.get(name, p["Name"])
    if alias is None:
        raise ResourceNotFoundException(f"Cannot find alias arn: {svc.arns.function(name, p['Name'])}")
    return json_response(alias_shape(svc, alias))


@operation("UpdateAlias")
async def update_alias(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p)
    current = await svc.registry.aliases.get(name, p["Name"])
    if current is None:
        raise ResourceNotFoundException(f"Alias not found: {svc.arns.function(name, p['Name'])}")
    routing = _routing(p)
    version = p.get("FunctionVersion") or current.function_version
    await _check_versions(svc, name, version, current.routing if routing is None else routing)

    def change(alias: Alias) -> Alias:
        if p.get("RevisionId") is not None and p["RevisionId"] != alias.revision_id:
            raise PreconditionFailedException(REVISION_MISMATCH)
        updates: dict[str, Any] = {"function_version": version}
        if p.get("Description") is not None:
            updates["description"] = p["Description"]
        if routing is not None:
            updates["routing"] = routing
        return msgspec.structs.replace(alias, **updates)

    updated = await svc.registry.aliases.update(name, p["Name"], change)
    if updated is None:
        raise ResourceNotFoundException(f"Alias not found: {svc.arns.function(name, p['Name'])}")
    svc.provisioner.poke()  # provisioned concurrency on the alias follows it to its new version
    return json_response(alias_shape(svc, updated))


@operation("DeleteAlias")
async def delete_alias(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    await svc.registry.aliases.delete(_function_name(svc, p), p["Name"])
    return empty_response(204)


@operation("ListAliases")
async def list_aliases(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p)
    if await svc.registry.get_version(name) is None:
        raise function_not_found(svc.arns.function(name))
    limit = page_size(p.get("MaxItems"))
    rows = await svc.registry.aliases.list(name, p.get("FunctionVersion"), decode_marker(p.get("Marker")), limit + 1)
    out: dict[str, Any] = {"Aliases": [alias_shape(svc, a) for a in rows[:limit]]}
    if len(rows) > limit:
        out["NextMarker"] = encode_marker(rows[limit - 1].name)
    return json_response(out)
