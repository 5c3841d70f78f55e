"""SQS's rules, apart from storage and the wire: its errors, queue names and attributes, message checks, receipt
handles and the MD5 digests SDKs verify."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from faas.api.json_protocol import JsonServiceError
from faas.store.queues import NewMessage

# Exception shape -> the Query-protocol code SQS still reports (botocore shows it as Error.Code). Shapes not
# listed report their own name.
_QUERY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
    "PurgeQueueInProgress": "AWS.SimpleQueueService.PurgeQueueInProgress",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
}


class SqsError(JsonServiceError):
    """An SQS error. `code` is the Query-protocol code clients see as Error.Code (for a missing queue
    `AWS.SimpleQueueService.NonExistentQueue`); on the wire `__type` names the model's exception shape
    (`com.amazonaws.sqs#QueueDoesNotExist`, which botocore maps to `client.exceptions.QueueDoesNotExist`) and
    the `x-amzn-query-error` header carries the code and the fault."""

    def __init__(self, shape: str, message: str, *, sender_fault: bool = True, status: int = 400):
        code = _QUERY_CODES.get(shape, shape)
        super().__init__(code, message, status)
        self.shape = shape
        self.sender_fault = sender_fault
        self.wire_type = f"com.amazonaws.sqs#{shape}"
        self.query_error = f"{code};{'Sender' if sender_fault else 'Receiver'}"


def queue_missing() -> SqsError:
    return SqsError("QueueDoesNotExist", "The specified queue does not exist.")


def invalid_parameter(message: str) -> SqsError:
    return SqsError("InvalidParameterValue", message)


def missing_parameter(name: str) -> SqsError:
    return SqsError("MissingParameter", f"The request must contain the parameter {name}.")


def invalid_attribute_name(name: str) -> SqsError:
    return SqsError("InvalidAttributeName", f"Unknown Attribute {name}.")


def invalid_attribute_value(name: str, reason: str = "") -> SqsError:
    return SqsError("InvalidAttributeValue", f"Invalid value for the parameter {name}." + (f" Reason: {reason}"
                                                                                          if reason else ""))


# ---------------------------------------------------------------------------------------------- queues

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}\.fifo")


def check_queue_name(name: str, fifo: bool) -> None:
    if fifo:
        if not _FIFO_NAME.fullmatch(name):
            raise invalid_parameter(
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, "
                "must end with .fifo suffix and be 1 to 80 in length."
            )
    elif not _NAME.fullmatch(name):
        raise invalid_parameter("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")


_INT_RANGES = {
    "DelaySeconds": (0, 900),
    "MaximumMessageSize": (1024, 1048576),
    "MessageRetentionPeriod": (60, 1209600),
    "ReceiveMessageWaitTimeSeconds": (0, 20),
    "VisibilityTimeout": (0, 43200),
    "KmsDataKeyReusePeriodSeconds": (60, 86400),
}
_BOOLEANS = frozenset({"FifoQueue", "ContentBasedDeduplication", "SqsManagedSseEnabled"})
_ENUMS = {"DeduplicationScope": ("messageGroup", "queue"), "FifoThroughputLimit": ("perQueue", "perMessageGroupId")}
_JSON_VALUED = frozenset({"Policy", "RedriveAllowPolicy"})
# Attributes a SetQueueAttributes may clear by sending an empty string.
CLEARABLE = frozenset({"Policy", "RedriveAllowPolicy", "RedrivePolicy", "KmsMasterKeyId"})
FIFO_ONLY = frozenset({"ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"})
COMPUTED = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp", "QueueArn")
SETTABLE = frozenset({*_INT_RANGES, *_BOOLEANS, *_ENUMS, *_JSON_VALUED, "RedrivePolicy", "KmsMasterKeyId"})

STANDARD_DEFAULTS = {
    "VisibilityTimeout": "30",
    "MaximumMessageSize": "1048576",
    "MessageRetentionPeriod": "345600",
    "DelaySeconds": "0",
    "ReceiveMessageWaitTimeSeconds": "0",
    "SqsManagedSseEnabled": "true",
}
FIFO_DEFAULTS = {
    **STANDARD_DEFAULTS,
    "FifoQueue": "true",
    "ContentBasedDeduplication": "false",
    "DeduplicationScope": "queue",
    "FifoThroughputLimit": "perQueue",
}
# The order GetQueueAttributes lists them in for All.
ATTRIBUTE_ORDER = (
    "Policy", "VisibilityTimeout", "MaximumMessageSize", "MessageRetentionPeriod", "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible", "CreatedTimestamp", "LastModifiedTimestamp", "QueueArn",
    "ApproximateNumberOfMessagesDelayed", "DelaySeconds", "ReceiveMessageWaitTimeSeconds", "RedrivePolicy",
    "RedriveAllowPolicy", "FifoQueue", "ContentBasedDeduplication", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope", "FifoThroughputLimit", "SqsManagedSseEnabled",
)


def normalize_attributes(given: dict[str, str], *, fifo: bool, creating: bool,
                         min_retention: int = 60) -> dict[str, str]:
    """Check queue attributes as CreateQueue (`creating`) or SetQueueAttributes does and return them in their
    stored form ("" for an attribute being cleared). A RedrivePolicy's target is not looked up here."""
    out: dict[str, str] = {}
    for name, value in given.items():
        if name not in SETTABLE or (name in FIFO_ONLY and not fifo) or (name == "FifoQueue" and not creating):
            raise invalid_attribute_name(name)
        if not isinstance(value, str):
            raise invalid_attribute_value(name)
        out[name] = _normalize(name, value, min_retention)
    return out


def _normalize(name: str, value: str, min_retention: int) -> str:
    if value == "" and name in CLEARABLE:
        return ""
    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        if name == "MessageRetentionPeriod":
            low = min_retention
        if not re.fullmatch(r"-?\d{1,10}", value) or not low <= int(value) <= high:
            raise invalid_attribute_value(name)
        return str(int(value))
    if name in _BOOLEANS:
        if value.lower() not in ("true", "false"):
            raise invalid_attribute_value(name)
        return value.lower()
    if name in _ENUMS:
        if value not in _ENUMS[name]:
            raise invalid_attribute_value(name)
        return value
    if name in _JSON_VALUED:
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise invalid_attribute_value(name)
        return value
    if name == "RedrivePolicy":
        target, count = parse_redrive_policy(value)
        return json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": count}, separators=(",", ":"))
    return value


def check_fifo_throughput(attributes: dict[str, str]) -> None:
    if attributes.get("FifoThroughputLimit") == "perMessageGroupId" and attributes.get("DeduplicationScope") == "queue":
        raise invalid_attribute_value(
            "FifoThroughputLimit",
            "To enable high throughput for FIFO queues, do the following: Set DeduplicationScope to messageGroup. "
            "Set FifoThroughputLimit to perMessageGroupId.",
        )


def invalid_redrive(value: str, reason: str) -> SqsError:
    return invalid_parameter(f"Value {value} for parameter RedrivePolicy is invalid. Reason: {reason}")


def parse_redrive_policy(value: str) -> tuple[str, int]:
    """(deadLetterTargetArn, maxReceiveCount) of a RedrivePolicy text."""
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise invalid_redrive(value, "Redrive policy is not a valid JSON map.")
    unknown = set(doc) - {"deadLetterTargetArn", "maxReceiveCount"}
    if unknown:
        raise invalid_redrive(value, "Only following attributes are supported: [deadLetterTargetArn, maxReceiveCount].")
    for key in ("deadLetterTargetArn", "maxReceiveCount"):
        if key not in doc:
            raise invalid_redrive(value, f"Redrive policy does not contain mandatory attribute: {key}.")
    target, count = doc["deadLetterTargetArn"], doc["maxReceiveCount"]
    if not isinstance(target, str):
        raise invalid_redrive(value, "Invalid value for deadLetterTargetArn.")
    if isinstance(count, str) and re.fullmatch(r"\d{1,6}", count):
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        raise invalid_redrive(
            value, f"Invalid value for maxReceiveCount: {count}, valid values are from 1 to 1000 both inclusive."
        )
    return target, count


# ---------------------------------------------------------------------------------------------- messages

_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_DATA_TYPE = re.compile(r"(String|Number|Binary)(\.[^\s]+)?")
_MESSAGE_ID_TOKEN = re.compile(r"[\x21-\x7e]{1,128}")
_BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
MAX_BATCH_BYTES = 1048576


def check_text(text: str) -> None:
    if _INVALID_CHARS.search(text):
        raise SqsError(
            "InvalidMessageContents",
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | "
            "#xE000 to #xFFFD | #x10000 to #x10FFFF",
        )


def check_message_attributes(attributes: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """Validate SendMessage's MessageAttributes; return them with only the value their type uses, and their
    size as SQS counts it (names, types and values)."""
    if len(attributes) > 10:
        raise invalid_parameter(f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum [10].")
    out: dict[str, dict[str, Any]] = {}
    size = 0
    for name, value in attributes.items():
        if not _ATTRIBUTE_NAME.fullmatch(name) or name.startswith(".") or name.endswith(".") or ".." in name:
            raise invalid_parameter(
                f"Message (user) attribute name '{name}' is invalid. The attribute name can contain A-Z, a-z, 0-9, "
                "underscore (_), hyphen (-), and period (.) characters."
            )
        if name.lower().startswith(("aws.", "amazon.")):
            raise invalid_parameter(
                f"Message (user) attribute name '{name}' is invalid. You can't use message attribute names beginning "
                "with 'AWS.' or 'Amazon.'. These strings are reserved for internal use."
            )
        if not isinstance(value, dict):
            raise invalid_parameter(f"The message attribute '{name}' must contain non-empty message attribute type.")
        out[name] = _check_attribute_value(name, value, "(user) ")
        size += len(name.encode()) + len(value["DataType"].encode()) + _value_size(out[name])
    return out, size


def _check_attribute_value(name: str, value: dict[str, Any], kind: str) -> dict[str, Any]:
    data_type = value.get("DataType")
    if not data_type:
        raise invalid_parameter(f"The message attribute '{name}' must contain non-empty message attribute type.")
    match = _DATA_TYPE.fullmatch(data_type)
    if match is None or len(data_type) > 256:
        raise invalid_parameter(
            f"The type of message {kind}attribute '{name}' is invalid. You must use only the following supported "
            "type prefixes: Binary, Number, String."
        )
    if value.get("StringListValues") or value.get("BinaryListValues"):
        raise invalid_parameter("Message attribute list values in SendMessage operation are not supported.")
    base = match.group(1)
    if base == "Binary":
        binary = value.get("BinaryValue")
        if not binary:
            raise invalid_parameter(
                f"The message attribute '{name}' must contain non-empty message attribute value for message "
                f"attribute type '{base}'."
            )
        return {"DataType": data_type, "BinaryValue": bytes(binary)}
    text = value.get("StringValue")
    if not text:
        raise invalid_parameter(
            f"The message attribute '{name}' must contain non-empty message attribute value for message attribute "
            f"type '{base}'."
        )
    check_text(text)
    if base == "Number":
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or abs(number) >= Decimal("1e126"):
            raise invalid_parameter(f"Can't cast the value of message {kind}attribute '{name}' to a number.")
    return {"DataType": data_type, "StringValue": text}


def _value_size(value: dict[str, Any]) -> int:
    return len(value["BinaryValue"]) if "BinaryValue" in value else len(value["StringValue"].encode())


def check_system_attributes(attributes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """MessageSystemAttributes: only AWSTraceHeader, a String."""
    out = {}
    for name, value in attributes.items():
        if name != "AWSTraceHeader":
            raise invalid_parameter(f"Message system attribute name '{name}' is invalid.")
        checked = _check_attribute_value(name, value if isinstance(value, dict) else {}, "system ")
        if checked["DataType"] != "String":
            raise invalid_parameter(f"Message system attribute '{name}' must be of type String.")
        out[name] = checked
    return out


def check_fifo_token(member: str, value: str) -> None:
    if not _MESSAGE_ID_TOKEN.fullmatch(value):
        raise invalid_parameter(
            f"Value {value} for parameter {member} is invalid. Reason: {member} can only include alphanumeric and "
            "punctuation characters. 1 to 128 in length."
        )


def check_batch_entries(entries: list[dict[str, Any]] | None, kind: str) -> list[dict[str, Any]]:
    """The rules every *Batch operation applies to its entries. `kind` names the entry type in messages."""
    if not entries:
        raise SqsError("EmptyBatchRequest", f"There should be at least one {kind} in the request.")
    if len(entries) > 10:
        raise SqsError("TooManyEntriesInBatchRequest",
                       f"Maximum number of entries per request are 10. You have sent {len(entries)}.")
    seen: set[str] = set()
    for entry in entries:
        entry_id = entry.get("Id") or ""
        if not _BATCH_ENTRY_ID.fullmatch(entry_id):
            raise SqsError("InvalidBatchEntryId", "A batch entry id can only contain alphanumeric characters, "
                                                  "hyphens and underscores. It can be at most 80 letters long.")
        if entry_id in seen:
            raise SqsError("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")
        seen.add(entry_id)
    return entries


# ---------------------------------------------------------------------------------------------- digests


def md5_of_text(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def md5_of_attributes(attributes: dict[str, dict[str, Any]]) -> str:
    """SQS's digest of message attributes, which SDKs recompute: for each attribute in name order, the name and
    the data type, each as a 4-byte big-endian length and UTF-8 bytes, then a transport byte (1 for a string
    value, 2 for a binary one) and the value, length-prefixed the same way."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        value = attributes[name]
        for text in (name, value["DataType"]):
            data = text.encode()
            digest.update(len(data).to_bytes(4, "big") + data)
        if value.get("StringValue") is not None:
            data, transport = value["StringValue"].encode(), b"\x01"
        else:
            data, transport = bytes(value["BinaryValue"]), b"\x02"
        digest.update(transport + len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- records

MAX_VISIBILITY = 43200
MAX_WAIT = 20
MAX_DELAY = 900
_encoder = msgspec.json.Encoder()


def sequence_number(seq: int) -> str:
    """A FIFO message's SequenceNumber: its row number, made 20 digits long like SQS's."""
    return str(10**19 + seq)


class ReceivedMessage(msgspec.Struct):
    """One received message. `attributes` are SQS's system attributes as strings; `message_attributes` have
    SQS's API shape ({"DataType", "StringValue"} or {"DataType", "BinaryValue": bytes})."""

    message_id: str
    receipt_handle: str
    body: str
    md5_of_body: str
    attributes: dict[str, str]
    message_attributes: dict[str, dict[str, Any]]
    md5_of_message_attributes: str | None = None


class OutgoingMessage(msgspec.Struct):
    """A message to send, as SendMessage takes it (`message_attributes` in SQS's API shape)."""

    body: str
    message_attributes: dict[str, Any] | None = None
    system_attributes: dict[str, Any] | None = None
    delay_seconds: int | None = None
    group_id: str | None = None
    deduplication_id: str | None = None


class SendResult(msgspec.Struct):
    message_id: str
    md5_of_body: str
    md5_of_message_attributes: str | None = None
    md5_of_system_attributes: str | None = None
    sequence_number: str | None = None


class Queue(msgspec.Struct):
    """A queue as the server holds it. `attributes` are the configured ones, as GetQueueAttributes shows them."""

    id: int
    name: str
    arn: str
    attributes: dict[str, str]
    tags: dict[str, str]
    created_at: int
    last_modified: int

    @property
    def fifo(self) -> bool:
        return self.attributes.get("FifoQueue") == "true"

    def setting(self, name: str) -> int:
        return int(self.attributes[name])


def prepare_message(queue: Queue, message: OutgoingMessage, now: float) -> tuple[NewMessage, SendResult]:
    """Check a message to send to `queue` as SendMessage does; the row to store and the answer to give."""
    body = message.body
    if not body:
        raise missing_parameter("MessageBody")
    check_text(body)
    attributes, size = ({}, 0)
    if message.message_attributes:
        attributes, size = check_message_attributes(message.message_attributes)
    system = check_system_attributes(message.system_attributes) if message.system_attributes else {}
    data = body.encode()
    max_size = queue.setting("MaximumMessageSize")
    if len(data) + size > max_size:
        raise invalid_parameter(
            f"One or more parameters are invalid. Reason: Message must be shorter than {max_size} bytes."
        )
    group, dedup, dedup_key = message.group_id, message.deduplication_id, None
    if queue.fifo:
        if message.delay_seconds:
            raise invalid_parameter(f"Value {message.delay_seconds} for parameter DelaySeconds is invalid. Reason: "
                                    "The request include parameter that is not valid for this queue type.")
        if not group:
            raise missing_parameter("MessageGroupId")
        check_fifo_token("MessageGroupId", group)
        if dedup is None:
            if queue.attributes.get("ContentBasedDeduplication") != "true":
                raise invalid_parameter("The queue should either have ContentBasedDeduplication enabled or "
                                        "MessageDeduplicationId provided explicitly")
            dedup = hashlib.sha256(data).hexdigest()
        check_fifo_token("MessageDeduplicationId", dedup)
        per_group = queue.attributes.get("DeduplicationScope") == "messageGroup"
        dedup_key = f"{group}\x00{dedup}" if per_group else dedup
        delay = queue.setting("DelaySeconds")
    else:
        if dedup is not None:
            raise invalid_parameter(f"Value {dedup} for parameter MessageDeduplicationId is invalid. Reason: The "
                                    "request include parameter that is not valid for this queue type.")
        if group is not None:
            check_fifo_token("MessageGroupId", group)
        delay = queue.setting("DelaySeconds") if message.delay_seconds is None else message.delay_seconds
        if not 0 <= delay <= MAX_DELAY:
            raise invalid_parameter(f"Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds "
                                    f"must be >= 0 and <= {MAX_DELAY}.")
    body_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    attributes_md5 = md5_of_attributes(attributes) if attributes else None
    trace = system["AWSTraceHeader"]["StringValue"] if system else None
    row = NewMessage(
        str(uuid.uuid4()), body, body_md5, _encoder.encode(attributes).decode() if attributes else None,
        attributes_md5, trace, group, dedup if queue.fifo else None, dedup_key, now, now + delay,
        now + queue.setting("MessageRetentionPeriod"),
    )
    result = SendResult(row.message_id, body_md5, attributes_md5, md5_of_attributes(system) if system else None)
    return row, result


# ---------------------------------------------------------------------------------------------- receiving

SYSTEM_ATTRIBUTES = frozenset({
    "SenderId", "SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp", "SequenceNumber",
    "MessageDeduplicationId", "MessageGroupId", "AWSTraceHeader", "DeadLetterQueueSourceArn",
})


def system_attribute_names(*lists: list[str] | None) -> frozenset[str]:
    """The message system attributes a ReceiveMessage asked for (AttributeNames and MessageSystemAttributeNames)."""
    names = {n for names in lists if names for n in names}
    if "All" in names:
        return SYSTEM_ATTRIBUTES
    return frozenset(names & SYSTEM_ATTRIBUTES)


def select_message_attributes(attributes: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """The message attributes a ReceiveMessage asked for: names, `All` or `.*`, or prefixes such as `bar.*`."""
    if not attributes or not names:
        return {}
    if "All" in names or ".*" in names:
        return attributes
    exact = {n for n in names if not n.endswith(".*")}
    prefixes = tuple(n[:-1] for n in names if n.endswith(".*"))
    return {k: v for k, v in attributes.items() if k in exact or (prefixes and k.startswith(prefixes))}


def receipt_handle(queue_id: int, seq: int, nonce: str) -> str:
    return base64.urlsafe_b64encode(f"{queue_id}:{seq}:{nonce}".encode()).decode()


def parse_receipt_handle(handle: str) -> tuple[int, int, str]:
    """(queue id, message seq, nonce) of a receipt handle."""
    try:
        queue_id, seq, nonce = base64.urlsafe_b64decode(handle.encode()).decode().split(":")
        return int(queue_id), int(seq), nonce
    except (binascii.Error, UnicodeError, ValueError):
        raise SqsError("ReceiptHandleIsInvalid",
                       f'The input receipt handle "{handle}" is not a valid receipt handle.') from None
