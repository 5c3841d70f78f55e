"""PublishVersion and ListVersionsByFunction."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.model import json_response, operation
from faas.api.pagination import encode_marker, marker_int, page_size
from faas.api.shapes import function_configuration
from faas.errors import function_not_found
from faas.services import SERVICES


@operation("PublishVersion")
async def publish_version(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = svc.arns.parse(p["FunctionName"]).name
    published = await svc.registry.publish_version(
        name, description=p.get("Description"), code_sha256_b64=p.get("CodeSha256"), revision_id=p.get("RevisionId"),
    )
    if published is None:
        raise function_not_found(svc.arns.function(name))
    return json_response(function_configuration(published, svc.arns, arn_qualifier=published.version), status=201)


@operation("ListVersionsByFunction")
async def list_versions(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref = svc.arns.parse(p["FunctionName"])
    if await svc.registry.get_version(ref.name) is None:
        raise function_not_found(svc.arns.function(ref.name))
    limit = page_size(p.get("MaxItems"))
    rows = await svc.registry.list_versions(ref.name, marker_int(p.get("Marker")), limit + 1)
    page = rows[:limit]
    out: dict[str, Any] = {
        "Versions": [function_configuration(v, svc.arns, arn_qualifier=v.version, listing=True) for v in page]
    }
    if len(rows) > limit:
        last = page[-1].version
        out["NextMarker"] = encode_marker("-1" if last == "$LATEST" else last)
    return json_response(out)
