"""A CloudWatch Logs subset on the shared port (JSON protocol, `X-Amz-Target: Logs_20140328.<Operation>`), over
the invocation logs in `faas.store.logstore`: groups, streams, GetLogEvents, FilterLogEvents with
CloudWatch's filter pattern syntax, and retention policies.

Filter patterns: space-separated terms that must all occur (`ERROR "timed out"`), `-term` that must not,
`?term` of which at least one must, `%regex%`, and JSON patterns such as `{ ($.level = "ERROR") && ($.ms > 100) }`.
Terms match case-sensitively, anywhere in the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from faas.api.json_protocol import JsonServiceError, json_operation
from faas.services import SERVICES, Services
from faas.store.logstore import LogEvent, LogGroupInfo, LogStore, LogStreamInfo, Matcher, NotFound

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


# -- filter patterns -----------------------------------------------------------------------------------


class PatternError(Exception):
    pass


def compile_filter(pattern: str) -> Matcher:
    """A filter pattern as a `Matcher`; raises PatternError for one CloudWatch would reject."""
    return msgspec.structs.replace(_compile_filter(pattern), source=pattern)


def _compile_filter(pattern: str) -> Matcher:
    text = pattern.strip()
    if not text or text == '""':
        return Matcher()
    if text.startswith("{"):
        return Matcher(_json_matcher(text), json=True)
    if text.startswith("["):
        raise PatternError("space-delimited patterns ([...]) are not supported by this server")
    if len(text) >= 2 and text.startswith("%") and text.endswith("%"):
        try:
            regex = re.compile(text[1:-1])
        except re.error as exc:
            raise PatternError(str(exc)) from None
        return Matcher(lambda m: regex.search(m) is not None)
    return _term_matcher(text)


_TERM = re.compile(r'\s*([-?]?)(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))')


def _term_matcher(text: str) -> Matcher:
    required: list[str] = []
    excluded: list[str] = []
    optional: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise PatternError(f"unbalanced quotes in {text!r}")
            break
        pos = m.end()
        sign, quoted, bare = m.groups()
        term = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        if not term:
            continue
        {"": required, "-": excluded, "?": optional}[sign].append(term)
    req, exc, opt = tuple(required), tuple(excluded), tuple(optional)

    def accepts(message: str) -> bool:
        if any(t in message for t in exc):
            return False
        return not opt or any(t in message for t in opt)

    # Required terms are tested in SQL; only exclusions and alternatives need Python.
    return Matcher(accepts if exc or opt else None, req)


# JSON patterns: { SELECTOR OP VALUE }, IS NULL/TRUE/FALSE, NOT EXISTS, joined with && and || in parentheses.
_JSON_TOKEN = re.compile(
    r'\s*(?:(?P<op>&&|\|\||!=|<=|>=|=|<|>|\(|\))|(?P<sel>\$(?:\.[A-Za-z0-9_@-]+|\[\d+\])*)'
    r'|"(?P<str>(?:[^"\\]|\\.)*)"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.])|(?P<word>[^\s()=<>!&|"]+))'
)
_MISSING = object()
JsonTest = Callable[[Any], bool]


def _json_matcher(text: str) -> Callable[[str], bool]:
    if not text.endswith("}"):
        raise PatternError("a JSON pattern ends with '}'")
    tokens = _json_tokens(text[1:-1])
    test, rest = _parse_or(tokens)
    if rest:
        raise PatternError(f"unexpected {rest[0][1]!r}")

    def accepts(message: str) -> bool:
        if not message.lstrip().startswith("{"):
            return False
        try:
            doc = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return False
        return isinstance(doc, dict) and test(doc)

    return accepts


def _json_tokens(body: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(body):
        m = _JSON_TOKEN.match(body, pos)
        if m is None:
            if body[pos:].strip():
                raise PatternError(f"cannot read {body[pos:].strip()!r}")
            break
        pos = m.end()
        kind = m.lastgroup
        value: Any = m.group(kind) if kind else None
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value)
        elif kind == "num":
            value = float(value)
        tokens.append((kind or "", value))
    return tokens


def _parse_or(tokens: list[tuple[str, Any]]) -> tuple[JsonTest, list[tuple[str, Any]]]:
    left, tokens = _parse_and(tokens)
    while tokens and tokens[0] == ("op", "||"):
        right, tokens = _parse_and(tokens[1:])
        left = _either(left, right)
    return left, tokens


def _parse_and(tokens: list[tuple[str, Any]]) -> tuple[JsonTest, list[tuple[str, Any]]]:
    left, tokens = _parse_unit(tokens)
    while tokens and tokens[0] == ("op", "&&"):
        right, tokens = _parse_unit(tokens[1:])
        left = _both(left, right)
    return left, tokens


def _either(a: JsonTest, b: JsonTest) -> JsonTest:
    return lambda d: a(d) or b(d)


def _both(a: JsonTest, b: JsonTest) -> JsonTest:
    return lambda d: a(d) and b(d)


def _parse_unit(tokens: list[tuple[str, Any]]) -> tuple[JsonTest, list[tuple[str, Any]]]:
    if not tokens:
        raise PatternError("the pattern ends too early")
    if tokens[0] == ("op", "("):
        inner, tokens = _parse_or(tokens[1:])
        if not tokens or tokens[0] != ("op", ")"):
            raise PatternError("missing ')'")
        return inner, tokens[1:]
    kind, selector = tokens[0]
    if kind != "sel":
        raise PatternError(f"expected a selector like $.field, found {selector!r}")
    get = _selector(selector)
    words = [str(v).upper() for _, v in tokens[1:3]]
    if words[:2] == ["IS", "NULL"]:
        return (lambda d: get(d) is None), tokens[3:]
    if words[:2] in (["IS", "TRUE"], ["IS", "FALSE"]):
        want = words[1] == "TRUE"
        return (lambda d: get(d) is want), tokens[3:]
    if words[:2] == ["NOT", "EXISTS"]:
        return (lambda d: get(d) is _MISSING), tokens[3:]
    if words[:1] == ["EXISTS"]:
        return (lambda d: get(d) is not _MISSING), tokens[2:]
    if len(tokens) < 3 or tokens[1][0] != "op" or tokens[1][1] not in ("=", "!=", "<", "<=", ">", ">="):
        raise PatternError(f"expected a comparison after {selector}")
    return _comparison(get, tokens[1][1], tokens[2]), tokens[3:]


def _selector(text: str) -> Callable[[Any], Any]:
    steps: list[str | int] = [int(s[1:-1]) if s.startswith("[") else s[1:]
                              for s in re.findall(r"\.[A-Za-z0-9_@-]+|\[\d+\]", text)]

    def get(doc: Any) -> Any:
        for step in steps:
            if isinstance(step, int):
                if not isinstance(doc, list) or step >= len(doc):
                    return _MISSING
                doc = doc[step]
            elif isinstance(doc, dict) and step in doc:
                doc = doc[step]
            else:
                return _MISSING
        return doc

    return get


def _comparison(get: Callable[[Any], Any], op: str, value: tuple[str, Any]) -> JsonTest:
    kind, literal = value
    if kind == "num":
        number = literal
        compare = {"=": lambda a: a == number, "!=": lambda a: a != number, "<": lambda a: a < number,
                   "<=": lambda a: a <= number, ">": lambda a: a > number, ">=": lambda a: a >= number}[op]

        def numeric(d: Any) -> bool:
            v = get(d)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and compare(v)

        return numeric
    if kind not in ("str", "word") or op not in ("=", "!="):
        raise PatternError(f"operator {op} needs a number")
    if kind == "word" and literal.lower() in ("true", "false", "null"):
        want = {"true": True, "false": False, "null": None}[literal.lower()]
        return (lambda d: get(d) is want) if op == "=" else (lambda d: get(d) is not want)
    glob = re.compile("".join(".*" if c == "*" else re.escape(c) for c in literal), re.DOTALL)
    equal = op == "="

    def string(d: Any) -> bool:
        v = get(d)
        if v is _MISSING or v is None or isinstance(v, (dict, list, bool)):
            return False
        text = v if isinstance(v, str) else msgspec.json.encode(v).decode()
        return (glob.fullmatch(text) is not None) == equal

    return string

