"""The SNS-compatible topics service: topics, subscriptions and publishing.

Subscriptions are to Lambda functions and SQS queues, confirmed at once. Publish commits the message and one
outbox row per subscriber whose filter policy lets it through before the caller is answered; `TopicDeliverer`
(`faas.services.topic_delivery`) drains the outbox.

Topics and subscriptions are held in memory: loaded from SQLite by `open()` and changed only through this
object, which writes SQLite first, so Publish reads nothing from the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from faas.api.query_protocol import QueryServiceError
from faas.arn import Arns
from faas.services.sns_rules import (
    DEFAULT_DELIVERY_POLICY,
    MAX_MESSAGE_BYTES,
    PAGE_SIZE,
    SUBSCRIPTION_ID,
    TOPIC_ARN,
    Filters,
    attributes_size,
    check_endpoint,
    check_fifo_id,
    check_structure,
    check_subject,
    check_topic_name,
    default_policy,
    fifo_flag,
    filterable,
    invalid_parameter,
    json_or_none,
    message_attributes,
    not_found,
    page_start,
    page_token,
    subscription_attribute,
    topic_attribute,
)
from faas.services.topic_delivery import TopicDeliverer, message_for
from faas.store.topics import (
    MessageRecord,
    NewMessage,
    Published,
    SubscriptionRecord,
    TopicRecord,
    TopicStore,
)


@dataclass
class TopicSettings:
    dedup_window: float = 300.0  # FIFO topics: seconds a deduplication id is remembered


class PublishEntry(msgspec.Struct):
    """One message to publish, as Publish and PublishBatch entries name their members."""

    Message: str
    Subject: str | None = None
    MessageStructure: str | None = None
    MessageAttributes: dict[str, Any] = {}
    MessageGroupId: str | None = None
    MessageDeduplicationId: str | None = None


class Topics:
    def __init__(self, store: TopicStore, arns: Arns, settings: TopicSettings, deliverer: TopicDeliverer):
        self.store = store
        self.settings = settings
        self.deliverer = deliverer
        self.region = arns.region
        self.account = arns.account_id
        self.filters = Filters()
        self._topics: dict[str, TopicRecord] = {}
        self._subscriptions: dict[str, SubscriptionRecord] = {}
        self._by_topic: dict[str, dict[str, SubscriptionRecord]] = {}
        # Changes read the record, check, write SQLite, then replace the record: one at a time.
        self._admin = asyncio.Lock()

    async def open(self) -> None:
        """Load topics and subscriptions from SQLite. Call before serving requests."""
        topics, subscriptions = await self.store.load()
        for t in topics:
            self._topics[t.arn] = t
            self._by_topic[t.arn] = {}
        for s in subscriptions:
            self._subscriptions[s.arn] = s
            self._by_topic[s.topic_arn][s.arn] = s

    # -- lookup ---------------------------------------------------------------------------------------

    def topic_arn(self, name: str) -> str:
        return f"arn:aws:sns:{self.region}:{self.account}:{name}"

    def check_topic_arn(self, arn: str | None, member: str = "TopicArn") -> str:
        arn = arn or ""
        parts = arn.split(":")
        if len(parts) < 6:
            raise invalid_parameter(f"Invalid parameter: {member} Reason: An ARN must have at least 6 elements, "
                                    f"not {len(parts)}")
        m = TOPIC_ARN.fullmatch(arn)
        if m is None or m["region"] != self.region:
            raise invalid_parameter(f"Invalid parameter: {member}")
        if m["account"] != self.account:
            raise QueryServiceError(
                "AuthorizationError", f"User: arn:aws:iam::{self.account}:root is not authorized to access {arn}", 403)
        return arn

    def topic(self, arn: str | None, member: str = "TopicArn") -> TopicRecord:
        found = self._topics.get(self.check_topic_arn(arn, member))
        if found is None:
            raise not_found("Topic does not exist")
        return found

    def subscription(self, arn: str | None) -> SubscriptionRecord:
        topic_part, _, suffix = (arn or "").rpartition(":")
        self.check_topic_arn(topic_part, "SubscriptionArn")
        if not SUBSCRIPTION_ID.fullmatch(suffix):
            raise invalid_parameter("Invalid parameter: SubscriptionArn")
        found = self._subscriptions.get(arn or "")
        if found is None:
            raise not_found("Subscription does not exist")
        return found

    # -- topics ---------------------------------------------------------------------------------------

    async def create_topic(self, name: str, attributes: dict[str, str], tags: list[dict[str, str]]) -> str:
        attributes = dict(attributes)
        fifo = fifo_flag(attributes)
        check_topic_name(name, fifo)
        attrs = {k: v for k, v in ((k, topic_attribute(k, v, fifo)) for k, v in attributes.items()) if v}
        tag_map = {t["Key"]: t.get("Value", "") for t in tags}
        arn = self.topic_arn(name)
        async with self._admin:
            existing = self._topics.get(arn)
            if existing is not None:  # CreateTopic is idempotent, unless it asks for something else
                if existing.fifo != fifo or any(existing.attributes.get(k, "") != v for k, v in attrs.items()):
                    raise invalid_parameter(
                        "Invalid parameter: Attributes Reason: Topic already exists with different attributes")
                if tags and existing.tags != tag_map:
                    raise invalid_parameter("Invalid parameter: Tags Reason: Topic already exists with different tags")
                return arn
            record = TopicRecord(arn, name, fifo, attrs, tag_map, 0, time.time())
            await self.store.create_topic(record)
            self._topics[arn] = record
            self._by_topic[arn] = {}
        return arn

    async def delete_topic(self, arn: str) -> None:
        self.check_topic_arn(arn)
        async with self._admin:
            await self.store.delete_topic(arn)  # deleting a topic that does not exist is not an error
            self._topics.pop(arn, None)
            for sub_arn in self._by_topic.pop(arn, {}):
                del self._subscriptions[sub_arn]

    def list_topics(self, token: str | None) -> tuple[list[str], str | None]:
        start = page_start(token)
        arns = sorted(a for a in self._topics if a > start)
        return arns[:PAGE_SIZE], (page_token(arns[PAGE_SIZE - 1]) if len(arns) > PAGE_SIZE else None)

    def topic_attributes(self, arn: str) -> dict[str, str]:
        t = self.topic(arn)
        attrs = {
            "Policy": default_policy(arn, self.account),
            "Owner": self.account,
            "SubscriptionsPending": "0",
            "TopicArn": arn,
            "EffectiveDeliveryPolicy": t.attributes.get("DeliveryPolicy", DEFAULT_DELIVERY_POLICY),
            "SubscriptionsConfirmed": str(len(self._by_topic[arn])),
            "DisplayName": "",
            "SubscriptionsDeleted": str(t.subscriptions_deleted),
        }
        if t.fifo:
            attrs.update(FifoTopic="true", ContentBasedDeduplication="false", FifoThroughputScope="Topic")
        attrs.update(t.attributes)
        return attrs

    async def set_topic_attribute(self, arn: str, name: str, value: str) -> None:
        async with self._admin:
            t = self.topic(arn)
            if name == "FifoTopic":
                raise invalid_parameter("Invalid parameter: AttributeName")
            attrs = dict(t.attributes)
            attrs[name] = topic_attribute(name, value, t.fifo)
            if not attrs[name]:
                del attrs[name]
            await self.store.set_topic_attributes(arn, attrs)
            self._topics[arn] = msgspec.structs.replace(t, attributes=attrs)

    # -- tags -----------------------------------------------------------------------------------------

    def _tagged(self, arn: str) -> TopicRecord:
        try:
            return self.topic(arn, "ResourceArn")
        except QueryServiceError as err:
            if err.code == "NotFound":
                raise QueryServiceError("ResourceNotFound", "Resource does not exist", 404) from None
            raise

    def tags(self, arn: str) -> dict[str, str]:
        return self._tagged(arn).tags

    async def tag(self, arn: str, tags: list[dict[str, str]]) -> None:
        async with self._admin:
            t = self._tagged(arn)
            merged = {**t.tags, **{x["Key"]: x.get("Value", "") for x in tags}}
            if len(merged) > 50:
                raise QueryServiceError("TagLimitExceeded",
                                        "Could not complete request: tag quota of per resource exceeded")
            await self._set_tags(t, merged)

    async def untag(self, arn: str, keys: list[str]) -> None:
        async with self._admin:
            t = self._tagged(arn)
            await self._set_tags(t, {k: v for k, v in t.tags.items() if k not in keys})

    async def _set_tags(self, t: TopicRecord, tags: dict[str, str]) -> None:
        await self.store.set_topic_tags(t.arn, tags)
        self._topics[t.arn] = msgspec.structs.replace(t, tags=tags)

    # -- subscriptions --------------------------------------------------------------------------------

    async def subscribe(self, topic_arn: str, protocol: str, endpoint: str | None,
                        attributes: dict[str, str]) -> str:
        async with self._admin:
            t = self.topic(topic_arn)
            protocol, endpoint = protocol.lower(), endpoint or ""
            check_endpoint(protocol, endpoint, self.region, self.account, t.fifo)
            attrs: dict[str, str] = {}
            for key, value in attributes.items():
                checked = subscription_attribute(key, value, protocol, attrs, self.filters)
                if checked:
                    attrs[key] = checked
            for existing in self._by_topic[topic_arn].values():
                if (existing.protocol, existing.endpoint) == (protocol, endpoint):
                    if any(existing.attributes.get(k) != v for k, v in attrs.items()):
                        raise invalid_parameter("Invalid parameter: Attributes Reason: Subscription already exists "
                                                "with different attributes")
                    return existing.arn
            sub = SubscriptionRecord(f"{topic_arn}:{uuid.uuid4()}", topic_arn, protocol, endpoint, attrs, time.time())
            await self.store.add_subscription(sub)
            self._subscriptions[sub.arn] = sub
            self._by_topic[topic_arn][sub.arn] = sub
        return sub.arn

    async def unsubscribe(self, arn: str) -> None:
        async with self._admin:
            try:
                sub = self.subscription(arn)
            except QueryServiceError as err:
                if err.code == "NotFound":  # SNS answers success for a subscription that is already gone
                    return
                raise
            await self.store.delete_subscription(sub.arn, sub.topic_arn)
            del self._subscriptions[sub.arn]
            del self._by_topic[sub.topic_arn][sub.arn]
            t = self._topics[sub.topic_arn]
            self._topics[t.arn] = msgspec.structs.replace(t, subscriptions_deleted=t.subscriptions_deleted + 1)

    def list_subscriptions(self, token: str | None,
                           topic_arn: str | None = None) -> tuple[list[SubscriptionRecord], str | None]:
        pool = self._subscriptions if topic_arn is None else self._by_topic[self.topic(topic_arn).arn]
        start = page_start(token)
        arns = sorted(a for a in pool if a > start)
        subs = [pool[a] for a in arns[:PAGE_SIZE]]
        return subs, (page_token(arns[PAGE_SIZE - 1]) if len(arns) > PAGE_SIZE else None)

    def subscription_attributes(self, arn: str) -> dict[str, str]:
        sub = self.subscription(arn)
        attrs = {
            "ConfirmationWasAuthenticated": "true",
            "Endpoint": sub.endpoint,
            "Owner": self.account,
            "PendingConfirmation": "false",
            "Protocol": sub.protocol,
            "RawMessageDelivery": "false",
            "SubscriptionArn": sub.arn,
            "SubscriptionPrincipal": f"arn:aws:iam::{self.account}:root",
            "TopicArn": sub.topic_arn,
        }
        if "FilterPolicy" in sub.attributes:
            attrs["FilterPolicyScope"] = "MessageAttributes"
        attrs.update(sub.attributes)
        return attrs

    async def set_subscription_attribute(self, arn: str, name: str, value: str) -> None:
        async with self._admin:
            sub = self.subscription(arn)
            attrs = dict(sub.attributes)
            attrs[name] = subscription_attribute(name, value, sub.protocol, attrs, self.filters)
            if not attrs[name]:
                del attrs[name]
            await self.store.set_subscription_attributes(arn, attrs)
            sub = msgspec.structs.replace(sub, attributes=attrs)
            self._subscriptions[arn] = self._by_topic[sub.topic_arn][arn] = sub

    # -- publishing -----------------------------------------------------------------------------------

    async def publish(self, topic_arn: str | None, entries: list[PublishEntry],
                      member: str = "TopicArn") -> list[Published | QueryServiceError]:
        """Publish entries to one topic; each gets its message id, or the error that kept it out. The accepted
        ones are committed, with their outbox rows, before this returns."""
        t = self.topic(topic_arn, member)
        subs = list(self._by_topic[t.arn].values())
        now = time.time()
        results: list[Any] = [None] * len(entries)
        accepted: list[tuple[int, NewMessage]] = []
        for i, entry in enumerate(entries):
            try:
                accepted.append((i, self._prepare(t, entry, subs, now)))
            except QueryServiceError as err:
                results[i] = err
        if accepted:
            published = await self.store.publish(
                t.arn, [new for _, new in accepted], now=now, dedup_window=self.settings.dedup_window)
            if published is None:
                raise not_found("Topic does not exist")
            for (i, _), done in zip(accepted, published):
                results[i] = done
            if any(new.subscriptions for _, new in accepted):
                self.deliverer.poke()
        return results

    async def publish_by_arn(self, topic_arn: str, message: str, *, subject: str | None = None,
                             message_attributes: dict[str, Any] | None = None) -> str:
        """Publish one message from inside the server (async destinations, dead-letter topics, stream failure
        records); returns its message id, or raises the error Publish would have answered."""
        entry = PublishEntry(Message=message, Subject=subject, MessageAttributes=message_attributes or {})
        result = (await self.publish(topic_arn, [entry]))[0]
        if isinstance(result, QueryServiceError):
            raise result
        return result.message_id

    def _prepare(self, t: TopicRecord, entry: PublishEntry, subs: list[SubscriptionRecord],
                 now: float) -> NewMessage:
        message = entry.Message
        if not message:
            raise invalid_parameter("Invalid parameter: Empty message")
        attributes = message_attributes(entry.MessageAttributes)
        if len(message.encode()) + attributes_size(attributes) > MAX_MESSAGE_BYTES:
            raise invalid_parameter("Invalid parameter: Message too long")
        check_subject(entry.Subject)
        if entry.MessageStructure is not None:
            check_structure(entry.MessageStructure, message)
        group_id, dedup_id = entry.MessageGroupId, entry.MessageDeduplicationId
        check_fifo_id(group_id, "MessageGroupId")
        check_fifo_id(dedup_id, "MessageDeduplicationId")
        dedup_key = None
        if t.fifo:
            if group_id is None:
                raise invalid_parameter("Invalid parameter: The MessageGroupId parameter is required for FIFO topics")
            if dedup_id is None:
                if t.attributes.get("ContentBasedDeduplication") != "true":
                    raise invalid_parameter(
                        "Invalid parameter: The topic should either have ContentBasedDeduplication enabled or "
                        "MessageDeduplicationId provided explicitly")
                dedup_id = hashlib.sha256(message.encode()).hexdigest()
            per_group = t.attributes.get("FifoThroughputScope") == "MessageGroup"
            dedup_key = f"{group_id}\0{dedup_id}" if per_group else dedup_id
        elif dedup_id is not None:
            raise invalid_parameter("Invalid parameter: MessageDeduplicationId Reason: The request includes "
                                    "MessageDeduplicationId parameter that is not valid for this topic type")
        record = MessageRecord(str(uuid.uuid4()), t.arn, message, entry.Subject, entry.MessageStructure is not None,
                               attributes, now, group_id if t.fifo else None, dedup_id)
        return NewMessage(record, [s.arn for s in subs if self._wanted(s, record)], dedup_key)

    def _wanted(self, sub: SubscriptionRecord, msg: MessageRecord) -> bool:
        """Whether the subscription's filter policy, if it has one, lets the message through."""
        policy = sub.attributes.get("FilterPolicy")
        if not policy:
            return True
        scope = sub.attributes.get("FilterPolicyScope", "MessageAttributes")
        pattern = self.filters.get(policy, scope)
        if scope == "MessageBody":
            doc = json_or_none(message_for(msg, sub.protocol))
            return isinstance(doc, dict) and pattern.matches(doc)
        return pattern.matches(filterable(msg.attributes))
