"""TagResource, UntagResource and ListTags on function ARNs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.model import empty_response, json_response, operation
from faas.errors import InvalidParameterValueException, ResourceNotFoundException, function_not_found
from faas.services import SERVICES, Services

MAX_TAGS = 50


def _function_name(svc: Services, resource: str) -> str:
    marker = ":function:"
    if marker not in resource:
        # Event source mappings and other taggable kinds have no resources on this server yet.
        kind = resource.split(":")[5] if resource.count(":") >= 5 else resource
        if kind.startswith("event-source-mapping"):
            raise ResourceNotFoundException(f"Event source mapping not found: {resource}")
        raise ResourceNotFoundException("The resource you requested does not exist.")
    ref = svc.arns.parse(resource)
    if ref.qualifier is not None:
        raise InvalidParameterValueException(
            "Tags on function aliases and versions are not supported. Please specify a function ARN."
        )
    return ref.name


@operation("TagResource")
async def tag_resource(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p["Resource"])
    tags = p.get("Tags") or {}
    if not tags:
        raise InvalidParameterValueException("An error occurred and the request cannot be processed.")
    record = await svc.registry.get_function(name)
    if record is None:
        raise function_not_found(svc.arns.function(name))
    if len({**record.tags, **tags}) > MAX_TAGS:
        raise InvalidParameterValueException("Number of tags exceeds resource tag limit.")
    await svc.registry.set_tags(name, tags, [])
    return empty_response(204)


@operation("UntagResource")
async def untag_resource(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p["Resource"])
    if not await svc.registry.set_tags(name, {}, list(p.get("TagKeys") or [])):
        raise function_not_found(svc.arns.function(name))
    return empty_response(204)


@operation("ListTags")
async def list_tags(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _function_name(svc, p["Resource"])
    record = await svc.registry.get_function(name)
    if record is None:
        raise function_not_found(svc.arns.function(name))
    return json_response({"Tags": record.tags})
