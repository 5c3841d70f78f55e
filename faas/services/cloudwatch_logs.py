"""A CloudWatch Logs subset on the shared port (JSON protocol, `X-Amz-Target: Logs_20140328.<Operation>`), over
the invocation logs in `faas.store.logstore`: groups, streams, GetLogEvents, FilterLogEvents with
CloudWatch's filter pattern syntax (compiled in `faas.store.log_filter`), and retention policies.

Filter patterns: space-separated terms that must all occur (`ERROR "timed out"`), `-term` that must not,
`?term` of which at least one must, `%regex%`, and JSON patterns such as `{ ($.level = "ERROR") && ($.ms > 100) }`.
Terms match case-sensitively, anywhere in the message.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from faas.api.json_protocol import JsonServiceError, json_operation
from faas.services import SERVICES, Services
from faas.store.log_filter import PatternError, compile_filter
from faas.store.logdb import LogEvent, LogGroupInfo, LogStreamInfo, NotFound
from faas.store.logstore import LogStore

SERVICE = "logs"
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                  3288, 3653)
_GROUP_MISSING = "The specified log group does not exist."
_STREAM_MISSING = "The specified log stream does not exist."
_PAGE = 50
_EVENTS = 10000

Params = dict[str, Any]


def _invalid(message: str) -> JsonServiceError:
    return JsonServiceError("InvalidParameterException", message)


def _store(request: web.Request) -> tuple[Services, LogStore]:
    svc = request.app[SERVICES]
    return svc, svc.logs


def _missing(exc: NotFound) -> JsonServiceError:
    return JsonServiceError("ResourceNotFoundException", _GROUP_MISSING if exc.what == "group" else _STREAM_MISSING)


def _group_name(p: Params) -> str:
    """`logGroupName`, or the name inside `logGroupIdentifier` (a name or an ARN); not both."""
    name, ident = p.get("logGroupName"), p.get("logGroupIdentifier")
    if name and ident:
        raise _invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.")
    if ident:
        return _identifier_name(ident)
    if not name:
        raise _invalid("Either LogGroupName or LogGroupIdentifier must be specified.")
    return name


def _identifier_name(ident: str) -> str:
    if ident.startswith("arn:"):
        _, sep, rest = ident.partition(":log-group:")
        if not sep:
            raise _invalid(f"Invalid log group identifier: {ident}")
        return rest.removesuffix(":*")
    return ident


def _group_arn(svc: Services, name: str) -> str:
    return f"arn:aws:logs:{svc.arns.region}:{svc.arns.account_id}:log-group:{name}"


def _group_shape(svc: Services, g: LogGroupInfo) -> Params:
    arn = _group_arn(svc, g.name)
    out: Params = {"logGroupName": g.name, "creationTime": g.created_ms}
    if g.retention_days:
        out["retentionInDays"] = g.retention_days
    out.update(metricFilterCount=0, arn=f"{arn}:*", storedBytes=g.stored_bytes, logGroupClass="STANDARD",
               logGroupArn=arn)
    return out


def _stream_shape(svc: Services, group: str, s: LogStreamInfo) -> Params:
    out: Params = {"logStreamName": s.name, "creationTime": s.created_ms}
    if s.first_event_ms is not None:
        out["firstEventTimestamp"] = s.first_event_ms
        out["lastEventTimestamp"] = s.last_event_ms
    if s.last_ingestion_ms is not None:
        out["lastIngestionTime"] = s.last_ingestion_ms
    out["arn"] = f"{_group_arn(svc, group)}:log-stream:{s.name}"
    out["storedBytes"] = s.stored_bytes
    return out


def _limit(p: Params, default: int) -> int:
    limit = p.get("limit")
    return default if limit is None else int(limit)


# -- groups --------------------------------------------------------------------------------------------


@json_operation(SERVICE, "CreateLogGroup")
async def create_log_group(request: web.Request, p: Params) -> Params:
    _, store = _store(request)
    if not await store.create_group(p["logGroupName"]):
        raise JsonServiceError("ResourceAlreadyExistsException", "The specified log group already exists")
    return {}


@json_operation(SERVICE, "DeleteLogGroup")
async def delete_log_group(request: web.Request, p: Params) -> Params:
    _, store = _store(request)
    try:
        await store.delete_group(p["logGroupName"])
    except NotFound as exc:
        raise _missing(exc) from None
    return {}


@json_operation(SERVICE, "PutRetentionPolicy")
async def put_retention_policy(request: web.Request, p: Params) -> Params:
    _, store = _store(request)
    days = p["retentionInDays"]
    if days not in RETENTION_DAYS:
        raise _invalid(f"1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy "
                       f"constraint: Member must satisfy enum value set: [{', '.join(map(str, RETENTION_DAYS))}]")
    try:
        await store.set_retention(p["logGroupName"], days)
    except NotFound as exc:
        raise _missing(exc) from None
    return {}


@json_operation(SERVICE, "DeleteRetentionPolicy")
async def delete_retention_policy(request: web.Request, p: Params) -> Params:
    _, store = _store(request)
    try:
        await store.set_retention(p["logGroupName"], None)
    except NotFound as exc:
        raise _missing(exc) from None
    return {}


@json_operation(SERVICE, "DescribeLogGroups")
async def describe_log_groups(request: web.Request, p: Params) -> Params:
    svc, store = _store(request)
    prefix, pattern = p.get("logGroupNamePrefix"), p.get("logGroupNamePattern")
    if prefix and pattern:
        raise _invalid("LogGroupNamePrefix and LogGroupNamePattern are mutually exclusive parameters.")
    idents = p.get("logGroupIdentifiers")
    if idents and (prefix or pattern):
        raise _invalid("LogGroupIdentifiers cannot be combined with LogGroupNamePrefix or LogGroupNamePattern.")
    names = [_identifier_name(i) for i in idents] if idents else None
    limit = _limit(p, _PAGE)
    groups = await store.groups(prefix, pattern, p.get("nextToken"), limit + 1, names)
    out: Params = {"logGroups": [_group_shape(svc, g) for g in groups[:limit]]}
    if len(groups) > limit:
        out["nextToken"] = groups[limit - 1].name
    return out


# -- streams -------------------------------------------------------------------------------------------


@json_operation(SERVICE, "DescribeLogStreams")
async def describe_log_streams(request: web.Request, p: Params) -> Params:
    svc, store = _store(request)
    group = _group_name(p)
    by_time = p.get("orderBy") == "LastEventTime"
    prefix = p.get("logStreamNamePrefix")
    if by_time and prefix:
        raise _invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
    after = _stream_token(p.get("nextToken"), by_time)
    limit = _limit(p, _PAGE)
    try:
        streams = await store.streams(group, prefix, by_time, bool(p.get("descending")), after, limit + 1)
    except NotFound as exc:
        raise _missing(exc) from None
    out: Params = {"logStreams": [_stream_shape(svc, group, s) for s in streams[:limit]]}
    if len(streams) > limit:
        last = streams[limit - 1]
        out["nextToken"] = f"t/{last.last_event_ms or 0}/{last.id}" if by_time else f"n/{last.id}/{last.name}"
    return out


def _stream_token(token: str | None, by_time: bool) -> tuple[Any, int] | None:
    if token is None:
        return None
    try:
        kind, first, rest = token.split("/", 2)
        if kind == "t" and by_time:
            return int(first), int(rest)
        if kind == "n" and not by_time:
            return rest, int(first)
    except ValueError:
        pass
    raise _invalid("The specified nextToken is invalid.")


# -- events --------------------------------------------------------------------------------------------


def _event_shape(e: LogEvent) -> Params:
    return {"timestamp": e.ts, "message": e.message, "ingestionTime": e.ingested}


@json_operation(SERVICE, "GetLogEvents")
async def get_log_events(request: web.Request, p: Params) -> Params:
    _, store = _store(request)
    group = _group_name(p)
    token = None
    if p.get("nextToken"):
        m = re.fullmatch(r"([fb])/(\d{1,19})", p["nextToken"])
        if m is None:
            raise _invalid("The specified nextToken is invalid.")
        token = (m.group(1), int(m.group(2)))
    try:
        page = await store.events(
            group, p["logStreamName"], start_ms=p.get("startTime"), end_ms=p.get("endTime"), token=token,
            limit=_limit(p, _EVENTS), from_head=bool(p.get("startFromHead")),
        )
    except NotFound as exc:
        raise _missing(exc) from None
    return {"events": [_event_shape(e) for e in page.events], "nextForwardToken": page.forward,
            "nextBackwardToken": page.backward}


@json_operation(SERVICE, "FilterLogEvents")
async def filter_log_events(request: web.Request, p: Params) -> Params:
    _, store = _store(request)
    group = _group_name(p)
    names, prefix = p.get("logStreamNames"), p.get("logStreamNamePrefix")
    if names and prefix:
        raise _invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
    cursor = None
    if p.get("nextToken"):
        m = re.fullmatch(r"(-?\d{1,19})/(-?\d{1,19})", p["nextToken"])
        if m is None:
            raise _invalid("The specified nextToken is invalid.")
        cursor = (int(m.group(1)), int(m.group(2)))
    try:
        matcher = compile_filter(p.get("filterPattern") or "")
    except PatternError as exc:
        raise _invalid(f"Invalid filter pattern: {exc}") from None
    try:
        page = await store.filter(group, streams=names, stream_prefix=prefix, start_ms=p.get("startTime"),
                                  end_ms=p.get("endTime"), cursor=cursor, limit=_limit(p, _EVENTS), matcher=matcher)
    except NotFound as exc:
        raise _missing(exc) from None
    out: Params = {
        "events": [{"logStreamName": e.stream, **_event_shape(e), "eventId": str(e.id)} for e in page.events],
        "searchedLogStreams": [{"logStreamName": s, "searchedCompletely": page.cursor is None}
                               for s in page.streams],
    }
    if page.cursor is not None:
        out["nextToken"] = f"{page.cursor[0]}/{page.cursor[1]}"
    return out
