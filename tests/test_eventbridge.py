"""The built-in event bus through boto3's `events` client: buses, rules, targets, PutEvents routing to SQS and
Lambda, target input, schedules (with a shortened minute), catch-up after downtime and durable delivery; and, in
process, schedule expressions, the scheduler's catch-up rule and the outbox's retries."""

from __future__ import annotations

import calendar
import json
import signal
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import Server, create_function, json_lines, unique, wait_for

from faas.arn import Arns
from faas.errors import ResourceNotFoundException, ServiceException
from faas.services.bus import EventBus, Outbox
from faas.services.schedules import InvalidSchedule, parse_schedule
from faas.store.db import Database
from faas.store.events import EventStore, NewDelivery, RuleRow

# Appends each event it receives, as one JSON line, to the file named by $LOG.
RECORDER = """
import json, os
def handler(event, context):
    with open(os.environ["LOG"], "a") as fh:
        fh.write(json.dumps(event) + "\\n")
"""

PATTERN = json.dumps({"source": ["app.orders"], "detail": {"total": [{"numeric": [">", 100]}]}})


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def recorder(lam, tmp_path: Path) -> tuple[str, Path]:
    log = tmp_path / f"{unique('log')}.jsonl"
    _, created = create_function(lam, RECORDER, Environment={"Variables": {"LOG": str(log)}})
    return created["FunctionArn"], log


def make_queue(sqs) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive(sqs, url: str, count: int, timeout: float = 15.0) -> list[str]:
    bodies: list[str] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < count and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies += [m["Body"] for m in resp.get("Messages", [])]
    assert len(bodies) >= count, f"received {len(bodies)} of {count} messages"
    return bodies


def epoch(event_time: str) -> int:
    return calendar.timegm(time.strptime(event_time, "%Y-%m-%dT%H:%M:%SZ"))


@pytest.fixture(scope="module")
def events(server):
    return server.client("events")


@pytest.fixture(scope="module")
def sqs(server):
    return server.client("sqs")


@pytest.fixture
def own_server(tmp_path):
    servers: list[Server] = []

    def start(data: str = "d", **env: str) -> Server:
        srv = Server(tmp_path / data, env=env).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop(signal.SIGKILL)


# --- schedule expressions (no server) ----------------------------------------------------------------------


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def iso(epoch_seconds: float | None) -> str | None:
    return None if epoch_seconds is None else datetime.fromtimestamp(epoch_seconds, UTC).strftime(
        "%Y-%m-%d %H:%M")


@pytest.mark.parametrize("expression, start, expected", [
    ("cron(0 10 * * ? *)", at(2025, 1, 1, 10, 0), ["2025-01-02 10:00", "2025-01-03 10:00"]),
    ("cron(15 10 ? * MON-FRI *)", at(2025, 1, 3, 10, 15), ["2025-01-06 10:15", "2025-01-07 10:15"]),
    ("cron(0/15 * * * ? *)", at(2025, 1, 1, 0, 50), ["2025-01-01 01:00", "2025-01-01 01:15"]),
    ("cron(0 18 ? * 6L 2025)", at(2025, 1, 1), ["2025-01-31 18:00", "2025-02-28 18:00"]),  # last Friday
    ("cron(0 12 ? * 3#2 *)", at(2025, 1, 1), ["2025-01-14 12:00", "2025-02-11 12:00"]),  # second Tuesday
    ("cron(0 0 L * ? *)", at(2025, 1, 31, 1), ["2025-02-28 00:00", "2025-03-31 00:00"]),
    ("cron(0 0 LW * ? *)", at(2025, 5, 1), ["2025-05-30 00:00", "2025-06-30 00:00"]),  # May 31 is a Saturday
    ("cron(0 0 1W * ? *)", at(2025, 2, 1), ["2025-02-03 00:00", "2025-03-03 00:00"]),  # 1st on a weekend
    ("cron(0 0 15W * ? *)", at(2025, 3, 1), ["2025-03-14 00:00", "2025-04-15 00:00"]),  # 15 Mar is a Saturday
    ("cron(0 8 1 JAN,JUL ? *)", at(2025, 1, 1, 9), ["2025-07-01 08:00", "2026-01-01 08:00"]),
    ("cron(30 23 ? * SAT-SUN *)", at(2025, 1, 3), ["2025-01-04 23:30", "2025-01-05 23:30"]),
    ("cron(0 0 ? * FRI-MON *)", at(2025, 1, 6, 1), ["2025-01-10 00:00", "2025-01-11 00:00"]),  # wraps
    ("cron(0 0 29 2 ? *)", at(2025, 1, 1), ["2028-02-29 00:00", "2032-02-29 00:00"]),
    ("cron(0 0 1 1 ? 2026-2027)", at(2025, 6, 1), ["2026-01-01 00:00", "2027-01-01 00:00", None]),
])
def test_cron_ticks(expression, start, expected):
    schedule = parse_schedule(expression)
    got, t = [], start
    for _ in expected:
        nxt = schedule.following(t, 0.0)
        got.append(iso(nxt))
        if nxt is None:
            break
        t = nxt
    assert got == expected[:len(got)] and len(got) == len(expected)


def test_cron_latest_tick():
    schedule = parse_schedule("cron(15 10 ? * MON-FRI *)")
    assert iso(schedule.latest(at(2025, 1, 5, 0, 0), 0.0)) == "2025-01-03 10:15"  # Sunday: back to Friday
    assert iso(schedule.latest(at(2025, 1, 6, 10, 15), 0.0)) == "2025-01-06 10:15"  # at a tick counts
    assert schedule.latest(at(2025, 1, 6, 10, 15), at(2025, 1, 6, 10, 15)) is None  # not after the anchor


def test_rate_ticks():
    schedule = parse_schedule("rate(5 minutes)")
    assert schedule.latest(1000.0, 0.0) == 900.0
    assert schedule.following(1000.0, 0.0) == 1200.0
    assert schedule.latest(299.0, 0.0) is None  # the first tick is one period after the anchor
    assert parse_schedule("rate(1 hour)").following(0.0, 0.0) == 3600.0
    assert parse_schedule("rate(2 days)").following(0.0, 0.0) == 172800.0


@pytest.mark.parametrize("expression", [
    "rate(1 minutes)", "rate(2 minute)", "rate(0 minutes)", "rate(-1 minutes)", "rate(5 weeks)", "rate(x minutes)",
    "cron(* * * * * *)", "cron(* * ? * ? *)", "cron(60 * * * ? *)", "cron(* 24 * * ? *)", "cron(* * * *)",
    "cron(0 0 32 * ? *)", "cron(0 0 ? * 8 *)", "cron(0 0 ? * MON#6 *)", "cron(0 0 1 13 ? *)", "cron(0 0 1 * ? 1969)",
    "cron(0/0 * * * ? *)", "cron(0 0 ? * FOO *)", "every 5 minutes", "",
])
def test_invalid_schedules(expression):
    with pytest.raises(InvalidSchedule):
        parse_schedule(expression)


# --- the outbox (no server) --------------------------------------------------------------------------------


async def test_outbox_retries_with_backoff_then_gives_up(tmp_path):
    db = Database(tmp_path / "events.db")
    await db.open()
    store = EventStore(db)
    now = [1000.0]
    sent: list[str] = []
    failures = {"flaky": 2}

    async def send(d) -> None:
        sent.append(d.target_arn)
        if d.target_arn == "gone":
            raise ResourceNotFoundException("Function not found")
        if d.target_arn in ("always", "old") or failures.get(d.target_arn, 0) > 0:
            failures[d.target_arn] = failures.get(d.target_arn, 0) - 1
            raise ServiceException("try later")

    settings = types.SimpleNamespace(delivery_batch=10, delivery_workers=4, retry_delay=1.0, retry_delay_max=60.0)
    outbox = Outbox(store, send, settings, clock=lambda: now[0])  # type: ignore[arg-type]

    def delivery(arn: str, *, attempts: int = 3, age: float = 3600) -> NewDelivery:
        return NewDelivery(target_arn=arn, body="{}", message_group_id=None, rule_arn="arn:rule", target_id="t",
                           max_attempts=attempts, expires_at=now[0] + age, next_attempt=now[0])

    try:
        await store.add_deliveries([delivery("ok"), delivery("flaky"), delivery("gone"), delivery("always"),
                                    delivery("old", age=0.5)])
        assert await outbox.run_once() == 5
        assert sorted(sent) == ["always", "flaky", "gone", "ok", "old"]
        assert await store.pending_deliveries() == 2  # ok delivered; gone and old (too old to retry) dropped
        assert await outbox.run_once() == 0  # retries are not due yet
        assert await store.next_due() == 1001.0

        now[0] = 1001.0
        sent.clear()
        assert await outbox.run_once() == 2
        assert await store.next_due() == 1003.0  # the delay doubles

        now[0] = 1003.0
        sent.clear()
        assert await outbox.run_once() == 2
        assert sorted(sent) == ["always", "flaky"]  # flaky succeeds; always used up its 3 attempts
        assert await store.pending_deliveries() == 0
    finally:
        await db.close()


async def test_scheduler_catches_up_at_most_one_tick(tmp_path):
    db = Database(tmp_path / "events.db")
    await db.open()
    now = [at(2025, 1, 1, 12, 0, 30)]
    settings = types.SimpleNamespace(minute_seconds=60.0, schedule_tick=60.0, dispatch=False, delivery_batch=100,
                                     delivery_workers=4, retry_delay=1.0, retry_delay_max=60.0)
    bus = EventBus(EventStore(db), Arns("us-east-1", "000000000000"), settings, clock=lambda: now[0])
    fn = "arn:aws:lambda:us-east-1:000000000000:function:f"

    async def fired() -> list[str]:
        due = await bus.store.due_deliveries(float("inf"), 100)
        await bus.store.settle([d.id for d in due], [])
        return [json.loads(d.body)["time"] for d in due]

    try:
        for name, expression in (("every-5", "rate(5 minutes)"), ("hourly", "cron(0 * * * ? *)")):
            await bus.put_rule(RuleRow("default", name, None, expression, "ENABLED", None, None, 0.0))
            await bus.put_targets("default", name, [{"Id": "t", "Arn": fn}])
        assert await bus.scheduler.run_once() == 0 and await fired() == []

        now[0] = at(2025, 1, 1, 12, 5, 31)  # the rate rule's first tick
        assert await bus.scheduler.run_once() == 1
        assert await fired() == ["2025-01-01T12:05:30Z"]
        assert await bus.scheduler.run_once() == 0  # a tick fires once

        # Down for hours: 60-odd rate ticks and several hourly ticks missed; each rule fires its latest one, once.
        now[0] = at(2025, 1, 1, 17, 42, 0)
        assert await bus.scheduler.run_once() == 2
        assert sorted(await fired()) == ["2025-01-01T17:00:00Z", "2025-01-01T17:40:30Z"]
        assert await bus.scheduler.run_once() == 0

        # Then back on schedule.
        now[0] = at(2025, 1, 1, 17, 45, 30)
        assert await bus.scheduler.run_once() == 1
        assert await fired() == ["2025-01-01T17:45:30Z"]

        # Disabled rules do not fire; enabling does not replay what was missed meanwhile.
        await bus.set_state("default", "every-5", "DISABLED")
        now[0] = at(2025, 1, 1, 17, 55, 30)
        assert await bus.scheduler.run_once() == 0
        await bus.set_state("default", "every-5", "ENABLED")
        assert await bus.scheduler.run_once() == 0
        now[0] = at(2025, 1, 1, 18, 0, 30)
        assert await bus.scheduler.run_once() == 2
        assert sorted(await fired()) == ["2025-01-01T18:00:00Z", "2025-01-01T18:00:30Z"]
    finally:
        await db.close()


# --- buses -------------------------------------------------------------------------------------------------


def test_default_bus_and_custom_buses(events):
    default = events.describe_event_bus()
    assert default["Name"] == "default"
    assert default["Arn"] == "arn:aws:events:us-east-1:000000000000:event-bus/default"
    assert events.describe_event_bus(Name="default")["Arn"] == default["Arn"]

    prefix = unique("bus")
    names = [f"{prefix}-{i}" for i in range(3)]
    for name in names:
        created = events.create_event_bus(Name=name, Description=f"about {name}")
        assert created["EventBusArn"] == f"arn:aws:events:us-east-1:000000000000:event-bus/{name}"
    with pytest.raises(ClientError) as exc:
        events.create_event_bus(Name=names[0])
    assert error_of(exc) == ("ResourceAlreadyExistsException", f"Event bus {names[0]} already exists.")
    with pytest.raises(ClientError) as exc:
        events.create_event_bus(Name="default")
    assert error_of(exc)[0] == "ResourceAlreadyExistsException"

    described = events.describe_event_bus(Name=names[1])
    assert described["Description"] == f"about {names[1]}"
    assert described["CreationTime"].year >= 2024
    by_arn = events.describe_event_bus(Name=described["Arn"])
    assert by_arn["Name"] == names[1]

    listed = events.list_event_buses(NamePrefix=prefix)["EventBuses"]
    assert [b["Name"] for b in listed] == names
    page = events.list_event_buses(NamePrefix=prefix, Limit=2)
    assert [b["Name"] for b in page["EventBuses"]] == names[:2]
    rest = events.list_event_buses(NamePrefix=prefix, Limit=2, NextToken=page["NextToken"])
    assert [b["Name"] for b in rest["EventBuses"]] == names[2:]
    assert "NextToken" not in rest
    assert "default" in [b["Name"] for b in events.list_event_buses()["EventBuses"]]

    events.delete_event_bus(Name=names[0])
    events.delete_event_bus(Name=names[0])  # deleting a missing bus succeeds
    with pytest.raises(ClientError) as exc:
        events.describe_event_bus(Name=names[0])
    assert error_of(exc) == ("ResourceNotFoundException", f"Event bus {names[0]} does not exist.")
    with pytest.raises(ClientError) as exc:
        events.delete_event_bus(Name="default")
    assert error_of(exc)[0] == "ValidationException"

    # A bus with rules stays until they are deleted.
    events.put_rule(Name="r", EventBusName=names[1], EventPattern=PATTERN)
    with pytest.raises(ClientError) as exc:
        events.delete_event_bus(Name=names[1])
    assert error_of(exc)[0] == "ValidationException"
    events.delete_rule(Name="r", EventBusName=names[1])
    events.delete_event_bus(Name=names[1])


# --- rules -------------------------------------------------------------------------------------------------


def test_rule_lifecycle(events):
    prefix = unique("rule")
    arn = events.put_rule(Name=f"{prefix}-a", EventPattern=PATTERN, Description="orders",
                          RoleArn="arn:aws:iam::000000000000:role/events")["RuleArn"]
    assert arn == f"arn:aws:events:us-east-1:000000000000:rule/{prefix}-a"
    rule = events.describe_rule(Name=f"{prefix}-a")
    assert rule["Name"] == f"{prefix}-a" and rule["Arn"] == arn
    assert json.loads(rule["EventPattern"]) == json.loads(PATTERN)
    assert rule["State"] == "ENABLED" and rule["Description"] == "orders"
    assert rule["EventBusName"] == "default" and rule["CreatedBy"] == "000000000000"
    assert rule["RoleArn"] == "arn:aws:iam::000000000000:role/events"
    assert "ScheduleExpression" not in rule

    events.put_rule(Name=f"{prefix}-b", ScheduleExpression="rate(5 minutes)", State="DISABLED")
    events.put_rule(Name=f"{prefix}-c", ScheduleExpression="cron(0 12 * * ? *)", EventPattern=PATTERN)
    assert events.describe_rule(Name=f"{prefix}-b")["State"] == "DISABLED"
    assert events.describe_rule(Name=f"{prefix}-c")["ScheduleExpression"] == "cron(0 12 * * ? *)"

    listed = events.list_rules(NamePrefix=prefix)["Rules"]
    assert [r["Name"] for r in listed] == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    assert listed[1]["ScheduleExpression"] == "rate(5 minutes)" and listed[1]["State"] == "DISABLED"
    page = events.list_rules(NamePrefix=prefix, Limit=2)
    assert len(page["Rules"]) == 2
    rest = events.list_rules(NamePrefix=prefix, Limit=2, NextToken=page["NextToken"])
    assert [r["Name"] for r in rest["Rules"]] == [f"{prefix}-c"] and "NextToken" not in rest

    events.disable_rule(Name=f"{prefix}-a")
    assert events.describe_rule(Name=f"{prefix}-a")["State"] == "DISABLED"
    events.enable_rule(Name=f"{prefix}-a")
    assert events.describe_rule(Name=f"{prefix}-a")["State"] == "ENABLED"

    # PutRule on an existing rule replaces it.
    events.put_rule(Name=f"{prefix}-a", EventPattern=json.dumps({"source": ["other"]}))
    replaced = events.describe_rule(Name=f"{prefix}-a")
    assert json.loads(replaced["EventPattern"]) == {"source": ["other"]} and "Description" not in replaced

    for suffix in "abc":
        events.delete_rule(Name=f"{prefix}-{suffix}")
    events.delete_rule(Name=f"{prefix}-a")  # deleting a missing rule succeeds
    assert events.list_rules(NamePrefix=prefix)["Rules"] == []
    for op in (events.describe_rule, events.enable_rule, events.disable_rule):
        with pytest.raises(ClientError) as exc:
            op(Name=f"{prefix}-a")
        assert error_of(exc) == ("ResourceNotFoundException", f"Rule {prefix}-a does not exist on EventBus default.")


def test_rules_on_a_custom_bus(events):
    bus = unique("bus")
    events.create_event_bus(Name=bus)
    name = unique("rule")
    arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=PATTERN)["RuleArn"]
    assert arn == f"arn:aws:events:us-east-1:000000000000:rule/{bus}/{name}"
    assert events.describe_rule(Name=name, EventBusName=bus)["EventBusName"] == bus
    bus_arn = f"arn:aws:events:us-east-1:000000000000:event-bus/{bus}"
    assert [r["Name"] for r in events.list_rules(EventBusName=bus_arn)["Rules"]] == [name]
    with pytest.raises(ClientError) as exc:
        events.describe_rule(Name=name)  # not on the default bus
    assert error_of(exc)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique(), EventBusName=bus, ScheduleExpression="rate(1 minute)")
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique(), EventBusName=unique("nosuch"), EventPattern=PATTERN)
    assert error_of(exc)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        events.list_rules(EventBusName=unique("nosuch"))
    assert error_of(exc)[0] == "ResourceNotFoundException"
    events.delete_rule(Name=name, EventBusName=bus)
    events.delete_event_bus(Name=bus)


@pytest.mark.parametrize("pattern, reason", [
    ('{"source": "aws.ec2"}', '"source" must be an object or an array'),
    ('{"a": [{"nosuch": 1}]}', "Unrecognized match type nosuch"),
    ("[1]", "Filter is not an object"),
    ("{oops", "Filter is not valid JSON"),
])
def test_invalid_event_pattern(events, pattern, reason):
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique(), EventPattern=pattern)
    code, message = error_of(exc)
    assert code == "InvalidEventPatternException"
    assert message.startswith(f"Event pattern is not valid. Reason: {reason}")


def test_put_rule_validation(events):
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique())
    assert error_of(exc)[0] == "ValidationException"
    for expression in ("rate(1 minutes)", "cron(* * * * * *)", "every minute"):
        with pytest.raises(ClientError) as exc:
            events.put_rule(Name=unique(), ScheduleExpression=expression)
        assert error_of(exc) == ("ValidationException", "Parameter ScheduleExpression is not valid.")
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name="bad name!", EventPattern=PATTERN)
    assert error_of(exc)[0] == "ValidationException"


def test_test_event_pattern(events):
    event = {"id": "1", "account": "000000000000", "source": "app.orders", "time": "2024-01-01T00:00:00Z",
             "region": "us-east-1", "resources": [], "detail-type": "Order", "detail": {"total": 150}}
    assert events.test_event_pattern(EventPattern=PATTERN, Event=json.dumps(event))["Result"] is True
    small = {**event, "detail": {"total": 50}}
    assert events.test_event_pattern(EventPattern=PATTERN, Event=json.dumps(small))["Result"] is False
    with pytest.raises(ClientError) as exc:
        events.test_event_pattern(EventPattern='{"source": "x"}', Event=json.dumps(event))
    assert error_of(exc)[0] == "InvalidEventPatternException"
    with pytest.raises(ClientError) as exc:
        events.test_event_pattern(EventPattern=PATTERN, Event=json.dumps({"source": "app.orders"}))
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        events.test_event_pattern(EventPattern=PATTERN, Event="not json")
    assert error_of(exc)[0] == "ValidationException"


# --- targets -----------------------------------------------------------------------------------------------


def test_target_lifecycle(events):
    rule = unique("rule")
    events.put_rule(Name=rule, EventPattern=PATTERN)
    fn = "arn:aws:lambda:us-east-1:000000000000:function:some-fn"
    queue = "arn:aws:sqs:us-east-1:000000000000:some-queue"
    resp = events.put_targets(Rule=rule, Targets=[
        {"Id": "fn", "Arn": fn, "Input": '{"constant": true}'},
        {"Id": "q", "Arn": queue, "InputPath": "$.detail"},
        {"Id": "alias", "Arn": f"{fn}:live", "InputTransformer": {
            "InputPathsMap": {"total": "$.detail.total"}, "InputTemplate": '{"t": <total>}'}},
        {"Id": "stream", "Arn": "arn:aws:kinesis:us-east-1:000000000000:stream/some-stream"},
    ])
    assert resp["FailedEntryCount"] == 1
    assert resp["FailedEntries"][0]["TargetId"] == "stream"
    assert resp["FailedEntries"][0]["ErrorCode"] == "ValidationException"

    targets = events.list_targets_by_rule(Rule=rule)["Targets"]
    assert [t["Id"] for t in targets] == ["fn", "q", "alias"]
    assert targets[0] == {"Id": "fn", "Arn": fn, "Input": '{"constant": true}'}
    assert targets[1]["InputPath"] == "$.detail"
    assert targets[2]["InputTransformer"]["InputTemplate"] == '{"t": <total>}'
    page = events.list_targets_by_rule(Rule=rule, Limit=2)
    assert [t["Id"] for t in page["Targets"]] == ["fn", "q"]
    rest = events.list_targets_by_rule(Rule=rule, Limit=2, NextToken=page["NextToken"])
    assert [t["Id"] for t in rest["Targets"]] == ["alias"] and "NextToken" not in rest

    # Putting an existing id replaces that target in place.
    events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": fn}])
    targets = events.list_targets_by_rule(Rule=rule)["Targets"]
    assert [t["Id"] for t in targets] == ["fn", "q", "alias"] and "Input" not in targets[0]

    with pytest.raises(ClientError) as exc:
        events.delete_rule(Name=rule)
    assert error_of(exc) == ("ValidationException", "Rule can't be deleted since it has targets.")

    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule=rule, Targets=[{"Id": f"t{i}", "Arn": queue} for i in range(3)])
    assert error_of(exc)[0] == "LimitExceededException"

    resp = events.remove_targets(Rule=rule, Ids=["fn", "q", "alias", "never-there"])
    assert resp["FailedEntryCount"] == 0
    assert events.list_targets_by_rule(Rule=rule)["Targets"] == []
    events.delete_rule(Name=rule)
    with pytest.raises(ClientError) as exc:
        events.list_targets_by_rule(Rule=rule)
    assert error_of(exc)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": fn}])
    assert error_of(exc)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        events.remove_targets(Rule=rule, Ids=["fn"])
    assert error_of(exc)[0] == "ResourceNotFoundException"


@pytest.mark.parametrize("target", [
    {"Input": "not json"},
    {"Input": "{}", "InputPath": "$.detail"},
    {"InputPath": "detail"},
    {"InputTransformer": {"InputPathsMap": {"aws.x": "$.detail"}, "InputTemplate": "<aws.x>"}},
    {"InputTransformer": {"InputPathsMap": {"x": "nope"}, "InputTemplate": "<x>"}},
])
def test_invalid_target_input(events, target):
    rule = unique("rule")
    events.put_rule(Name=rule, EventPattern=PATTERN)
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule=rule, Targets=[
            {"Id": "t", "Arn": "arn:aws:sqs:us-east-1:000000000000:q", **target}])
    assert error_of(exc)[0] == "ValidationException"
    events.delete_rule(Name=rule)


def test_fifo_queue_target_needs_a_message_group(events):
    rule = unique("rule")
    events.put_rule(Name=rule, EventPattern=PATTERN)
    fifo = "arn:aws:sqs:us-east-1:000000000000:q.fifo"
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule=rule, Targets=[{"Id": "t", "Arn": fifo}])
    assert error_of(exc)[0] == "ValidationException"
    events.put_targets(Rule=rule, Targets=[{"Id": "t", "Arn": fifo, "SqsParameters": {"MessageGroupId": "g"}}])
    events.remove_targets(Rule=rule, Ids=["t"])
    events.delete_rule(Name=rule)


# --- PutEvents ---------------------------------------------------------------------------------------------


def test_put_events_failed_entries(events):
    resp = events.put_events(Entries=[
        {"Source": "app.orders", "DetailType": "Order", "Detail": "{}"},
        {"Source": "app.orders", "DetailType": "Order"},
        {"Source": "app.orders", "DetailType": "Order", "Detail": "[1, 2]"},
        {"DetailType": "Order", "Detail": "{}"},
        {"Source": "app.orders", "DetailType": "Order", "Detail": "{}", "EventBusName": unique("nosuch")},
    ])
    assert resp["FailedEntryCount"] == 4
    entries = resp["Entries"]
    assert len(entries[0]["EventId"]) == 36 and "ErrorCode" not in entries[0]
    assert entries[1] == {"ErrorCode": "InvalidArgument",
                          "ErrorMessage": "Parameter Detail is not valid. Reason: Detail is a required argument."}
    assert entries[2] == {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
    assert entries[3]["ErrorCode"] == "InvalidArgument" and "Source" in entries[3]["ErrorMessage"]
    assert entries[4]["ErrorCode"] == "ResourceNotFoundException"


def test_put_events_routes_to_an_sns_topic(server, events, sqs):
    """A topic target publishes the (rendered) event; the topic's subscribers get it as from any Publish."""
    sns = server.client("sns")
    topic = sns.create_topic(Name=unique("topic"))["TopicArn"]
    url, queue_arn = make_queue(sqs)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    rule = unique("rule")
    events.put_rule(Name=rule, EventPattern=PATTERN)
    resp = events.put_targets(Rule=rule, Targets=[{"Id": "topic", "Arn": topic, "InputPath": "$.detail"}])
    assert resp["FailedEntryCount"] == 0
    events.put_events(Entries=[
        {"Source": "app.orders", "DetailType": "Order Placed", "Detail": json.dumps({"total": 150})}])
    (body,) = receive(sqs, url, 1)
    assert json.loads(body) == {"total": 150}
    events.remove_targets(Rule=rule, Ids=["topic"])
    events.delete_rule(Name=rule)


def test_put_events_routes_to_sqs_with_target_input(events, sqs):
    rule = unique("rule")
    events.put_rule(Name=rule, EventPattern=PATTERN)
    whole, whole_arn = make_queue(sqs)
    detail, detail_arn = make_queue(sqs)
    constant, constant_arn = make_queue(sqs)
    shaped, shaped_arn = make_queue(sqs)
    resp = events.put_targets(Rule=rule, Targets=[
        {"Id": "whole", "Arn": whole_arn},
        {"Id": "detail", "Arn": detail_arn, "InputPath": "$.detail"},
        {"Id": "constant", "Arn": constant_arn, "Input": '{"fixed": [1, 2]}'},
        {"Id": "shaped", "Arn": shaped_arn, "InputTransformer": {
            "InputPathsMap": {"total": "$.detail.total", "first": "$.detail.items[0]", "src": "$.source",
                              "absent": "$.detail.absent"},
            "InputTemplate": '{"total": <total>, "first": <first>, "text": "<src> paid <total>", '
                             '"rule": "<aws.events.rule-name>", "missing": <absent>}',
        }},
    ])
    assert resp["FailedEntryCount"] == 0

    before = time.time()
    resp = events.put_events(Entries=[
        {"Source": "app.orders", "DetailType": "Order Placed", "Resources": ["arn:aws:x:::order/1"],
         "Detail": json.dumps({"total": 150, "items": ["apple", "pear"]})},
        {"Source": "app.orders", "DetailType": "Order Placed", "Detail": json.dumps({"total": 50})},
        {"Source": "app.other", "DetailType": "Order Placed", "Detail": json.dumps({"total": 500})},
    ])
    assert resp["FailedEntryCount"] == 0
    event_id = resp["Entries"][0]["EventId"]

    (body,) = receive(sqs, whole, 1)
    event = json.loads(body)
    assert event["id"] == event_id
    assert event["version"] == "0"
    assert event["detail-type"] == "Order Placed" and event["source"] == "app.orders"
    assert event["account"] == "000000000000" and event["region"] == "us-east-1"
    assert event["resources"] == ["arn:aws:x:::order/1"]
    assert event["detail"] == {"total": 150, "items": ["apple", "pear"]}
    assert abs(epoch(event["time"]) - before) < 5
    assert [json.loads(b) for b in receive(sqs, detail, 1)] == [{"total": 150, "items": ["apple", "pear"]}]
    assert [json.loads(b) for b in receive(sqs, constant, 1)] == [{"fixed": [1, 2]}]
    assert [json.loads(b) for b in receive(sqs, shaped, 1)] == [{
        "total": 150, "first": "apple", "text": "app.orders paid 150", "rule": rule, "missing": None}]

    # Only the matching event was delivered; a disabled rule delivers nothing.
    events.disable_rule(Name=rule)
    events.put_events(Entries=[{"Source": "app.orders", "DetailType": "Order", "Detail": '{"total": 999}'}])
    events.enable_rule(Name=rule)
    events.put_events(Entries=[{"Source": "app.orders", "DetailType": "Order", "Detail": '{"total": 101}'}])
    bodies = receive(sqs, whole, 1)
    assert [json.loads(b)["detail"]["total"] for b in bodies] == [101]

    events.remove_targets(Rule=rule, Ids=["whole", "detail", "constant", "shaped"])
    events.delete_rule(Name=rule)


def test_put_events_on_a_custom_bus_invokes_a_function(server, events, tmp_path):
    lam = server.client()
    fn_arn, log = recorder(lam, tmp_path)
    bus = unique("bus")
    events.create_event_bus(Name=bus)
    rule = unique("rule")
    events.put_rule(Name=rule, EventBusName=bus, EventPattern=PATTERN)
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[
        {"Id": "fn", "Arn": fn_arn},
        {"Id": "fn-path", "Arn": f"{fn_arn}:$LATEST", "InputPath": "$.detail"},
    ])
    # The default bus has no such rule: only the custom bus's event is delivered.
    resp = events.put_events(Entries=[
        {"Source": "app.orders", "DetailType": "Order", "Detail": '{"total": 200}'},
        {"Source": "app.orders", "DetailType": "Order", "Detail": '{"total": 300}', "EventBusName": bus},
    ])
    assert resp["FailedEntryCount"] == 0
    got = wait_for(lambda: (found := json_lines(log)) and len(found) >= 2 and found, timeout=30)
    whole = next(e for e in got if "source" in e)
    assert whole["id"] == resp["Entries"][1]["EventId"]
    assert whole["detail"] == {"total": 300}
    assert {"total": 300} in got
    assert len(got) == 2

    events.remove_targets(Rule=rule, EventBusName=bus, Ids=["fn", "fn-path"])
    events.delete_rule(Name=rule, EventBusName=bus)
    events.delete_event_bus(Name=bus)


# --- schedules ---------------------------------------------------------------------------------------------


def test_schedules_fire_with_a_shortened_minute(own_server, tmp_path):
    srv = own_server(FAAS_EVENTS__MINUTE_SECONDS="0.3", FAAS_EVENTS__SCHEDULE_TICK="5")
    events, lam, sqs = srv.client("events"), srv.client(), srv.client("sqs")
    fn_arn, log = recorder(lam, tmp_path)
    rule_arn = events.put_rule(Name="every-minute", ScheduleExpression="rate(1 minute)")["RuleArn"]
    events.put_targets(Rule="every-minute", Targets=[{"Id": "fn", "Arn": fn_arn}])
    got = wait_for(lambda: (found := json_lines(log)) and len(found) >= 3 and found, timeout=30)
    event = got[0]
    assert event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
    assert event["version"] == "0" and event["detail"] == {}
    assert event["resources"] == [rule_arn]
    assert event["account"] == "000000000000" and event["region"] == "us-east-1"
    assert len({e["id"] for e in got}) == len(got)

    # cron() runs on the same shortened clock; a target's Input applies to scheduled events too.
    url, queue_arn = make_queue(sqs)
    events.put_rule(Name="cron-rule", ScheduleExpression="cron(* * * * ? *)")
    events.put_targets(Rule="cron-rule", Targets=[{"Id": "q", "Arn": queue_arn, "Input": '{"tick": true}'}])
    assert [json.loads(b) for b in receive(sqs, url, 2)][:2] == [{"tick": True}, {"tick": True}]

    # A disabled schedule rule is not fired.
    events.disable_rule(Name="every-minute")
    assert events.describe_rule(Name="every-minute")["State"] == "DISABLED"


def test_schedule_catches_up_one_tick_after_downtime(own_server, tmp_path):
    period = 1.0  # rate(1 minute) with a one-second minute
    env = {"FAAS_EVENTS__MINUTE_SECONDS": str(period)}
    srv = own_server(**env)
    events, lam = srv.client("events"), srv.client()
    fn_arn, log = recorder(lam, tmp_path)
    events.put_rule(Name="tick", ScheduleExpression="rate(1 minute)")
    events.put_targets(Rule="tick", Targets=[{"Id": "fn", "Arn": fn_arn}])
    created = time.time()
    wait_for(lambda: json_lines(log), timeout=30)
    srv.stop()
    stopped = time.time()
    before = json_lines(log)
    last_before = max(epoch(e["time"]) for e in before)

    # Stay down for several periods: ticks are missed.
    wait_for(lambda: time.time() > stopped + 5 * period, timeout=30)
    restarted = time.time()
    srv.start()
    ready = time.time()
    after = wait_for(lambda: (found := json_lines(log)[len(before):]) and len(found) >= 2 and found, timeout=30)
    ticks = sorted(epoch(e["time"]) for e in after)
    assert ticks[0] - last_before >= 3 * period - 1  # ticks were missed ...
    # ... but only the latest missed one fired, once, at start-up; older missed ticks never fire.
    assert ticks[0] >= int(restarted - period) - 1
    assert ticks[0] <= ready
    assert created < ticks[0]


# --- durability --------------------------------------------------------------------------------------------


def test_pending_deliveries_survive_sigkill(own_server, tmp_path):
    srv = own_server(FAAS_EVENTS__DISPATCH="false")  # deliveries stay in the outbox
    events, lam = srv.client("events"), srv.client()
    fn_arn, log = recorder(lam, tmp_path)
    events.put_rule(Name="orders", EventPattern=PATTERN)
    events.put_targets(Rule="orders", Targets=[{"Id": "fn", "Arn": fn_arn, "InputPath": "$.detail"}])
    resp = events.put_events(Entries=[
        {"Source": "app.orders", "DetailType": "Order", "Detail": json.dumps({"total": 100 + i})} for i in range(1, 6)
    ])
    assert resp["FailedEntryCount"] == 0
    srv.stop(signal.SIGKILL)
    assert json_lines(log) == []

    srv.env.pop("FAAS_EVENTS__DISPATCH")
    srv.start()
    got = wait_for(lambda: (found := json_lines(log)) and len(found) >= 5 and found, timeout=30)
    assert sorted(e["total"] for e in got) == [101, 102, 103, 104, 105]
