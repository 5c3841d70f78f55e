"""The built-in SQS (JSON protocol) through boto3's `sqs` client against real servers, and the `Queues` object
other parts of the server use."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import signal
import struct
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Server, unique, wait_for


@pytest.fixture(scope="module")
def sqs(server: Server):
    client = server.client("sqs")
    yield client
    client.close()


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def reference_md5(attributes: dict) -> str:
    """SQS's message attribute digest, written out independently of the server's code."""
    buf = b""
    for name in sorted(attributes):
        value = attributes[name]
        for text in (name, value["DataType"]):
            buf += struct.pack(">I", len(text.encode())) + text.encode()
        if "StringValue" in value:
            buf += b"\x01" + struct.pack(">I", len(value["StringValue"].encode())) + value["StringValue"].encode()
        else:
            buf += b"\x02" + struct.pack(">I", len(value["BinaryValue"])) + value["BinaryValue"]
    return hashlib.md5(buf).hexdigest()


def make_queue(sqs, prefix: str = "q", **attributes) -> str:
    name = unique(prefix) + (".fifo" if attributes.get("FifoQueue") == "true" else "")
    return sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]


def attrs(sqs, url: str, *names: str) -> dict[str, str]:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names) or ["All"])["Attributes"]


# ---------------------------------------------------------------------------------------------- queues


def test_queue_lifecycle(sqs, server):
    name = unique("life")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"}, tags={"team": "a"})["QueueUrl"]
    assert url == f"{server.url}/000000000000/{name}"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    # Same attributes: the existing queue; a different value: QueueNameExists.
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists) as exc:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert error_of(exc)[0] == "QueueAlreadyExists"

    got = attrs(sqs, url)
    assert got["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    assert got["VisibilityTimeout"] == "45"
    assert got["MaximumMessageSize"] == "1048576" and got["MessageRetentionPeriod"] == "345600"
    assert got["DelaySeconds"] == "0" and got["ReceiveMessageWaitTimeSeconds"] == "0"
    assert got["ApproximateNumberOfMessages"] == "0" and got["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert got["ApproximateNumberOfMessagesDelayed"] == "0"
    assert abs(int(got["CreatedTimestamp"]) - time.time()) < 60
    assert "FifoQueue" not in got
    assert attrs(sqs, url, "QueueArn") == {"QueueArn": got["QueueArn"]}

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "3", "ReceiveMessageWaitTimeSeconds": "2"})
    assert attrs(sqs, url, "DelaySeconds", "ReceiveMessageWaitTimeSeconds") == {
        "DelaySeconds": "3", "ReceiveMessageWaitTimeSeconds": "2"}

    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}

    # Another host for the same server (clients mix localhost and 127.0.0.1): resolved by account and name.
    other = url.replace("127.0.0.1", "localhost")
    assert attrs(sqs, other, "QueueArn")["QueueArn"] == got["QueueArn"]

    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as exc:
        sqs.get_queue_url(QueueName=name)
    assert error_of(exc) == ("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as exc:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_list_queues(sqs):
    prefix = unique("list")
    urls = sorted(sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5))
    assert sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"] == urls
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=unique("none"))
    pages, token = [], None
    while True:
        kwargs = {"NextToken": token} if token else {}
        page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, **kwargs)
        pages.append(page["QueueUrls"])
        token = page.get("NextToken")
        if not token:
            break
    assert pages == [urls[0:2], urls[2:4], urls[4:5]]
    paginated = sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix, PaginationConfig={"PageSize": 3})
    assert [u for p in paginated for u in p["QueueUrls"]] == urls


def test_queue_errors(sqs):
    cases = [
        ({"QueueName": "bad name"}, "InvalidParameterValue"),
        ({"QueueName": "x" * 81}, "InvalidParameterValue"),
        ({"QueueName": unique("nofifo") + ".fifo"}, "InvalidParameterValue"),
        ({"QueueName": unique("fifo"), "Attributes": {"FifoQueue": "true"}}, "InvalidParameterValue"),
        ({"QueueName": unique("v"), "Attributes": {"VisibilityTimeout": "43201"}}, "InvalidAttributeValue"),
        ({"QueueName": unique("v"), "Attributes": {"MessageRetentionPeriod": "59"}}, "InvalidAttributeValue"),
        ({"QueueName": unique("v"), "Attributes": {"DelaySeconds": "abc"}}, "InvalidAttributeValue"),
        ({"QueueName": unique("v"), "Attributes": {"Foo": "1"}}, "InvalidAttributeName"),
        ({"QueueName": unique("v"), "Attributes": {"QueueArn": "x"}}, "InvalidAttributeName"),
        ({"QueueName": unique("v"), "Attributes": {"ContentBasedDeduplication": "true"}}, "InvalidAttributeName"),
        ({"QueueName": unique("v"), "Attributes": {"RedrivePolicy": "{}"}}, "InvalidParameterValue"),
        ({"QueueName": unique("v"), "Attributes": {"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:missing", "maxReceiveCount": 1})}},
         "InvalidParameterValue"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ClientError) as exc:
            sqs.create_queue(**kwargs)
        assert error_of(exc)[0] == code, kwargs
    url = make_queue(sqs)
    with pytest.raises(sqs.exceptions.InvalidAttributeName) as exc:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Foo"])
    assert error_of(exc) == ("InvalidAttributeName", "Unknown Attribute Foo.")
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "true"})
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "21"})
    with pytest.raises(ClientError) as exc:
        sqs.get_queue_attributes(QueueUrl="not-a-url", AttributeNames=["All"])
    assert error_of(exc)[0] == "InvalidAddress"


# ---------------------------------------------------------------------------------------------- messages


MIXED = {
    "text": {"DataType": "String", "StringValue": "héllo wörld"},
    "count": {"DataType": "Number", "StringValue": "-12.5e3"},
    "blob": {"DataType": "Binary", "BinaryValue": bytes(range(256))},
    "custom.kind": {"DataType": "String.custom", "StringValue": "x"},
    "custom.raw": {"DataType": "Binary.png", "BinaryValue": b"\x89PNG"},
}


def test_send_receive_delete(sqs):
    url = make_queue(sqs)
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello ✓", MessageAttributes=MIXED,
                            MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String",
                                                                        "StringValue": "Root=1-abc"}})
    assert sent["MD5OfMessageBody"] == hashlib.md5("hello ✓".encode()).hexdigest()
    assert sent["MD5OfMessageAttributes"] == reference_md5(MIXED)
    assert sent["MD5OfMessageSystemAttributes"] == reference_md5(
        {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-abc"}})
    assert attrs(sqs, url, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"] == "1"

    before = int(time.time() * 1000)
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    (m,) = got["Messages"]
    assert m["MessageId"] == sent["MessageId"] and m["Body"] == "hello ✓"
    assert m["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert m["MessageAttributes"] == MIXED
    assert m["MD5OfMessageAttributes"] == reference_md5(MIXED)
    a = m["Attributes"]
    assert a["ApproximateReceiveCount"] == "1" and a["SenderId"] == "000000000000"
    assert a["AWSTraceHeader"] == "Root=1-abc"
    assert int(a["SentTimestamp"]) <= int(a["ApproximateFirstReceiveTimestamp"]) <= before + 5000
    counts = attrs(sqs, url, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    assert counts == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "1"}
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])  # already gone: still fine
    assert attrs(sqs, url, "ApproximateNumberOfMessagesNotVisible")["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_message_attribute_selection_and_md5(sqs):
    url = make_queue(sqs)
    # The example digests from SQS's documentation.
    r = sqs.send_message(QueueUrl=url, MessageBody="x",
                         MessageAttributes={"SellerName": {"DataType": "String", "StringValue": "Example Store"}})
    assert r["MD5OfMessageAttributes"] == "cd28f3b68aeee4b2eac9c66f2f694b58"
    r = sqs.send_message(QueueUrl=url, MessageBody="y",
                         MessageAttributes={"timestamp": {"DataType": "Number", "StringValue": "1493147359900"}})
    assert r["MD5OfMessageAttributes"] == "235c5c510d26fb653d073faed50ae77c"
    sqs.purge_queue(QueueUrl=url)

    sqs.send_message(QueueUrl=url, MessageBody="z", MessageAttributes=MIXED)
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["custom.*", "count"],
                               VisibilityTimeout=0)["Messages"]
    subset = {k: MIXED[k] for k in ("custom.kind", "custom.raw", "count")}
    assert m["MessageAttributes"] == subset and m["MD5OfMessageAttributes"] == reference_md5(subset)
    (m,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=[".*"], VisibilityTimeout=0)["Messages"]
    assert m["MessageAttributes"] == MIXED
    (m,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
    assert "MessageAttributes" not in m and "MD5OfMessageAttributes" not in m and "Attributes" not in m
    (m,) = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert m["Attributes"] == {"ApproximateReceiveCount": "4"}


def test_send_errors(sqs):
    url = make_queue(sqs, MaximumMessageSize=1024)
    cases = [
        ({"MessageBody": "a\x00b"}, "InvalidMessageContents"),
        ({"MessageBody": "x" * 1025}, "InvalidParameterValue"),
        ({"MessageBody": "x", "DelaySeconds": 901}, "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageDeduplicationId": "d"}, "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageAttributes": {"AWS.x": {"DataType": "String", "StringValue": "v"}}},
         "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "abc"}}},
         "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageAttributes": {"n": {"DataType": "Text", "StringValue": "v"}}},
         "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageAttributes": {"n": {"DataType": "String"}}}, "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageAttributes": {f"a{i}": {"DataType": "String", "StringValue": "v"}
                                                    for i in range(11)}}, "InvalidParameterValue"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ClientError) as exc:
            sqs.send_message(QueueUrl=url, **kwargs)
        assert error_of(exc)[0] == code, kwargs
    for kwargs in ({"MaxNumberOfMessages": 11}, {"MaxNumberOfMessages": 0}, {"WaitTimeSeconds": 21},
                   {"VisibilityTimeout": 43201}):
        with pytest.raises(ClientError) as exc:
            sqs.receive_message(QueueUrl=url, **kwargs)
        assert error_of(exc)[0] == "InvalidParameterValue", kwargs
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["Nope"])


def test_batches(sqs):
    url = make_queue(sqs)
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 0},
        {"Id": "bad", "MessageBody": "three", "DelaySeconds": 1000},
    ])
    assert sorted(e["Id"] for e in result["Successful"]) == ["a", "b"]
    ok = {e["Id"]: e for e in result["Successful"]}
    assert ok["a"]["MD5OfMessageAttributes"] == reference_md5({"k": {"DataType": "String", "StringValue": "v"}})
    assert ok["b"]["MD5OfMessageBody"] == hashlib.md5(b"two").hexdigest()
    (failed,) = result["Failed"]
    assert failed["Id"] == "bad" and failed["SenderFault"] is True and failed["Code"] == "InvalidParameterValue"

    for entries, exception in [
        ([], sqs.exceptions.EmptyBatchRequest),
        ([{"Id": str(i), "MessageBody": "x"} for i in range(11)], sqs.exceptions.TooManyEntriesInBatchRequest),
        ([{"Id": "same", "MessageBody": "x"}] * 2, sqs.exceptions.BatchEntryIdsNotDistinct),
        ([{"Id": "no spaces", "MessageBody": "x"}], sqs.exceptions.InvalidBatchEntryId),
        ([{"Id": "big", "MessageBody": "x" * 600000}, {"Id": "big2", "MessageBody": "x" * 600000}],
         sqs.exceptions.BatchRequestTooLong),
    ]:
        with pytest.raises(exception):
            sqs.send_message_batch(QueueUrl=url, Entries=entries)

    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in messages) == ["one", "two"]
    handles = {m["Body"]: m["ReceiptHandle"] for m in messages}
    changed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "one", "ReceiptHandle": handles["one"], "VisibilityTimeout": 0},
        {"Id": "junk", "ReceiptHandle": "junk", "VisibilityTimeout": 0},
    ])
    assert [e["Id"] for e in changed["Successful"]] == ["one"]
    assert [(e["Id"], e["Code"]) for e in changed["Failed"]] == [("junk", "ReceiptHandleIsInvalid")]
    (again,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert again["Body"] == "one" and again["ReceiptHandle"] != handles["one"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "one", "ReceiptHandle": again["ReceiptHandle"]}, {"Id": "two", "ReceiptHandle": handles["two"]},
        {"Id": "junk", "ReceiptHandle": "!!"},
    ])
    assert sorted(e["Id"] for e in deleted["Successful"]) == ["one", "two"]
    assert [(e["Id"], e["Code"]) for e in deleted["Failed"]] == [("junk", "ReceiptHandleIsInvalid")]
    counts = attrs(sqs, url, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    assert counts == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_receipt_handles(sqs):
    url, other = make_queue(sqs), make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):  # a handle of another queue
        sqs.delete_message(QueueUrl=other, ReceiptHandle=m["ReceiptHandle"])
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="junk", VisibilityTimeout=5)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=5)
    (m2,) = sqs.receive_message(QueueUrl=url)["Messages"]
    with pytest.raises(ClientError) as exc:  # an older receive's handle
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=5)
    assert error_of(exc)[0] == "InvalidParameterValue"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"])
    with pytest.raises(ClientError) as exc:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=5)
    assert error_of(exc)[0] == "InvalidParameterValue"


# ---------------------------------------------------------------------------------------------- timing


def test_long_polling_returns_when_a_message_arrives(sqs, server):
    url = make_queue(sqs)
    receiver = server.client("sqs")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            future = pool.submit(lambda: (receiver.receive_message(QueueUrl=url, WaitTimeSeconds=5),
                                          time.monotonic()))
            # The send comes a second into the poll, so the poll is waiting when it arrives.
            assert not future.done() and not concurrent.futures.wait([future], timeout=1.0).done
            sent_at = time.monotonic()
            sqs.send_message(QueueUrl=url, MessageBody="wake up")
            got, returned_at = future.result(timeout=10)
        assert [m["Body"] for m in got["Messages"]] == ["wake up"]
        assert returned_at - started >= 1.0
        assert returned_at - sent_at < 0.5
        # Nothing arrives: the poll lasts its full wait, and the queue's default wait applies.
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "1"})
        t0 = time.monotonic()
        assert "Messages" not in receiver.receive_message(QueueUrl=url)
        assert 0.9 <= time.monotonic() - t0 < 3
    finally:
        receiver.close()


def test_visibility_timeout_and_delay(sqs):
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="again")
    (first,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    # A long poll is woken when the hidden message reappears, without a send.
    t0 = time.monotonic()
    (second,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["All"])["Messages"]
    assert time.monotonic() - t0 < 2.5
    assert second["MessageId"] == first["MessageId"] and second["ReceiptHandle"] != first["ReceiptHandle"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])

    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    assert attrs(sqs, url, "ApproximateNumberOfMessagesDelayed")["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    t0 = time.monotonic()
    (m,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    assert m["Body"] == "later" and time.monotonic() - t0 < 2.5

    # The queue's own delay applies when a message names none.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "900"})
    sqs.send_message(QueueUrl=url, MessageBody="queue-delayed")
    sqs.send_message(QueueUrl=url, MessageBody="now", DelaySeconds=0)
    (m,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert m["Body"] == "now"


def test_redrive_to_dead_letter_queue(sqs):
    dlq = make_queue(sqs, "dlq")
    dlq_arn = attrs(sqs, dlq, "QueueArn")["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    src = make_queue(sqs, "src", RedrivePolicy=policy)
    src_arn = attrs(sqs, src, "QueueArn")["QueueArn"]
    assert json.loads(attrs(sqs, src, "RedrivePolicy")["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]

    sqs.send_message(QueueUrl=src, MessageBody="poison")
    sqs.send_message(QueueUrl=src, MessageBody="fine")
    for count in ("1", "2"):
        got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                  AttributeNames=["ApproximateReceiveCount"])["Messages"]
        poison = [m for m in got if m["Body"] == "poison"]
        assert poison[0]["Attributes"]["ApproximateReceiveCount"] == count
        for m in got:
            if m["Body"] == "fine":
                sqs.delete_message(QueueUrl=src, ReceiptHandle=m["ReceiptHandle"])
    # The third receive finds it over maxReceiveCount: it moves instead of being delivered.
    assert "Messages" not in sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)
    (moved,) = sqs.receive_message(QueueUrl=dlq, MessageSystemAttributeNames=["All"])["Messages"]
    assert moved["Body"] == "poison"
    assert moved["Attributes"]["DeadLetterQueueSourceArn"] == src_arn

    with pytest.raises(ClientError) as exc:  # a FIFO queue's dead-letter queue must be FIFO too
        make_queue(sqs, "f", FifoQueue="true", RedrivePolicy=policy)
    assert error_of(exc)[0] == "InvalidParameterValue"
    sqs.set_queue_attributes(QueueUrl=src, Attributes={"RedrivePolicy": ""})
    assert "RedrivePolicy" not in attrs(sqs, src)


def test_purge(sqs):
    url = make_queue(sqs)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(5)])
    sqs.receive_message(QueueUrl=url)
    sqs.purge_queue(QueueUrl=url)
    assert attrs(sqs, url, "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible") == {
        "ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)


# ---------------------------------------------------------------------------------------------- FIFO


def test_fifo_order_within_groups(sqs):
    url = make_queue(sqs, FifoQueue="true")
    assert attrs(sqs, url, "FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit") == {
        "FifoQueue": "true", "ContentBasedDeduplication": "false", "DeduplicationScope": "queue",
        "FifoThroughputLimit": "perQueue"}
    sequence = []
    for body, group in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("b2", "B")]:
        r = sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=body)
        sequence.append(int(r["SequenceNumber"]))
    assert sequence == sorted(sequence) and len(set(sequence)) == 5

    def take(n: int = 1) -> list[dict]:
        return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n, MessageSystemAttributeNames=["All"]
                                   ).get("Messages", [])

    (a1,) = take()
    assert a1["Body"] == "a1" and a1["Attributes"]["MessageGroupId"] == "A"
    assert a1["Attributes"]["MessageDeduplicationId"] == "a1"
    assert int(a1["Attributes"]["SequenceNumber"]) == sequence[0]
    # While a1 is in flight nothing else of group A is delivered; group B is.
    assert [m["Body"] for m in take(10)] == ["b1", "b2"]
    assert take(10) == []
    sqs.delete_message(QueueUrl=url, ReceiptHandle=a1["ReceiptHandle"])
    got = take(10)
    assert [m["Body"] for m in got] == ["a2", "a3"]
    # a2's visibility ends: a2 comes back before a3, although a3 is still in flight.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"], VisibilityTimeout=0)
    (again,) = take(10)
    assert again["Body"] == "a2" and again["Attributes"]["ApproximateReceiveCount"] == "2"
    # A FIFO queue refuses an outdated receipt handle.
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])


def test_fifo_deduplication(sqs):
    url = make_queue(sqs, FifoQueue="true")
    first = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d1")
    dup = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d1")
    assert dup["MessageId"] == first["MessageId"] and dup["SequenceNumber"] == first["SequenceNumber"]
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "1", "MessageBody": "y", "MessageGroupId": "g", "MessageDeduplicationId": "d2"},
        {"Id": "2", "MessageBody": "y", "MessageGroupId": "g", "MessageDeduplicationId": "d2"},
    ])["Successful"]
    assert batch[0]["MessageId"] == batch[1]["MessageId"]
    (m,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert m["Body"] == "x"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Still deduplicated after the first copy was deleted.
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d1")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["y"]

    content = make_queue(sqs, FifoQueue="true", ContentBasedDeduplication="true")
    one = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="g")
    two = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="h")
    assert one["MessageId"] == two["MessageId"]
    assert sqs.send_message(QueueUrl=content, MessageBody="other", MessageGroupId="g")["MessageId"] != one["MessageId"]

    per_group = make_queue(sqs, FifoQueue="true", ContentBasedDeduplication="true", DeduplicationScope="messageGroup",
                           FifoThroughputLimit="perMessageGroupId")
    one = sqs.send_message(QueueUrl=per_group, MessageBody="same", MessageGroupId="g")
    two = sqs.send_message(QueueUrl=per_group, MessageBody="same", MessageGroupId="h")
    assert one["MessageId"] != two["MessageId"]


def test_fifo_errors(sqs):
    url = make_queue(sqs, FifoQueue="true")
    for kwargs, code in [
        ({"MessageDeduplicationId": "d"}, "MissingParameter"),
        ({"MessageGroupId": "g"}, "InvalidParameterValue"),
        ({"MessageGroupId": "g", "MessageDeduplicationId": "d", "DelaySeconds": 5}, "InvalidParameterValue"),
        ({"MessageGroupId": "with space", "MessageDeduplicationId": "d"}, "InvalidParameterValue"),
    ]:
        with pytest.raises(ClientError) as exc:
            sqs.send_message(QueueUrl=url, MessageBody="x", **kwargs)
        assert error_of(exc)[0] == code, kwargs
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        make_queue(sqs, FifoQueue="true", FifoThroughputLimit="perMessageGroupId")


# ---------------------------------------------------------------------------------------------- own servers


def test_retention_and_deduplication_window(own_server):
    srv = own_server(FAAS_QUEUES__MIN_RETENTION_PERIOD=1, FAAS_QUEUES__SWEEP_INTERVAL=0.2,
                     FAAS_QUEUES__DEDUPLICATION_WINDOW=1)
    sqs = srv.client("sqs")
    try:
        url = make_queue(sqs, MessageRetentionPeriod=1)
        sqs.send_message(QueueUrl=url, MessageBody="short-lived")
        wait_for(lambda: attrs(sqs, url, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"] == "0", 5)
        assert "Messages" not in sqs.receive_message(QueueUrl=url)

        fifo = make_queue(sqs, FifoQueue="true", ContentBasedDeduplication="true")
        first = sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g")["MessageId"]
        wait_for(lambda: sqs.send_message(QueueUrl=fifo, MessageBody="x", MessageGroupId="g")["MessageId"] != first,
                 5, interval=0.2)
    finally:
        sqs.close()


def test_messages_survive_sigkill(own_server):
    srv = own_server()
    sqs = srv.client("sqs")
    try:
        url = make_queue(sqs, VisibilityTimeout=120)
        fifo = make_queue(sqs, FifoQueue="true")
        bodies = {f"m{i}" for i in range(30)}
        for body in sorted(bodies):
            sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=MIXED)
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"b{i}"} for i in range(10)])
        bodies |= {f"b{i}" for i in range(10)}
        for i in range(5):
            sqs.send_message(QueueUrl=fifo, MessageBody=f"f{i}", MessageGroupId="g", MessageDeduplicationId=str(i))
        assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
        srv.start()

        assert attrs(sqs, url, "VisibilityTimeout")["VisibilityTimeout"] == "120"
        received: set[str] = set()
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
            if "Messages" not in got:
                break
            for m in got["Messages"]:
                if m["Body"].startswith("m"):
                    assert m["MessageAttributes"] == MIXED and m["MD5OfMessageAttributes"] == reference_md5(MIXED)
                received.add(m["Body"])
        assert received == bodies
        got = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)["Messages"]
        assert [m["Body"] for m in got] == [f"f{i}" for i in range(5)]
        # Deduplication ids survive too.
        again = sqs.send_message(QueueUrl=fifo, MessageBody="f0", MessageGroupId="g", MessageDeduplicationId="0")
        assert again["MessageId"] == got[0]["MessageId"]
    finally:
        sqs.close()


def test_shutdown_ends_long_polls(own_server):
    srv = own_server()
    sqs = srv.client("sqs")
    try:
        url = make_queue(sqs)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            poll = pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=20)
            assert not concurrent.futures.wait([poll], timeout=0.5).done
            t0 = time.monotonic()
            assert srv.stop() == 0
            assert time.monotonic() - t0 < 5
            assert "Messages" not in poll.result(timeout=5)
    finally:
        sqs.close()


# ---------------------------------------------------------------------------------------------- in process


async def test_queues_interface(tmp_path):
    """What async destinations, event buses, topics and event source mappings call."""
    from faas.api.json_protocol import JsonServiceError
    from faas.arn import Arns
    from faas.config import QueuesConfig
    from faas.services.queues import Queues
    from faas.store.db import Database

    db = Database(tmp_path / "registry.db")
    await db.open()
    queues = Queues(db, Arns("us-east-1", "000000000000"), QueuesConfig())
    await queues.open()
    queues.start()
    try:
        queue = await queues.create("inner", {"VisibilityTimeout": "10"}, None)
        fifo = await queues.create("inner.fifo", {"FifoQueue": "true"}, None)
        assert await queues.exists(queue.arn) and not await queues.exists(queue.arn + "x")
        binary = {"b": {"DataType": "Binary", "BinaryValue": b"\x01"}, "s": {"DataType": "String", "StringValue": "v"}}
        message_id = await queues.send_by_arn(queue.arn, "body", message_attributes=binary)
        (m,) = await queues.receive_by_arn(queue.arn, 10)
        assert (m.message_id, m.body, m.message_attributes) == (message_id, "body", binary)
        assert m.md5_of_message_attributes == reference_md5(binary)
        assert m.md5_of_body == hashlib.md5(b"body").hexdigest()
        assert m.attributes["ApproximateReceiveCount"] == "1" and "SentTimestamp" in m.attributes
        await queues.change_visibility_by_arn(queue.arn, m.receipt_handle, 0)
        (m,) = await queues.receive_by_arn(queue.arn, 1, visibility_timeout=30)
        assert m.attributes["ApproximateReceiveCount"] == "2"
        await queues.delete_by_arn(queue.arn, m.receipt_handle)
        assert await queues.receive_by_arn(queue.arn, 1, wait_seconds=0.2) == []

        first = await queues.send_by_arn(fifo.arn, "f", message_group_id="g", deduplication_id="d")
        assert await queues.send_by_arn(fifo.arn, "f", message_group_id="g", deduplication_id="d") == first
        (m,) = await queues.receive_by_arn(fifo.arn, 10)
        assert m.attributes["MessageGroupId"] == "g" and m.md5_of_message_attributes is None

        with pytest.raises(JsonServiceError) as exc:
            await queues.send_by_arn(queue.arn.replace("inner", "missing"), "x")
        assert exc.value.code == "AWS.SimpleQueueService.NonExistentQueue"
        assert await queues.run_once() == 0
    finally:
        await queues.close()
        await db.close()
