"""SNS's API (botocore model `sns`, query protocol): thin handlers over `faas.services.topics.Topics`."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from faas.api.query_protocol import QueryServiceError, query_operation
from faas.services import SERVICES
from faas.services.sns_rules import MAX_MESSAGE_BYTES, invalid_parameter
from faas.services.topics import PublishEntry, Topics
from faas.store.topics import SubscriptionRecord

_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_BATCH_LIMIT = 10


def _topics(request: web.Request) -> Topics:
    return request.app[SERVICES].topics


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@query_operation("sns", "CreateTopic")
async def create_topic(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    arn = await _topics(request).create_topic(p["Name"], p.get("Attributes") or {}, p.get("Tags") or [])
    return {"TopicArn": arn}


@query_operation("sns", "DeleteTopic")
async def delete_topic(request: web.Request, p: dict[str, Any]) -> None:
    await _topics(request).delete_topic(p["TopicArn"])


@query_operation("sns", "ListTopics")
async def list_topics(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    arns, token = _topics(request).list_topics(p.get("NextToken"))
    return {"Topics": [{"TopicArn": a} for a in arns], "NextToken": token}


@query_operation("sns", "GetTopicAttributes")
async def get_topic_attributes(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    return {"Attributes": _topics(request).topic_attributes(p["TopicArn"])}


@query_operation("sns", "SetTopicAttributes")
async def set_topic_attributes(request: web.Request, p: dict[str, Any]) -> None:
    await _topics(request).set_topic_attribute(p["TopicArn"], p["AttributeName"], p.get("AttributeValue") or "")


@query_operation("sns", "Subscribe")
async def subscribe(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    # Lambda and SQS subscriptions are confirmed at once, so the ARN is returned with or without
    # ReturnSubscriptionArn.
    arn = await _topics(request).subscribe(p["TopicArn"], p["Protocol"], p.get("Endpoint"), p.get("Attributes") or {})
    return {"SubscriptionArn": arn}


@query_operation("sns", "Unsubscribe")
async def unsubscribe(request: web.Request, p: dict[str, Any]) -> None:
    await _topics(request).unsubscribe(p["SubscriptionArn"])


def _subscriptions(subs: list[SubscriptionRecord], token: str | None, owner: str) -> dict[str, Any]:
    return {
        "Subscriptions": [
            {"SubscriptionArn": s.arn, "Owner": owner, "Protocol": s.protocol, "Endpoint": s.endpoint,
             "TopicArn": s.topic_arn}
            for s in subs
        ],
        "NextToken": token,
    }


@query_operation("sns", "ListSubscriptions")
async def list_subscriptions(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    topics = _topics(request)
    subs, token = topics.list_subscriptions(p.get("NextToken"))
    return _subscriptions(subs, token, topics.account)


@query_operation("sns", "ListSubscriptionsByTopic")
async def list_subscriptions_by_topic(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    topics = _topics(request)
    subs, token = topics.list_subscriptions(p.get("NextToken"), p["TopicArn"])
    return _subscriptions(subs, token, topics.account)


@query_operation("sns", "GetSubscriptionAttributes")
async def get_subscription_attributes(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    return {"Attributes": _topics(request).subscription_attributes(p["SubscriptionArn"])}


@query_operation("sns", "SetSubscriptionAttributes")
async def set_subscription_attributes(request: web.Request, p: dict[str, Any]) -> None:
    await _topics(request).set_subscription_attribute(p["SubscriptionArn"], p["AttributeName"],
                                                      p.get("AttributeValue") or "")


def _entry(p: dict[str, Any]) -> PublishEntry:
    return msgspec.convert({k: v for k, v in p.items() if k in PublishEntry.__struct_fields__ and v is not None},
                           PublishEntry)


@query_operation("sns", "Publish")
async def publish(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    topic, target, phone = p.get("TopicArn"), p.get("TargetArn"), p.get("PhoneNumber")
    if phone is not None:
        raise invalid_parameter("Invalid parameter: PhoneNumber Reason: SMS is not supported by this server")
    if topic is None and target is None:
        raise invalid_parameter("Invalid parameter: TopicArn or TargetArn Reason: no value for required parameter")
    if topic is not None and target is not None:
        raise invalid_parameter("Invalid parameter: TopicArn Reason: Only one of TopicArn or TargetArn may be "
                                "specified")
    result, = await _topics(request).publish(topic or target, [_entry(p)], "TopicArn" if topic else "TargetArn")
    if isinstance(result, QueryServiceError):
        raise result
    return {"MessageId": result.message_id, "SequenceNumber": result.sequence_number}


@query_operation("sns", "PublishBatch")
async def publish_batch(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    entries = p["PublishBatchRequestEntries"]
    if not entries:
        raise QueryServiceError("EmptyBatchRequest", "The batch request doesn't contain any entries.")
    if len(entries) > _BATCH_LIMIT:
        raise QueryServiceError("TooManyEntriesInBatchRequest",
                                "The batch request contains more entries than permissible.")
    ids = [e["Id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise QueryServiceError("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.")
    if not all(_BATCH_ID.fullmatch(i) for i in ids):
        raise QueryServiceError("InvalidBatchEntryId", "A batch entry id can only contain alphanumeric characters, "
                                "hyphens and underscores. It can be at most 80 letters long.")
    if sum(len(e["Message"].encode()) for e in entries) > MAX_MESSAGE_BYTES:
        raise QueryServiceError("BatchRequestTooLong",
                                "The length of all the messages put together is more than the limit.")
    results = await _topics(request).publish(p["TopicArn"], [_entry(e) for e in entries])
    successful, failed = [], []
    for entry_id, r in zip(ids, results):
        if isinstance(r, QueryServiceError):
            failed.append({"Id": entry_id, "Code": r.code, "Message": r.message, "SenderFault": r.sender})
        else:
            successful.append({"Id": entry_id, "MessageId": r.message_id, "SequenceNumber": r.sequence_number})
    return {"Successful": successful, "Failed": failed}


@query_operation("sns", "ListTagsForResource")
async def list_tags_for_resource(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    return {"Tags": _tag_list(_topics(request).tags(p["ResourceArn"]))}


@query_operation("sns", "TagResource")
async def tag_resource(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    await _topics(request).tag(p["ResourceArn"], p["Tags"])
    return {}


@query_operation("sns", "UntagResource")
async def untag_resource(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    await _topics(request).untag(p["ResourceArn"], p["TagKeys"])
    return {}
