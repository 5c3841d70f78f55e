"""Create/Get/Update/Delete/ListEventSourceMappings, with Lambda's fields, defaults, states and errors."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

import msgspec
from aiohttp import web

from faas.api.model import json_response, operation
from faas.api.pagination import encode_marker, marker_int, page_size
from faas.arn import LATEST
from faas.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
    validation_message,
)
from faas.events.patterns import InvalidPattern, compile_pattern
from faas.services import SERVICES, Services
from faas.store.mappings import Mapping, MappingConfig

SELF_MANAGED = {"MQTT_BROKER_URL": "mqtt", "AMQP_URL": "amqp"}
_REASONS = {"sqs": "USER_INITIATED", "kinesis": "User action"}


def _allow_broker_endpoints(params: dict[str, Any], errors: list[str]) -> bool:
    """The model knows only KAFKA_BOOTSTRAP_SERVERS (and Kafka topic names); faas adds MQTT_BROKER_URL, whose
    Topics are MQTT topic filters (checked by `_check_self_managed`), and AMQP_URL."""
    endpoints = (params.get("SelfManagedEventSource") or {}).get("Endpoints") or {}
    ignored = ["selfManagedEventSource.endpoints"] + (["at 'topics'"] if "MQTT_BROKER_URL" in endpoints else [])
    rest = [e for e in errors if not any(i in e for i in ignored)]
    if len(rest) < len(errors) and all(k in SELF_MANAGED or k == "KAFKA_BOOTSTRAP_SERVERS" for k in endpoints):
        if rest:
            raise ValidationException(validation_message(rest))
        return True
    return False


def _kind(p: dict[str, Any]) -> str:
    arn = p.get("EventSourceArn") or ""
    if arn.startswith("arn:aws:sqs:"):
        return "sqs"
    if arn.startswith("arn:aws:kinesis:"):
        return "kinesis"
    endpoints = (p.get("SelfManagedEventSource") or {}).get("Endpoints") or {}
    for key, kind in SELF_MANAGED.items():
        if key in endpoints:
            return kind
    if "KAFKA_BOOTSTRAP_SERVERS" in endpoints:
        raise InvalidParameterValueException("Kafka event sources are not supported by this server.")
    raise InvalidParameterValueException("Unrecognized event source.")


MAX_MQTT_TOPICS = 10


def _valid_topic_filter(topic: Any) -> bool:
    if not isinstance(topic, str) or not topic or "\x00" in topic or len(topic.encode()) > 65535:
        return False
    levels = topic.split("/")
    if any("#" in level and (level != "#" or i != len(levels) - 1) for i, level in enumerate(levels)):
        return False
    return all("+" not in level or level == "+" for level in levels)


def _check_self_managed(kind: str, p: dict[str, Any]) -> None:
    """What an MQTT or AMQP source needs: one broker URL or more with the right scheme, and what to consume."""
    endpoints = (p.get("SelfManagedEventSource") or {}).get("Endpoints") or {}
    if kind == "mqtt":
        schemes, urls = ("mqtt", "mqtts", "tcp", "ssl"), endpoints.get("MQTT_BROKER_URL") or []
        topics = p.get("Topics") or []
        if not topics or len(topics) > MAX_MQTT_TOPICS or not all(_valid_topic_filter(t) for t in topics):
            raise InvalidParameterValueException(
                f"Topics must hold 1 to {MAX_MQTT_TOPICS} valid MQTT topic filters for an MQTT_BROKER_URL source."
            )
    else:
        schemes, urls = ("amqp", "amqps"), endpoints.get("AMQP_URL") or []
        if not p.get("Queues"):
            raise InvalidParameterValueException("Queues is required for an AMQP_URL source.")
    if not urls or not all(isinstance(u, str) and u.split("://", 1)[0].lower() in schemes and "://" in u
                           for u in urls):
        raise InvalidParameterValueException(
            f"Endpoints must be URLs with one of the schemes {', '.join(schemes)} for this event source."
        )


def function_arn_for_mapping(svc: Services, value: str) -> tuple[str, str | None, str]:
    """(name, qualifier, FunctionArn as Lambda stores it for a mapping)."""
    ref = svc.arns.parse(value)
    stored_qualifier = ref.qualifier
    # A full ARN ending :$LATEST drops it; a partial ARN or name:$LATEST keeps it (as recorded from AWS).
    if ref.qualifier == LATEST and value.startswith("arn:"):
        stored_qualifier = None
    return ref.name, ref.qualifier, svc.arns.function(ref.name, stored_qualifier)


def _filters(p: dict[str, Any]) -> tuple[list[str], bool]:
    if "FilterCriteria" not in p:
        return [], False
    patterns = [f.get("Pattern") for f in (p.get("FilterCriteria") or {}).get("Filters") or []]
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidParameterValueException("Invalid filter pattern definition.")
        try:
            compile_pattern(pattern)
        except InvalidPattern:
            raise InvalidParameterValueException("Invalid filter pattern definition.") from None
    if len(patterns) > 5:
        raise InvalidParameterValueException("Invalid filter pattern definition.")
    return patterns, True


def mapping_shape(svc: Services, m: Mapping) -> dict[str, Any]:
    c = m.config
    out: dict[str, Any] = {"UUID": m.uuid}
    if c.kind == "kinesis":
        out["StartingPosition"] = c.starting_position
        if c.starting_timestamp is not None:
            out["StartingPositionTimestamp"] = c.starting_timestamp
    out.update(BatchSize=c.batch_size, MaximumBatchingWindowInSeconds=c.window)
    if c.kind == "kinesis":
        out["ParallelizationFactor"] = c.parallelization
    if m.source_arn:
        out["EventSourceArn"] = m.source_arn
    if c.filters_given:
        out["FilterCriteria"] = {"Filters": [{"Pattern": f} for f in c.filters]}
    out.update(FunctionArn=c.function_arn, LastModified=m.last_modified)
    if c.kind != "sqs":
        out["LastProcessingResult"] = m.last_result or "No records processed"
    out.update(State=m.state, StateTransitionReason=m.state_reason)
    if c.kind == "kinesis":
        out["DestinationConfig"] = {"OnFailure": {"Destination": c.on_failure} if c.on_failure else {}}
        out.update(
            MaximumRecordAgeInSeconds=c.max_age, BisectBatchOnFunctionError=c.bisect,
            MaximumRetryAttempts=c.max_retries, TumblingWindowInSeconds=c.tumbling,
        )
    if c.endpoints:
        out["SelfManagedEventSource"] = {"Endpoints": c.endpoints}
    if c.topics:
        out["Topics"] = list(c.topics)
    if c.queues:
        out["Queues"] = list(c.queues)
    out["FunctionResponseTypes"] = list(c.response_types)
    if c.max_concurrency is not None:
        out["ScalingConfig"] = {"MaximumConcurrency": c.max_concurrency}
    out["EventSourceMappingArn"] = f"arn:aws:lambda:{svc.arns.region}:{svc.arns.account_id}:event-source-mapping:{m.uuid}"
    return out


async def _check_source(svc: Services, kind: str, arn: str) -> None:
    if kind == "sqs":
        queues = getattr(svc, "queues", None)
        if queues is None or not await queues.exists(arn):
            raise InvalidParameterValueException(
                "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
                "SQS Error Message: The specified queue does not exist."
            )
    elif kind == "kinesis":
        streams = getattr(svc, "streams", None)
        if streams is None or not await streams.exists(arn):
            raise InvalidParameterValueException(f"Stream not found: {arn}")


def _check_batching(kind: str, batch_size: int, window: int) -> None:
    if kind == "sqs" and batch_size > 10 and window == 0:
        raise InvalidParameterValueException(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"
        )


@operation("CreateEventSourceMapping", on_invalid=_allow_broker_endpoints)
async def create_mapping(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    kind = _kind(p)
    name, qualifier, function_arn = function_arn_for_mapping(svc, p["FunctionName"])
    try:
        await svc.router.resolve(name, qualifier)
    except ResourceNotFoundException:
        raise InvalidParameterValueException("Function does not exist") from None
    source = p.get("EventSourceArn") or ""
    if kind == "sqs" and p.get("DestinationConfig"):
        raise InvalidParameterValueException("Unsupported DestinationConfig parameter for given event source mapping type.")
    if kind == "kinesis" and not p.get("StartingPosition"):
        raise InvalidParameterValueException(
            "1 validation error detected: Value null at 'startingPosition' failed to satisfy constraint: "
            "Member must not be null."
        )
    await _check_source(svc, kind, source)
    if kind in ("mqtt", "amqp"):
        _check_self_managed(kind, p)
    batch_size = p.get("BatchSize") or (100 if kind == "kinesis" else 10)
    window = p.get("MaximumBatchingWindowInSeconds") or 0
    _check_batching(kind, batch_size, window)
    filters, given = _filters(p)
    for existing in await svc.mappings.list(name, source) if source else []:
        if existing.config.function_arn == function_arn:
            if kind == "sqs":
                raise ResourceConflictException(
                    f'An event source mapping with SQS arn (" {source} ") and function (" {name} ") already exists. '
                    f"Please update or delete the existing mapping with UUID {existing.uuid}"
                )
            raise ResourceConflictException(
                f'The event source arn (" {source} ") and function (" {name} ") provided mapping already exists. '
                f"Please update or delete the existing mapping with UUID {existing.uuid}"
            )
    endpoints = (p.get("SelfManagedEventSource") or {}).get("Endpoints")
    config = MappingConfig(
        kind=kind, function_arn=function_arn, qualifier=qualifier, enabled=p.get("Enabled", True) is not False,
        batch_size=batch_size, window=window, filters=filters, filters_given=given,
        response_types=list(p.get("FunctionResponseTypes") or []),
        max_concurrency=(p.get("ScalingConfig") or {}).get("MaximumConcurrency"),
        starting_position=p.get("StartingPosition"),
        starting_timestamp=p["StartingPositionTimestamp"] if p.get("StartingPositionTimestamp") is not None else None,
        bisect=bool(p.get("BisectBatchOnFunctionError")),
        max_retries=p["MaximumRetryAttempts"] if p.get("MaximumRetryAttempts") is not None else -1,
        max_age=p["MaximumRecordAgeInSeconds"] if p.get("MaximumRecordAgeInSeconds") is not None else -1,
        parallelization=p.get("ParallelizationFactor") or 1,
        tumbling=p.get("TumblingWindowInSeconds") or 0,
        on_failure=((p.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination"),
        topics=list(p.get("Topics") or []), queues=list(p.get("Queues") or []), endpoints=endpoints,
    )
    mapping = Mapping(
        uuid=str(uuidlib.uuid4()), function_name=name, source_arn=source, config=config,
        state="Creating" if config.enabled else "Disabled", state_reason=_REASONS.get(kind, "USER_INITIATED"),
        last_modified=round(time.time(), 3),
    )
    await svc.mappings.put(mapping)
    shown = mapping_shape(svc, mapping)
    await svc.mapping_manager.apply(mapping)
    return json_response(shown, status=202)


async def _existing(svc: Services, uuid: str) -> Mapping:
    mapping = await svc.mappings.get(uuid)
    if mapping is None:
        raise ResourceNotFoundException("The resource you requested does not exist.")
    return mapping


@operation("GetEventSourceMapping")
async def get_mapping(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    return json_response(mapping_shape(svc, await _existing(svc, p["UUID"])))


@operation("UpdateEventSourceMapping")
async def update_mapping(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    mapping = await _existing(svc, p["UUID"])
    c = mapping.config
    updates: dict[str, Any] = {}
    name = mapping.function_name
    if p.get("FunctionName"):
        name, qualifier, function_arn = function_arn_for_mapping(svc, p["FunctionName"])
        try:
            await svc.router.resolve(name, qualifier)
        except ResourceNotFoundException:
            raise InvalidParameterValueException("Function does not exist") from None
        updates.update(function_arn=function_arn, qualifier=qualifier)
    if c.kind == "sqs" and p.get("DestinationConfig"):
        raise InvalidParameterValueException("Unsupported DestinationConfig parameter for given event source mapping type.")
    simple = {
        "BatchSize": "batch_size", "MaximumBatchingWindowInSeconds": "window", "BisectBatchOnFunctionError": "bisect",
        "MaximumRetryAttempts": "max_retries", "MaximumRecordAgeInSeconds": "max_age",
        "ParallelizationFactor": "parallelization", "TumblingWindowInSeconds": "tumbling",
    }
    for key, attr in simple.items():
        if p.get(key) is not None:
            updates[attr] = p[key]
    if "FunctionResponseTypes" in p:
        updates["response_types"] = list(p.get("FunctionResponseTypes") or [])
    if p.get("ScalingConfig") is not None:
        updates["max_concurrency"] = p["ScalingConfig"].get("MaximumConcurrency")
    if "DestinationConfig" in p:
        updates["on_failure"] = ((p.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    filters, given = _filters(p)
    if given:
        updates.update(filters=filters, filters_given=True)
    enabling = False
    if p.get("Enabled") is not None:
        enabling = p["Enabled"] and not c.enabled
        updates["enabled"] = bool(p["Enabled"])
    config = msgspec.structs.replace(c, **updates)
    _check_batching(config.kind, config.batch_size, config.window)
    if config.enabled:
        state = "Enabling" if enabling else "Updating"
    else:
        state = "Disabling" if c.enabled else "Disabled"
    updated = msgspec.structs.replace(
        mapping, function_name=name, config=config, state=state, last_modified=round(time.time(), 3),
    )
    await svc.mappings.put(updated)
    shown = mapping_shape(svc, updated)
    await svc.mapping_manager.apply(updated)
    return json_response(shown, status=202)


@operation("DeleteEventSourceMapping")
async def delete_mapping(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    mapping = await _existing(svc, p["UUID"])
    shown = mapping_shape(svc, msgspec.structs.replace(mapping, state="Deleting"))
    await svc.mapping_manager.remove(mapping.uuid)
    await svc.mappings.delete(mapping.uuid)
    return json_response(shown, status=202)


@operation("ListEventSourceMappings")
async def list_mappings(request: web.Request, p: dict[str, Any]) -> web.Response:
    svc = request.app[SERVICES]
    name = svc.arns.parse(p["FunctionName"]).name if p.get("FunctionName") else None
    mappings = await svc.mappings.list(name, p.get("EventSourceArn"))
    start = marker_int(p.get("Marker")) or 0
    limit = page_size(p.get("MaxItems"), 100)
    out: dict[str, Any] = {"EventSourceMappings": [mapping_shape(svc, m) for m in mappings[start:start + limit]]}
    if start + limit < len(mappings):
        out["NextMarker"] = encode_marker(str(start + limit))
    return json_response(out)
