"""Event source mappings through boto3: queues and streams feeding functions in batches, with filters,
partial failures, bisection, failure destinations, disable/enable and crash recovery."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import Server, create_function, json_lines, unique, wait_for

# Appends one JSON line per record it receives, then fails records whose body/data asks for it.
CONSUMER = """
import base64, json, os
CALLS = 0
def handler(event, context):
    global CALLS
    CALLS += 1
    out = os.environ["OUT"]
    failures = []
    records = event.get("Records", [])
    with open(out, "a") as fh:
        for r in records:
            if "kinesis" in r:
                item, key = base64.b64decode(r["kinesis"]["data"]).decode(), r["kinesis"]["sequenceNumber"]
                shard = r["eventID"].split(":")[0]
            else:
                item, key, shard = r["body"], r["messageId"], ""
            fh.write(json.dumps({"item": item, "batch": len(records), "call": CALLS, "pid": os.getpid(),
                                 "shard": shard, "key": key}) + "\\n")
            if "fail-all" in item:
                raise RuntimeError("batch failed")
            if "fail-me" in item and CALLS < 3:
                failures.append({"itemIdentifier": key})
    return {"batchItemFailures": failures}
"""

FAST = {"FAAS_MAPPINGS__IDLE_POLL": "0.2", "FAAS_MAPPINGS__RETRY_DELAY": "0.2", "FAAS_MAPPINGS__SCALE_INTERVAL": "0.2"}


@pytest.fixture
def srv(tmp_path):
    server = Server(tmp_path / "data", env=FAST).start()
    yield server
    server.stop(signal.SIGKILL)


def consumer(lam, tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / f"{unique('out')}.jsonl"
    name, _ = create_function(lam, CONSUMER, Environment={"Variables": {"OUT": str(out)}}, Timeout=10)
    return name, out


def queue(sqs, **attributes) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=unique("q"), Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def drained(sqs, url: str) -> bool:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_queue_mapping_batches_and_shape(srv, tmp_path):
    lam, sqs = srv.client(), srv.client("sqs")
    name, out = consumer(lam, tmp_path)
    url, arn = queue(sqs)
    created = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=5)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert set(created) - {"ResponseMetadata"} == {
        "BatchSize", "EventSourceArn", "EventSourceMappingArn", "FunctionArn", "FunctionResponseTypes",
        "LastModified", "MaximumBatchingWindowInSeconds", "State", "StateTransitionReason", "UUID"}
    assert created["State"] == "Creating" and created["StateTransitionReason"] == "USER_INITIATED"
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    wait_for(lambda: lam.get_event_source_mapping(UUID=created["UUID"])["State"] == "Enabled", timeout=10)
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    wait_for(lambda: {r["item"] for r in json_lines(out)} == {f"m{i}" for i in range(12)}, timeout=30)
    assert max(r["batch"] for r in json_lines(out)) <= 5
    wait_for(lambda: drained(sqs, url), timeout=10)
    assert [m["UUID"] for m in lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]] == [
        created["UUID"]]
    assert lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"][0]["UUID"] == created["UUID"]


def test_queue_mapping_errors(srv, tmp_path):
    lam, sqs = srv.client(), srv.client("sqs")
    name, _ = consumer(lam, tmp_path)
    _, arn = queue(sqs)

    def fails(**kwargs):
        with pytest.raises(Exception) as exc:
            lam.create_event_source_mapping(**{"EventSourceArn": arn, "FunctionName": name, **kwargs})
        err = exc.value.response
        return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]

    assert fails(BatchSize=20) == ("InvalidParameterValueException",
                                   "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
                                   "greater than 10", 400)
    assert fails(FunctionName="not-a-function")[1:] == ("Function does not exist", 400)
    missing = arn.rsplit(":", 1)[0] + ":no-such-queue"
    assert fails(EventSourceArn=missing)[1].startswith("Error occurred while ReceiveMessage. SQS Error Code: "
                                                       "AWS.SimpleQueueService.NonExistentQueue.")
    assert fails(FilterCriteria={"Filters": [{"Pattern": "not json"}]})[1] == "Invalid filter pattern definition."
    assert fails(DestinationConfig={"OnFailure": {"Destination": arn}})[1] == (
        "Unsupported DestinationConfig parameter for given event source mapping type.")
    first = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name)
    code, message, status = fails()
    assert (code, status) == ("ResourceConflictException", 409)
    assert message == (f'An event source mapping with SQS arn (" {arn} ") and function (" {name} ") already exists. '
                       f"Please update or delete the existing mapping with UUID {first['UUID']}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000")
    assert exc.value.response["Error"]["Message"] == "The resource you requested does not exist."
    deleted = lam.delete_event_source_mapping(UUID=first["UUID"])
    assert deleted["State"] == "Deleting" and deleted["ResponseMetadata"]["HTTPStatusCode"] == 202


def test_queue_filters_window_and_partial_failures(srv, tmp_path):
    lam, sqs = srv.client(), srv.client("sqs")
    name, out = consumer(lam, tmp_path)
    url, arn = queue(sqs, VisibilityTimeout=3)
    mapping = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, BatchSize=20, MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": {"kind": ["keep"]}})}]},
    )
    assert mapping["FilterCriteria"]["Filters"][0]["Pattern"] == json.dumps({"body": {"kind": ["keep"]}})
    bodies = [json.dumps({"kind": "keep", "n": i, "note": "fail-me" if i == 3 else ""}) for i in range(6)]
    bodies += [json.dumps({"kind": "drop", "n": 99}), "plain text"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    wait_for(lambda: sum('"n": 3' in r["item"] for r in json_lines(out)) >= 2, timeout=30)
    items = [json.loads(r["item"]) for r in json_lines(out)]
    assert {i["kind"] for i in items} == {"keep"}, "filtered-out messages never reach the function"
    assert sorted({i["n"] for i in items}) == [0, 1, 2, 3, 4, 5]
    assert [i["n"] for i in items].count(3) == 2, "only the reported failure came back"
    assert [i["n"] for i in items].count(0) == 1
    assert json_lines(out)[0]["batch"] >= 2, "the batching window gathered messages into one batch"
    wait_for(lambda: drained(sqs, url), timeout=10)


def test_queue_failures_reach_the_dead_letter_queue_and_disable_keeps_messages(srv, tmp_path):
    lam, sqs = srv.client(), srv.client("sqs")
    name, out = consumer(lam, tmp_path)
    dlq_url, dlq_arn = queue(sqs)
    url, arn = queue(sqs, VisibilityTimeout=1,
                     RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=1)
    sqs.send_message(QueueUrl=url, MessageBody="fail-all please")
    got = wait_for(lambda: sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages"), timeout=30)
    assert got[0]["Body"] == "fail-all please"
    assert sum(r["item"] == "fail-all please" for r in json_lines(out)) == 2

    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    wait_for(lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Disabled", timeout=10)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"later-{i}")
    before = len(json_lines(out))
    enabled = lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    assert enabled["State"] == "Enabling"
    wait_for(lambda: {r["item"] for r in json_lines(out)[before:]} >= {f"later-{i}" for i in range(3)}, timeout=30)


def stream(kinesis, shards: int) -> str:
    name = unique("s")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


def test_stream_mapping_order_and_shape(srv, tmp_path):
    lam, kinesis = srv.client(), srv.client("kinesis")
    name, out = consumer(lam, tmp_path)
    arn = stream(kinesis, 4)
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="TRIM_HORIZON",
                                              BatchSize=10)
    assert mapping["StateTransitionReason"] == "User action"
    assert mapping["LastProcessingResult"] == "No records processed"
    assert mapping["DestinationConfig"] == {"OnFailure": {}}
    assert (mapping["MaximumRetryAttempts"], mapping["MaximumRecordAgeInSeconds"], mapping["ParallelizationFactor"],
            mapping["BisectBatchOnFunctionError"], mapping["TumblingWindowInSeconds"]) == (-1, -1, 1, False, 0)
    sent = defaultdict(list)
    for i in range(80):
        key = f"key-{i % 7}"
        shard = kinesis.put_record(StreamName=arn.rsplit("/", 1)[1], Data=f"{key}:{i}".encode(),
                                   PartitionKey=key)["ShardId"]
        sent[shard].append(f"{key}:{i}")
    wait_for(lambda: len(json_lines(out)) >= 80, timeout=30)
    by_shard = defaultdict(list)
    for r in json_lines(out):
        by_shard[r["shard"]].append(r["item"])
    assert dict(by_shard) == dict(sent), "every record once, in order per shard"
    assert max(r["batch"] for r in json_lines(out)) <= 10
    wait_for(lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK", timeout=10)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name)
    assert exc.value.response["Error"]["Message"] == (
        "1 validation error detected: Value null at 'startingPosition' failed to satisfy constraint: "
        "Member must not be null.")


def test_stream_bisect_and_failure_destination(srv, tmp_path):
    lam, kinesis, sqs = srv.client(), srv.client("kinesis"), srv.client("sqs")
    name, out = consumer(lam, tmp_path)
    arn = stream(kinesis, 1)
    dest_url, dest_arn = queue(sqs)
    lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, StartingPosition="TRIM_HORIZON", BatchSize=4,
        MaximumBatchingWindowInSeconds=1, BisectBatchOnFunctionError=True, MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": dest_arn}},
    )
    stream_name = arn.rsplit("/", 1)[1]
    kinesis.put_records(StreamName=stream_name, Records=[
        {"Data": data.encode(), "PartitionKey": "k"} for data in ("a", "b", "fail-all", "d")])
    message = wait_for(lambda: sqs.receive_message(QueueUrl=dest_url, WaitTimeSeconds=1).get("Messages"), timeout=30)
    record = json.loads(message[0]["Body"])
    assert list(record) == ["requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["functionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    info = record["KinesisBatchInfo"]
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"] == arn and info["shardId"] == "shardId-000000000000"
    wait_for(lambda: "d" in {r["item"] for r in json_lines(out)}, timeout=30)
    done = {r["item"] for r in json_lines(out)}
    assert {"a", "b", "d"} <= done, "bisection let the good records through"


def test_stream_checkpoints_survive_sigkill(srv, tmp_path):
    lam, kinesis = srv.client(), srv.client("kinesis")
    name, out = consumer(lam, tmp_path)
    arn = stream(kinesis, 2)
    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="TRIM_HORIZON",
                                    BatchSize=5)
    stream_name = arn.rsplit("/", 1)[1]
    sent = [f"r{i}" for i in range(200)]
    for chunk in range(0, 200, 50):
        kinesis.put_records(StreamName=stream_name, Records=[
            {"Data": d.encode(), "PartitionKey": d} for d in sent[chunk:chunk + 50]])
    wait_for(lambda: len(json_lines(out)) >= 20, timeout=30)
    srv.stop(signal.SIGKILL)
    srv.start()
    wait_for(lambda: {r["item"] for r in json_lines(out)} >= set(sent), timeout=60)
    by_shard: dict[str, list[str]] = defaultdict(list)
    for r in json_lines(out):
        by_shard[r["shard"]].append(r["key"])
    for keys in by_shard.values():
        first_seen = list(dict.fromkeys(keys))
        assert first_seen == sorted(first_seen, key=int), "order per shard holds across the restart"


TUMBLING = """
import json, os
def handler(event, context):
    state = event.get("state") or {}
    total = state.get("total", 0) + len(event["Records"])
    with open(os.environ["OUT"], "a") as fh:
        fh.write(json.dumps({"total": total, "window": event.get("window"), "shard": event.get("shardId"),
                             "final": event.get("isFinalInvokeForWindow")}) + "\\n")
    return {"state": {"total": total}}
"""


def test_stream_filters_and_tumbling_window(srv, tmp_path):
    lam, kinesis = srv.client(), srv.client("kinesis")
    name, out = consumer(lam, tmp_path)
    arn = stream(kinesis, 1)
    stream_name = arn.rsplit("/", 1)[1]
    lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, StartingPosition="TRIM_HORIZON",
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"], "n": [{"numeric": [">", 1]}]}})}]},
    )
    records = [{"kind": "keep", "n": 5}, {"kind": "drop", "n": 5}, {"kind": "keep", "n": 0}, "not json"]
    kinesis.put_records(StreamName=stream_name, Records=[
        {"Data": (json.dumps(r) if isinstance(r, dict) else r).encode(), "PartitionKey": "k"} for r in records])
    wait_for(lambda: json_lines(out), timeout=30)
    kinesis.put_record(StreamName=stream_name, Data=json.dumps({"kind": "keep", "n": 9}).encode(), PartitionKey="k")
    wait_for(lambda: len(json_lines(out)) >= 2, timeout=30)
    assert [json.loads(r["item"])["n"] for r in json_lines(out)] == [5, 9]

    tumbling_out = tmp_path / "tumbling.jsonl"
    tumbler, _ = create_function(lam, TUMBLING, Environment={"Variables": {"OUT": str(tumbling_out)}})
    second = stream(kinesis, 1)
    lam.create_event_source_mapping(EventSourceArn=second, FunctionName=tumbler, StartingPosition="TRIM_HORIZON",
                                    BatchSize=2, TumblingWindowInSeconds=60)
    kinesis.put_records(StreamName=second.rsplit("/", 1)[1],
                        Records=[{"Data": b"x", "PartitionKey": str(i)} for i in range(6)])
    calls = wait_for(lambda: (rows := json_lines(tumbling_out)) and rows[-1]["total"] == 6 and rows, timeout=30)
    assert [c["total"] for c in calls] == [2, 4, 6], "state passes from one invocation to the next"
    assert calls[0]["window"]["start"] == calls[-1]["window"]["start"]
    assert calls[0]["shard"] == "shardId-000000000000"


def test_stream_parallelization_keeps_order_per_key(srv, tmp_path):
    lam, kinesis = srv.client(), srv.client("kinesis")
    name, out = consumer(lam, tmp_path)
    arn = stream(kinesis, 1)
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="TRIM_HORIZON",
                                              BatchSize=50, ParallelizationFactor=4)
    assert mapping["ParallelizationFactor"] == 4
    sent = [(f"key-{i % 5}", f"key-{i % 5}:{i}") for i in range(60)]
    kinesis.put_records(StreamName=arn.rsplit("/", 1)[1],
                        Records=[{"Data": data.encode(), "PartitionKey": key} for key, data in sent])
    wait_for(lambda: len(json_lines(out)) >= 60, timeout=30)
    got: dict[str, list[str]] = defaultdict(list)
    for r in json_lines(out):
        got[r["item"].split(":")[0]].append(r["item"])
    expected: dict[str, list[str]] = defaultdict(list)
    for key, data in sent:
        expected[key].append(data)
    assert dict(got) == dict(expected), "every record once, in order per partition key"


SLOW = """
import json, os, time
def handler(event, context):
    began = time.time()
    time.sleep(0.3)
    with open(os.environ["OUT"], "a") as fh:
        fh.write(json.dumps({"began": began, "ended": time.time(), "n": len(event["Records"])}) + "\\n")
"""


def test_queue_pollers_scale_with_backlog_up_to_maximum_concurrency(srv, tmp_path):
    lam, sqs = srv.client(), srv.client("sqs")
    out = tmp_path / "slow.jsonl"
    name, _ = create_function(lam, SLOW, Environment={"Variables": {"OUT": str(out)}})
    url, arn = queue(sqs)
    for start in range(0, 30, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"}
                                                      for i in range(start, start + 10)])
    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=1,
                                    ScalingConfig={"MaximumConcurrency": 3})
    rows = wait_for(lambda: (r := json_lines(out)) and sum(x["n"] for x in r) >= 30 and r, timeout=60)
    edges = sorted([(r["began"], 1) for r in rows] + [(r["ended"], -1) for r in rows])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert 2 <= peak <= 3, f"concurrent invocations peaked at {peak}"
