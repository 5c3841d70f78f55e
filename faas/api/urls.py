"""CreateFunctionUrlConfig, GetFunctionUrlConfig, UpdateFunctionUrlConfig, DeleteFunctionUrlConfig and
ListFunctionUrlConfigs. Requests to the URLs themselves are served by `faas.api.url_invoke`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from faas.api.model import empty_response, json_response, operation
from faas.api.pagination import decode_marker, encode_marker, page_size
from faas.arn import FunctionRef
from faas.errors import ResourceNotFoundException, ValidationException, validation_message
from faas.services import SERVICES, Services
from faas.store.urls import UrlConfig, new_url_id, url_timestamp

QUALIFIER_PATTERN = r"((?!^\d+$)^[0-9a-zA-Z-_]+$)"
_QUALIFIER = re.compile(r"(?!\d+$)[0-9a-zA-Z-_]+")
_NO_FUNCTION = "Function does not exist"
_NO_RESOURCE = "The resource you requested does not exist."
# The model lists the enum the other way round from AWS's message.
_MODEL_MODES = "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]"
_AWS_MODES = "Member must satisfy enum value set: [RESPONSE_STREAM, BUFFERED]"


def function_url(svc: Services, url_id: str) -> str:
    """`http://<url-id>.lambda-url.<region>.localhost:<port>/`, on this server's scheme and port."""
    base = urlsplit(svc.config.base_url)
    port = f":{base.port}" if base.port else ""
    return f"{base.scheme}://{url_id}.lambda-url.{svc.arns.region}.localhost{port}/"


def _aws_messages(params: dict[str, Any], errors: list[str]) -> bool:
    raise ValidationException(validation_message([e.replace(_MODEL_MODES, _AWS_MODES) for e in errors]))


def _target(svc: Services, p: dict[str, Any]) -> FunctionRef:
    """The function and alias a request names. A qualifier carried by the name is checked as the Qualifier
    parameter is (an alias: not a version number, not $LATEST)."""
    ref = svc.arns.parse(p["FunctionName"], p.get("Qualifier"))
    if ref.qualifier is not None and not _QUALIFIER.fullmatch(ref.qualifier):
        raise ValidationException(validation_message([(
            f"Value '{ref.qualifier}' at 'qualifier' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {QUALIFIER_PATTERN}"
        )]))
    return ref


async def _exists(svc: Services, ref: FunctionRef) -> bool:
    if await svc.registry.get_version(ref.name) is None:
        return False
    return ref.qualifier is None or await svc.registry.aliases.get(ref.name, ref.qualifier) is not None


def url_shape(svc: Services, c: UrlConfig, *, mode: str = "always", modified: bool = True) -> dict[str, Any]:
    """A FunctionUrlConfig. `mode`: "always" (InvokeMode, BUFFERED by default), "if-set" (only when it was ever
    set explicitly, as Create and Update answer)."""
    out: dict[str, Any] = {
        "FunctionUrl": function_url(svc, c.url_id),
        "FunctionArn": svc.arns.function(c.function_name, c.qualifier),
        "AuthType": c.auth_type,
        "CreationTime": c.created_at,
    }
    if modified:
        out["LastModifiedTime"] = c.last_modified
    if c.cors is not None:
        out["Cors"] = c.cors
    if mode == "always" or c.invoke_mode is not None:
        out["InvokeMode"] = c.invoke_mode or "BUFFERED"
    return out


@operation("CreateFunctionUrlConfig", on_invalid=_aws_messages)
async def create_url(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref = _target(svc, p)
    if not await _exists(svc, ref):
        raise ResourceNotFoundException(_NO_FUNCTION)
    now = url_timestamp()
    config = await svc.urls.create(
        UrlConfig(
            url_id=new_url_id(), function_name=ref.name, qualifier=ref.qualifier, auth_type=p["AuthType"],
            cors=p.get("Cors"), invoke_mode=p.get("InvokeMode"), created_at=now, last_modified=now,
        ),
        conflict_message=(
            f"Failed to create function url config for [functionArn = {svc.arns.function(ref.name, ref.qualifier)}]."
            " Error message:  FunctionUrlConfig exists for this Lambda function"
        ),
    )
    return json_response(url_shape(svc, config, mode="if-set", modified=False), status=201)


@operation("GetFunctionUrlConfig", on_invalid=_aws_messages)
async def get_url(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref = _target(svc, p)
    config = await svc.urls.get(ref.name, ref.qualifier) if await _exists(svc, ref) else None
    if config is None:
        raise ResourceNotFoundException(_NO_RESOURCE)
    return json_response(url_shape(svc, config))


@operation("UpdateFunctionUrlConfig", on_invalid=_aws_messages)
async def update_url(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref = _target(svc, p)
    if not await _exists(svc, ref):
        raise ResourceNotFoundException(_NO_FUNCTION)

    def change(c: UrlConfig) -> UrlConfig:
        updates: dict[str, Any] = {}
        if p.get("AuthType") is not None:
            updates["auth_type"] = p["AuthType"]
        if "Cors" in p:
            updates["cors"] = p["Cors"]
        if p.get("InvokeMode") is not None:
            updates["invoke_mode"] = p["InvokeMode"]
        return msgspec.structs.replace(c, **updates)

    updated = await svc.urls.update(ref.name, ref.qualifier, change)
    if updated is None:
        raise ResourceNotFoundException(_NO_RESOURCE)
    return json_response(url_shape(svc, updated, mode="if-set"))


@operation("DeleteFunctionUrlConfig", on_invalid=_aws_messages)
async def delete_url(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref = _target(svc, p)
    if not await _exists(svc, ref) or not await svc.urls.delete(ref.name, ref.qualifier):
        raise ResourceNotFoundException(_NO_RESOURCE)
    return empty_response(204)


@operation("ListFunctionUrlConfigs", on_invalid=_aws_messages)
async def list_urls(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = svc.arns.parse(p["FunctionName"]).name
    if await svc.registry.get_version(name) is None:
        raise ResourceNotFoundException(_NO_FUNCTION)
    limit = page_size(p.get("MaxItems"))
    after = decode_marker(p.get("Marker"))
    rows = await svc.urls.list(name, after[2:] if after and after.startswith("q:") else None, limit + 1)
    out: dict[str, Any] = {"FunctionUrlConfigs": [url_shape(svc, c) for c in rows[:limit]]}
    if len(rows) > limit:
        # Prefixed: the function's own URL sorts first with an empty qualifier, which is no marker.
        out["NextMarker"] = encode_marker("q:" + (rows[limit - 1].qualifier or ""))
    return json_response(out)
