"""EventBridge over AWS's JSON protocol (`X-Amz-Target: AWSEvents.<Operation>`), answered by the built-in
`EventBus`: buses, rules, targets, PutEvents and TestEventPattern."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
from aiohttp import web

from faas.api.json_protocol import JsonServiceError, json_operation
from faas.events.patterns import InvalidPattern, compile_pattern
from faas.services import SERVICES
from faas.services.bus import DEFAULT_BUS, EventBus, rule_not_found
from faas.services.schedules import InvalidSchedule, parse_schedule
from faas.store.events import RuleRow

SERVICE = "events"
DEFAULT_PAGE = 100
# TestEventPattern's event must carry these (as AWS requires).
_ENVELOPE = ("id", "account", "source", "time", "region", "resources", "detail-type")


def _bus(request: web.Request) -> EventBus:
    return request.app[SERVICES].events


def _invalid(message: str) -> JsonServiceError:
    return JsonServiceError("ValidationException", message)


def _pattern(text: str) -> None:
    try:
        compile_pattern(text)
    except InvalidPattern as exc:
        raise JsonServiceError("InvalidEventPatternException",
                               f"Event pattern is not valid. Reason: {exc.message}") from None


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(value)).decode()


def _untoken(token: str | None, kind: type) -> Any:
    if token is None:
        return None
    try:
        return msgspec.msgpack.decode(base64.urlsafe_b64decode(token.encode()), type=kind)
    except (ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError):
        raise _invalid("The NextToken is not valid.") from None


def _page(p: dict[str, Any]) -> int:
    return p.get("Limit") or DEFAULT_PAGE


# --- buses -------------------------------------------------------------------------------------------------


@json_operation(SERVICE, "CreateEventBus")
async def create_event_bus(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    name = p["Name"]
    if "/" in name:
        raise _invalid("Event bus name must not contain '/'.")
    if p.get("EventSourceName"):
        raise _invalid("Partner event sources are not supported by this server.")
    arn = await _bus(request).create_bus(name, p.get("Description"))
    out: dict[str, Any] = {"EventBusArn": arn}
    if p.get("Description") is not None:
        out["Description"] = p["Description"]
    return out


@json_operation(SERVICE, "DeleteEventBus")
async def delete_event_bus(request: web.Request, p: dict[str, Any]) -> None:
    await _bus(request).delete_bus(p["Name"])


@json_operation(SERVICE, "DescribeEventBus")
async def describe_event_bus(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    name = bus.bus_name(p.get("Name"))
    row = await bus.store.get_bus(name)
    if row is None:
        raise JsonServiceError("ResourceNotFoundException", f"Event bus {name} does not exist.")
    return _bus_shape(bus, row)


def _bus_shape(bus: EventBus, row: Any) -> dict[str, Any]:
    out = {"Name": row.name, "Arn": bus.bus_arn(row.name), "CreationTime": row.created_at,
           "LastModifiedTime": row.last_modified}
    if row.description is not None:
        out["Description"] = row.description
    return out


@json_operation(SERVICE, "ListEventBuses")
async def list_event_buses(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    limit = _page(p)
    after = _untoken(p.get("NextToken"), str) or ""
    rows = await bus.store.list_buses(p.get("NamePrefix") or "", after, limit + 1)
    out: dict[str, Any] = {"EventBuses": [_bus_shape(bus, r) for r in rows[:limit]]}
    if len(rows) > limit:
        out["NextToken"] = _token(rows[limit - 1].name)
    return out


# --- events ------------------------------------------------------------------------------------------------


@json_operation(SERVICE, "PutEvents")
async def put_events(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("EndpointId"):
        raise _invalid("Global endpoints are not supported by this server.")
    entries = await _bus(request).put_events(p["Entries"])
    return {"FailedEntryCount": sum(1 for e in entries if "ErrorCode" in e), "Entries": entries}


@json_operation(SERVICE, "TestEventPattern")
async def test_event_pattern(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    try:
        pattern = compile_pattern(p["EventPattern"])
    except InvalidPattern as exc:
        raise JsonServiceError("InvalidEventPatternException",
                               f"Event pattern is not valid. Reason: {exc.message}") from None
    try:
        event = msgspec.json.decode(p["Event"])
    except msgspec.DecodeError:
        raise _invalid("Parameter Event is not valid.") from None
    if not isinstance(event, dict):
        raise _invalid("Parameter Event is not valid.")
    missing = [k for k in _ENVELOPE if k not in event]
    if missing:
        raise _invalid(f"Parameter Event is not valid. Reason: missing {', '.join(missing)}.")
    return {"Result": pattern.matches(event)}


# --- rules -------------------------------------------------------------------------------------------------


@json_operation(SERVICE, "PutRule")
async def put_rule(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    bus_name = bus.bus_name(p.get("EventBusName"))
    pattern, schedule = p.get("EventPattern"), p.get("ScheduleExpression")
    if not pattern and not schedule:
        raise _invalid("Parameter(s) EventPattern or ScheduleExpression must be specified.")
    if pattern:
        _pattern(pattern)
    if schedule:
        if bus_name != DEFAULT_BUS:
            raise _invalid("ScheduleExpression is supported only on the default event bus.")
        try:
            parse_schedule(schedule)
        except InvalidSchedule:
            raise _invalid("Parameter ScheduleExpression is not valid.") from None
    arn = await bus.put_rule(RuleRow(
        bus=bus_name, name=p["Name"], event_pattern=pattern or None, schedule=schedule or None,
        state=p.get("State") or "ENABLED", description=p.get("Description"), role_arn=p.get("RoleArn"),
        anchor=0.0,
    ))
    return {"RuleArn": arn}


def _rule_shape(bus: EventBus, rule: RuleRow) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": rule.name, "Arn": bus.rule_arn(rule.bus, rule.name), "State": rule.state,
                           "EventBusName": rule.bus}
    for key, value in (("EventPattern", rule.event_pattern), ("ScheduleExpression", rule.schedule),
                       ("Description", rule.description), ("RoleArn", rule.role_arn)):
        if value is not None:
            out[key] = value
    return out


@json_operation(SERVICE, "DescribeRule")
async def describe_rule(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    rule = await bus.require_rule(bus.bus_name(p.get("EventBusName")), p["Name"])
    return {**_rule_shape(bus, rule), "CreatedBy": bus.arns.account_id}


@json_operation(SERVICE, "ListRules")
async def list_rules(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    bus_name = bus.bus_name(p.get("EventBusName"))
    await bus.require_bus(bus_name)
    limit = _page(p)
    after = _untoken(p.get("NextToken"), str) or ""
    rows = await bus.store.list_rules(bus_name, p.get("NamePrefix") or "", after, limit + 1)
    out: dict[str, Any] = {"Rules": [_rule_shape(bus, r) for r in rows[:limit]]}
    if len(rows) > limit:
        out["NextToken"] = _token(rows[limit - 1].name)
    return out


@json_operation(SERVICE, "EnableRule")
async def enable_rule(request: web.Request, p: dict[str, Any]) -> None:
    bus = _bus(request)
    await bus.set_state(bus.bus_name(p.get("EventBusName")), p["Name"], "ENABLED")


@json_operation(SERVICE, "DisableRule")
async def disable_rule(request: web.Request, p: dict[str, Any]) -> None:
    bus = _bus(request)
    await bus.set_state(bus.bus_name(p.get("EventBusName")), p["Name"], "DISABLED")


@json_operation(SERVICE, "DeleteRule")
async def delete_rule(request: web.Request, p: dict[str, Any]) -> None:
    bus = _bus(request)
    await bus.delete_rule(bus.bus_name(p.get("EventBusName")), p["Name"])


# --- targets -----------------------------------------------------------------------------------------------


@json_operation(SERVICE, "PutTargets")
async def put_targets(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    failed = await bus.put_targets(bus.bus_name(p.get("EventBusName")), p["Rule"], p["Targets"])
    return {"FailedEntryCount": len(failed), "FailedEntries": failed}


@json_operation(SERVICE, "RemoveTargets")
async def remove_targets(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    await bus.remove_targets(bus.bus_name(p.get("EventBusName")), p["Rule"], p["Ids"])
    return {"FailedEntryCount": 0, "FailedEntries": []}


@json_operation(SERVICE, "ListTargetsByRule")
async def list_targets_by_rule(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    bus = _bus(request)
    bus_name = bus.bus_name(p.get("EventBusName"))
    if await bus.store.get_rule(bus_name, p["Rule"]) is None:
        raise rule_not_found(bus_name, p["Rule"])
    limit = _page(p)
    after = _untoken(p.get("NextToken"), int)
    rows = await bus.store.list_targets(bus_name, p["Rule"], -1 if after is None else after, limit + 1)
    out: dict[str, Any] = {"Targets": [msgspec.json.decode(r.spec) for r in rows[:limit]]}
    if len(rows) > limit:
        out["NextToken"] = _token(rows[limit - 1].position)
    return out
