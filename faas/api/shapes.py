"""Response shapes of the function APIs, keyed and defaulted as real AWS answers."""

from __future__ import annotations

from typing import Any

from faas.arn import Arns
from faas.store.records import FunctionVersion

_PENDING_REASON = "The function is being created."


def function_configuration(
    fv: FunctionVersion, arns: Arns, *, arn_qualifier: str | None = None, listing: bool = False,
    phase: str | None = None,
) -> dict[str, Any]:
    """FunctionConfiguration. `listing` drops the keys that list entries lack (State, LastUpdateStatus,
    RuntimeVersionConfig); `phase` is "create" or "update" for the answers of those calls."""
    cfg = fv.config
    out: dict[str, Any] = {
        "FunctionName": fv.function_name,
        "FunctionArn": arns.function(fv.function_name, arn_qualifier),
        "Runtime": cfg.runtime,
        "Role": cfg.role,
        "Handler": cfg.handler,
        "CodeSize": fv.code_size,
        "Description": cfg.description,
        "Timeout": cfg.timeout,
        "MemorySize": cfg.memory_size,
        "LastModified": fv.last_modified,
        "CodeSha256": fv.code_sha256_b64,
        "Version": fv.version,
        "TracingConfig": {"Mode": cfg.tracing_mode},
        "RevisionId": fv.revision_id,
        "PackageType": cfg.package_type,
        "Architectures": list(cfg.architectures),
        "EphemeralStorage": {"Size": cfg.ephemeral_storage},
        "SnapStart": {"ApplyOn": cfg.snap_start, "OptimizationStatus": "Off"},
        "LoggingConfig": _logging(fv),
    }
    if cfg.environment is not None:
        out["Environment"] = {"Variables": dict(cfg.environment)}
    if cfg.dead_letter_target:
        out["DeadLetterConfig"] = {"TargetArn": cfg.dead_letter_target}
    if cfg.kms_key_arn:
        out["KMSKeyArn"] = cfg.kms_key_arn
    if cfg.layers:
        out["Layers"] = [{"Arn": r.arn, "CodeSize": r.code_size} for r in cfg.layers]
    if listing:
        return out
    if cfg.runtime:
        out["RuntimeVersionConfig"] = {"RuntimeVersionArn": arns.runtime_version(cfg.runtime)}
    if phase == "create":
        out.update(State="Pending", StateReason=_PENDING_REASON, StateReasonCode="Creating")
        return out
    out["State"] = fv.state
    if fv.state_reason:
        out["StateReason"] = fv.state_reason
        out["StateReasonCode"] = fv.state_reason_code
    if phase == "update":
        out.update(
            LastUpdateStatus="InProgress", LastUpdateStatusReason=_PENDING_REASON,
            LastUpdateStatusReasonCode="Creating",
        )
    else:
        out["LastUpdateStatus"] = fv.last_update
    return out


def _logging(fv: FunctionVersion) -> dict[str, Any]:
    settings = fv.config.logging
    out: dict[str, Any] = {"LogFormat": settings.log_format}
    if settings.application_log_level:
        out["ApplicationLogLevel"] = settings.application_log_level
    if settings.system_log_level:
        out["SystemLogLevel"] = settings.system_log_level
    out["LogGroup"] = settings.log_group or f"/aws/lambda/{fv.function_name}"
    return out
