"""MQTT and RabbitMQ event source mappings through boto3, against real brokers on loopback (`.ci/run` starts
mosquitto on 1883 and rabbitmq-server on 5672; without them these tests skip)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import socket
from pathlib import Path

import pytest

from conftest import Server, create_function, json_lines, unique, wait_for

MQTT_URL = "mqtt://127.0.0.1:1883"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
FAST = {"FAAS_MAPPINGS__IDLE_POLL": "0.2", "FAAS_MAPPINGS__RETRY_DELAY": "0.2", "FAAS_MAPPINGS__SCALE_INTERVAL": "0.2"}
ESM_ARN = "arn:aws:lambda:us-east-1:000000000000:event-source-mapping:"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _skip_unless(module: str, port: int, broker: str) -> pytest.MarkDecorator:
    if importlib.util.find_spec(module) is None:
        return pytest.mark.skip(reason=f"{module} is not installed")
    return pytest.mark.skipif(not _reachable(port), reason=f"no {broker} listening on 127.0.0.1:{port}")


needs_mqtt = _skip_unless("aiomqtt", 1883, "MQTT broker (mosquitto)")
needs_rabbitmq = _skip_unless("aio_pika", 5672, "RabbitMQ broker")

# Appends one JSON line per message it receives. Fails "fail-twice" on its first two attempts, "fail-once"
# while RabbitMQ has not redelivered it, and sleeps on the first sight of "slow" (so a test can kill the server).
CONSUMER = """
import base64, json, os, time
def handler(event, context):
    out = os.environ["OUT"]
    lines = []
    if event["eventSource"] == "aws:rmq":
        size = sum(len(v) for v in event["rmqMessagesByQueue"].values())
        for key, messages in event["rmqMessagesByQueue"].items():
            for m in messages:
                lines.append({"item": base64.b64decode(m["data"]).decode(), "key": key,
                              "redelivered": m["redelivered"], "props": m["basicProperties"], "batch": size})
    else:
        for r in event["Records"]:
            lines.append({"item": base64.b64decode(r["payload"]).decode(), "topic": r["topic"], "qos": r["qos"],
                          "retain": r["retain"], "timestamp": r["timestamp"], "batch": len(event["Records"])})
    with open(out, "a") as fh:
        for line in lines:
            fh.write(json.dumps({**line, "source": event["eventSource"], "arn": event["eventSourceArn"]}) + "\\n")
    items = [line["item"] for line in lines]
    if any("fail-twice" in i for i in items):
        with open(out + ".fails", "a+") as fh:
            fh.seek(0)
            failed = len(fh.read())
            fh.write("x")
        if failed < 2:
            raise RuntimeError("failing twice")
    if any("fail-once" in line["item"] and not line["redelivered"] for line in lines if "redelivered" in line):
        raise RuntimeError("failing until redelivered")
    if "slow" in items and not os.path.exists(out + ".slow"):
        open(out + ".slow", "w").close()
        time.sleep(20)
    return {"ok": len(lines)}
"""


def items(path: Path) -> list[str]:
    return [r["item"] for r in json_lines(path)]


@pytest.fixture
def srv(tmp_path):
    server = Server(tmp_path / "data", env=FAST).start()
    yield server
    server.stop(signal.SIGKILL)


def consumer(lam, tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / f"{unique('out')}.jsonl"
    name, _ = create_function(lam, CONSUMER, Environment={"Variables": {"OUT": str(out)}}, Timeout=60)
    return name, out


def state(lam, uuid: str) -> str:
    return lam.get_event_source_mapping(UUID=uuid)["State"]


# --- MQTT ---------------------------------------------------------------------------------------------------


def mqtt_publish(*messages: tuple[str, str | bytes], qos: int = 1, retain: bool = False) -> None:
    import aiomqtt

    async def publish() -> None:
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=unique("faas-test")) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=qos, retain=retain)

    asyncio.run(publish())


@pytest.fixture
def topic():
    """A fresh topic tree; its retained "ready" probe tells a test that the mapping has subscribed."""
    base = unique("faas-test")
    mqtt_publish((f"{base}/ready", json.dumps({"kind": "keep", "probe": True})), retain=True)
    yield base
    mqtt_publish((f"{base}/ready", b""), retain=True)  # an empty retained message clears it


def mqtt_mapping(lam, name: str, base: str, out: Path, **kwargs) -> dict:
    mapping = lam.create_event_source_mapping(
        FunctionName=name, SelfManagedEventSource={"Endpoints": {"MQTT_BROKER_URL": [MQTT_URL]}},
        Topics=[f"{base}/#"], **kwargs,
    )
    wait_for(lambda: any(r["topic"] == f"{base}/ready" for r in json_lines(out)), timeout=30)
    return mapping


@needs_mqtt
def test_mqtt_batches_filters_and_shape(srv, tmp_path, topic):
    lam = srv.client()
    name, out = consumer(lam, tmp_path)
    mapping = mqtt_mapping(
        lam, name, topic, out, BatchSize=5, MaximumBatchingWindowInSeconds=1,
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"payload": {"kind": ["keep"]}})}]},
    )
    assert mapping["SelfManagedEventSource"] == {"Endpoints": {"MQTT_BROKER_URL": [MQTT_URL]}}
    assert mapping["Topics"] == [f"{topic}/#"] and mapping["BatchSize"] == 5
    probe = json_lines(out)[0]
    assert probe["retain"] is True and probe["qos"] == 1 and probe["source"] == "faas:mqtt"
    assert probe["arn"] == ESM_ARN + mapping["UUID"]

    sent = [(f"{topic}/dev/{i}", json.dumps({"kind": "keep", "n": i})) for i in range(10)]
    mqtt_publish(*sent, (f"{topic}/dev/x", json.dumps({"kind": "drop"})), (f"{topic}/dev/y", "plain text"))
    wait_for(lambda: len(json_lines(out)) >= 11, timeout=30)
    got = json_lines(out)[1:]
    assert [json.loads(r["item"])["n"] for r in got] == list(range(10)), "in order, filtered ones left out"
    assert [r["topic"] for r in got] == [t for t, _ in sent]
    assert all(r["qos"] == 1 and r["retain"] is False and r["timestamp"] > 1e12 for r in got)
    assert max(r["batch"] for r in got) == 5, "batches of up to BatchSize"
    assert got[0]["batch"] >= 2, "the batching window gathered messages"
    wait_for(lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK", timeout=10)
    mqtt_publish((f"{topic}/dev/z", json.dumps({"kind": "keep", "n": 99})))
    wait_for(lambda: "99" in "".join(items(out)), timeout=30)
    assert "drop" not in "".join(items(out)) and "plain text" not in items(out)


@needs_mqtt
def test_mqtt_retries_in_order_and_keeps_messages_while_disabled(srv, tmp_path, topic):
    lam = srv.client()
    name, out = consumer(lam, tmp_path)
    mapping = mqtt_mapping(lam, name, topic, out, BatchSize=1)
    mqtt_publish((f"{topic}/a", "fail-twice"), (f"{topic}/a", "after"))
    wait_for(lambda: "after" in items(out), timeout=30)
    assert items(out)[1:] == ["fail-twice", "fail-twice", "fail-twice", "after"], "retried, in order"

    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    wait_for(lambda: state(lam, mapping["UUID"]) == "Disabled", timeout=10)
    mqtt_publish(*[(f"{topic}/b", f"later-{i}") for i in range(3)])
    before = len(json_lines(out))
    assert lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)["State"] == "Enabling"
    wait_for(lambda: items(out)[before:] == [f"later-{i}" for i in range(3)], timeout=30)


@needs_mqtt
def test_mqtt_unacknowledged_batch_is_redelivered_after_sigkill(srv, tmp_path, topic):
    lam = srv.client()
    name, out = consumer(lam, tmp_path)
    mqtt_mapping(lam, name, topic, out, BatchSize=1)
    mqtt_publish((f"{topic}/a", "slow"))
    wait_for(lambda: "slow" in items(out), timeout=30)
    srv.stop(signal.SIGKILL)  # while the function still runs: no PUBACK was sent
    srv.start()
    mqtt_publish((f"{topic}/a", "next"))
    wait_for(lambda: "next" in items(out), timeout=30)
    assert items(out)[1:] == ["slow", "slow", "next"], "the broker redelivered the unacknowledged message"


# --- RabbitMQ -----------------------------------------------------------------------------------------------


async def _amqp(work):
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        return await work(await connection.channel())


def amqp_publish(queue: str, *bodies: str, **properties) -> None:
    import aio_pika

    async def publish(channel) -> None:
        await channel.declare_queue(queue, durable=False, auto_delete=False)
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body.encode(), **properties), routing_key=queue)

    asyncio.run(_amqp(publish))


def amqp_ready(queue: str) -> int:
    async def count(channel) -> int:
        return (await channel.declare_queue(queue, passive=True)).declaration_result.message_count

    return asyncio.run(_amqp(count))


@pytest.fixture
def queue():
    name = unique("faas-test")
    yield name

    async def delete(channel) -> None:
        await channel.queue_delete(name)

    asyncio.run(_amqp(delete))


def amqp_mapping(lam, name: str, queue: str, **kwargs) -> dict:
    return lam.create_event_source_mapping(
        FunctionName=name, SelfManagedEventSource={"Endpoints": {"AMQP_URL": [AMQP_URL]}}, Queues=[queue], **kwargs,
    )


@needs_rabbitmq
def test_rabbitmq_batches_filters_and_event_shape(srv, tmp_path, queue):
    import datetime

    lam = srv.client()
    name, out = consumer(lam, tmp_path)
    bodies = [json.dumps({"kind": "keep", "n": i}) for i in range(12)] + [json.dumps({"kind": "drop"}), "plain"]
    amqp_publish(queue, *bodies, content_type="application/json", headers={"h": "v1", "num": 10},
                 message_id="m-1", app_id="tests", expiration=60,
                 timestamp=datetime.datetime(1970, 1, 1, 0, 33, 41, tzinfo=datetime.timezone.utc))
    mapping = amqp_mapping(
        lam, name, queue, BatchSize=5, MaximumBatchingWindowInSeconds=1,
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"]}})}]},
    )
    assert mapping["Queues"] == [queue]
    assert mapping["SelfManagedEventSource"] == {"Endpoints": {"AMQP_URL": [AMQP_URL]}}
    wait_for(lambda: len(json_lines(out)) >= 12, timeout=30)
    got = json_lines(out)
    assert [json.loads(r["item"])["n"] for r in got] == list(range(12))
    assert {r["source"] for r in got} == {"aws:rmq"} and {r["key"] for r in got} == {f"{queue}::/"}
    assert got[0]["arn"] == ESM_ARN + mapping["UUID"]
    assert max(r["batch"] for r in got) == 5 and got[0]["batch"] >= 2
    assert not any(r["redelivered"] for r in got)
    assert got[0]["props"] == {
        "contentType": "application/json", "contentEncoding": None,
        "headers": {"h": {"bytes": list(b"v1")}, "num": 10}, "deliveryMode": 1, "priority": 0,
        "correlationId": None, "replyTo": None, "expiration": "60000", "messageId": "m-1",
        "timestamp": "Jan 1, 1970, 12:33:41 AM", "type": None, "userId": None, "appId": "tests", "clusterId": None,
        "bodySize": len(bodies[0]),
    }
    wait_for(lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK", timeout=10)
    assert amqp_ready(queue) == 0, "filtered-out messages were acknowledged, not requeued"
    assert "drop" not in "".join(items(out)) and "plain" not in items(out)


@needs_rabbitmq
def test_rabbitmq_failure_requeues_and_disable_enable(srv, tmp_path, queue):
    lam = srv.client()
    name, out = consumer(lam, tmp_path)
    amqp_publish(queue, "fail-once")
    mapping = amqp_mapping(lam, name, queue, BatchSize=10)
    wait_for(lambda: len(json_lines(out)) >= 2, timeout=30)
    assert [(r["item"], r["redelivered"]) for r in json_lines(out)] == [("fail-once", False), ("fail-once", True)]
    wait_for(lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK", timeout=10)

    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    wait_for(lambda: state(lam, mapping["UUID"]) == "Disabled", timeout=10)
    amqp_publish(queue, *[f"later-{i}" for i in range(3)])
    assert amqp_ready(queue) == 3, "nothing consumed while disabled"
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    wait_for(lambda: items(out)[2:] == [f"later-{i}" for i in range(3)], timeout=30)
    wait_for(lambda: amqp_ready(queue) == 0, timeout=10)


def test_unreachable_brokers_and_missing_queues_are_reported(srv, tmp_path):
    lam = srv.client()
    name, _ = consumer(lam, tmp_path)
    problems = {}
    for key, extra in (("MQTT_BROKER_URL", {"Topics": ["t/#"]}), ("AMQP_URL", {"Queues": ["q"]})):
        url = ("mqtt" if key.startswith("MQTT") else "amqp") + "://127.0.0.1:1/"  # nothing listens on port 1
        mapping = lam.create_event_source_mapping(
            FunctionName=name, SelfManagedEventSource={"Endpoints": {key: [url]}}, **extra)
        assert mapping["LastProcessingResult"] == "No records processed"
        problems[key] = mapping["UUID"]
    for uuid in problems.values():
        wait_for(lambda uuid=uuid: lam.get_event_source_mapping(UUID=uuid)["LastProcessingResult"] == (
            "PROBLEM: Connection error. Please check your event source connection configuration."), timeout=15)


@needs_rabbitmq
def test_rabbitmq_missing_queue_is_reported(srv, tmp_path):
    lam = srv.client()
    name, _ = consumer(lam, tmp_path)
    mapping = amqp_mapping(lam, name, unique("no-such-queue"))
    wait_for(lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == (
        "PROBLEM: Queue not found. Please check the Queues of this event source mapping."), timeout=15)


def test_self_managed_sources_are_validated(srv, tmp_path):
    lam = srv.client()
    name, _ = consumer(lam, tmp_path)

    def message(**kwargs) -> str:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.create_event_source_mapping(FunctionName=name, **kwargs)
        return exc.value.response["Error"]["Message"]

    mqtt = {"SelfManagedEventSource": {"Endpoints": {"MQTT_BROKER_URL": [MQTT_URL]}}}
    for topics in ([], ["a/#/b"], ["a/b+"], [f"t/{i}" for i in range(11)]):
        assert message(**mqtt, Topics=topics) == (
            "Topics must hold 1 to 10 valid MQTT topic filters for an MQTT_BROKER_URL source.")
    assert message(SelfManagedEventSource={"Endpoints": {"MQTT_BROKER_URL": ["http://x"]}}, Topics=["t"]) == (
        "Endpoints must be URLs with one of the schemes mqtt, mqtts, tcp, ssl for this event source.")
    assert message(SelfManagedEventSource={"Endpoints": {"AMQP_URL": [AMQP_URL]}}) == (
        "Queues is required for an AMQP_URL source.")
    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.create_event_source_mapping(FunctionName=name, Queues=["q1", "q2"],
                                        SelfManagedEventSource={"Endpoints": {"AMQP_URL": [AMQP_URL]}})
    assert exc.value.response["Error"]["Code"] == "ValidationException", "one queue, as in Lambda"
    nowhere = {"SelfManagedEventSource": {"Endpoints": {"MQTT_BROKER_URL": ["mqtt://127.0.0.1:1"]}}}
    created = lam.create_event_source_mapping(FunctionName=name, **nowhere, Topics=["a/+/c", "d/#", "#"])
    assert created["Topics"] == ["a/+/c", "d/#", "#"]
