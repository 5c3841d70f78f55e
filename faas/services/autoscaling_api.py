"""The Application Auto Scaling API (`AnyScaleFrontendService.*` over the JSON protocol), for Lambda provisioned
concurrency: scalable targets, target tracking policies, scheduled actions and scaling activities."""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from typing import Any

from aiohttp import web

from faas.api.json_protocol import JsonServiceError, json_operation
from faas.services import SERVICES, Services
from faas.services.autoscaling import DIMENSION, METRIC, NAMESPACE, Schedule
from faas.store.autoscaling import (
    Alarm,
    ScalableTarget,
    ScalingActivity,
    ScalingPolicy,
    ScheduledAction,
    TargetKey,
    TargetTracking,
)

SERVICE = "application-autoscaling"
MAX_POLICIES = 50  # per scalable target, AWS's quota
MAX_SCHEDULED_ACTIONS = 200
_PAGE = 50
_RESOURCE = re.compile(r"function:([a-zA-Z0-9_-]{1,64}):([a-zA-Z0-9_-]{1,128})")


def _invalid(message: str) -> JsonServiceError:
    return JsonServiceError("ValidationException", message)


def _not_found(message: str) -> JsonServiceError:
    return JsonServiceError("ObjectNotFoundException", message)


def _check_namespace(namespace: str) -> None:
    if namespace != NAMESPACE:
        raise _invalid(f"Service namespace '{namespace}' is not supported by this server: it scales Lambda "
                       f"provisioned concurrency only (ServiceNamespace '{NAMESPACE}', ScalableDimension "
                       f"'{DIMENSION}').")


def _check_dimension(dimension: str | None) -> None:
    if dimension is not None and dimension != DIMENSION:
        raise _invalid("Unsupported service namespace, resource type or scalable dimension")


def _target_key(p: dict[str, Any]) -> tuple[TargetKey, str, str]:
    """The target a request names, and its function name and qualifier."""
    _check_namespace(p["ServiceNamespace"])
    _check_dimension(p["ScalableDimension"])
    resource_id = p["ResourceId"]
    m = _RESOURCE.fullmatch(resource_id)
    if m is None:
        if resource_id.startswith("function:") and resource_id.endswith(":$LATEST"):
            raise _invalid(f"Invalid ResourceId '{resource_id}': provisioned concurrency needs a published "
                           "version or an alias, not $LATEST.")
        raise _invalid(f"Invalid ResourceId '{resource_id}': a Lambda scalable target is identified as "
                       "function:<function-name>:<alias-or-version>.")
    return TargetKey(NAMESPACE, resource_id, DIMENSION), m.group(1), m.group(2)


def _describe_filters(p: dict[str, Any]) -> None:
    _check_namespace(p["ServiceNamespace"])
    _check_dimension(p.get("ScalableDimension"))


def _describe(key: TargetKey) -> str:
    return f"service namespace: {key.namespace}, resource ID: {key.resource_id}, scalable dimension: {key.dimension}"


async def _registered(svc: Services, key: TargetKey) -> ScalableTarget:
    target = await svc.autoscaler.store.target(key)
    if target is None:
        raise _not_found(f"No scalable target registered for {_describe(key)}")
    return target


def _page(p: dict[str, Any]) -> tuple[int, int]:
    """(offset, limit) from NextToken and MaxResults."""
    limit = p.get("MaxResults")
    if limit is not None and not 1 <= limit <= _PAGE:
        rule = f"less than or equal to {_PAGE}" if limit > _PAGE else "greater than or equal to 1"
        raise _invalid(f"1 validation error detected: Value '{limit}' at 'maxResults' failed to satisfy "
                       f"constraint: Member must have value {rule}")
    token = p.get("NextToken")
    if not token:
        return 0, limit or _PAGE
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode()), limit or _PAGE
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise JsonServiceError("InvalidNextTokenException", "Invalid token") from None


def _paged(name: str, items: list[Any], offset: int, limit: int, shape: Any) -> dict[str, Any]:
    out: dict[str, Any] = {name: [shape(i) for i in items[offset:offset + limit]]}
    if len(items) > offset + limit:
        out["NextToken"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
    return out


def _autoscaling_arn(svc: Services, kind: str, key: TargetKey, name_kind: str, name: str) -> str:
    return (f"arn:aws:autoscaling:{svc.arns.region}:{svc.arns.account_id}:{kind}:{uuid.uuid4()}:resource/"
            f"{key.namespace}/{key.resource_id}:{name_kind}/{name}")


# -- scalable targets -----------------------------------------------------------------------------------


def _target_shape(t: ScalableTarget) -> dict[str, Any]:
    return {
        "ServiceNamespace": t.key.namespace,
        "ResourceId": t.key.resource_id,
        "ScalableDimension": t.key.dimension,
        "MinCapacity": t.min_capacity,
        "MaxCapacity": t.max_capacity,
        "RoleARN": t.role_arn,
        "CreationTime": t.created,
        "SuspendedState": {
            "DynamicScalingInSuspended": t.suspend_in,
            "DynamicScalingOutSuspended": t.suspend_out,
            "ScheduledScalingSuspended": t.suspend_scheduled,
        },
        "ScalableTargetARN": t.arn,
    }


def _merged_target(svc: Services, key: TargetKey, name: str, qualifier: str, existing: ScalableTarget | None,
                   p: dict[str, Any], now: float) -> ScalableTarget:
    """The target a RegisterScalableTarget call leaves: what it gives over what was registered before."""
    low, high = p.get("MinCapacity"), p.get("MaxCapacity")
    if existing is None:
        if low is None or high is None:
            raise _invalid("MinCapacity and MaxCapacity are required to register a new scalable target.")
        role = (f"arn:aws:iam::{svc.arns.account_id}:role/aws-service-role/lambda.application-autoscaling."
                "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_LambdaConcurrency")
        existing = ScalableTarget(
            key, name, qualifier, f"arn:aws:application-autoscaling:{svc.arns.region}:{svc.arns.account_id}:"
            f"scalable-target/{uuid.uuid4().hex}{uuid.uuid4().hex[:4]}", low, high, role, now, tags=p.get("Tags") or {},
        )
    low = existing.min_capacity if low is None else low
    high = existing.max_capacity if high is None else high
    if low < 0 or high < 0:
        raise _invalid("Minimum and maximum capacity cannot be negative.")
    if low > high:
        raise _invalid(f"Minimum capacity ({low}) cannot be greater than maximum capacity ({high}).")
    suspended = p.get("SuspendedState") or {}

    def flag(member: str, current: bool) -> bool:
        return bool(suspended[member]) if suspended.get(member) is not None else current

    return ScalableTarget(
        key, name, qualifier, existing.arn, low, high, p.get("RoleARN") or existing.role_arn, existing.created,
        suspend_in=flag("DynamicScalingInSuspended", existing.suspend_in),
        suspend_out=flag("DynamicScalingOutSuspended", existing.suspend_out),
        suspend_scheduled=flag("ScheduledScalingSuspended", existing.suspend_scheduled),
        tags=existing.tags,
    )


@json_operation(SERVICE, "RegisterScalableTarget")
async def register_scalable_target(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    """Registers or updates a target; the capacity is brought inside the new bounds at once, as AWS does."""
    svc = request.app[SERVICES]
    key, name, qualifier = _target_key(p)
    if qualifier.isdigit():
        exists = await svc.registry.get_version(name, qualifier) is not None
    else:
        exists = await svc.registry.aliases.get(name, qualifier) is not None
    if not exists:
        raise _invalid(f"Lambda function {svc.arns.function(name, qualifier)} does not exist: register a published "
                       "version or an alias of an existing function.")
    async with svc.autoscaler.updating():
        now = time.time()
        target = _merged_target(svc, key, name, qualifier, await svc.autoscaler.store.target(key), p, now)
        await svc.autoscaler.store.put_target(target)
        svc.autoscaler.watch(target, now)
        await svc.autoscaler.enforce_bounds(target, now)
    return {"ScalableTargetARN": target.arn}


@json_operation(SERVICE, "DescribeScalableTargets")
async def describe_scalable_targets(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    _describe_filters(p)
    offset, limit = _page(p)
    targets = await svc.autoscaler.store.targets(p["ServiceNamespace"], p.get("ResourceIds"),
                                                 p.get("ScalableDimension"))
    return _paged("ScalableTargets", targets, offset, limit, _target_shape)


@json_operation(SERVICE, "DeregisterScalableTarget")
async def deregister_scalable_target(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    key, _, _ = _target_key(p)
    async with svc.autoscaler.updating():
        if not await svc.autoscaler.store.delete_target(key):
            raise _not_found(f"No scalable target found for {_describe(key)}")
        svc.autoscaler.forget(key)
    return {}


# -- scaling policies -----------------------------------------------------------------------------------


def _tracking(p: dict[str, Any]) -> TargetTracking:
    policy_type = p.get("PolicyType") or "StepScaling"
    if policy_type != "TargetTrackingScaling":
        raise _invalid(f"PolicyType {policy_type} is not supported by this server: use TargetTrackingScaling with "
                       "a TargetTrackingScalingPolicyConfiguration.")
    for other in ("StepScalingPolicyConfiguration", "PredictiveScalingPolicyConfiguration"):
        if p.get(other) is not None:
            raise _invalid(f"{other} cannot be given for a TargetTrackingScaling policy.")
    cfg = p.get("TargetTrackingScalingPolicyConfiguration")
    if cfg is None:
        raise _invalid("TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy.")
    label = _metric_label(cfg)
    value = cfg["TargetValue"]
    if not 0 < value <= 1:
        raise _invalid(f"TargetValue {float(value)} is out of range: {METRIC} is a fraction of the provisioned "
                       "concurrency in use, greater than 0 and at most 1 (for example 0.7).")
    for member in ("ScaleOutCooldown", "ScaleInCooldown"):
        if (cfg.get(member) or 0) < 0:
            raise _invalid(f"{member} cannot be negative.")
    return TargetTracking(float(value), METRIC, label, cfg.get("ScaleOutCooldown"), cfg.get("ScaleInCooldown"),
                          cfg.get("DisableScaleIn"))


def _metric_label(cfg: dict[str, Any]) -> str | None:
    """Checks the metric is Lambda's predefined one; returns its ResourceLabel, if any."""
    if cfg.get("CustomizedMetricSpecification") is not None:
        raise _invalid(f"CustomizedMetricSpecification is not supported by this server: use "
                       f"PredefinedMetricSpecification with PredefinedMetricType {METRIC}.")
    spec = cfg.get("PredefinedMetricSpecification")
    if spec is None:
        raise _invalid(f"PredefinedMetricSpecification (PredefinedMetricType {METRIC}) is required.")
    if spec["PredefinedMetricType"] != METRIC:
        raise _invalid(f"Unsupported metric type {spec['PredefinedMetricType']} for scalable dimension {DIMENSION}: "
                       f"use {METRIC}.")
    return spec.get("ResourceLabel")


def _tracking_shape(t: TargetTracking) -> dict[str, Any]:
    spec: dict[str, Any] = {"PredefinedMetricType": t.metric_type}
    if t.resource_label is not None:
        spec["ResourceLabel"] = t.resource_label
    out: dict[str, Any] = {"TargetValue": t.target_value, "PredefinedMetricSpecification": spec}
    for member, value in (("ScaleOutCooldown", t.scale_out_cooldown), ("ScaleInCooldown", t.scale_in_cooldown),
                          ("DisableScaleIn", t.disable_scale_in)):
        if value is not None:
            out[member] = value
    return out


def _alarms_shape(alarms: list[Alarm]) -> list[dict[str, str]]:
    return [{"AlarmName": a.name, "AlarmARN": a.arn} for a in alarms]


def _policy_shape(policy: ScalingPolicy) -> dict[str, Any]:
    return {
        "PolicyARN": policy.arn,
        "PolicyName": policy.name,
        "ServiceNamespace": policy.key.namespace,
        "ResourceId": policy.key.resource_id,
        "ScalableDimension": policy.key.dimension,
        "PolicyType": policy.policy_type,
        "TargetTrackingScalingPolicyConfiguration": _tracking_shape(policy.tracking),
        "Alarms": _alarms_shape(policy.alarms),
        "CreationTime": policy.created,
    }


@json_operation(SERVICE, "PutScalingPolicy")
async def put_scaling_policy(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    key, _, _ = _target_key(p)
    tracking = _tracking(p)
    store = svc.autoscaler.store
    async with svc.autoscaler.updating():
        await _registered(svc, key)
        name = p["PolicyName"]
        policies = await store.policies(key.namespace, key.resource_id, key.dimension)
        existing = next((x for x in policies if x.name == name), None)
        if existing is None and len(policies) >= MAX_POLICIES:
            raise JsonServiceError("LimitExceededException",
                                   f"A scalable target can have at most {MAX_POLICIES} scaling policies.")
        if existing is not None:
            policy = ScalingPolicy(key, name, existing.arn, "TargetTrackingScaling", tracking, existing.alarms,
                                   existing.created)
        else:
            alarms = []
            for kind in ("AlarmHigh", "AlarmLow"):
                alarm = f"TargetTracking-{key.resource_id}-{kind}-{uuid.uuid4()}"
                arn = f"arn:aws:cloudwatch:{svc.arns.region}:{svc.arns.account_id}:alarm:{alarm}"
                alarms.append(Alarm(alarm, arn))
            policy = ScalingPolicy(key, name, _autoscaling_arn(svc, "scalingPolicy", key, "policyName", name),
                                   "TargetTrackingScaling", tracking, alarms, time.time())
        await store.put_policy(policy)
    return {"PolicyARN": policy.arn, "Alarms": _alarms_shape(policy.alarms)}


@json_operation(SERVICE, "DescribeScalingPolicies")
async def describe_scaling_policies(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    _describe_filters(p)
    offset, limit = _page(p)
    policies = await svc.autoscaler.store.policies(p["ServiceNamespace"], p.get("ResourceId"),
                                                   p.get("ScalableDimension"), p.get("PolicyNames"))
    return _paged("ScalingPolicies", policies, offset, limit, _policy_shape)


@json_operation(SERVICE, "DeleteScalingPolicy")
async def delete_scaling_policy(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    key, _, _ = _target_key(p)
    async with svc.autoscaler.updating():
        if not await svc.autoscaler.store.delete_policy(key, p["PolicyName"]):
            raise _not_found(f"No scaling policy found for {_describe(key)}, policy name: {p['PolicyName']}")
    return {}


# -- scheduled actions ----------------------------------------------------------------------------------


def _action_shape(a: ScheduledAction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ScheduledActionName": a.name,
        "ScheduledActionARN": a.arn,
        "ServiceNamespace": a.key.namespace,
        "Schedule": a.schedule,
        "ResourceId": a.key.resource_id,
        "ScalableDimension": a.key.dimension,
    }
    if a.timezone is not None:
        out["Timezone"] = a.timezone
    if a.start_time is not None:
        out["StartTime"] = a.start_time
    if a.end_time is not None:
        out["EndTime"] = a.end_time
    action: dict[str, int] = {}
    if a.min_capacity is not None:
        action["MinCapacity"] = a.min_capacity
    if a.max_capacity is not None:
        action["MaxCapacity"] = a.max_capacity
    out["ScalableTargetAction"] = action
    out["CreationTime"] = a.created
    return out


@json_operation(SERVICE, "PutScheduledAction")
async def put_scheduled_action(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    key, _, _ = _target_key(p)
    store = svc.autoscaler.store
    async with svc.autoscaler.updating():
        await _registered(svc, key)
        now = time.time()
        name = p["ScheduledActionName"]
        actions = await store.scheduled_actions(key.namespace, key.resource_id, key.dimension)
        old = next((a for a in actions if a.name == name), None)
        if old is None and len(actions) >= MAX_SCHEDULED_ACTIONS:
            raise JsonServiceError("LimitExceededException",
                                   f"A scalable target can have at most {MAX_SCHEDULED_ACTIONS} scheduled actions.")
        # On an update, what the request leaves out stays as it was.
        schedule = p.get("Schedule") or (old.schedule if old else None)
        if schedule is None:
            raise _invalid("Schedule is required to create a scheduled action.")
        change = p.get("ScalableTargetAction") or {}
        action = ScheduledAction(
            key, name, old.arn if old else _autoscaling_arn(svc, "scheduledAction", key, "scheduledActionName", name),
            schedule, old.created if old else now,
            timezone=p.get("Timezone", old.timezone if old else None),
            start_time=p.get("StartTime", old.start_time if old else None),
            end_time=p.get("EndTime", old.end_time if old else None),
            min_capacity=change.get("MinCapacity", old.min_capacity if old else None),
            max_capacity=change.get("MaxCapacity", old.max_capacity if old else None),
            # A changed action runs from now on, never for occurrences before the change.
            last_run=now if old else None,
        )
        try:
            Schedule(action.schedule, action.timezone, action.start_time, action.end_time, action.created)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        if action.start_time is not None and action.end_time is not None and action.end_time < action.start_time:
            raise _invalid("EndTime cannot be earlier than StartTime.")
        low, high = action.min_capacity, action.max_capacity
        if (low is not None and low < 0) or (high is not None and high < 0):
            raise _invalid("Minimum and maximum capacity cannot be negative.")
        if low is not None and high is not None and low > high:
            raise _invalid(f"Minimum capacity ({low}) cannot be greater than maximum capacity ({high}).")
        await store.put_scheduled_action(action)
    return {}


@json_operation(SERVICE, "DescribeScheduledActions")
async def describe_scheduled_actions(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    _describe_filters(p)
    offset, limit = _page(p)
    actions = await svc.autoscaler.store.scheduled_actions(p["ServiceNamespace"], p.get("ResourceId"),
                                                           p.get("ScalableDimension"), p.get("ScheduledActionNames"))
    return _paged("ScheduledActions", actions, offset, limit, _action_shape)


@json_operation(SERVICE, "DeleteScheduledAction")
async def delete_scheduled_action(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    key, _, _ = _target_key(p)
    name = p["ScheduledActionName"]
    async with svc.autoscaler.updating():
        if not await svc.autoscaler.store.delete_scheduled_action(key, name):
            raise _not_found(f"No scheduled action found for {_describe(key)}, scheduled action name: {name}")
    return {}


# -- scaling activities ---------------------------------------------------------------------------------


def _activity_shape(a: ScalingActivity) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ActivityId": a.activity_id,
        "ServiceNamespace": a.key.namespace,
        "ResourceId": a.key.resource_id,
        "ScalableDimension": a.key.dimension,
        "Description": a.description,
        "Cause": a.cause,
        "StartTime": a.start_time,
        "StatusCode": a.status_code,
    }
    if a.end_time is not None:
        out["EndTime"] = a.end_time
    if a.status_message is not None:
        out["StatusMessage"] = a.status_message
    if a.not_scaled:
        reasons = []
        for r in a.not_scaled:
            reason: dict[str, Any] = {"Code": r.code}
            if r.max_capacity is not None:
                reason["MaxCapacity"] = r.max_capacity
            if r.min_capacity is not None:
                reason["MinCapacity"] = r.min_capacity
            reason["CurrentCapacity"] = r.current_capacity
            reasons.append(reason)
        out["NotScaledReasons"] = reasons
    return out


@json_operation(SERVICE, "DescribeScalingActivities")
async def describe_scaling_activities(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    svc = request.app[SERVICES]
    _describe_filters(p)
    offset, limit = _page(p)
    # One row more than the page tells whether another page follows.
    rows = await svc.autoscaler.store.activities(
        p["ServiceNamespace"], p.get("ResourceId"), p.get("ScalableDimension"),
        include_not_scaled=bool(p.get("IncludeNotScaledActivities")), offset=offset, limit=limit + 1,
    )
    out = _paged("ScalingActivities", rows, 0, limit, _activity_shape)
    if "NextToken" in out:
        out["NextToken"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
    return out
