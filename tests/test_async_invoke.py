"""Asynchronous invocation: the durable queue, retries, event age, destinations, throttles and crashes."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import Server, create_function, json_lines, unique, wait_for

# Appends one JSON line per invocation to the file named in the event, then fails when asked.
RECORDER = """
import json, os
def handler(event, context):
    with open(event["log"], "a") as fh:
        fh.write(json.dumps({"request_id": context.aws_request_id, "pid": os.getpid(), "n": event.get("n")}) + "\\n")
    if event.get("fail"):
        raise RuntimeError("failed on purpose")
    return {"ok": event.get("n")}
"""

# A destination function: appends the record it receives.
SINK = """
import json, os
def handler(event, context):
    with open(os.environ["SINK"], "a") as fh:
        fh.write(json.dumps(event) + "\\n")
"""

FAST = {
    "FAAS_ASYNC__RETRY_DELAYS": "[0.2, 0.2]",
    "FAAS_ASYNC__THROTTLE_BACKOFF": "0.1",
    "FAAS_ASYNC__THROTTLE_BACKOFF_MAX": "0.3",
}


def send(lam, name: str, event: dict, qualifier: str | None = None) -> str:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event).encode(), **kwargs)
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    assert "ExecutedVersion" not in resp
    return resp["ResponseMetadata"]["RequestId"]


@pytest.fixture
def fast_server(tmp_path):
    servers: list[Server] = []

    def start(**env) -> Server:
        srv = Server(tmp_path / f"d{len(servers)}", env={**FAST, **env}).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop(signal.SIGKILL)


def sink(lam, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / f"sink-{unique()}.jsonl"
    name, created = create_function(lam, SINK, Environment={"Variables": {"SINK": str(path)}})
    return created["FunctionArn"], path


def test_event_is_accepted_then_run(fast_server, tmp_path):
    lam = fast_server().client()
    name, _ = create_function(lam, RECORDER)
    log = tmp_path / "log.jsonl"
    request_id = send(lam, name, {"log": str(log), "n": 1})
    assert wait_for(lambda: json_lines(log), timeout=20)[0] == {"request_id": request_id, "pid": json_lines(log)[0]["pid"], "n": 1}
    legacy = lam.invoke_async(FunctionName=name, InvokeArgs=json.dumps({"log": str(log), "n": 2}))
    assert legacy["Status"] == 202
    wait_for(lambda: len(json_lines(log)) == 2, timeout=20)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=unique("missing"), InvocationType="Event", Payload=b"{}")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{nope")
    with pytest.raises(lam.exceptions.RequestTooLargeException) as exc:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * 1048577 + b'"')
    assert "payload is too large for the Event invocation type (limit 1048576 bytes)" in \
        exc.value.response["Error"]["Message"]


def test_retries_then_failure_record(fast_server, tmp_path):
    lam = fast_server().client()
    name, _ = create_function(lam, RECORDER)
    dest_arn, dest_path = sink(lam, tmp_path)
    ok_arn, ok_path = sink(lam, tmp_path)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": dest_arn}, "OnSuccess": {"Destination": ok_arn}},
    )
    log = tmp_path / "fail.jsonl"
    request_id = send(lam, name, {"log": str(log), "fail": True})
    record = wait_for(lambda: json_lines(dest_path), timeout=30)[0]
    attempts = json_lines(log)
    assert len(attempts) == 2, "1 + MaximumRetryAttempts runs"
    assert {a["request_id"] for a in attempts} == {request_id}, "the request id stays across retries"
    assert list(record) == ["version", "timestamp", "requestContext", "requestPayload", "responseContext",
                            "responsePayload"]
    assert record["version"] == "1.0" and record["timestamp"].endswith("Z")
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"arn:aws:lambda:us-east-1:000000000000:function:{name}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 2,
    }
    assert record["requestPayload"] == {"log": str(log), "fail": True}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorMessage"] == "failed on purpose"

    ok_id = send(lam, name, {"log": str(log), "n": 7})
    success = wait_for(lambda: json_lines(ok_path), timeout=30)[0]
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestContext"]["requestId"] == ok_id
    assert success["requestContext"]["approximateInvokeCount"] == 1
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"] == {"ok": 7}


def test_default_retries_and_zero_retries(fast_server, tmp_path):
    lam = fast_server().client()
    name, _ = create_function(lam, RECORDER)
    log = tmp_path / "default.jsonl"
    send(lam, name, {"log": str(log), "fail": True})
    wait_for(lambda: len(json_lines(log)) == 3, timeout=30)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    once = tmp_path / "once.jsonl"
    send(lam, name, {"log": str(once), "fail": True})
    wait_for(lambda: len(json_lines(once)) == 1, timeout=30)
    stats = json.loads(urllib.request.urlopen(f"{lam.meta.endpoint_url}/_faas/async").read())
    wait_for(lambda: any(d["function"] == name and d["reason"] == "RetriesExhausted" and d["count"] == 2
                         for d in json.loads(urllib.request.urlopen(
                             f"{lam.meta.endpoint_url}/_faas/async").read())["dropped"]), timeout=10)
    assert "queues" in stats
    time.sleep(0.5)
    assert len(json_lines(once)) == 1 and len(json_lines(log)) == 3


def test_event_age_exceeded(fast_server, tmp_path):
    lam = fast_server(FAAS_ASYNC__AGE_SCALE="0.01", FAAS_ASYNC__RETRY_DELAYS="[2.0]").client()
    name, _ = create_function(lam, RECORDER)
    dest_arn, dest_path = sink(lam, tmp_path)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60,
                                         DestinationConfig={"OnFailure": {"Destination": dest_arn}})
    log = tmp_path / "age.jsonl"
    send(lam, name, {"log": str(log), "fail": True})
    record = wait_for(lambda: json_lines(dest_path), timeout=30)[0]
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert len(json_lines(log)) == 1


def test_throttled_events_are_retried_not_lost(fast_server, tmp_path):
    lam = fast_server().client()
    code = RECORDER.replace("    if event.get(\"fail\"):", "    import time\n    time.sleep(event.get('sleep', 0))\n    if event.get(\"fail\"):")
    name, _ = create_function(lam, code)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    log = tmp_path / "throttled.jsonl"
    ids = [send(lam, name, {"log": str(log), "n": i, "sleep": 0.3}) for i in range(6)]
    wait_for(lambda: {line["request_id"] for line in json_lines(log)} == set(ids), timeout=60)
    assert len(json_lines(log)) == 6, "throttles are not attempts: each event ran once"


def test_zero_reserved_concurrency_goes_to_on_failure(fast_server, tmp_path):
    lam = fast_server().client()
    name, _ = create_function(lam, RECORDER)
    dest_arn, dest_path = sink(lam, tmp_path)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnFailure": {"Destination": dest_arn}})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    request_id = send(lam, name, {"log": str(tmp_path / "never.jsonl")})
    record = wait_for(lambda: json_lines(dest_path), timeout=30)[0]
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"arn:aws:lambda:us-east-1:000000000000:function:{name}:$LATEST",
        "condition": "ZeroReservedConcurrency",
        "approximateInvokeCount": 0,
    }
    assert "responseContext" not in record and "responsePayload" not in record
    assert not (tmp_path / "never.jsonl").exists()


def test_sigkill_with_queued_events_loses_none(fast_server, tmp_path):
    srv = fast_server()
    lam = srv.client()
    code = RECORDER.replace("    if event.get(\"fail\"):", "    import time\n    time.sleep(0.005)\n    if event.get(\"fail\"):")
    name, _ = create_function(lam, code)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    log = tmp_path / "crash.jsonl"
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda i: send(lam, name, {"log": str(log), "n": i}), range(1000)))
    assert len(ids) == 1000
    srv.stop(signal.SIGKILL)
    done_before = {line["request_id"] for line in json_lines(log)}
    assert len(done_before) < 1000, "the kill came while events were still queued"
    srv.start()
    wait_for(lambda: {line["request_id"] for line in json_lines(log)} >= ids, timeout=120, interval=0.5)


def test_event_invoke_config_api(lam, tmp_path):
    name, created = create_function(lam, RECORDER, Publish=True)
    fn = created["FunctionArn"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_event_invoke_config(FunctionName=name)
    assert exc.value.response["Error"]["Message"] == (
        "You must specify at least one of error handling or destination setting.")
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=100)
    assert put["FunctionArn"] == f"{fn}:$LATEST"
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 100)
    replaced = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert "MaximumEventAgeInSeconds" not in replaced, "Put replaces"
    merged = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=200)
    assert (merged["MaximumRetryAttempts"], merged["MaximumEventAgeInSeconds"]) == (0, 200), "Update merges"
    assert lam.get_function_event_invoke_config(FunctionName=name)["MaximumEventAgeInSeconds"] == 200
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function_event_invoke_config(FunctionName=name, Qualifier="1")
    assert exc.value.response["Error"]["Message"] == f"The function {fn}:1 doesn't have an EventInvokeConfig"
    lam.put_function_event_invoke_config(FunctionName=f"{name}:1", MaximumRetryAttempts=2)
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == [f"{fn}:$LATEST", f"{fn}:1"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": fn}})
    assert exc.value.response["Error"]["Message"] == "You can't specify the function as a destination for itself."
    missing = "arn:aws:lambda:us-east-1:000000000000:function:not-there"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnFailure": {"Destination": missing}})
    assert exc.value.response["Error"]["Message"] == f"The destination ARN {missing} is invalid."
    iam = "arn:aws:iam::000000000000:role/x"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": iam}})
    assert exc.value.response["Error"]["Message"] == (
        f"The provided destination config DestinationConfig(onSuccess=OnSuccess(destination={iam}), onFailure=null) "
        "is invalid.")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.put_function_event_invoke_config(FunctionName=unique("missing"), MaximumRetryAttempts=1)
    assert exc.value.response["Error"]["Message"] == "The function doesn't exist."
    assert lam.delete_function_event_invoke_config(FunctionName=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName=name)


def _queue(sqs) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=unique("dest"))["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _receive(sqs, url: str) -> dict:
    return wait_for(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageAttributeNames=["All"])
                    .get("Messages"), timeout=30)[0]


def test_queue_bus_destinations_and_dead_letter_queue(fast_server, tmp_path):
    srv = fast_server()
    lam, sqs, events = srv.client(), srv.client("sqs"), srv.client("events")
    fail_url, fail_arn = _queue(sqs)
    bus_target_url, bus_target_arn = _queue(sqs)
    dlq_url, dlq_arn = _queue(sqs)
    name, created = create_function(lam, RECORDER)
    bus_arn = events.describe_event_bus(Name="default")["Arn"]
    events.put_rule(Name="results", EventPattern=json.dumps({"source": ["lambda"]}))
    events.put_targets(Rule="results", Targets=[{"Id": "q", "Arn": bus_target_arn}])
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": fail_arn}, "OnSuccess": {"Destination": bus_arn}},
    )
    log = tmp_path / "dest.jsonl"
    failed_id = send(lam, name, {"log": str(log), "fail": True})
    record = json.loads(_receive(sqs, fail_url)["Body"])
    assert record["requestContext"] == {
        "requestId": failed_id, "functionArn": f"{created['FunctionArn']}:$LATEST",
        "condition": "RetriesExhausted", "approximateInvokeCount": 1,
    }
    assert record["responseContext"]["functionError"] == "Unhandled"

    ok_id = send(lam, name, {"log": str(log), "n": 5})
    event = json.loads(_receive(sqs, bus_target_url)["Body"])
    assert event["source"] == "lambda"
    assert event["detail-type"] == "Lambda Function Invocation Result - Success"
    assert event["resources"] == [bus_arn, f"{created['FunctionArn']}:$LATEST"]
    assert event["detail"]["requestContext"]["requestId"] == ok_id
    assert event["detail"]["responsePayload"] == {"ok": 5}

    dead, _ = create_function(lam, RECORDER, DeadLetterConfig={"TargetArn": dlq_arn})
    lam.put_function_event_invoke_config(FunctionName=dead, MaximumRetryAttempts=0)
    dead_id = send(lam, dead, {"log": str(log), "fail": True, "n": 9})
    message = _receive(sqs, dlq_url)
    assert json.loads(message["Body"]) == {"log": str(log), "fail": True, "n": 9}
    attrs = message["MessageAttributes"]
    assert attrs["RequestID"] == {"StringValue": dead_id, "DataType": "String"}
    assert attrs["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert attrs["ErrorMessage"] == {"StringValue": "failed on purpose", "DataType": "String"}


def test_topic_destination(fast_server, tmp_path):
    srv = fast_server()
    lam, sqs, sns = srv.client(), srv.client("sqs"), srv.client("sns")
    url, queue_arn = _queue(sqs)
    topic = sns.create_topic(Name=unique("results"))["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    name, created = create_function(lam, RECORDER)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": topic}})
    request_id = send(lam, name, {"log": str(tmp_path / "t.jsonl"), "n": 3})
    envelope = json.loads(_receive(sqs, url)["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
    record = json.loads(envelope["Message"])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"] == {"ok": 3}
