"""Layers: PublishLayerVersion, GetLayerVersion(ByArn), ListLayers, ListLayerVersions, DeleteLayerVersion, the
layer permission operations, and `resolve_function_layers` for the function APIs' `Layers` parameter."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgspec
from aiohttp import web

from faas.api.model import empty_response, json_response, operation
from faas.api.pagination import decode_marker, encode_marker, marker_int, page_size
from faas.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    ResourceNotFoundException,
    ValidationException,
    validation_message,
)
from faas.services import SERVICES, Services
from faas.store.code import CodePackage
from faas.store.db import Database
from faas.store.layers import NO_POLICY, LayerRef, Layers, LayerVersion, PolicyStatement

__all__ = [
    "LayerRef", "MAX_FUNCTION_LAYERS", "check_layers_errors", "create_layers", "layer_version_shape",
    "resolve_function_layers", "rewrite_layers_errors",
]

MAX_FUNCTION_LAYERS = 5
NOT_FOUND = "The resource you requested does not exist."

# Runtimes AWS names in the compatibleRuntimes message (the ones accepted for new functions, in AWS's order).
# The check itself accepts every runtime of the model's enum, deprecated ones included.
_MESSAGE_RUNTIMES = (
    "nodejs20.x", "python3.14", "provided.al2023", "python3.12", "python3.13", "nodejs24.x", "nodejs22.x",
    "java25", "python3.10", "python3.11", "java21", "ruby3.3", "ruby3.4", "ruby3.2", "python3.8", "python3.9",
    "java17", "nodejs16.x", "dotnet10", "dotnet8", "java11", "dotnet6", "nodejs18.x", "provided.al2",
    "java8.al2",
)

# The LayerVersionArn pattern as AWS reports it (stricter than, and different from, botocore's model).
LAYER_VERSION_ARN_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:"
    r"[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)"
)
_VERSION_ARN = re.compile(
    r"arn:(?:aws[a-zA-Z-]*)?:lambda:(?P<region>(?:eusc-)?[a-z]{2}(?:(?:-gov)|(?:-iso(?:[a-z]?)))?-[a-z]+-\d{1}):"
    r"(?P<account>\d{12}):layer:(?P<name>[a-zA-Z0-9-_]+):(?P<version>[0-9]+)",
    re.ASCII,
)
_AWS_LAYER = re.compile(r"arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+", re.ASCII)
# A LayerName given as an ARN (the model's pattern has already been checked).
_LAYER_ARN = re.compile(
    r"arn:[a-zA-Z0-9-]+:lambda:(?P<region>[a-zA-Z0-9-]+):(?P<account>\d{12}):layer:(?P<name>[a-zA-Z0-9-_]+)",
    re.ASCII,
)


def create_layers(db: Database) -> Layers:
    """The layer store, for `faas.app` to put on `Services.layers`."""
    return Layers(db)


# -- names, ARNs and shapes ---------------------------------------------------------------------------------


def layer_arn(svc: Services, name: str) -> str:
    return f"arn:aws:lambda:{svc.arns.region}:{svc.arns.account_id}:layer:{name}"


def layer_version_arn(svc: Services, name: str, version: int) -> str:
    return f"{layer_arn(svc, name)}:{version}"


class _Target(NamedTuple):
    name: str  # the bare layer name
    arn: str  # the layer ARN (as given when it names another region or account)
    local: bool  # False: the ARN names another region or account, where this server has no layers


def _target(svc: Services, value: str) -> _Target:
    m = _LAYER_ARN.fullmatch(value)
    if m is None:
        return _Target(value, layer_arn(svc, value), True)
    local = m["region"] == svc.arns.region and m["account"] == svc.arns.account_id
    return _Target(m["name"], layer_arn(svc, m["name"]) if local else value, local)


def _version_number(p: dict[str, Any]) -> int:
    version = p["VersionNumber"]
    if version < 1:
        raise InvalidParameterValueException("Layer Version Cannot be less than 1")
    return version


def _list_item(svc: Services, lv: LayerVersion) -> dict[str, Any]:
    """LayerVersionsListItem: no Content, no LayerArn; the optional lists and LicenseInfo only when sent."""
    out: dict[str, Any] = {
        "LayerVersionArn": layer_version_arn(svc, lv.layer_name, lv.version),
        "Version": lv.version,
        "Description": lv.description,
        "CreatedDate": lv.created_date,
    }
    if lv.compatible_runtimes is not None:
        out["CompatibleRuntimes"] = list(lv.compatible_runtimes)
    if lv.license_info is not None:
        out["LicenseInfo"] = lv.license_info
    if lv.compatible_architectures is not None:
        out["CompatibleArchitectures"] = list(lv.compatible_architectures)
    return out


def layer_version_shape(svc: Services, lv: LayerVersion) -> dict[str, Any]:
    """The answer of PublishLayerVersion, GetLayerVersion and GetLayerVersionByArn."""
    pkg = CodePackage(lv.code_sha256, lv.code_size, 0)
    out: dict[str, Any] = {
        "Content": {
            "Location": f"{svc.config.base_url}/_faas/code/{lv.code_sha256}.zip",
            "CodeSha256": pkg.sha256_b64,
            "CodeSize": lv.code_size,
        },
        "LayerArn": layer_arn(svc, lv.layer_name),
    }
    out.update(_list_item(svc, lv))
    return out


# -- validation hooks ----------------------------------------------------------------------------------------


def _publish_invalid(params: dict[str, Any], errors: list[str]) -> None:
    """AWS checks CompatibleRuntimes against every runtime it knows but names only the current ones, and
    without the list-element wrapper the generic validator (rightly) uses elsewhere."""
    fixed = []
    for error in errors:
        if " at 'compatibleRuntimes' " in error:
            given = params.get("CompatibleRuntimes") or []
            error = (
                f"Value '[{', '.join(map(str, given))}]' at 'compatibleRuntimes' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(_MESSAGE_RUNTIMES)}]"
            )
        fixed.append(error)
    raise ValidationException(validation_message(fixed))


def _arn_error(arn: str) -> ValidationException:
    return ValidationException(validation_message([
        f"Value '{arn}' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: "
        f"{LAYER_VERSION_ARN_PATTERN}"
    ]))


def _by_arn_invalid(params: dict[str, Any], errors: list[str]) -> None:
    arn = params.get("Arn")
    if isinstance(arn, str) and not any(" at 'arn' " in e and "length" in e for e in errors):
        if _AWS_LAYER.fullmatch(arn):  # valid for AWS (a layer AWS publishes), unknown here
            raise ResourceNotFoundException(NOT_FOUND)
        raise _arn_error(arn)


# -- operations ----------------------------------------------------------------------------------------------


async def _store_content(svc: Services, content: dict[str, Any]) -> tuple[CodePackage, bytes]:
    data = content.get("ZipFile")
    if data is not None:
        return await svc.code.put(data), data
    if content.get("S3Bucket"):
        raise InvalidParameterValueException(
            "Error occurred while GetObject. S3 Error Code: NoSuchBucket. "
            "S3 Error Message: The specified bucket does not exist"
        )
    raise InvalidParameterValueException("Please provide a source for layer code.")


@operation("PublishLayerVersion", on_invalid=_publish_invalid)
async def publish_layer_version(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    if not target.local:
        raise AccessDeniedException(None)
    pkg, data = await _store_content(svc, p.get("Content") or {})
    lv = await svc.layers.publish(
        target.name, pkg,
        description=p.get("Description") or "",
        license_info=p.get("LicenseInfo"),
        compatible_runtimes=p.get("CompatibleRuntimes"),
        compatible_architectures=p.get("CompatibleArchitectures"),
    )
    if not svc.code.has(pkg.sha256):  # the same bytes were garbage-collected between the put and the insert
        await svc.code.put(data)
    return json_response(layer_version_shape(svc, lv), status=201)


@operation("GetLayerVersion")
async def get_layer_version(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    version = _version_number(p)
    lv = await svc.layers.get(target.name, version) if target.local else None
    if lv is None:
        raise ResourceNotFoundException(NOT_FOUND)
    return json_response(layer_version_shape(svc, lv))


@operation("GetLayerVersionByArn", on_invalid=_by_arn_invalid)
async def get_layer_version_by_arn(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    arn = p["Arn"]
    m = _VERSION_ARN.fullmatch(arn)
    if m is None:
        if _AWS_LAYER.fullmatch(arn):
            raise ResourceNotFoundException(NOT_FOUND)
        raise _arn_error(arn)
    version = int(m["version"])
    if version < 1:
        raise InvalidParameterValueException("Layer Version Cannot be less than 1")
    lv = None
    if m["region"] == svc.arns.region and m["account"] == svc.arns.account_id:
        lv = await svc.layers.get(m["name"], version)
    if lv is None:
        raise ResourceNotFoundException(NOT_FOUND)
    return json_response(layer_version_shape(svc, lv))


@operation("ListLayerVersions")
async def list_layer_versions(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    limit = page_size(p.get("MaxItems"))
    rows: list[LayerVersion] = []
    if target.local:
        rows = await svc.layers.list_versions(
            target.name, runtime=p.get("CompatibleRuntime"), architecture=p.get("CompatibleArchitecture"),
            before=marker_int(p.get("Marker")), limit=limit + 1,
        )
    page = rows[:limit]
    out: dict[str, Any] = {"LayerVersions": [_list_item(svc, lv) for lv in page]}
    if len(rows) > limit:
        out["NextMarker"] = encode_marker(str(page[-1].version))
    return json_response(out)


@operation("ListLayers")
async def list_layers(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    limit = page_size(p.get("MaxItems"))
    rows = await svc.layers.list_layers(
        runtime=p.get("CompatibleRuntime"), architecture=p.get("CompatibleArchitecture"),
        after=decode_marker(p.get("Marker")), limit=limit + 1,
    )
    page = rows[:limit]
    out: dict[str, Any] = {
        "Layers": [
            {"LayerName": lv.layer_name, "LayerArn": layer_arn(svc, lv.layer_name),
             "LatestMatchingVersion": _list_item(svc, lv)}
            for lv in page
        ]
    }
    if len(rows) > limit:
        out["NextMarker"] = encode_marker(page[-1].layer_name)
    return json_response(out)


@operation("DeleteLayerVersion")
async def delete_layer_version(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    version = _version_number(p)
    if target.local:
        unused = await svc.layers.delete(target.name, version)
        if unused is not None:
            await svc.code.delete(unused)
    return empty_response(204)


# -- permissions ---------------------------------------------------------------------------------------------


def _missing_version(target: _Target, version: int) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Layer version {target.arn}:{version} does not exist.")


def _principal(principal: str) -> Any:
    if principal == "*":
        return "*"
    if principal.isdigit():
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    return {"AWS": principal}


def _statement(svc: Services, lv: LayerVersion, st: PolicyStatement) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Sid": st.sid,
        "Effect": "Allow",
        "Principal": _principal(st.principal),
        "Action": st.action,
        "Resource": layer_version_arn(svc, lv.layer_name, lv.version),
    }
    if st.organization_id:
        out["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": st.organization_id}}
    return out


def _json_text(doc: Any) -> str:
    return msgspec.json.encode(doc).decode()


@operation("AddLayerVersionPermission")
async def add_layer_version_permission(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    version = _version_number(p)
    statement = PolicyStatement(
        sid=p["StatementId"], action=p["Action"], principal=p["Principal"], organization_id=p.get("OrganizationId"),
    )
    lv = None
    if target.local:
        lv = await svc.layers.add_permission(target.name, version, statement, p.get("RevisionId"))
    if lv is None:
        raise _missing_version(target, version)
    return json_response(
        {"Statement": _json_text(_statement(svc, lv, statement)), "RevisionId": lv.policy_revision_id}, status=201
    )


@operation("GetLayerVersionPolicy")
async def get_layer_version_policy(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    version = _version_number(p)
    lv = await svc.layers.get(target.name, version) if target.local else None
    if lv is None:
        raise _missing_version(target, version)
    if not lv.policy:
        raise ResourceNotFoundException(NO_POLICY)
    policy = {
        "Version": "2012-10-17",
        "Id": "default",
        "Statement": [_statement(svc, lv, st) for st in lv.policy],
    }
    return json_response({"Policy": _json_text(policy), "RevisionId": lv.policy_revision_id})


@operation("RemoveLayerVersionPermission")
async def remove_layer_version_permission(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    target = _target(svc, p["LayerName"])
    version = _version_number(p)
    lv = None
    if target.local:
        lv = await svc.layers.remove_permission(target.name, version, p["StatementId"], p.get("RevisionId"))
    if lv is None:
        raise _missing_version(target, version)
    return empty_response(204)


# -- a function's Layers ---------------------------------------------------------------------------------------


def _layers_error_text(arns: list[Any]) -> str:
    return (
        f"Value '[{', '.join(map(str, arns))}]' at 'layers' failed to satisfy constraint: Member must satisfy "
        "constraint: [Member must have length less than or equal to 2048, Member must have length greater than "
        f"or equal to 1, Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}, "
        "Member must not be null]"
    )


def _valid_layer_arn(arn: Any) -> bool:
    return (
        isinstance(arn, str) and 1 <= len(arn) <= 2048
        and (_VERSION_ARN.fullmatch(arn) is not None or _AWS_LAYER.fullmatch(arn) is not None)
    )


def rewrite_layers_errors(params: dict[str, Any], errors: list[str]) -> list[str]:
    """For the function APIs' `on_invalid` hooks: botocore's model checks `Layers` against a pattern and length
    (140) that differ from AWS's. Replace the model's `layers` error with AWS's wording, or drop it when every
    ARN is valid for AWS (then `resolve_function_layers` decides)."""
    out = []
    for error in errors:
        if " at 'layers' " in error:
            arns = params.get("Layers") or []
            if all(_valid_layer_arn(a) for a in arns):
                continue
            error = _layers_error_text(arns)
        out.append(error)
    return out


def check_layers_errors(params: dict[str, Any], errors: list[str]) -> None:
    """Call from a function API's `on_invalid` hook (after its own checks): when the model rejected `Layers`,
    raise what AWS would instead, i.e. the ValidationException with AWS's wording for the layers (and the other
    errors as they are), or, when AWS's rules accept every ARN (an AWS-published `awslayer`, or an ARN of 141 to
    2048 characters), `Layer version <arn> does not exist.` for the first ARN the model refused. Returns when
    `Layers` had no error."""
    if not any(" at 'layers' " in e for e in errors):
        return
    fixed = rewrite_layers_errors(params, errors)
    if fixed:
        raise ValidationException(validation_message(fixed))
    for arn in params.get("Layers") or []:
        if _VERSION_ARN.fullmatch(arn) is None or len(arn) > 140:
            raise InvalidParameterValueException(f"Layer version {arn} does not exist.")


async def resolve_function_layers(svc: Services, arns: list[str]) -> list[LayerRef]:
    """Check a function's `Layers` as AWS does and return them, in order, with code sizes and digests.

    Raises, in this order: more than 5 -> IPVE `Cannot reference more than 5 layers.`; an ARN AWS's pattern
    rejects -> ValidationException at 'layers'; a layer in another region -> IPVE `Layers are not in the same
    region as the function. Layers are expected to be in region <region>.`; two versions of one layer (or one
    version twice) -> IPVE `Two different versions of the same layer are not allowed to be referenced in the
    same function. <arn1> and <arn2> are versions of the same layer.`; a version that does not exist (including
    other accounts' and AWS-published layers) -> IPVE `Layer version <arn> does not exist.`
    """
    if len(arns) > MAX_FUNCTION_LAYERS:
        raise InvalidParameterValueException(f"Cannot reference more than {MAX_FUNCTION_LAYERS} layers.")
    if not all(_valid_layer_arn(a) for a in arns):
        raise ValidationException(validation_message([_layers_error_text(arns)]))
    matches = [_VERSION_ARN.fullmatch(a) for a in arns]
    for m in matches:
        if m is not None and m["region"] != svc.arns.region:
            raise InvalidParameterValueException(
                "Layers are not in the same region as the function. "
                f"Layers are expected to be in region {svc.arns.region}."
            )
    seen: dict[tuple[str, str], str] = {}
    for arn, m in zip(arns, matches):
        if m is None:
            continue
        key = (m["account"], m["name"])
        if key in seen:
            raise InvalidParameterValueException(
                "Two different versions of the same layer are not allowed to be referenced in the same function. "
                f"{seen[key]} and {arn} are versions of the same layer."
            )
        seen[key] = arn
    refs = []
    for arn, m in zip(arns, matches):
        lv = None
        if m is not None and m["account"] == svc.arns.account_id:
            lv = await svc.layers.get(m["name"], int(m["version"]))
        if lv is None:
            raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
        refs.append(LayerRef(arn=arn, code_size=lv.code_size, sha256=lv.code_sha256))
    return refs
