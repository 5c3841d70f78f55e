"""Invocation logs: stored per log group and stream, read through the CloudWatch Logs API (boto3 and the AWS
CLI), retention and the size cap, and `faas logs`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, create_function, unique, wait_for
from faas.logs import invocation_log
from faas.store.log_filter import PatternError, compile_filter
from faas.store.log_filter import Matcher
from faas.store.logdb import (
    MAX_EVENT_CHARS,
    LogDatabase,
    LogSettings,
    NotFound,
    Pacer,
    event_rows,
    row_events,
    split_events,
)
from faas.store.logstore import LogStore

PRINTER = """
import json
print("cold line")
def handler(event, context):
    for i in range(event.get("lines", 3)):
        print(f"line {i} of {context.aws_request_id}")
    if event.get("json"):
        print(json.dumps({"level": event["json"], "latency": event.get("latency", 5), "tags": ["a", "b"]}))
    if event.get("big"):
        print("x" * event["big"])
    if event.get("fail"):
        raise ValueError("boom " + event["fail"])
    return context.aws_request_id
"""


def invoke(lam, name: str, **event) -> tuple[str, dict]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return resp["ResponseMetadata"]["RequestId"], json.loads(resp["Payload"].read())


def group_of(name: str) -> str:
    return f"/aws/lambda/{name}"


def messages(logs, group: str, stream: str) -> list[str]:
    return [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream,
                                                      startFromHead=True)["events"]]


def error_of(exc) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


@pytest.fixture(scope="module")
def logs(server):
    client = server.client("logs")
    yield client
    client.close()


# -- groups, streams and GetLogEvents --------------------------------------------------------------------


def test_invocation_logs_in_order(lam, logs):
    name, _ = create_function(lam, PRINTER)
    first, _ = invoke(lam, name)
    second, _ = invoke(lam, name, lines=1)
    groups = logs.describe_log_groups(logGroupNamePrefix=group_of(name))["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group_of(name)]
    assert groups[0]["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{group_of(name)}:*"
    assert groups[0]["storedBytes"] > 0 and "retentionInDays" not in groups[0]
    streams = logs.describe_log_streams(logGroupName=group_of(name))["logStreams"]
    assert len(streams) == 1
    stream = streams[0]
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream["logStreamName"])
    assert stream["firstEventTimestamp"] <= stream["lastEventTimestamp"] <= stream["lastIngestionTime"]
    got = messages(logs, group_of(name), stream["logStreamName"])
    assert all(m.endswith("\n") for m in got)
    lines = [m.rstrip("\n") for m in got]
    assert lines[0].startswith("INIT_START Runtime Version: ")
    assert lines[1] == "cold line"
    assert lines[2:7] == [f"START RequestId: {first} Version: $LATEST", f"line 0 of {first}", f"line 1 of {first}",
                          f"line 2 of {first}", f"END RequestId: {first}"]
    assert lines[7].startswith(f"REPORT RequestId: {first}\tDuration: ") and "Init Duration" in lines[7]
    assert lines[8:11] == [f"START RequestId: {second} Version: $LATEST", f"line 0 of {second}",
                           f"END RequestId: {second}"]
    assert lines[11].startswith(f"REPORT RequestId: {second}") and "Init Duration" not in lines[11]
    assert len(lines) == 12


def test_get_log_events_paging(lam, logs):
    name, _ = create_function(lam, PRINTER)
    for _ in range(3):
        invoke(lam, name, lines=4)
    group = group_of(name)
    stream = logs.describe_log_streams(logGroupName=group)["logStreams"][0]["logStreamName"]
    everything = messages(logs, group, stream)
    assert len(everything) == 2 + 3 * 7
    forward, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {"startFromHead": True}
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=5, **kwargs)
        assert re.fullmatch(r"f/\d+", page["nextForwardToken"]) and re.fullmatch(r"b/\d+", page["nextBackwardToken"])
        forward += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:  # the end: the same token comes back
            assert page["events"] == []
            break
        token = page["nextForwardToken"]
    assert forward == everything
    # Without startFromHead the last page comes first; backward tokens walk towards the start.
    page = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=5)
    assert [e["message"] for e in page["events"]] == everything[-5:]
    backward = [page["events"]]
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=5,
                                   nextToken=page["nextBackwardToken"])
        if not page["events"]:
            break
        backward.insert(0, page["events"])
    assert [e["message"] for events in backward for e in events] == everything
    # Forward again from the middle of a backward walk.
    mid = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=5, startFromHead=True)
    after = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=5, nextToken=mid["nextForwardToken"])
    assert [e["message"] for e in after["events"]] == everything[5:10]
    # New events appear after the end token.
    end = logs.get_log_events(logGroupName=group, logStreamName=stream)["nextForwardToken"]
    request_id, _ = invoke(lam, name, lines=0)
    newer = logs.get_log_events(logGroupName=group, logStreamName=stream, nextToken=end)["events"]
    assert newer[0]["message"] == f"START RequestId: {request_id} Version: $LATEST\n" and len(newer) == 3


def test_describe_paging_and_ordering(lam, logs):
    prefix = unique("/test/paging")
    for i in range(3):
        logs.create_log_group(logGroupName=f"{prefix}/{i}")
    page = logs.describe_log_groups(logGroupNamePrefix=prefix, limit=2)
    assert [g["logGroupName"] for g in page["logGroups"]] == [f"{prefix}/0", f"{prefix}/1"]
    rest = logs.describe_log_groups(logGroupNamePrefix=prefix, limit=2, nextToken=page["nextToken"])
    assert [g["logGroupName"] for g in rest["logGroups"]] == [f"{prefix}/2"] and "nextToken" not in rest
    paginated = logs.get_paginator("describe_log_groups").paginate(logGroupNamePattern=prefix.upper()[6:],
                                                                   PaginationConfig={"PageSize": 1})
    assert len([g for p in paginated for g in p["logGroups"]]) == 3
    # Two instances at once: two streams.
    name, _ = create_function(lam, PRINTER.replace("return context", "import time; time.sleep(0.3); return context"))
    threads = [threading.Thread(target=invoke, args=(lam, name)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    invoke(lam, name)
    streams = logs.describe_log_streams(logGroupName=group_of(name), orderBy="LastEventTime", descending=True,
                                        limit=1)
    assert len(streams["logStreams"]) == 1 and streams["nextToken"]
    rest = logs.describe_log_streams(logGroupName=group_of(name), orderBy="LastEventTime", descending=True,
                                     nextToken=streams["nextToken"])
    assert len(rest["logStreams"]) == 1
    by_name = logs.describe_log_streams(logGroupIdentifier=group_of(name))["logStreams"]
    assert [s["logStreamName"] for s in by_name] == sorted(s["logStreamName"] for s in by_name)
    assert len(by_name) == 2
    assert (streams["logStreams"][0]["lastEventTimestamp"] >= rest["logStreams"][0]["lastEventTimestamp"])


# -- FilterLogEvents ---------------------------------------------------------------------------------------


def filtered(logs, group: str, pattern: str, **kwargs) -> list[str]:
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, filterPattern=pattern, **kwargs)
    return [e["message"].rstrip("\n") for page in pages for e in page["events"]]


def test_filter_log_events(lam, logs):
    name, _ = create_function(lam, PRINTER)
    group = group_of(name)
    first, _ = invoke(lam, name, json="INFO", latency=5)
    second, _ = invoke(lam, name, json="ERROR", latency=250)
    third, _ = invoke(lam, name, fail="badly", lines=1)
    assert filtered(logs, group, '"line 2"') == [f"line 2 of {first}", f"line 2 of {second}"]
    assert filtered(logs, group, f"line {second}") == [f"line {i} of {second}" for i in range(3)]
    assert filtered(logs, group, f'"{third}" -START -END -REPORT') == [f"line 0 of {third}"]
    assert filtered(logs, group, f'?"line 0 of {first}" ?"line 1 of {second}"') == [
        f"line 0 of {first}", f"line 1 of {second}"]
    assert len(filtered(logs, group, '"START RequestId"')) == 3
    # By request id: every line of that invocation.
    by_id = filtered(logs, group, f'"{second}"')
    assert by_id[0] == f"START RequestId: {second} Version: $LATEST" and by_id[-1].startswith(f"REPORT RequestId: {second}")
    # JSON patterns.
    level = filtered(logs, group, '{ $.level = "ERROR" }')
    assert [json.loads(m)["latency"] for m in level] == [250]
    assert len(filtered(logs, group, "{ $.latency > 100 }")) == 1
    assert len(filtered(logs, group, "{ ($.latency >= 5) && ($.level = \"IN*\") }")) == 1
    assert len(filtered(logs, group, '{ $.level = "ERROR" || $.tags[1] = "b" }')) == 2
    assert filtered(logs, group, "{ $.missing NOT EXISTS && $.level != \"INFO\" }") == level
    # The error block stays one event, traceback included.
    errors = filtered(logs, group, '"[ERROR]"')
    assert len(errors) == 1 and errors[0].startswith("[ERROR] ValueError: boom badly\nTraceback (most recent call")
    assert 'raise ValueError("boom " + event["fail"])' in errors[0]
    # Time window, stream names, paging.
    everything = logs.filter_log_events(logGroupName=group)
    events = everything["events"]
    stream = events[0]["logStreamName"]
    assert everything["searchedLogStreams"] == [{"logStreamName": stream, "searchedCompletely": True}]
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    cut = next(e["timestamp"] for e in events if e["message"].startswith(f"START RequestId: {second}"))
    later = logs.filter_log_events(logGroupName=group, startTime=cut)["events"]
    assert later and all(first not in e["message"] for e in later)
    earlier = logs.filter_log_events(logGroupName=group, endTime=cut)["events"]
    assert earlier and all(e["timestamp"] < cut for e in earlier)
    assert len(logs.filter_log_events(logGroupName=group, logStreamNames=[stream])["events"]) == len(events)
    page = logs.filter_log_events(logGroupName=group, limit=4)
    assert len(page["events"]) == 4 and page["nextToken"]
    assert page["searchedLogStreams"][0]["searchedCompletely"] is False
    rest, token = [], page["nextToken"]
    while token:
        more = logs.filter_log_events(logGroupName=group, limit=4, nextToken=token)
        rest += more["events"]
        token = more.get("nextToken")
    assert [e["eventId"] for e in page["events"] + rest] == [e["eventId"] for e in events]
    assert len({e["eventId"] for e in events}) == len(events)


def test_logs_errors(lam, logs):
    missing = unique("/aws/lambda/missing")
    for call in (lambda: logs.describe_log_streams(logGroupName=missing),
                 lambda: logs.get_log_events(logGroupName=missing, logStreamName="s"),
                 lambda: logs.filter_log_events(logGroupName=missing),
                 lambda: logs.delete_log_group(logGroupName=missing),
                 lambda: logs.put_retention_policy(logGroupName=missing, retentionInDays=1)):
        with pytest.raises(logs.exceptions.ResourceNotFoundException) as exc:
            call()
        assert error_of(exc) == ("ResourceNotFoundException", "The specified log group does not exist.")
    group = unique("/test/errors")
    logs.create_log_group(logGroupName=group)
    with pytest.raises(logs.exceptions.ResourceAlreadyExistsException) as exc:
        logs.create_log_group(logGroupName=group)
    assert error_of(exc)[0] == "ResourceAlreadyExistsException"
    with pytest.raises(logs.exceptions.ResourceNotFoundException) as exc:
        logs.get_log_events(logGroupName=group, logStreamName="nope")
    assert error_of(exc) == ("ResourceNotFoundException", "The specified log stream does not exist.")
    with pytest.raises(logs.exceptions.InvalidParameterException) as exc:
        logs.put_retention_policy(logGroupName=group, retentionInDays=2)
    assert "retentionInDays" in error_of(exc)[1]
    for bad in ('"unbalanced', "{ $.a = }", "{ $.a > \"text\" }", "[a, b]"):
        with pytest.raises(logs.exceptions.InvalidParameterException):
            logs.filter_log_events(logGroupName=group, filterPattern=bad)
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.get_log_events(logGroupName=group, logStreamName="s", nextToken="x/1")
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.describe_log_groups(logGroupNamePrefix="/a", logGroupNamePattern="a")
    logs.put_retention_policy(logGroupName=group, retentionInDays=7)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 7
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    logs.delete_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    # LoggingConfig.LogGroup names the group a function logs to.
    name, _ = create_function(lam, PRINTER, LoggingConfig={"LogFormat": "Text", "LogGroup": f"{group}/custom"})
    invoke(lam, name, lines=1)
    assert logs.describe_log_groups(logGroupNamePrefix=group_of(name))["logGroups"] == []
    assert len(filtered(logs, f"{group}/custom", '"line 0"')) == 1


# -- retention and the size cap ----------------------------------------------------------------------------


def test_retention_and_size_cap(own_server):
    # A retention "day" of 0.5 s and a pass every 0.1 s; a 6 kB cap.
    srv = own_server(FAAS_LOGS__DAY_SECONDS=0.5, FAAS_LOGS__MAINTENANCE_INTERVAL=0.1, FAAS_LOGS__MAX_BYTES=6000)
    lam, logs = srv.client(), srv.client("logs")
    try:
        short, _ = create_function(lam, PRINTER)
        kept, _ = create_function(lam, PRINTER)
        invoke(lam, short, lines=1)
        logs.put_retention_policy(logGroupName=group_of(short), retentionInDays=1)
        invoke(lam, kept, lines=1)
        wait_for(lambda: not logs.filter_log_events(logGroupName=group_of(short))["events"], timeout=20)
        assert logs.describe_log_streams(logGroupName=group_of(short))["logStreams"] == []
        assert logs.describe_log_groups(logGroupNamePrefix=group_of(short))["logGroups"][0]["retentionInDays"] == 1
        assert len(filtered(logs, group_of(kept), '"line 0"')) == 1
        # Over the cap: the oldest events go first, the newest stay.
        ids = [invoke(lam, kept, big=1500, lines=0)[0] for _ in range(6)]

        def total() -> int:
            return sum(g["storedBytes"] for g in logs.describe_log_groups()["logGroups"])

        wait_for(lambda: total() <= 6000, timeout=20)
        left = filtered(logs, group_of(kept), "")
        assert left[-1].startswith(f"REPORT RequestId: {ids[-1]}")
        assert not any(ids[0] in m for m in left) and any(ids[-1] in m for m in left)
        assert left[0] != "cold line"
    finally:
        lam.close()
        logs.close()


async def test_store_retention_and_cap_in_process(tmp_path):
    store = LogStore(tmp_path / "logs.db", LogSettings(max_bytes=0, flush_interval=0.01))
    await store.open()
    try:
        now = time.time()
        store.record("f", "/g/old", "s1", b"a\nb\n", now - 3 * 86400)
        store.record("f", "/g/old", "s1", b"c\n", now)
        store.record("f", "/g/keep", "s2", b"d\n", now - 30 * 86400)
        await store.set_retention("/g/old", 1)
        assert await store.run_once(now) == 2
        page = await store.events("/g/old", "s1", start_ms=None, end_ms=None, token=None, limit=10, from_head=True)
        assert [e.message for e in page.events] == ["c\n"]
        assert (await store.run_once(now)) == 0
        assert store.stored_bytes == 2 * (2 + 26)
        store.settings = LogSettings(max_bytes=30)
        assert await store.run_once(now) == 1  # the first to arrive of the two left
        assert [g.name for g in await store.groups(None, None, None, 10)] == ["/g/keep", "/g/old"]
        with pytest.raises(NotFound):  # its stream went with its last event
            await store.events("/g/old", "s1", start_ms=None, end_ms=None, token=None, limit=10, from_head=True)
        page = await store.events("/g/keep", "s2", start_ms=None, end_ms=None, token=None, limit=10, from_head=True)
        assert [e.message for e in page.events] == ["d\n"] and store.stored_bytes == 28
    finally:
        await store.close()
        await store.close()


async def test_store_cap_cuts_into_a_row(tmp_path):
    # An invocation's lines share a row; the cap deletes the first of them only, as it deletes events.
    store = LogStore(tmp_path / "logs.db", LogSettings(max_bytes=0))
    await store.open()

    async def stream(name: str) -> list[tuple[int, str]]:
        page = await store.events("/g", name, start_ms=None, end_ms=None, token=None, limit=10, from_head=True)
        return [(e.id, e.message) for e in page.events]

    try:
        now = time.time()
        store.record("f", "/g", "s", b"a\nb\nc\n", now)
        store.record("f", "/g", "s", b"d\ne\n", now)
        store.record("f", "/g", "t", b"z\n", now)
        await store.flush()
        assert store.stored_bytes == 6 * 28
        store.settings = LogSettings(max_bytes=6 * 28 - 30)
        assert await store.run_once(now) == 2  # a, then b: 56 bytes for the 30 over
        assert await stream("s") == [(3, "c\n"), (4, "d\n"), (5, "e\n")]
        assert [s.stored_bytes for s in await store.streams("/g", None, False, False, None, 10)] == [3 * 28, 28]
        store.settings = LogSettings(max_bytes=4 * 28 - 68)
        assert await store.run_once(now) == 3  # c; then d, and e too: all of its row
        with pytest.raises(NotFound):
            await stream("s")
        assert store.stored_bytes == 28
        store.settings = LogSettings(max_bytes=0)
        store.record("f", "/g", "s", b"f\ng\n", now)  # ids go on from the last event's
        assert await stream("s") == [(7, "f\n"), (8, "g\n")]
    finally:
        await store.close()


# The log database as version 1 made it: one row per event.
_SCHEMA_V1 = """
CREATE TABLE log_groups (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, retention_days INTEGER);
CREATE TABLE log_streams (
    id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, name TEXT NOT NULL, created_ms INTEGER NOT NULL,
    first_event_ms INTEGER, last_event_ms INTEGER, last_ingestion_ms INTEGER,
    stored_bytes INTEGER NOT NULL DEFAULT 0, UNIQUE (group_id, name));
CREATE TABLE log_events (
    id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, stream_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    ingested INTEGER NOT NULL, message TEXT NOT NULL);
CREATE INDEX log_events_stream ON log_events (stream_id);
CREATE INDEX log_events_group_ts ON log_events (group_id, ts);
INSERT INTO log_groups VALUES (1, '/g', 1000, NULL);
INSERT INTO log_streams VALUES (1, 1, 's', 1000, 1000, 1000, 1000, 64);
INSERT INTO log_events VALUES (1, 1, 1, 1000, 1000, 'old a\n'), (2, 1, 1, 1000, 1000, 'old b\n');
PRAGMA user_version = 1;
"""


async def test_store_migrates_version_1(tmp_path):
    with contextlib.closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        conn.executescript(_SCHEMA_V1)
    store = LogStore(tmp_path / "logs.db", LogSettings(max_bytes=0))
    await store.open()
    try:
        store.record("f", "/g", "s", b"new a\nnew b\n", 2.0)
        page = await store.events("/g", "s", start_ms=None, end_ms=None, token=("f", 1), limit=10, from_head=True)
        assert [(e.id, e.ts, e.message) for e in page.events] == [
            (2, 1000, "old b\n"), (3, 2000, "new a\n"), (4, 2000, "new b\n")]
        assert store.stored_bytes == 4 * 32
        store.settings = LogSettings(max_bytes=4 * 32 - 40)
        assert await store.run_once(3.0) == 2  # both old events, each a row
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        assert conn.execute("SELECT id, event_count FROM log_events").fetchall() == [(3, 2)]


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
async def test_store_writes_a_large_batch(tmp_path, process):
    # 300 invocations in one write: rows go in by INSERTs of 128, 128, 32, 8 and 4 rows.
    store = LogStore(tmp_path / "logs.db", LogSettings(max_bytes=0, flush_records=1000), process=process)
    await store.open()
    try:
        for n in range(300):
            store.record("f", "/g", "s", b"%d a\n%d b\n" % (n, n) if n % 7 else b"%d\n" % n, time.time())
        events, token = [], None
        while True:
            page = await store.events("/g", "s", start_ms=None, end_ms=None, token=token, limit=1000, from_head=True)
            if not page.events:
                break
            events += page.events
            token = ("f", page.events[-1].id)
        want = [m for n in range(300) for m in ([f"{n} a\n", f"{n} b\n"] if n % 7 else [f"{n}\n"])]
        assert [e.message for e in events] == want and [e.id for e in events] == list(range(1, len(want) + 1))
    finally:
        await store.close()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
async def test_store_survives_reopen(tmp_path, process):
    store = LogStore(tmp_path / "logs.db", process=process)
    await store.open()
    store.record("f", "/g", "s", b"kept\n", time.time())
    await store.close()
    again = LogStore(tmp_path / "logs.db", process=not process)
    await again.open()
    try:
        page = await again.filter("/g", streams=None, stream_prefix=None, start_ms=None, end_ms=None, cursor=None,
                                  limit=10, matcher=Matcher())
        assert [e.message for e in page.events] == ["kept\n"] and again.stored_bytes == 5 + 26
    finally:
        await again.close()


async def test_store_in_its_own_process(tmp_path):
    """The writer in a process of its own: what is recorded is read back, a filter pattern is compiled again
    there, NotFound crosses over, stored_bytes comes back; when the process dies, the next call starts another
    and nothing written before is lost; closing ends it."""
    store = LogStore(tmp_path / "logs.db", LogSettings(max_bytes=0), process=True)
    await store.open()

    async def read() -> list[str]:
        page = await store.events("/g", "s", start_ms=None, end_ms=None, token=None, limit=10, from_head=True)
        return [e.message for e in page.events]

    try:
        first = store._worker
        assert first is not None and first.proc is not None and first.proc.pid != os.getpid()
        store.record("f", "/g", "s", b"alpha\nbeta ERROR x\n", time.time())
        store.record("f", "/g", "s", "gamma \u00e9\n".encode(), time.time())
        assert await read() == ["alpha\n", "beta ERROR x\n", "gamma \u00e9\n"]
        assert store.stored_bytes == 6 + 13 + 9 + 3 * 26
        page = await store.filter("/g", streams=None, stream_prefix=None, start_ms=None, end_ms=None, cursor=None,
                                  limit=10, matcher=compile_filter("ERROR"))
        assert [e.message for e in page.events] == ["beta ERROR x\n"]
        with pytest.raises(NotFound):
            await store.events("/g", "nope", start_ms=None, end_ms=None, token=None, limit=10, from_head=True)

        first.proc.kill()
        await first.proc.wait()
        store.record("f", "/g", "s", b"delta\n", time.time())
        assert await read() == ["alpha\n", "beta ERROR x\n", "gamma \u00e9\n", "delta\n"]
        assert store._worker is not first and store._worker.proc.pid != first.proc.pid
    finally:
        await store.close()
    assert store._worker is None and first.proc.returncode is not None


def test_paced_write_pauses_and_writes_the_same(tmp_path):
    """The log process's database writes in slices (a pause after each 16 invocations' rows and each INSERT
    once `work` is spent): the same rows as an unpaced write, with the pauses taken."""
    batch = [("/g", f"s{n % 3}", b"%d a\n%d b\n" % (n, n), 1_700_000_000 + n) for n in range(300)]
    plain, paced = LogDatabase(tmp_path / "plain.db"), LogDatabase(tmp_path / "paced.db", Pacer(work=0, pause=0.002))
    for db in (plain, paced):
        db.open()
    try:
        plain.write(batch)
        started = time.perf_counter()
        paced.write(batch)
        assert time.perf_counter() - started >= (300 // 16 + 300 // 128) * 0.002
        for stream in ("s0", "s1", "s2"):
            want, got = (db.events("/g", stream, None, None, None, 1000, True).events for db in (plain, paced))
            assert [(e.id, e.ts, e.message) for e in got] == [(e.id, e.ts, e.message) for e in want]
            assert len(want) == 200
        assert paced.stored_bytes == plain.stored_bytes
    finally:
        plain.close()
        paced.close()


def _log_writer_pid(server_pid: int) -> int:
    for child in subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split():
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
            if b"faas.store.log_child" in f.read():
                return int(child)
    raise AssertionError("no log writer process under the server")


def test_server_log_writer_killed(own_server):
    """A server's log writer killed outright: invocations go on, their logs are written by a new writer, the
    logs written before are still there, and the server's stop ends the writer."""
    srv = own_server()
    lam, logs = srv.client(), srv.client("logs")
    try:
        name, _ = create_function(lam, PRINTER)
        before, _ = invoke(lam, name, lines=1)
        wait_for(lambda: len(filtered(logs, group_of(name), '"line 0"')) == 1)
        assert srv.proc is not None
        writer = _log_writer_pid(srv.proc.pid)
        os.kill(writer, signal.SIGKILL)
        after = [invoke(lam, name, lines=1)[0] for _ in range(3)]
        wait_for(lambda: len(filtered(logs, group_of(name), '"line 0"')) == 4, timeout=20)
        reports = filtered(logs, group_of(name), "REPORT")
        assert all(any(rid in m for m in reports) for rid in [before, *after])
        again = _log_writer_pid(srv.proc.pid)
        assert again != writer
    finally:
        lam.close()
        logs.close()
    srv.stop()
    wait_for(lambda: not os.path.exists(f"/proc/{again}") or open(f"/proc/{again}/stat").read().split()[2] == "Z")


# -- splitting and patterns ----------------------------------------------------------------------------------


def test_split_events():
    text = (b"START RequestId: r Version: 1\n"
            b"plain\n"
            b"multi\rline record\n"
            b"Traceback (most recent call last):\n"
            b'  File "/var/task/app.py", line 3, in handler\n'
            b"    raise KeyError(1)\n"
            b"KeyError: 1\n"
            b"[ERROR] ValueError: x\n"
            b"Traceback (most recent call last):\n"
            b'  File "/var/task/app.py", line 5, in handler\n'
            b"END RequestId: r\n"
            b"[ERROR]\t2024-01-01T00:00:00.000Z\tr\tfailed\n"
            b"Traceback (most recent call last):\n"
            b'  File "/var/task/app.py", line 9, in handler\n'
            b"OSError: [Errno 2] gone\n"
            b"crlf\r\n"
            b"no newline")
    assert split_events(text) == [
        "START RequestId: r Version: 1\n", "plain\n", "multi\nline record\n",
        ('Traceback (most recent call last):\n  File "/var/task/app.py", line 3, in handler\n'
         "    raise KeyError(1)\nKeyError: 1\n"),
        '[ERROR] ValueError: x\nTraceback (most recent call last):\n  File "/var/task/app.py", line 5, in handler\n',
        "END RequestId: r\n",
        ('[ERROR]\t2024-01-01T00:00:00.000Z\tr\tfailed\nTraceback (most recent call last):\n'
         '  File "/var/task/app.py", line 9, in handler\nOSError: [Errno 2] gone\n'),
        "crlf\n", "no newline\n",
    ]
    long = split_events(b"y" * 300000 + b"\nz\n")
    assert [len(e) for e in long] == [262119, 300000 - 262118 + 1, 2]


def _invocation(output: bytes = b"", **kwargs) -> bytes:
    return invocation_log("0f7c3e5a-1b2d-4c6e-8f90-a1b2c3d4e5f6", "$LATEST", output, duration_ms=0.5, memory_mb=128,
                          max_memory_used_mb=30, **kwargs)


# Texts without a traceback, a \r or an over-long line: stored as one row without splitting them.
PLAIN = [
    _invocation(),
    _invocation(b"line 1\nline 2\n\n  indented\n", init_ms=12.5, init_output=b"cold\n"),
    _invocation(b"no newline at the end", status_error="Runtime.ExitError"),
    _invocation(b"caf\xc3\xa9 \xe2\x80\xa8 \xff\xfe bad utf-8\x00nul\x0b\x0c\x1c\xc2\x85\n"),
    _invocation(b'{"level": "INFO"}\n', json_format=True),
    _invocation(b"[ERROR] ValueError: no traceback follows\nValueError: x\n", timed_out_after=3.0),
    b"\n", b"\n\n", b"x", b"y" * (MAX_EVENT_CHARS - 1) + b"\n",
]
# Texts that take the general path.
OTHER = [
    _invocation(b"[ERROR] ValueError: boom\nTraceback (most recent call last):\n"
                b'  File "/var/task/app.py", line 12, in handler\n    raise ValueError("boom")\nafter it\n'),
    _invocation(b"Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 1\n\n"
                b"During handling of the above exception, another exception occurred:\n\n"
                b"Traceback (most recent call last):\n  File \"y\", line 2\nOSError: gone\n"),
    _invocation(b"crlf\r\nmulti\rline\n\r\n"),
    b"short\n" + b"y" * (MAX_EVENT_CHARS + 5) + b"\nshort\n",
    b"".join(b"line %d\n" % i for i in range(MAX_EVENT_CHARS // 5)),
]


def test_event_rows_hold_split_events(monkeypatch):
    for text in PLAIN + OTHER:
        rows = event_rows(text)
        assert [e for count, message in rows for e in row_events(count, message)] == split_events(text)
        for count, message in rows:  # several events: one line each, a row of bounded size
            assert count == 1 or (message.count("\n") == count and len(message) < 2 * MAX_EVENT_CHARS)

    def general(text: str) -> list[str]:
        raise AssertionError(f"general path taken for {text[:50]!r}")

    with monkeypatch.context() as patch:
        patch.setattr("faas.store.logdb._split", general)
        assert all(len(event_rows(text)) == 1 for text in PLAIN)
        with pytest.raises(AssertionError):
            event_rows(OTHER[0])
    assert [count for count, _ in event_rows(OTHER[0])] == [1, 1, 3]  # the [ERROR] block is one event
    assert [count for count, _ in event_rows(OTHER[3])] == [2, 2]  # a run reaching MAX_EVENT_CHARS ends its row
    assert len(OTHER[4]) // MAX_EVENT_CHARS == 2 and len(event_rows(OTHER[4])) == 3


async def test_store_rows_read_as_events(tmp_path, monkeypatch):
    """Several events in one row read exactly as one row each would: the same ids, pages and tokens in both
    directions from any id, time windows, filter matches (never across lines of a row), cursors and the
    scan limit that ends a FilterLogEvents page."""
    monkeypatch.setattr("faas.store.logdb._FILTER_CHUNK", 3)  # rows a query fetches
    monkeypatch.setattr("faas.store.logdb._FILTER_SCAN", 7)  # events one call examines
    store = LogStore(tmp_path / "logs.db", LogSettings(max_bytes=0))
    await store.open()
    texts = [*PLAIN[:6], *OTHER[:3], b"alpha 1\nbeta 2\n", b"alpha beta 3\n", b'x\n  {"a": 1}\n{"a": 2}\n']
    expected: list[tuple[int, str, int, str]] = []  # (id, stream, ts, message), ids as one row per event has them
    for n, text in enumerate(texts * 2):
        stream, ts = f"s{n % 3}", 1_000_000 + (n * 7919) % 13  # interleaved streams, times out of order
        store.record("f", "/g", stream, text, ts / 1000)
        expected += [(eid, stream, ts, m) for eid, m in enumerate(split_events(text), len(expected) + 1)]
    try:
        last = len(expected)
        for stream in ("s0", "s1", "s2"):
            mine = [e for e in expected if e[1] == stream]
            for limit in (1, 2, 5):
                for token, from_head in [(None, True), (None, False)] + [
                        ((kind, k), True) for kind in "fb" for k in range(last + 2)]:
                    page = await store.events("/g", stream, start_ms=None, end_ms=None, token=token, limit=limit,
                                              from_head=from_head)
                    if token is None:
                        want = mine[:limit] if from_head else mine[-limit:]
                    elif token[0] == "f":
                        want = [e for e in mine if e[0] > token[1]][:limit]
                    else:
                        want = [e for e in mine if e[0] < token[1]][-limit:]
                    assert [(e.id, e.stream, e.ts, e.message) for e in page.events] == want
                    if want:
                        assert (page.forward, page.backward) == (f"f/{want[-1][0]}", f"b/{want[0][0]}")
            page = await store.events("/g", stream, start_ms=1_000_003, end_ms=1_000_009, token=("f", 5), limit=50,
                                      from_head=True)
            assert [e.id for e in page.events] == [e[0] for e in mine if e[0] > 5 and 1_000_003 <= e[2] < 1_000_009]

        by_time = sorted(expected, key=lambda e: (e[2], e[0]))
        matchers = [Matcher(), compile_filter('"alpha" "beta"'), compile_filter("{ $.a = 2 }"),
                    compile_filter("-START"), Matcher(required=("n",), accepts=lambda m: "1" in m),
                    Matcher(required=("ERROR", "Traceback"))]
        for matcher in matchers:
            for limit in (1, 4, 100):
                cursor, pages = None, []
                while True:
                    page = await store.filter("/g", streams=None, stream_prefix=None, start_ms=None, end_ms=None,
                                              cursor=cursor, limit=limit, matcher=matcher)
                    pages.append(([(e.id, e.stream, e.ts, e.message) for e in page.events], page.cursor))
                    if page.cursor is None:
                        break
                    cursor = page.cursor
                assert pages == _filter_pages(by_time, matcher, limit, 7)
        page = await store.filter("/g", streams=["s1"], stream_prefix=None, start_ms=1_000_002, end_ms=1_000_010,
                                  cursor=None, limit=100, matcher=Matcher(required=("RequestId",)))
        assert [e.id for e in page.events] == [e[0] for e in by_time if e[1] == "s1" and 1_000_002 <= e[2] < 1_000_010
                                               and "RequestId" in e[3]][:7]
    finally:
        await store.close()


def _filter_pages(events, matcher: Matcher, limit: int, scan: int) -> list:
    """FilterLogEvents as one row per event answers, page after page: the events past the cursor that pass
    the matcher's SQL tests are examined, `scan` of them at most."""
    pages, found, scanned, position = [], [], 0, None
    for e in events:
        if not all(t in e[3] for t in matcher.required) or (matcher.json and not e[3].lstrip(" ").startswith("{")):
            continue
        scanned += 1
        position = (e[2], e[0])
        if matcher.accepts is None or matcher.accepts(e[3]):
            found.append(e)
        if len(found) >= limit or scanned == scan:
            pages.append((found, position))
            found, scanned = [], 0
    pages.append((found, None))
    return pages


def test_filter_patterns():
    def ok(pattern: str, message: str) -> bool:
        m = compile_filter(pattern)
        return all(t in message for t in m.required) and (m.accepts is None or m.accepts(message))

    assert ok("", "anything") and ok("ERROR", "[ERROR] x") and not ok("error", "[ERROR] x")
    assert ok('ERROR "timed out"', "ERROR: call timed out") and not ok('ERROR "timed out"', "ERROR: timed  out")
    assert not ok("ERROR -retry", "ERROR will retry") and ok("ERROR -retry", "ERROR final")
    assert ok("?WARN ?ERROR", "a WARN") and ok("?WARN ?ERROR", "an ERROR") and not ok("?WARN ?ERROR", "INFO")
    assert ok("%r[0-9]+x%", "ar12x") and not ok("%^r%", "ar")
    assert ok('{ $.user.id = 7 }', '{"user": {"id": 7}}') and not ok('{ $.user.id = 7 }', '{"user": {"id": "7"}}')
    assert ok('{ $.msg = "*time*" }', '{"msg": "a timeout"}') and not ok('{ $.msg = "time*" }', '{"msg": "a time"}')
    assert ok("{ $.flag IS TRUE }", '{"flag": true}') and ok("{ $.x IS NULL }", '{"x": null}')
    assert not ok('{ $.a = "x" }', "not json") and not ok('{ $.a = "x" }', '["x"]')
    assert ok('{ ($.a = 1 || $.b = 2) && $.c != "z" }', '{"b": 2, "c": "y"}')
    for bad in ('"open', "{ $.a = ", "{ a = 1 }", '{ $.a < "s" }', "%(%"):
        with pytest.raises(PatternError):
            compile_filter(bad)


# -- clients: the AWS CLI and `faas logs` -------------------------------------------------------------------


def _cli_env() -> dict[str, str]:
    return {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1"}


def test_aws_cli_reads_logs(server, lam):
    # AWS CLI v1 has no `logs tail` (a v2 command); filter-log-events and get-log-events are what it offers.
    name, _ = create_function(lam, PRINTER)
    request_id, _ = invoke(lam, name, lines=2)

    def aws(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "awscli", "--endpoint-url", server.url, "logs", *args],
                              capture_output=True, text=True, env=_cli_env(), timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    found = aws("filter-log-events", "--log-group-name", group_of(name), "--filter-pattern", f'"{request_id}"')
    assert [e["message"].split(" ")[0] for e in found["events"]] == ["START", "line", "line", "END", "REPORT"]
    stream = aws("describe-log-streams", "--log-group-name", group_of(name))["logStreams"][0]["logStreamName"]
    got = aws("get-log-events", "--log-group-name", group_of(name), "--log-stream-name", stream, "--start-from-head")
    assert got["events"][-1]["message"].startswith(f"REPORT RequestId: {request_id}")


def faas_logs(server, *args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "faas", "logs", *args, "--endpoint-url", server.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_cli_env(),
                            **kwargs)


def test_faas_logs_command(server, lam):
    name, _ = create_function(lam, PRINTER)
    request_id, _ = invoke(lam, name, lines=2)
    proc = faas_logs(server, name, "--since", "1h")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[\$LATEST\][0-9a-f]{8} INIT_START .*", lines[0])
    assert [line.split(" ", 2)[2] for line in lines[2:5]] == [
        f"START RequestId: {request_id} Version: $LATEST", f"line 0 of {request_id}", f"line 1 of {request_id}"]
    assert "\033[" not in out
    proc = faas_logs(server, name, "--filter", '"line 1"', "--color", "always", "--since",
                     time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600)))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and len(out.splitlines()) == 1 and f"line 1 of {request_id}" in out
    proc = faas_logs(server, unique("nothing"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "does not exist" in err


def test_faas_logs_follow(server, lam):
    name, _ = create_function(lam, PRINTER)
    invoke(lam, name, lines=1)
    proc = faas_logs(server, name, "--follow", "--interval", "0.1", "--color", "always")
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for(lambda: any("\033[2mREPORT" in line for line in seen), timeout=30)
        count = len(seen)
        request_id, _ = invoke(lam, name, fail="now", lines=0)
        wait_for(lambda: any(f"REPORT RequestId: {request_id}" in line for line in seen), timeout=30)
        new = seen[count:]
        assert f"START RequestId: {request_id}" in new[0]
        assert any("\033[31m[ERROR] ValueError: boom now" in line for line in new)
        assert len([line for line in seen if "START RequestId" in line]) == 2  # nothing printed twice
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        proc.stdout.close()
        proc.stderr.close()
