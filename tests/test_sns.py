"""Topics (SNS's query protocol through boto3's `sns` client): every operation, fan-out to Lambda functions and
queues, message attributes, filter policies, FIFO topics, the dead-letter queue and SIGKILL; then the deliverer on
its own for retries of server-side failures."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import Server, create_function, unique, wait_for

from faas.arn import Arns
from faas.config import Config
from faas.services.topic_delivery import (
    DeliverySettings,
    Envelopes,
    TopicDeliverer,
    retry_delay,
)
from faas.services.topics import PublishEntry, Topics, TopicSettings
from faas.store.db import Database
from faas.store.topics import TopicStore

ACCOUNT = "000000000000"

# Writes the event it got to <OUT>/<MessageId>.json (renamed into place, so a reader never sees half a file).
RECORDER = """
import json, os
def handler(event, context):
    sns = event["Records"][0]["Sns"]
    path = os.path.join(os.environ["OUT"], sns["MessageId"] + ".json")
    with open(path + ".tmp", "w") as fh:
        json.dump(event, fh)
    os.rename(path + ".tmp", path)
"""


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Type"], r["Error"]["Code"], r["Error"]["Message"]


@pytest.fixture(scope="module")
def sns(server: Server):
    return server.client("sns")


@pytest.fixture(scope="module")
def sqs(server: Server):
    return server.client("sqs")


def make_queue(sqs, name: str | None = None, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name or unique("q"), Attributes=attributes)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def receive(sqs, url: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
    got: list[dict] = []

    def more() -> bool:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"])
        for m in resp.get("Messages", []):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            got.append(m)
        return len(got) >= count

    wait_for(more, timeout=timeout)
    return got


def recorder(lam, out: Path) -> tuple[str, str]:
    name, resp = create_function(lam, RECORDER, Environment={"Variables": {"OUT": str(out)}})
    return name, resp["FunctionArn"]


def recorded(out: Path, message_id: str, timeout: float = 30.0) -> dict:
    path = out / f"{message_id}.json"
    wait_for(path.exists, timeout=timeout)
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------- topics


def test_topic_lifecycle(sns):
    name = unique("topic")
    arn = sns.create_topic(Name=name, Attributes={"DisplayName": "Orders"})["TopicArn"]
    assert arn == f"arn:aws:sns:us-east-1:{ACCOUNT}:{name}"
    assert sns.create_topic(Name=name)["TopicArn"] == arn  # idempotent
    assert sns.create_topic(Name=name, Attributes={"DisplayName": "Orders"})["TopicArn"] == arn
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.create_topic(Name=name, Attributes={"DisplayName": "Other"})
    assert error_of(exc) == (400, "Sender", "InvalidParameter",
                             "Invalid parameter: Attributes Reason: Topic already exists with different attributes")

    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["TopicArn"] == arn and attrs["Owner"] == ACCOUNT and attrs["DisplayName"] == "Orders"
    assert (attrs["SubscriptionsConfirmed"], attrs["SubscriptionsPending"], attrs["SubscriptionsDeleted"]) == \
        ("0", "0", "0")
    policy = json.loads(attrs["Policy"])
    assert policy["Statement"][0]["Resource"] == arn
    assert "http" in json.loads(attrs["EffectiveDeliveryPolicy"])
    assert "FifoTopic" not in attrs

    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Renamed")
    delivery = json.dumps({"http": {"defaultHealthyRetryPolicy": {"numRetries": 5}}})
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DeliveryPolicy", AttributeValue=delivery)
    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["DisplayName"] == "Renamed"
    assert attrs["DeliveryPolicy"] == attrs["EffectiveDeliveryPolicy"] == delivery
    for attribute, value in (("Bogus", "x"), ("FifoTopic", "true"), ("Policy", "not json"),
                             ("ContentBasedDeduplication", "true")):
        with pytest.raises(sns.exceptions.InvalidParameterException):
            sns.set_topic_attributes(TopicArn=arn, AttributeName=attribute, AttributeValue=value)

    sns.delete_topic(TopicArn=arn)
    sns.delete_topic(TopicArn=arn)  # deleting what is gone is not an error
    with pytest.raises(sns.exceptions.NotFoundException) as exc:
        sns.get_topic_attributes(TopicArn=arn)
    assert error_of(exc) == (404, "Sender", "NotFound", "Topic does not exist")
    assert arn not in {t["TopicArn"] for page in sns.get_paginator("list_topics").paginate() for t in page["Topics"]}


def test_topic_names_and_arns(sns):
    for bad in ("", "has space", "x" * 257, "dot.name", "name.fifo"):
        with pytest.raises(ClientError) as exc:
            sns.create_topic(Name=bad)
        assert exc.value.response["Error"]["Code"] in ("InvalidParameter", "ValidationError"), bad
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.create_topic(Name=unique("t"), Attributes={"FifoTopic": "true"})
    assert "must end with .fifo" in error_of(exc)[3]
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.get_topic_attributes(TopicArn="nope")
    assert error_of(exc)[3] == "Invalid parameter: TopicArn Reason: An ARN must have at least 6 elements, not 1"
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.get_topic_attributes(TopicArn=f"arn:aws:sns:eu-west-1:{ACCOUNT}:other-region")
    with pytest.raises(sns.exceptions.AuthorizationErrorException) as exc:
        sns.get_topic_attributes(TopicArn="arn:aws:sns:us-east-1:123456789012:other-account")
    assert error_of(exc)[:3] == (403, "Sender", "AuthorizationError")
    with pytest.raises(ClientError) as exc:
        sns.create_topic()
    assert error_of(exc)[2:] == ("ValidationError", ("1 validation error detected: Value null at 'name' failed "
                                                     "to satisfy constraint: Member must not be null"))


def test_list_topics_pages(sns):
    prefix = unique("page")
    arns = {sns.create_topic(Name=f"{prefix}-{i:03d}")["TopicArn"] for i in range(101)}
    first = sns.list_topics()
    assert len(first["Topics"]) == 100 and first["NextToken"]
    seen = [t["TopicArn"] for page in sns.get_paginator("list_topics").paginate() for t in page["Topics"]]
    assert len(seen) == len(set(seen)) and arns <= set(seen)
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.list_topics(NextToken="not a token")
    for arn in arns:
        sns.delete_topic(TopicArn=arn)


def test_tags(sns):
    arn = sns.create_topic(Name=unique("tagged"), Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "a"}]
    sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "b"}])
    assert {t["Key"]: t["Value"] for t in sns.list_tags_for_resource(ResourceArn=arn)["Tags"]} == \
        {"team": "b", "env": "dev"}
    sns.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "dev"}]
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.create_topic(Name=arn.rsplit(":", 1)[1], Tags=[{"Key": "x", "Value": "y"}])
    assert "different tags" in error_of(exc)[3]
    sns.delete_topic(TopicArn=arn)
    with pytest.raises(sns.exceptions.ResourceNotFoundException):
        sns.list_tags_for_resource(ResourceArn=arn)


# ----------------------------------------------------------------------------------------------- subscriptions


def test_subscriptions(sns, sqs):
    arn = sns.create_topic(Name=unique("subs"))["TopicArn"]
    _, queue_arn = make_queue(sqs)
    function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{unique()}"
    to_queue = sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn,
                             Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]
    to_lambda = sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=function_arn,
                              ReturnSubscriptionArn=True)["SubscriptionArn"]
    assert to_queue.startswith(arn + ":") and to_lambda.startswith(arn + ":")
    # The same endpoint again is the same subscription; with other attributes it is an error.
    assert sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"] == to_queue
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"})
    assert "already exists with different attributes" in error_of(exc)[3]

    listed = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert sorted((s["Protocol"], s["Endpoint"], s["SubscriptionArn"], s["TopicArn"], s["Owner"]) for s in listed) \
        == [("lambda", function_arn, to_lambda, arn, ACCOUNT), ("sqs", queue_arn, to_queue, arn, ACCOUNT)]
    everything = [s["SubscriptionArn"] for page in sns.get_paginator("list_subscriptions").paginate()
                  for s in page["Subscriptions"]]
    assert {to_queue, to_lambda} <= set(everything)

    attrs = sns.get_subscription_attributes(SubscriptionArn=to_queue)["Attributes"]
    assert attrs["RawMessageDelivery"] == "true" and attrs["PendingConfirmation"] == "false"
    assert (attrs["Protocol"], attrs["Endpoint"], attrs["TopicArn"], attrs["Owner"]) == ("sqs", queue_arn, arn, ACCOUNT)
    sns.set_subscription_attributes(SubscriptionArn=to_queue, AttributeName="RawMessageDelivery",
                                    AttributeValue="false")
    policy = json.dumps({"color": ["red"]})
    sns.set_subscription_attributes(SubscriptionArn=to_queue, AttributeName="FilterPolicy", AttributeValue=policy)
    attrs = sns.get_subscription_attributes(SubscriptionArn=to_queue)["Attributes"]
    assert (attrs["RawMessageDelivery"], attrs["FilterPolicy"], attrs["FilterPolicyScope"]) == \
        ("false", policy, "MessageAttributes")
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.set_subscription_attributes(SubscriptionArn=to_lambda, AttributeName="RawMessageDelivery",
                                        AttributeValue="true")
    assert "does not support raw message delivery" in error_of(exc)[3]
    for name, value in (("FilterPolicy", "{\"a\": 1}"), ("FilterPolicy", "[]"), ("Bogus", "1"),
                        ("RedrivePolicy", "{\"deadLetterTargetArn\": \"nope\"}")):
        with pytest.raises(sns.exceptions.InvalidParameterException):
            sns.set_subscription_attributes(SubscriptionArn=to_queue, AttributeName=name, AttributeValue=value)

    topic_attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert (topic_attrs["SubscriptionsConfirmed"], topic_attrs["SubscriptionsDeleted"]) == ("2", "0")
    sns.unsubscribe(SubscriptionArn=to_queue)
    sns.unsubscribe(SubscriptionArn=to_queue)  # already gone: not an error, as on AWS
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_subscription_attributes(SubscriptionArn=to_queue)
    topic_attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert (topic_attrs["SubscriptionsConfirmed"], topic_attrs["SubscriptionsDeleted"]) == ("1", "1")

    sns.delete_topic(TopicArn=arn)
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_subscription_attributes(SubscriptionArn=to_lambda)
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.list_subscriptions_by_topic(TopicArn=arn)


def test_subscribe_errors(sns):
    arn = sns.create_topic(Name=unique("bad-subs"))["TopicArn"]
    cases = [
        ("sqs", "not-an-arn", "Invalid parameter: SQS endpoint ARN"),
        ("lambda", "arn:aws:sqs:us-east-1:000000000000:q", "Invalid parameter: Lambda endpoint ARN"),
        ("carrier-pigeon", "x", "Invalid parameter: Amazon SNS does not support this protocol string: carrier-pigeon"),
        ("email", "a@example.com", "Invalid parameter: Protocol Reason: email is not supported by this server"),
    ]
    for protocol, endpoint, message in cases:
        with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
            sns.subscribe(TopicArn=arn, Protocol=protocol, Endpoint=endpoint)
        assert error_of(exc)[3] == message
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.subscribe(TopicArn=arn + "-missing", Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:000000000000:q")
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:000000000000:q.fifo")


# ----------------------------------------------------------------------------------------------- publishing


def test_publish_fans_out_to_lambda_and_queues(sns, sqs, lam, tmp_path):
    arn = sns.create_topic(Name=unique("fanout"))["TopicArn"]
    _, function_arn = recorder(lam, tmp_path)
    envelope_url, envelope_arn = make_queue(sqs)
    raw_url, raw_arn = make_queue(sqs)
    to_lambda = sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=function_arn)["SubscriptionArn"]
    to_queue = sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=envelope_arn)["SubscriptionArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=raw_arn, Attributes={"RawMessageDelivery": "true"})
    attributes = {
        "color": {"DataType": "String", "StringValue": "red"},
        "size": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffdata"},
        "tags": {"DataType": "String.Array", "StringValue": "[\"a\", 1]"},
    }
    message = "héllo <world> & \"friends\"\n"
    message_id = sns.publish(TopicArn=arn, Message=message, Subject="Greetings",
                             MessageAttributes=attributes)["MessageId"]

    event = recorded(tmp_path, message_id)
    record, = event["Records"]
    assert (record["EventSource"], record["EventVersion"], record["EventSubscriptionArn"]) == \
        ("aws:sns", "1.0", to_lambda)
    note = record["Sns"]
    assert (note["Type"], note["MessageId"], note["TopicArn"], note["Subject"], note["Message"]) == \
        ("Notification", message_id, arn, "Greetings", message)
    assert note["Timestamp"].endswith("Z") and len(note["Timestamp"]) == 24
    assert note["SignatureVersion"] == "1" and note["Signature"] and note["SigningCertUrl"]
    assert "Action=Unsubscribe" in note["UnsubscribeUrl"]
    assert note["MessageAttributes"] == {
        "color": {"Type": "String", "Value": "red"},
        "size": {"Type": "Number", "Value": "42"},
        "blob": {"Type": "Binary", "Value": base64.b64encode(b"\x00\xffdata").decode()},
        "tags": {"Type": "String.Array", "Value": "[\"a\", 1]"},
    }

    body = json.loads(receive(sqs, envelope_url)[0]["Body"])
    assert (body["Type"], body["MessageId"], body["TopicArn"], body["Subject"], body["Message"]) == \
        ("Notification", message_id, arn, "Greetings", message)
    assert body["Timestamp"] == note["Timestamp"]
    assert {"SignatureVersion", "Signature", "SigningCertURL", "UnsubscribeURL"} <= body.keys()
    assert urllib.parse.quote(to_queue, safe="") in body["UnsubscribeURL"]
    assert body["MessageAttributes"] == note["MessageAttributes"]

    raw, = receive(sqs, raw_url)
    assert raw["Body"] == message
    assert raw["MessageAttributes"] == {
        "color": {"DataType": "String", "StringValue": "red"},
        "size": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffdata"},
        "tags": {"DataType": "String.Array", "StringValue": "[\"a\", 1]"},
    }

    # Without a subject and attributes: the Lambda event says null and {}, the envelope leaves them out.
    second = sns.publish(TargetArn=arn, Message="plain")["MessageId"]
    assert recorded(tmp_path, second)["Records"][0]["Sns"]["Subject"] is None
    assert recorded(tmp_path, second)["Records"][0]["Sns"]["MessageAttributes"] == {}
    body = json.loads(receive(sqs, envelope_url)[0]["Body"])
    assert body["Message"] == "plain" and "Subject" not in body and "MessageAttributes" not in body
    assert receive(sqs, raw_url)[0]["Body"] == "plain"


def test_message_structure_json(sns, sqs, lam, tmp_path):
    arn = sns.create_topic(Name=unique("structured"))["TopicArn"]
    _, function_arn = recorder(lam, tmp_path)
    url, queue_arn = make_queue(sqs)
    sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=function_arn)
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    message = json.dumps({"default": "for everyone", "lambda": "for functions"})
    message_id = sns.publish(TopicArn=arn, Message=message, MessageStructure="json")["MessageId"]
    assert recorded(tmp_path, message_id)["Records"][0]["Sns"]["Message"] == "for functions"
    assert receive(sqs, url)[0]["Body"] == "for everyone"
    for bad, reason in (("not json", "JSON message body failed to parse"),
                        (json.dumps({"lambda": "x"}), "No default entry in JSON message body")):
        with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
            sns.publish(TopicArn=arn, Message=bad, MessageStructure="json")
        assert error_of(exc)[3] == f"Invalid parameter: Message Structure - {reason}"


def test_publish_errors(sns):
    arn = sns.create_topic(Name=unique("errors"))["TopicArn"]
    invalid = [
        ({"Message": "x"}, "Invalid parameter: TopicArn or TargetArn Reason: no value for required parameter"),
        ({"TopicArn": arn, "Message": ""}, "Invalid parameter: Empty message"),
        ({"TopicArn": arn, "Message": "x" * 262145}, "Invalid parameter: Message too long"),
        ({"TopicArn": arn, "Message": "x", "Subject": "two\nlines"}, "Invalid parameter: Subject"),
        ({"TopicArn": arn, "Message": "x", "MessageStructure": "xml"}, "Invalid parameter: MessageStructure"),
        ({"TopicArn": arn, "Message": "x", "MessageDeduplicationId": "d"},
         ("Invalid parameter: MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter "
          "that is not valid for this topic type")),
    ]
    for kwargs, message in invalid:
        with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
            sns.publish(**kwargs)
        assert error_of(exc) == (400, "Sender", "InvalidParameter", message)
    bad_attributes = [
        ({"a": {"DataType": "Float", "StringValue": "1"}}, "has an invalid message attribute type"),
        ({"a": {"DataType": "String", "StringValue": ""}}, "must contain non-empty message attribute value"),
        ({"a": {"DataType": "Number", "StringValue": "one"}}, "Could not cast message attribute 'a' value to number."),
        ({"AWS.x": {"DataType": "String", "StringValue": "1"}}, "Invalid attribute name"),
    ]
    for attributes, fragment in bad_attributes:
        with pytest.raises(sns.exceptions.InvalidParameterValueException) as exc:
            sns.publish(TopicArn=arn, Message="x", MessageAttributes=attributes)
        assert error_of(exc)[:3] == (400, "Sender", "ParameterValueInvalid") and fragment in error_of(exc)[3]
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.publish(TopicArn=arn + "-gone", Message="x")
    # A topic with no subscribers accepts messages all the same.
    assert sns.publish(TopicArn=arn, Message="into the void")["MessageId"]


def test_filter_policies(sns, sqs):
    arn = sns.create_topic(Name=unique("filtered"))["TopicArn"]
    red_url, red_arn = make_queue(sqs)
    body_url, body_arn = make_queue(sqs)
    all_url, all_arn = make_queue(sqs)
    raw = {"RawMessageDelivery": "true"}
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=red_arn, Attributes={
        **raw, "FilterPolicy": json.dumps({"color": ["red"], "size": [{"numeric": [">", 10]}]})})
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=body_arn, Attributes={
        **raw, "FilterPolicyScope": "MessageBody", "FilterPolicy": json.dumps({"order": {"kind": ["big"]}})})
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=all_arn, Attributes=raw)

    def attrs(color: str, size: int) -> dict:
        return {"color": {"DataType": "String", "StringValue": color},
                "size": {"DataType": "Number", "StringValue": str(size)}}

    sns.publish(TopicArn=arn, Message="small red", MessageAttributes=attrs("red", 5))
    sns.publish(TopicArn=arn, Message="big blue", MessageAttributes=attrs("blue", 50))
    sns.publish(TopicArn=arn, Message=json.dumps({"order": {"kind": "big"}}))
    sns.publish(TopicArn=arn, Message="big red", MessageAttributes=attrs("red", 50))
    assert len(receive(sqs, all_url, 4)) == 4  # every message has been delivered by now
    assert [m["Body"] for m in receive(sqs, red_url)] == ["big red"]
    assert [json.loads(m["Body"]) for m in receive(sqs, body_url)] == [{"order": {"kind": "big"}}]
    assert not sqs.receive_message(QueueUrl=red_url, WaitTimeSeconds=0).get("Messages")
    assert not sqs.receive_message(QueueUrl=body_url, WaitTimeSeconds=0).get("Messages")


def test_publish_batch(sns, sqs):
    arn = sns.create_topic(Name=unique("batch"))["TopicArn"]
    url, queue_arn = make_queue(sqs)
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    resp = sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=[
        {"Id": "one", "Message": "first", "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "1"}}},
        {"Id": "two", "Message": ""},
        {"Id": "three", "Message": "third", "Subject": "s"},
    ])
    assert [e["Id"] for e in resp["Successful"]] == ["one", "three"]
    assert all(e["MessageId"] for e in resp["Successful"])
    assert resp["Failed"] == [{"Id": "two", "Code": "InvalidParameter", "Message": "Invalid parameter: Empty message",
                               "SenderFault": True}]
    got = receive(sqs, url, 2)
    assert sorted(m["Body"] for m in got) == ["first", "third"]
    assert next(m for m in got if m["Body"] == "first")["MessageAttributes"] == \
        {"n": {"DataType": "Number", "StringValue": "1"}}
    batch_errors = [
        ([], "EmptyBatchRequest"),
        ([{"Id": str(i), "Message": "m"} for i in range(11)], "TooManyEntriesInBatchRequest"),
        ([{"Id": "a", "Message": "m"}, {"Id": "a", "Message": "m"}], "BatchEntryIdsNotDistinct"),
        ([{"Id": "no spaces", "Message": "m"}], "InvalidBatchEntryId"),
        ([{"Id": "a", "Message": "m" * 200000}, {"Id": "b", "Message": "m" * 200000}], "BatchRequestTooLong"),
    ]
    for entries, code in batch_errors:
        with pytest.raises(ClientError) as exc:
            sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)
        assert error_of(exc)[:3] == (400, "Sender", code)


def test_fifo_topic(sns, sqs, lam):
    name = unique("ordered") + ".fifo"
    arn = sns.create_topic(Name=name, Attributes={"FifoTopic": "true"})["TopicArn"]
    assert arn.endswith(":" + name)
    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert (attrs["FifoTopic"], attrs["ContentBasedDeduplication"]) == ("true", "false")
    url, queue_arn = make_queue(sqs, unique("ordered") + ".fifo", FifoQueue="true")
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f")
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.publish(TopicArn=arn, Message="m", MessageDeduplicationId="d")
    assert "MessageGroupId parameter is required" in error_of(exc)[3]
    with pytest.raises(sns.exceptions.InvalidParameterException) as exc:
        sns.publish(TopicArn=arn, Message="m", MessageGroupId="g")
    assert "ContentBasedDeduplication" in error_of(exc)[3]

    sent = [sns.publish(TopicArn=arn, Message=f"m{i}", MessageGroupId="g", MessageDeduplicationId=f"d{i}")
            for i in range(5)]
    numbers = [int(s["SequenceNumber"]) for s in sent]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5
    again = sns.publish(TopicArn=arn, Message="m0 again", MessageGroupId="g", MessageDeduplicationId="d0")
    assert (again["MessageId"], again["SequenceNumber"]) == (sent[0]["MessageId"], sent[0]["SequenceNumber"])
    sns.set_topic_attributes(TopicArn=arn, AttributeName="ContentBasedDeduplication", AttributeValue="true")
    sns.publish(TopicArn=arn, Message="m5", MessageGroupId="g")
    got = receive(sqs, url, 6)
    assert [m["Body"] for m in got] == [f"m{i}" for i in range(6)]
    assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages")


# ----------------------------------------------------------------------------------------------- wire format


def post(server: Server, form: dict[str, str]) -> tuple[int, ET.Element]:
    req = urllib.request.Request(server.url + "/", data=urllib.parse.urlencode(form).encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, ET.fromstring(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, ET.fromstring(err.read())


def test_wire_format(server: Server):
    ns = "{http://sns.amazonaws.com/doc/2010-03-31/}"
    name = unique("wire")
    status, root = post(server, {"Action": "CreateTopic", "Version": "2010-03-31", "Name": name,
                                 "Attributes.entry.1.key": "DisplayName", "Attributes.entry.1.value": "a & b"})
    assert status == 200 and root.tag == f"{ns}CreateTopicResponse"
    arn = root.findtext(f"{ns}CreateTopicResult/{ns}TopicArn")
    assert arn.endswith(":" + name) and root.findtext(f"{ns}ResponseMetadata/{ns}RequestId")
    status, root = post(server, {"Action": "GetTopicAttributes", "Version": "2010-03-31", "TopicArn": arn})
    entries = {e.findtext(f"{ns}key"): e.findtext(f"{ns}value")
               for e in root.iter(f"{ns}entry")}
    assert entries["DisplayName"] == "a & b"

    status, root = post(server, {"Action": "GetTopicAttributes", "Version": "2010-03-31", "TopicArn": arn + "x"})
    assert status == 404 and root.tag == f"{ns}ErrorResponse"
    assert [root.findtext(f"{ns}Error/{ns}{f}") for f in ("Type", "Code", "Message")] == \
        ["Sender", "NotFound", "Topic does not exist"]
    assert root.findtext(f"{ns}RequestId")
    status, root = post(server, {"Action": "Fly", "Version": "2010-03-31"})
    assert status == 400 and root.findtext("Error/Code") == "InvalidAction"
    status, root = post(server, {"Version": "2010-03-31"})
    assert status == 400 and root.findtext("Error/Code") == "MissingAction"


# ----------------------------------------------------------------------------------------------- delivery


def test_missing_subscriber_goes_to_dead_letter_queue(sns, sqs):
    """A subscriber that does not exist is a client-side error: no retries, straight to the DLQ."""
    arn = sns.create_topic(Name=unique("dlq-source"))["TopicArn"]
    dlq_url, dlq_arn = make_queue(sqs)
    redrive = {"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn})}
    sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{unique()}",
                  Attributes=redrive)
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=f"arn:aws:sqs:us-east-1:{ACCOUNT}:{unique('gone')}",
                  Attributes={**redrive, "RawMessageDelivery": "true"})
    message_id = sns.publish(TopicArn=arn, Message="undeliverable")["MessageId"]
    got = receive(sqs, dlq_url, 2)
    assert sorted(m["Body"] for m in got if not m["Body"].startswith("{")) == ["undeliverable"]
    envelope, = (json.loads(m["Body"]) for m in got if m["Body"].startswith("{"))
    assert (envelope["MessageId"], envelope["Message"]) == (message_id, "undeliverable")


@pytest.fixture
def own_server(tmp_path):
    servers: list[Server] = []

    def start(**env: str) -> Server:
        srv = Server(tmp_path / f"data{len(servers)}", env=env)
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()


def test_pending_deliveries_survive_sigkill(own_server, tmp_path):
    srv = own_server(FAAS_SNS__DISPATCH="false")  # published messages stay in the outbox
    sns, sqs, lam = srv.client("sns"), srv.client("sqs"), srv.client()
    arn = sns.create_topic(Name="durable")["TopicArn"]
    _, function_arn = recorder(lam, tmp_path)
    url, queue_arn = make_queue(sqs)
    sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=function_arn)
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    ids = [sns.publish(TopicArn=arn, Message=f"m{i}")["MessageId"] for i in range(5)]
    srv.stop(signal.SIGKILL)
    assert not list(tmp_path.glob("*.json"))

    srv.env.pop("FAAS_SNS__DISPATCH")
    srv.start()
    for message_id in ids:
        recorded(tmp_path, message_id)
    assert sorted(m["Body"] for m in receive(sqs, url, 5)) == [f"m{i}" for i in range(5)]


def test_sigkill_while_delivering_loses_nothing(own_server):
    srv = own_server()
    sns, sqs = srv.client("sns"), srv.client("sqs")
    arn = sns.create_topic(Name="busy")["TopicArn"]
    queues = [make_queue(sqs, f"fan-{i}") for i in range(5)]
    for _, queue_arn in queues:
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    sent = set()
    for b in range(10):
        entries = [{"Id": str(i), "Message": f"b{b}-m{i}"} for i in range(10)]
        assert not sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)["Failed"]
        sent |= {e["Message"] for e in entries}
    srv.stop(signal.SIGKILL)

    srv.start()
    for url, _ in queues:
        bodies: set[str] = set()  # at least once: a message delivered just before the kill may come twice

        def all_there(url: str = url, bodies: set[str] = bodies) -> bool:
            resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in resp.get("Messages", []):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                bodies.add(m["Body"])
            return bodies >= sent

        wait_for(all_there, timeout=30)
        assert bodies == sent


# The deliverer on its own, with a queue service that fails on demand (a server-side error, which the
# server's own services do not produce): retries, FIFO order, giving up, and an outbox that outlives the process.


class FlakyQueues:
    def __init__(self, failures: int = 0, broken: str = ""):
        self.failures = failures  # the next sends that fail
        self.broken = broken  # a queue every send to fails
        self.sent: list[tuple[str, str, str | None]] = []

    async def send_by_arn(self, queue_arn: str, body: str, *, message_attributes: dict | None = None,
                          message_group_id: str | None = None, deduplication_id: str | None = None,
                          delay_seconds: int | None = None) -> str:
        if self.failures > 0 or queue_arn == self.broken:
            self.failures -= 1
            raise RuntimeError("queue service unavailable")
        self.sent.append((queue_arn, body, message_group_id))
        return "id"


class NoFunctions:
    async def enqueue(self, function_name: str, qualifier: str | None, payload: bytes) -> str:
        raise AssertionError("no Lambda subscribers here")


@contextlib.asynccontextmanager
async def deliverer_on(path: Path, queues: FlakyQueues, max_attempts: int = 100):
    db = Database(path)
    await db.open()
    try:
        store, arns = TopicStore(db), Arns("us-east-1", ACCOUNT)
        settings = DeliverySettings(retry_min_delay=0.0, retry_max_delay=0.0, max_attempts=max_attempts)
        deliverer = TopicDeliverer(store, arns, settings, Envelopes(Config()), NoFunctions(), queues)
        topics = Topics(store, arns, TopicSettings(), deliverer)
        await topics.open()
        yield topics, deliverer
    finally:
        await deliverer.close()
        await db.close()


async def drain(topics: Topics, deliverer: TopicDeliverer) -> None:
    for _ in range(1000):
        if not await topics.store.pending():
            return
        await deliverer.run_once()
    raise AssertionError("the outbox did not drain")


def test_retry_schedule():
    s = DeliverySettings()
    delays = [retry_delay(n, s) for n in range(1, 20)]
    assert delays[:5] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert delays[5:15] == sorted(delays[5:15]) and delays[14] == 20.0 and 1.0 < delays[6] < 20.0
    assert delays[15:] == [20.0] * 4


async def test_fifo_order_holds_through_server_side_retries(tmp_path):
    queues = FlakyQueues(failures=3)
    queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:ordered.fifo"
    async with deliverer_on(tmp_path / "t.db", queues) as (topics, deliverer):
        arn = await topics.create_topic("ordered.fifo", {"FifoTopic": "true", "ContentBasedDeduplication": "true"},
                                        [])
        await topics.subscribe(arn, "sqs", queue_arn, {"RawMessageDelivery": "true"})
        for i in range(5):
            await topics.publish(arn, [PublishEntry(f"m{i}", MessageGroupId="g")])
        await deliverer.run_once()  # m0 fails; the rest wait behind it
        assert queues.sent == [] and queues.failures == 2
        for i in range(5, 8):
            await topics.publish(arn, [PublishEntry(f"m{i}", MessageGroupId="g")])
        await drain(topics, deliverer)
    assert queues.sent == [(queue_arn, f"m{i}", "g") for i in range(8)]


async def test_server_side_failures_exhaust_then_dead_letter(tmp_path):
    broken = f"arn:aws:sqs:us-east-1:{ACCOUNT}:broken"
    dlq = f"arn:aws:sqs:us-east-1:{ACCOUNT}:dlq"
    queues = FlakyQueues(broken=broken)
    async with deliverer_on(tmp_path / "t.db", queues, max_attempts=5) as (topics, deliverer):
        arn = await topics.create_topic("t", {}, [])
        await topics.subscribe(arn, "sqs", broken,
                               {"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq})})
        published, = await topics.publish(arn, [PublishEntry("lost?")])
        await drain(topics, deliverer)
    (target, body, _), = queues.sent
    assert target == dlq and json.loads(body)["MessageId"] == published.message_id
    assert queues.failures == -5  # five attempts in all


async def test_outbox_outlives_the_process(tmp_path):
    queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:q"
    async with deliverer_on(tmp_path / "t.db", FlakyQueues()) as (topics, _):
        arn = await topics.create_topic("t", {}, [])
        await topics.subscribe(arn, "sqs", queue_arn, {})
        await topics.publish(arn, [PublishEntry(f"m{i}") for i in range(3)])
    queues = FlakyQueues()
    async with deliverer_on(tmp_path / "t.db", queues) as (topics, deliverer):
        await drain(topics, deliverer)
    assert sorted(json.loads(body)["Message"] for _, body, _ in queues.sent) == ["m0", "m1", "m2"]
