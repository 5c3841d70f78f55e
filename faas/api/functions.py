"""Function CRUD: CreateFunction, GetFunction(Configuration), ListFunctions, UpdateFunctionCode,
UpdateFunctionConfiguration, DeleteFunction and GetAccountSettings."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from faas.api.layers import check_layers_errors, resolve_function_layers
from faas.api.model import empty_response, json_response, operation
from faas.api.pagination import decode_marker, encode_marker, page_size
from faas.api.shapes import function_configuration
from faas.arn import LATEST, FunctionRef
from faas.errors import (
    REVISION_MISMATCH,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
    function_not_found,
    validation_message,
)
from faas.runtime.spawner import RuntimeUnavailable, reserved_keys
from faas.services import SERVICES, Services
from faas.store.code import CodePackage
from faas.store.records import FunctionConfig, FunctionVersion, LoggingSettings

# Runtimes Lambda accepts for new functions, in the order AWS lists them in its error message.
SUPPORTED_RUNTIMES = (
    "nodejs20.x", "python3.14", "provided.al2023", "python3.12", "python3.13", "nodejs24.x", "nodejs22.x",
    "java25", "python3.10", "python3.11", "java21", "ruby3.3", "ruby3.4", "ruby3.2", "python3.8", "python3.9",
    "java17", "nodejs16.x", "dotnet10", "dotnet8", "java11", "dotnet6", "nodejs18.x", "provided.al2",
    "java8.al2",
)
MAX_TIMEOUT = 900
MAX_MEMORY = 10240
MAX_TAGS = 50
ENVIRONMENT_BYTES = 4096  # measured on the compact JSON of Variables, as AWS does


def _config_invalid(params: dict[str, Any], errors: list[str]) -> None:
    """Where AWS reports something else before (or instead of) a model violation: an environment over 4 KB
    is measured first, and a runtime outside the enum gets InvalidParameterValueException in its own wording."""
    environment = params.get("Environment")
    if isinstance(environment, dict) and isinstance(environment.get("Variables"), dict):
        _check_environment_size(environment["Variables"])
    if any(" at 'runtime' " in e for e in errors):
        raise InvalidParameterValueException(
            f"Value {params.get('Runtime')} at 'runtime' failed to satisfy constraint: Member must satisfy enum "
            f"value set: [{', '.join(SUPPORTED_RUNTIMES)}] or be a valid ARN"
        )
    check_layers_errors(params, errors)


def _check_runtime(runtime: str | None) -> None:
    if runtime is None or runtime in SUPPORTED_RUNTIMES:
        return
    raise InvalidParameterValueException(
        f"The runtime parameter of {runtime} is no longer supported for creating or updating AWS Lambda "
        "functions. We recommend you use a supported runtime while creating or updating functions."
    )


def _check_ranges(params: dict[str, Any]) -> None:
    """Service limits tighter than the model's: Timeout up to 900 s, MemorySize up to 10240 MB."""
    errors = []
    if params.get("Timeout") is not None and params["Timeout"] > MAX_TIMEOUT:
        errors.append(
            f"Value '{params['Timeout']}' at 'timeout' failed to satisfy constraint: "
            f"Member must have value less than or equal to {MAX_TIMEOUT}"
        )
    if params.get("MemorySize") is not None and params["MemorySize"] > MAX_MEMORY:
        errors.append(
            f"Value '{params['MemorySize']}' at 'memorySize' failed to satisfy constraint: "
            f"Member must have value less than or equal to {MAX_MEMORY}"
        )
    if errors:
        raise ValidationException(validation_message(errors))


def _check_environment_size(variables: dict[str, Any]) -> None:
    measured = msgspec.json.encode(variables)
    if len(measured) > ENVIRONMENT_BYTES:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables you "
            f"have provided exceeded the 4KB limit. String measured: {measured.decode()}"
        )


def _check_environment(environment: dict[str, Any] | None) -> dict[str, str] | None:
    if environment is None:
        return None
    variables = environment.get("Variables") or {}
    _check_environment_size(variables)
    reserved = reserved_keys(variables)
    if reserved:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables you "
            "have provided contains reserved keys that are currently not supported for modification. "
            f"Reserved keys used in this request: {', '.join(reserved)}"
        )
    return dict(variables)


def _logging_settings(given: dict[str, Any] | None, current: LoggingSettings) -> LoggingSettings:
    if given is None:
        return current
    fmt = given.get("LogFormat", current.log_format)
    app_level = given.get("ApplicationLogLevel", current.application_log_level)
    sys_level = given.get("SystemLogLevel", current.system_log_level)
    if fmt == "JSON":
        app_level, sys_level = app_level or "INFO", sys_level or "INFO"
    else:
        app_level = sys_level = None
    return LoggingSettings(
        log_format=fmt, log_group=given.get("LogGroup", current.log_group),
        application_log_level=app_level, system_log_level=sys_level,
    )


async def _store_code(svc: Services, code: dict[str, Any]) -> CodePackage:
    if "ZipFile" in code and code["ZipFile"] is not None:
        return await svc.code.put(code["ZipFile"])
    if code.get("S3Bucket"):
        raise InvalidParameterValueException(
            "Error occurred while GetObject. S3 Error Code: NoSuchBucket. "
            "S3 Error Message: The specified bucket does not exist"
        )
    if code.get("ImageUri"):
        raise InvalidParameterValueException("Container image functions are not supported by this server.")
    raise InvalidParameterValueException("Please provide a source for function code.")


async def _activate(svc: Services, name: str, runtime: str | None) -> tuple[str, str | None, str | None]:
    """The state a new function settles in: Active, or Failed when no interpreter serves its runtime."""
    try:
        await svc.interpreters.resolve(runtime or "")
    except RuntimeUnavailable as exc:
        return "Failed", str(exc), "InvalidRuntime"
    return "Active", None, None


@operation("CreateFunction", on_invalid=_config_invalid)
async def create_function(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = svc.arns.parse(p["FunctionName"], for_create=True).name
    package_type = p.get("PackageType") or "Zip"
    if package_type == "Zip" and (not p.get("Runtime") or not p.get("Handler")):
        raise InvalidParameterValueException(
            "Runtime and Handler are mandatory parameters for functions created with deployment packages."
        )
    _check_runtime(p.get("Runtime"))
    _check_ranges(p)
    environment = _check_environment(p.get("Environment"))
    tags = p.get("Tags") or {}
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValueException("Number of tags exceeds resource tag limit.")
    layers = await resolve_function_layers(svc, p.get("Layers") or [])
    config = FunctionConfig(
        role=p["Role"],
        runtime=p.get("Runtime"),
        handler=p.get("Handler"),
        description=p.get("Description") or "",
        timeout=p.get("Timeout") or 3,
        memory_size=p.get("MemorySize") or 128,
        environment=environment,
        ephemeral_storage=(p.get("EphemeralStorage") or {}).get("Size", 512),
        architectures=p.get("Architectures") or ["x86_64"],
        package_type=package_type,
        tracing_mode=(p.get("TracingConfig") or {}).get("Mode") or "PassThrough",
        logging=_logging_settings(p.get("LoggingConfig"), LoggingSettings()),
        dead_letter_target=(p.get("DeadLetterConfig") or {}).get("TargetArn"),
        kms_key_arn=p.get("KMSKeyArn"),
        snap_start=(p.get("SnapStart") or {}).get("ApplyOn") or "None",
        layers=layers,
    )
    if await svc.registry.get_version(name) is not None:
        raise ResourceConflictException(f"Function already exist: {name}")
    pkg = await _store_code(svc, p.get("Code") or {})
    state, reason, reason_code = await _activate(svc, name, config.runtime)
    latest = await svc.registry.create_function(name, config, pkg, tags, state, reason, reason_code)
    shown = latest
    if p.get("Publish"):
        shown = await svc.registry.publish_version(name, description=None, code_sha256_b64=None, revision_id=None)
        assert shown is not None
    # Published or not, the create answer carries the unqualified ARN (as AWS's does).
    return json_response(function_configuration(shown, svc.arns, phase="create"), status=201)


async def _get_version(svc: Services, p: dict[str, Any]) -> tuple[FunctionRef, FunctionVersion]:
    ref = svc.arns.parse(p["FunctionName"], p.get("Qualifier"))
    try:
        fv = await svc.router.resolve(ref.name, ref.qualifier)
    except ResourceNotFoundException:
        raise function_not_found(svc.arns.function(ref.name, ref.qualifier)) from None
    return ref, fv


@operation("GetFunction")
async def get_function(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref, fv = await _get_version(svc, p)
    record = await svc.registry.get_function(ref.name)
    out: dict[str, Any] = {
        "Configuration": function_configuration(fv, svc.arns, arn_qualifier=ref.qualifier),
        "Code": {"RepositoryType": "S3", "Location": f"{svc.config.base_url}/_faas/code/{fv.code_sha256}.zip"},
    }
    if record and record.tags:
        out["Tags"] = record.tags
    if record and record.reserved_concurrency is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions": record.reserved_concurrency}
    return json_response(out)


@operation("GetFunctionConfiguration")
async def get_function_configuration(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    ref, fv = await _get_version(svc, p)
    return json_response(function_configuration(fv, svc.arns, arn_qualifier=ref.qualifier))


@operation("ListFunctions")
async def list_functions(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    if p.get("FunctionVersion") not in (None, "ALL"):
        raise ValidationException(validation_message([
            f"Value '{p['FunctionVersion']}' at 'functionVersion' failed to satisfy constraint: "
            "Member must satisfy enum value set: [ALL]"
        ]))
    limit = page_size(p.get("MaxItems"))
    position = decode_marker(p.get("Marker"))
    if p.get("FunctionVersion") == "ALL":
        after = None
        if position is not None:
            name, _, order = position.rpartition("\x00")
            after = (name, int(order)) if order.lstrip("-").isdigit() else None
        rows = await svc.registry.list_all_versions(after, limit + 1)
        entries = [function_configuration(v, svc.arns, arn_qualifier=v.version, listing=True) for v in rows[:limit]]
        next_marker = (
            encode_marker(f"{rows[limit - 1].function_name}\x00{_order(rows[limit - 1].version)}")
            if len(rows) > limit else None
        )
    else:
        rows = await svc.registry.list_latest(position, limit + 1)
        entries = [function_configuration(fv, svc.arns, listing=True) for fv in rows[:limit]]
        next_marker = encode_marker(rows[limit - 1].function_name) if len(rows) > limit else None
    out: dict[str, Any] = {"Functions": entries}
    if next_marker:
        out["NextMarker"] = next_marker
    return json_response(out)


def _order(version: str) -> int:
    return -1 if version == LATEST else int(version)


def _check_revision(given: str | None, fv: FunctionVersion) -> None:
    if given is not None and given != fv.revision_id:
        raise PreconditionFailedException(REVISION_MISMATCH)


def _check_not_in_progress(svc: Services, fv: FunctionVersion) -> None:
    if fv.last_update == "InProgress":
        raise ResourceConflictException(
            "The operation cannot be performed at this time. An update is in progress for resource: "
            f"{svc.arns.function(fv.function_name)}"
        )


def _unqualified(svc: Services, p: dict[str, Any]) -> str:
    ref = svc.arns.parse(p["FunctionName"])
    return ref.name


@operation("UpdateFunctionCode")
async def update_function_code(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _unqualified(svc, p)
    current = await svc.registry.get_version(name)
    if current is None:
        raise function_not_found(svc.arns.function(name))
    if p.get("ImageUri"):
        raise InvalidParameterValueException("Please don't provide ImageUri when updating a function with packageType Zip.")
    _check_revision(p.get("RevisionId"), current)
    _check_not_in_progress(svc, current)
    pkg = await _store_code(svc, p)
    architectures = p.get("Architectures")
    if p.get("DryRun"):
        preview = msgspec.structs.replace(current, code_sha256=pkg.sha256, code_size=pkg.size)
        return json_response(function_configuration(preview, svc.arns))

    def change(fv: FunctionVersion) -> FunctionVersion:
        _check_revision(p.get("RevisionId"), fv)
        config = fv.config
        if architectures:
            config = msgspec.structs.replace(config, architectures=list(architectures))
        return msgspec.structs.replace(fv, config=config, code_sha256=pkg.sha256, code_size=pkg.size)

    updated = await svc.registry.update_latest(name, change, pkg)
    if updated is None:
        raise function_not_found(svc.arns.function(name))
    before, after = updated
    await _after_update(svc, name, before)
    if p.get("Publish"):
        published = await svc.registry.publish_version(name, description=None, code_sha256_b64=None, revision_id=None)
        assert published is not None
        return json_response(function_configuration(published, svc.arns))
    return json_response(function_configuration(after, svc.arns, phase="update"))


async def _after_update(svc: Services, name: str, before: FunctionVersion) -> None:
    """Instances built from the old configuration or code stop; unused code is deleted."""
    await svc.pools.retire(name, LATEST)
    for digest in await svc.registry.unused_packages_after(before.code_sha256):
        await svc.code.delete(digest)


@operation("UpdateFunctionConfiguration", on_invalid=_config_invalid)
async def update_function_configuration(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = _unqualified(svc, p)
    current = await svc.registry.get_version(name)
    if current is None:
        raise function_not_found(svc.arns.function(name))
    _check_runtime(p.get("Runtime"))
    _check_ranges(p)
    environment = _check_environment(p.get("Environment"))
    layers = await resolve_function_layers(svc, p.get("Layers") or []) if "Layers" in p else None
    _check_revision(p.get("RevisionId"), current)
    _check_not_in_progress(svc, current)

    def change(fv: FunctionVersion) -> FunctionVersion:
        _check_revision(p.get("RevisionId"), fv)
        c = fv.config
        updates: dict[str, Any] = {}
        for key, attr in (("Role", "role"), ("Runtime", "runtime"), ("Handler", "handler"),
                          ("Description", "description"), ("Timeout", "timeout"), ("MemorySize", "memory_size"),
                          ("KMSKeyArn", "kms_key_arn")):
            if p.get(key) is not None:
                updates[attr] = p[key]
        if environment is not None:
            updates["environment"] = environment
        if p.get("EphemeralStorage"):
            updates["ephemeral_storage"] = p["EphemeralStorage"]["Size"]
        if p.get("TracingConfig") and p["TracingConfig"].get("Mode"):
            updates["tracing_mode"] = p["TracingConfig"]["Mode"]
        if "DeadLetterConfig" in p:
            updates["dead_letter_target"] = (p["DeadLetterConfig"] or {}).get("TargetArn") or None
        if p.get("SnapStart"):
            updates["snap_start"] = p["SnapStart"].get("ApplyOn") or "None"
        if layers is not None:
            updates["layers"] = layers
        updates["logging"] = _logging_settings(p.get("LoggingConfig"), c.logging)
        return msgspec.structs.replace(fv, config=msgspec.structs.replace(c, **updates))

    updated = await svc.registry.update_latest(name, change)
    if updated is None:
        raise function_not_found(svc.arns.function(name))
    before, after = updated
    if after.config.runtime != before.config.runtime:
        state, reason, code = await _activate(svc, name, after.config.runtime)
        if state != after.state:
            await svc.registry.set_state(name, LATEST, state=state, reason=reason, reason_code=code)
            after = msgspec.structs.replace(after, state=state, state_reason=reason, state_reason_code=code)
    await _after_update(svc, name, before)
    return json_response(function_configuration(after, svc.arns, phase="update"))


@operation("DeleteFunction")
async def delete_function(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    qualifier = p.get("Qualifier")
    ref = svc.arns.parse(p["FunctionName"], qualifier)
    if ref.qualifier == LATEST:
        raise InvalidParameterValueException("$LATEST version cannot be deleted without deleting the function.")
    if ref.qualifier is not None:
        if await svc.registry.get_version(ref.name) is None:
            raise function_not_found(svc.arns.function(ref.name))
        if not ref.qualifier.isdigit():
            raise InvalidParameterValueException("Deletion of aliases is not currently supported.")
        unused = await svc.registry.delete_version(ref.name, ref.qualifier)
        await svc.pools.retire(ref.name, ref.qualifier)
        for digest in unused or ():
            await svc.code.delete(digest)
        return empty_response(204)  # a version that does not exist is a no-op, as AWS
    unused = await svc.registry.delete_function(ref.name)
    if unused is None:
        raise function_not_found(svc.arns.function(ref.name))
    await svc.pools.retire(ref.name)
    svc.metrics.forget(ref.name)
    for digest in unused:
        await svc.code.delete(digest)
    return empty_response(204)


@operation("GetAccountSettings")
async def get_account_settings(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    count, total = await svc.registry.usage()
    account, limits = svc.config.account, svc.config.limits
    reserved = await svc.registry.reserved_total()
    return json_response({
        "AccountLimit": {
            "TotalCodeSize": limits.total_code_size,
            "CodeSizeUnzipped": limits.code_size_unzipped,
            "CodeSizeZipped": limits.code_size_zipped,
            "ConcurrentExecutions": account.concurrent_executions,
            "UnreservedConcurrentExecutions": account.concurrent_executions - reserved,
        },
        "AccountUsage": {"TotalCodeSize": total + await svc.layers.total_code_size(), "FunctionCount": count},
    })
