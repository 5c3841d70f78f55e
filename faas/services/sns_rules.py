"""SNS's rules, apart from storage and the wire: its errors, names and ARNs, topic and subscription attributes,
message checks and filter policies."""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from faas.api.query_protocol import QueryServiceError
from faas.events.patterns import InvalidPattern, Pattern, compile_pattern
from faas.store.topics import MessageAttribute

MAX_MESSAGE_BYTES = 262144
PAGE_SIZE = 100
PROTOCOLS = ("lambda", "sqs")
# Protocols SNS has that this server does not deliver to.
OTHER_PROTOCOLS = ("http", "https", "email", "email-json", "sms", "application", "firehose")

TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[A-Za-z0-9_.-]+)")
SUBSCRIPTION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LAMBDA_ARN = re.compile(r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?")
SQS_ARN = re.compile(r"arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,80}(\.fifo)?")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,251}\.fifo")
_ATTRIBUTE_NAME = re.compile(r"(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}")
_GROUP_OR_DEDUP_ID = re.compile(r"[!-~]{1,128}")
_FEEDBACK = re.compile(r"(HTTP|Firehose|Lambda|Application|SQS)(Success|Failure)Feedback(RoleArn|SampleRate)")

_JSON_TOPIC_ATTRIBUTES = ("Policy", "DeliveryPolicy", "ArchivePolicy", "DataProtectionPolicy")
_TOPIC_CHOICES = {
    "SignatureVersion": ("1", "2"),
    "TracingConfig": ("PassThrough", "Active"),
    "FifoThroughputScope": ("Topic", "MessageGroup"),
    "ContentBasedDeduplication": ("true", "false"),
}
_FIFO_ONLY = ("ContentBasedDeduplication", "FifoThroughputScope")
_SUBSCRIPTION_ATTRIBUTES = ("DeliveryPolicy", "FilterPolicy", "FilterPolicyScope", "RawMessageDelivery",
                            "RedrivePolicy", "SubscriptionRoleArn")

DEFAULT_DELIVERY_POLICY = (
    '{"http":{"defaultHealthyRetryPolicy":{"minDelayTarget":20,"maxDelayTarget":20,"numRetries":3,'
    '"numMaxDelayRetries":0,"numNoDelayRetries":0,"numMinDelayRetries":0,"backoffFunction":"linear"},'
    '"disableSubscriptionOverrides":false,"defaultRequestPolicy":{"headerContentType":"text/plain; charset=UTF-8"}}}'
)


def invalid_parameter(message: str) -> QueryServiceError:
    return QueryServiceError("InvalidParameter", message)


def invalid_value(message: str) -> QueryServiceError:
    return QueryServiceError("ParameterValueInvalid", message)


def not_found(message: str) -> QueryServiceError:
    return QueryServiceError("NotFound", message, 404)


def default_policy(arn: str, account: str) -> str:
    return json.dumps({
        "Version": "2008-10-17", "Id": "__default_policy_ID",
        "Statement": [{
            "Sid": "__default_statement_ID", "Effect": "Allow", "Principal": {"AWS": "*"},
            "Action": ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission",
                       "SNS:RemovePermission", "SNS:DeleteTopic", "SNS:Subscribe", "SNS:ListSubscriptionsByTopic",
                       "SNS:Publish"],
            "Resource": arn, "Condition": {"StringEquals": {"AWS:SourceOwner": account}},
        }],
    }, separators=(",", ":"))


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def page_start(token: str | None) -> str:
    """The ARN a NextToken continues after."""
    if not token:
        return ""
    try:
        return bytes.fromhex(token).decode()
    except ValueError:
        raise invalid_parameter("Invalid parameter: NextToken") from None


def page_token(last: str) -> str:
    return last.encode().hex()


# --------------------------------------------------------------------------------------------- topics


def check_topic_name(name: str, fifo: bool) -> None:
    if fifo and not _FIFO_NAME.fullmatch(name):
        raise invalid_parameter(
            "Invalid parameter: Fifo Topic names must end with .fifo and must be made up of only uppercase and "
            "lowercase ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters "
            "long.")
    if not fifo and not _NAME.fullmatch(name):
        raise invalid_parameter("Invalid parameter: Topic Name")


def fifo_flag(attributes: dict[str, str]) -> bool:
    """CreateTopic's FifoTopic attribute (taken out of `attributes`: it is fixed at creation)."""
    value = attributes.pop("FifoTopic", "false").lower()
    if value not in ("true", "false"):
        raise invalid_parameter("Invalid parameter: Attributes Reason: FifoTopic must be true or false")
    return value == "true"


def topic_attribute(name: str, value: str, fifo: bool) -> str:
    """The value to store for a topic attribute ("" removes it), or the error SNS gives."""
    if name in _JSON_TOPIC_ATTRIBUTES:
        if value and not isinstance(json_or_none(value), dict):
            raise invalid_parameter(f"Invalid parameter: {name} Reason: the value is not a JSON object")
        return value
    if name in _TOPIC_CHOICES:
        if name in _FIFO_ONLY and not fifo:
            raise invalid_parameter(f"Invalid parameter: Attributes Reason: {name} can only be set for FIFO topics")
        if name == "ContentBasedDeduplication":
            value = value.lower()
        if value not in _TOPIC_CHOICES[name]:
            raise invalid_parameter(f"Invalid parameter: {name}")
        return value
    if name == "DisplayName":
        if len(value) > 100:
            raise invalid_parameter("Invalid parameter: DisplayName")
        return value
    if name == "KmsMasterKeyId" or _FEEDBACK.fullmatch(name):
        if name.endswith("SampleRate") and value and not (value.isdigit() and int(value) <= 100):
            raise invalid_parameter(f"Invalid parameter: {name}")
        return value
    raise invalid_parameter("Invalid parameter: AttributeName")


# --------------------------------------------------------------------------------------------- subscriptions


def check_endpoint(protocol: str, endpoint: str, region: str, account: str, fifo_topic: bool) -> None:
    if protocol in OTHER_PROTOCOLS:
        raise invalid_parameter(f"Invalid parameter: Protocol Reason: {protocol} is not supported by this server")
    if protocol not in PROTOCOLS:
        raise invalid_parameter(f"Invalid parameter: Amazon SNS does not support this protocol string: {protocol}")
    if protocol == "lambda" and not LAMBDA_ARN.fullmatch(endpoint):
        raise invalid_parameter("Invalid parameter: Lambda endpoint ARN")
    if protocol == "sqs" and not SQS_ARN.fullmatch(endpoint):
        raise invalid_parameter("Invalid parameter: SQS endpoint ARN")
    if endpoint.split(":")[3:5] != [region, account]:  # this server could never deliver there
        raise invalid_parameter(f"Invalid parameter: Endpoint Reason: {endpoint} is not in this server's region and "
                                "account")
    if fifo_topic and protocol != "sqs":
        raise invalid_parameter(f"Invalid parameter: Invalid protocol type: {protocol} for a FIFO topic")
    if not fifo_topic and endpoint.endswith(".fifo"):
        raise invalid_parameter("Invalid parameter: Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be "
                                "subscribed to standard SNS topics")


class Filters:
    """Filter policies, compiled once per (scope, policy text)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str], Pattern] = {}

    def get(self, policy: str, scope: str) -> Pattern:
        key = (scope, policy)
        pattern = self._compiled.get(key)
        if pattern is None:
            try:
                pattern = compile_pattern(policy)
            except InvalidPattern as exc:
                raise invalid_parameter(f"Invalid parameter: FilterPolicy: {exc.message}") from None
            if scope == "MessageAttributes" and any(isinstance(v, dict) for k, v in pattern.source.items()
                                                    if k != "$or"):
                raise invalid_parameter("Invalid parameter: FilterPolicy: Filter policy scope MessageAttributes does "
                                        "not support nested filter policy")
            if len(self._compiled) >= 4096:
                self._compiled.clear()
            self._compiled[key] = pattern
        return pattern


def subscription_attribute(name: str, value: str, protocol: str, current: dict[str, str], filters: Filters) -> str:
    """The value to store for a subscription attribute ("" removes it), or the error SNS gives. `current` are
    the attributes set so far (a FilterPolicy is checked against the FilterPolicyScope in force)."""
    if name not in _SUBSCRIPTION_ATTRIBUTES:
        raise invalid_parameter("Invalid parameter: AttributeName")
    if not value:
        return ""
    if name == "RawMessageDelivery":
        if value.lower() not in ("true", "false"):
            raise invalid_parameter(f"Invalid parameter: Attributes Reason: RawMessageDelivery: Invalid value [{value}]. "
                                    "Must be true or false.")
        if protocol == "lambda" and value.lower() == "true":
            raise invalid_parameter("Invalid parameter: Attributes Reason: Delivery protocol [lambda] does not support "
                                    "raw message delivery.")
        return value.lower()
    if name == "FilterPolicyScope":
        if value not in ("MessageAttributes", "MessageBody"):
            raise invalid_parameter(f"Invalid parameter: Attributes Reason: FilterPolicyScope: Invalid value [{value}]. "
                                    "Please use either MessageBody or MessageAttributes")
        if "FilterPolicy" in current:
            filters.get(current["FilterPolicy"], value)
        return value
    if name == "FilterPolicy":
        filters.get(value, current.get("FilterPolicyScope", "MessageAttributes"))
        return value
    if name == "SubscriptionRoleArn":
        return value
    doc = json_or_none(value)
    if not isinstance(doc, dict):
        raise invalid_parameter(f"Invalid parameter: {name}: failed to parse JSON")
    if name == "RedrivePolicy" and not SQS_ARN.fullmatch(str(doc.get("deadLetterTargetArn", ""))):
        raise invalid_parameter("Invalid parameter: RedrivePolicy: deadLetterTargetArn is an invalid arn")
    return value


# --------------------------------------------------------------------------------------------- messages


def check_subject(subject: str | None) -> None:
    if subject is not None and (not subject or len(subject) > 100 or not subject.isprintable()):
        raise invalid_parameter("Invalid parameter: Subject")


def check_structure(structure: str, message: str) -> None:
    """MessageStructure=json: a JSON object of strings, with a `default` entry."""
    if structure != "json":
        raise invalid_parameter("Invalid parameter: MessageStructure")
    doc = json_or_none(message)
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise invalid_parameter("Invalid parameter: Message Structure - JSON message body failed to parse")
    if "default" not in doc:
        raise invalid_parameter("Invalid parameter: Message Structure - No default entry in JSON message body")


def check_fifo_id(value: str | None, member: str) -> None:
    if value is not None and not _GROUP_OR_DEDUP_ID.fullmatch(value):
        raise invalid_parameter(f"Invalid parameter: {member} Reason: {member} can only include alphanumeric and "
                                "punctuation characters. 1 to 128 in length.")


def message_attributes(raw: dict[str, Any]) -> dict[str, MessageAttribute]:
    """Check Publish's MessageAttributes and keep them as subscribers get them (binary values base64-encoded)."""
    out: dict[str, MessageAttribute] = {}
    for name, value in raw.items():
        if not _ATTRIBUTE_NAME.fullmatch(name) or name.lower().startswith(("aws.", "amazon.")):
            raise invalid_value(f"Invalid attribute name: {name}")
        value = value or {}
        data_type = value.get("DataType") or ""
        kind = data_type.split(".", 1)[0]
        if kind not in ("String", "Number", "Binary"):
            raise invalid_value(f"The message attribute '{name}' has an invalid message attribute type, the set of "
                                "supported type prefixes is Binary, Number, and String.")
        field = "BinaryValue" if kind == "Binary" else "StringValue"
        if not value.get(field):
            raise invalid_value(f"The message attribute '{name}' must contain non-empty message attribute value for "
                                f"message attribute type '{data_type}'.")
        if kind == "Binary":
            out[name] = MessageAttribute(data_type, base64.b64encode(value[field]).decode())
            continue
        text = value[field]
        if kind == "Number" and not _is_number(text):
            raise invalid_value(f"Could not cast message attribute '{name}' value to number.")
        if data_type == "String.Array" and not isinstance(json_or_none(text), list):
            raise invalid_value(f"The message attribute '{name}' with type 'String.Array' must be a JSON array.")
        out[name] = MessageAttribute(data_type, text)
    return out


def attributes_size(attributes: dict[str, MessageAttribute]) -> int:
    return sum(len(k.encode()) + len(a.type) + len(a.value.encode()) for k, a in attributes.items())


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def filterable(attributes: dict[str, MessageAttribute]) -> dict[str, Any]:
    """Message attributes as the values a filter policy compares: numbers as numbers, arrays as lists; binary
    attributes are not filterable."""
    out: dict[str, Any] = {}
    for name, attr in attributes.items():
        if attr.type == "String.Array":
            out[name] = json.loads(attr.value)
        elif attr.type.startswith("Number"):
            number = Decimal(attr.value)
            out[name] = int(number) if number == number.to_integral_value() else float(number)
        elif attr.type.startswith("String"):
            out[name] = attr.value
    return out
