"""Delivery of published messages to topic subscribers: a background service drains the outbox that Publish
commits, with SNS's retry policy for AWS-managed endpoints and the subscription's dead-letter queue.

As SNS does, a client-side error (the function or queue does not exist, or refuses the message) is not retried:
the message goes to the dead-letter queue, or is dropped. Server-side errors are retried by the policy.

Lambda subscribers get SNS's Lambda event through the asynchronous invocation queue; SQS subscribers get SNS's
JSON notification as the message body, or the message itself with raw message delivery (message attributes then
become SQS message attributes). At least once: an outbox row is removed only after the subscriber's service
has accepted the message, so a crash in between delivers it again.

Notifications carry a `Signature` field so parsers find one, but it is a digest, not an RSA signature:
clients that verify SNS signatures will reject it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import msgspec

from faas.arn import Arns
from faas.config import Config
from faas.errors import LambdaError
from faas.store.topics import (
    Delivery,
    MessageRecord,
    Settled,
    SubscriptionRecord,
    TopicStore,
)
from faas.tasks import Passes

log = logging.getLogger(__name__)


class AsyncInvoker(Protocol):
    async def enqueue(self, function_name: str, qualifier: str | None, payload: bytes) -> str: ...


class QueueSender(Protocol):
    async def send_by_arn(self, queue_arn: str, body: str, *, message_attributes: dict[str, Any] | None = None,
                          message_group_id: str | None = None, deduplication_id: str | None = None,
                          delay_seconds: int | None = None) -> str: ...


@dataclass
class DeliverySettings:
    # SNS's retry policy for AWS-managed endpoints (Lambda, SQS): 3 immediate retries, 2 after min_delay,
    # 10 backing off exponentially up to max_delay, then max_delay until max_attempts (about 23 days).
    retry_min_delay: float = 1.0
    retry_max_delay: float = 20.0
    max_attempts: int = 100015
    batch: int = 256  # outbox rows one pass handles
    dispatch: bool = True  # False: `start()` does not start, published messages wait in the outbox


def retry_delay(attempts: int, s: DeliverySettings) -> float:
    """Seconds before the next attempt after `attempts` failed ones."""
    if attempts <= 3:
        return 0.0
    if attempts <= 5 or s.retry_min_delay <= 0:
        return s.retry_min_delay
    if attempts <= 15:
        ratio = max(s.retry_max_delay / s.retry_min_delay, 1.0)
        return min(s.retry_max_delay, s.retry_min_delay * ratio ** ((attempts - 5) / 10))
    return s.retry_max_delay


def message_for(msg: MessageRecord, protocol: str) -> str:
    """The text a protocol's subscribers get (MessageStructure=json: its own entry, else `default`)."""
    if not msg.structured:
        return msg.message
    doc = json.loads(msg.message)
    return doc.get(protocol, doc["default"])


def timestamp(t: float) -> str:
    dt = datetime.fromtimestamp(t, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Envelopes:
    """What subscribers receive: SNS's Lambda event, its JSON notification, raw-delivery queue attributes."""

    def __init__(self, config: Config):
        self.config = config  # read when used: the port is known only once the server listens
        self.cert_url = f"https://sns.{config.account.region}.amazonaws.com/SimpleNotificationService-faas.pem"

    def _fields(self, msg: MessageRecord, sub: SubscriptionRecord) -> tuple[str, str, str, str]:
        text = message_for(msg, sub.protocol)
        ts = timestamp(msg.published_at)
        signed = f"Message\n{text}\nMessageId\n{msg.id}\n"
        if msg.subject is not None:
            signed += f"Subject\n{msg.subject}\n"
        signed += f"Timestamp\n{ts}\nTopicArn\n{msg.topic_arn}\nType\nNotification\n"
        signature = base64.b64encode(hashlib.sha256(signed.encode()).digest()).decode()
        unsubscribe = f"{self.config.base_url}/?Action=Unsubscribe&SubscriptionArn={quote(sub.arn, safe='')}"
        return text, ts, signature, unsubscribe

    def lambda_event(self, msg: MessageRecord, sub: SubscriptionRecord) -> bytes:
        text, ts, signature, unsubscribe = self._fields(msg, sub)
        return msgspec.json.encode({"Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": sub.arn,
            "Sns": {
                "Type": "Notification",
                "MessageId": msg.id,
                "TopicArn": msg.topic_arn,
                "Subject": msg.subject,
                "Message": text,
                "Timestamp": ts,
                "SignatureVersion": "1",
                "Signature": signature,
                "SigningCertUrl": self.cert_url,
                "UnsubscribeUrl": unsubscribe,
                "MessageAttributes": msg.attributes,
            },
        }]})

    def notification(self, msg: MessageRecord, sub: SubscriptionRecord) -> str:
        """SNS's JSON notification, laid out as SNS writes it."""
        text, ts, signature, unsubscribe = self._fields(msg, sub)
        doc: dict[str, Any] = {"Type": "Notification", "MessageId": msg.id}
        if msg.sequence_number is not None:
            doc["SequenceNumber"] = msg.sequence_number
        doc["TopicArn"] = msg.topic_arn
        if msg.subject is not None:
            doc["Subject"] = msg.subject
        doc.update(Message=text, Timestamp=ts, SignatureVersion="1", Signature=signature,
                   SigningCertURL=self.cert_url, UnsubscribeURL=unsubscribe)
        if msg.attributes:
            doc["MessageAttributes"] = {k: {"Type": a.type, "Value": a.value} for k, a in msg.attributes.items()}
        return json.dumps(doc, indent=2, separators=(",", " : "), ensure_ascii=False)

    @staticmethod
    def queue_attributes(msg: MessageRecord) -> dict[str, dict[str, Any]]:
        """Raw delivery: message attributes as SQS message attributes (SQS's API shape, binary as bytes)."""
        out: dict[str, dict[str, Any]] = {}
        for name, a in msg.attributes.items():
            if a.type.startswith("Binary"):
                out[name] = {"DataType": a.type, "BinaryValue": base64.b64decode(a.value)}
            else:
                out[name] = {"DataType": a.type, "StringValue": a.value}
        return out


class TopicDeliverer(Passes):
    """Drains the outbox: `poke()` after a publish; `run_once()` delivers everything due; `start()`/`close()`
    (undelivered rows stay for next time).

    A FIFO topic's rows for one subscription go one after another in publishing order, and one waiting for a
    retry holds back the rows behind it, so the subscriber never sees them out of order."""

    task_name = "faas-topic-deliverer"
    poke = Passes.notify

    def __init__(self, store: TopicStore, arns: Arns, settings: DeliverySettings, envelopes: Envelopes,
                 invoker: AsyncInvoker, queues: QueueSender | None):
        super().__init__(time.time, retry_after=max(settings.retry_min_delay, 1.0))
        self.store = store
        self.arns = arns
        self.settings = settings
        self.envelopes = envelopes
        self.invoker = invoker
        self.queues = queues

    async def run_once(self) -> int:
        """Attempt every delivery due now (up to one batch). Returns how many rows were looked at."""
        async with self._lock:
            due = await self.store.due(time.time(), self.settings.batch)
            groups: dict[str, list[Delivery]] = {}
            settled = Settled()
            for d in due:
                if d.subscription is None:  # unsubscribed since: nobody to deliver to
                    settled.done.append(d.id)
                else:
                    groups.setdefault(d.subscription.arn, []).append(d)
            await asyncio.gather(*(self._deliver_group(g, settled) for g in groups.values()))
            await asyncio.shield(self.store.settle(settled))
            return len(due)

    async def _deliver_group(self, group: list[Delivery], settled: Settled) -> None:
        """One subscription's due rows: all at once, or for a FIFO topic one after another, stopping at a failure
        (the rows behind it, in this batch or not, wait for its retry)."""
        if group[0].message.sequence_number is None:
            outcomes = await asyncio.gather(*(self._attempt(d) for d in group))
            for d, retry in zip(group, outcomes):
                if retry is None:
                    settled.done.append(d.id)
                else:
                    settled.retries.append(retry)
            return
        for d in group:
            retry = await self._attempt(d)
            if retry is not None:
                settled.retries.append(retry)
                settled.holds.append((d.subscription_arn, d.id, retry[2]))
                return
            settled.done.append(d.id)

    async def _attempt(self, d: Delivery) -> tuple[int, int, float] | None:
        """Deliver one row: None when it is done with (delivered or given up), else its next (id, attempts, due)."""
        try:
            await self._send(d)
            return None
        except Exception as exc:
            attempts = d.attempts + 1
            assert d.subscription is not None
            if client_side(exc) or attempts >= self.settings.max_attempts:
                await self._give_up(d, exc, attempts)
                return None
            if attempts == 1:
                log.warning("delivery of message %s to %s failed, will retry: %s",
                            d.message.id, d.subscription.endpoint, _describe(exc))
            return d.id, attempts, time.time() + retry_delay(attempts, self.settings)

    async def _send(self, d: Delivery) -> None:
        sub, msg = d.subscription, d.message
        assert sub is not None
        if sub.protocol == "lambda":
            ref = self.arns.parse(sub.endpoint)
            await self.invoker.enqueue(ref.name, ref.qualifier, self.envelopes.lambda_event(msg, sub))
            return
        raw = sub.attributes.get("RawMessageDelivery") == "true"
        body = message_for(msg, sub.protocol) if raw else self.envelopes.notification(msg, sub)
        attributes = self.envelopes.queue_attributes(msg) if raw else None
        await self._queue_send(sub.endpoint, body, attributes, msg)

    async def _queue_send(self, queue_arn: str, body: str, attributes: dict[str, Any] | None,
                          msg: MessageRecord) -> None:
        if self.queues is None:
            raise RuntimeError("this server has no queue service")
        fifo = queue_arn.endswith(".fifo")
        await self.queues.send_by_arn(
            queue_arn, body, message_attributes=attributes or None,
            message_group_id=msg.group_id if fifo else None, deduplication_id=msg.dedup_id if fifo else None,
        )

    async def _give_up(self, d: Delivery, exc: Exception, attempts: int) -> None:
        sub = d.subscription
        assert sub is not None
        try:
            target = json.loads(sub.attributes.get("RedrivePolicy") or "{}").get("deadLetterTargetArn")
        except (ValueError, AttributeError):
            target = None
        if not target:
            log.warning("message %s to %s dropped after %d attempt(s): %s",
                        d.message.id, sub.endpoint, attempts, _describe(exc))
            return
        raw = sub.attributes.get("RawMessageDelivery") == "true"
        body = message_for(d.message, sub.protocol) if raw else self.envelopes.notification(d.message, sub)
        try:
            await self._queue_send(target, body, self.envelopes.queue_attributes(d.message) if raw else None,
                                   d.message)
        except Exception as dlq_exc:
            log.warning("message %s to %s dropped: its dead-letter queue %s failed too: %s",
                        d.message.id, sub.endpoint, target, _describe(dlq_exc))

    # -- lifecycle ------------------------------------------------------------------------------------

    async def _next_pass(self, done: int) -> float | None:
        return self._now() if done >= self.settings.batch else await self.store.next_due()

    def start(self) -> None:
        if self.settings.dispatch:
            super().start()


def client_side(exc: Exception) -> bool:
    """Whether SNS would call the failure client-side: the subscriber's service refused the request itself
    (4xx: no such function or queue, not allowed, invalid message), as opposed to being unavailable or
    throttling."""
    return isinstance(exc, LambdaError) and 400 <= exc.status < 500 and exc.status != 429


def _describe(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{getattr(exc, 'code', type(exc).__name__)}: {message}"
