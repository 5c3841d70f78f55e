"""Queues with SQS's semantics: at-least-once delivery, visibility timeouts, delays, long polling, dead-letter
redrive after `maxReceiveCount` receives, FIFO queues (per-group order, one group member in flight at a time,
five-minute deduplication) and retention.

`Queues` is what the SQS API handlers call, and what other parts of the server use through the `*_by_arn`
methods (async destinations, event bus targets, topics, event source mappings). Errors are SQS's own
(`SqsError`, a `JsonServiceError`). Queue records are held in memory: they are loaded from SQLite at start and
changed only through this object, which writes SQLite first, so the two always agree. Messages live only in
SQLite.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

from faas.arn import Arns
from faas.config import QueuesConfig
from faas.services.sqs import (
    ATTRIBUTE_ORDER,
    COMPUTED,
    FIFO_DEFAULTS,
    MAX_VISIBILITY,
    MAX_WAIT,
    STANDARD_DEFAULTS,
    SYSTEM_ATTRIBUTES,
    OutgoingMessage,
    Queue,
    ReceivedMessage,
    SendResult,
    SqsError,
    check_fifo_throughput,
    check_queue_name,
    invalid_attribute_name,
    invalid_attribute_value,
    invalid_parameter,
    invalid_redrive,
    md5_of_attributes,
    normalize_attributes,
    parse_receipt_handle,
    parse_redrive_policy,
    prepare_message,
    queue_missing,
    receipt_handle,
    select_message_attributes,
    sequence_number,
)
from faas.store.db import Database
from faas.store.queues import Claim, ClaimedMessage, NewMessage, QueueMissing, QueueRow, QueueStore, Redrive

log = logging.getLogger(__name__)


class _Changes:
    """Wakes the receivers long-polling one queue when it may have something new for them."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def future(self) -> asyncio.Future[None]:
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def fire(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)


class Queues:
    """The server's queues. Open with `open()`, then `start()` the retention sweeper; `close()` when done."""

    def __init__(self, db: Database, arns: Arns, config: QueuesConfig):
        self.store = QueueStore(db)
        self.arns = arns
        self.config = config
        self._arn_prefix = f"arn:aws:sqs:{arns.region}:{arns.account_id}:"
        self._by_name: dict[str, Queue] = {}
        self._by_id: dict[int, Queue] = {}
        self._changes: dict[int, _Changes] = {}
        self._purged: dict[int, float] = {}
        self._admin = asyncio.Lock()
        self._draining = False
        self._closed = False
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Load the queues from SQLite. Call before serving requests."""
        for row in await self.store.load():
            self._remember(row)

    def start(self) -> None:
        """Start the retention sweeper."""
        if self._task is None:
            self._stopped.clear()
            self._task = asyncio.create_task(self._sweep_loop())

    async def run_once(self) -> int:
        """Delete messages past their retention and expired FIFO deduplication ids; returns messages deleted."""
        return await self.store.sweep(time.time())

    async def _sweep_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.config.sweep_interval)
                return
            try:
                await self.run_once()
            except Exception:
                log.exception("sweeping expired queue messages failed")

    def stop_waiting(self) -> None:
        """End the API's long polls now (they answer with no messages), and do not let later ones wait: for
        shutdown, before the server drains its requests. The server's own receives wait until `close()`."""
        self._draining = True
        for changes in self._changes.values():
            changes.fire()

    async def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self.stop_waiting()
        self._stopped.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, timeout)

    # ------------------------------------------------------------------------------------------ lookup

    def _remember(self, row: QueueRow) -> Queue:
        queue = Queue(row.id, row.name, self._arn_prefix + row.name, row.attributes, row.tags, row.created_at,
                      row.last_modified)
        self._by_name[queue.name] = queue
        self._by_id[queue.id] = queue
        return queue

    def _forget(self, queue: Queue) -> None:
        self._by_name.pop(queue.name, None)
        self._by_id.pop(queue.id, None)
        self._purged.pop(queue.id, None)
        changes = self._changes.pop(queue.id, None)
        if changes is not None:
            changes.fire()

    def _notify(self, queue_id: int) -> None:
        changes = self._changes.get(queue_id)
        if changes is not None:
            changes.fire()

    def get(self, name: str, account_id: str | None = None) -> Queue:
        queue = self._by_name.get(name)
        if queue is None or (account_id is not None and account_id != self.arns.account_id):
            raise queue_missing()
        return queue

    def by_url(self, url: str) -> Queue:
        """The queue a QueueUrl names: `<any endpoint>/<account>/<name>`, whatever host the client used."""
        parts = [p for p in url.split("?", 1)[0].split("/") if p]
        if len(parts) < 2:
            raise SqsError("InvalidAddress", f"The address {url} is not valid for this endpoint.")
        return self.get(parts[-1], parts[-2])

    def _find_arn(self, arn: str) -> Queue | None:
        if not arn.startswith(self._arn_prefix):
            return None
        return self._by_name.get(arn[len(self._arn_prefix):])

    def by_arn(self, arn: str) -> Queue:
        queue = self._find_arn(arn)
        if queue is None:
            raise queue_missing()
        return queue

    def list_queues(self, prefix: str | None = None) -> list[Queue]:
        return sorted((q for q in self._by_name.values() if not prefix or q.name.startswith(prefix)),
                      key=lambda q: q.name)

    def dead_letter_sources(self, queue: Queue) -> list[Queue]:
        sources = []
        for q in self.list_queues():
            policy = q.attributes.get("RedrivePolicy")
            if policy and json.loads(policy)["deadLetterTargetArn"] == queue.arn:
                sources.append(q)
        return sources

    # ------------------------------------------------------------------------------------------ queues

    async def create(self, name: str, attributes: dict[str, str] | None, tags: dict[str, str] | None) -> Queue:
        """CreateQueue: a new queue, or the existing one when every attribute given matches it."""
        attributes = attributes or {}
        fifo_flag = str(attributes.get("FifoQueue", "false")).lower()
        if fifo_flag not in ("true", "false"):
            raise invalid_attribute_value("FifoQueue")
        fifo = fifo_flag == "true"
        check_queue_name(name, fifo)
        given = normalize_attributes(attributes, fifo=fifo, creating=True,
                                     min_retention=self.config.min_retention_period)
        given = {k: v for k, v in given.items() if v != ""}
        async with self._admin:
            existing = self._by_name.get(name)
            if existing is not None:
                for key, value in given.items():
                    current = existing.attributes.get(key, "false" if key == "FifoQueue" else None)
                    if current != value:
                        raise SqsError("QueueNameExists", "A queue already exists with the same name and a different "
                                                          f"value for attribute {key}")
                return existing
            stored = {**(FIFO_DEFAULTS if fifo else STANDARD_DEFAULTS), **given}
            if not fifo:
                stored.pop("FifoQueue", None)
            if "KmsMasterKeyId" in given and "SqsManagedSseEnabled" not in given:
                stored["SqsManagedSseEnabled"] = "false"
            check_fifo_throughput(stored)
            if "RedrivePolicy" in stored:
                self._check_dead_letter_target(stored["RedrivePolicy"], fifo)
            row = await self.store.create(name, stored, dict(tags or {}), int(time.time()))
            return self._remember(row)

    def _check_dead_letter_target(self, policy: str, fifo: bool) -> None:
        target, _ = parse_redrive_policy(policy)
        dlq = self._find_arn(target)
        if dlq is None:
            raise invalid_redrive(policy, "Dead letter target does not exist.")
        if dlq.fifo != fifo:
            raise invalid_redrive(policy, "Dead-letter queue must be same type of queue as the source.")

    def _live(self, queue: Queue) -> Queue:
        if self._by_id.get(queue.id) is not queue:
            raise queue_missing()
        return queue

    async def delete(self, queue: Queue) -> None:
        async with self._admin:
            self._live(queue)
            await self.store.delete(queue.id)
            self._forget(queue)

    async def set_attributes(self, queue: Queue, attributes: dict[str, str]) -> None:
        given = normalize_attributes(attributes, fifo=queue.fifo, creating=False,
                                     min_retention=self.config.min_retention_period)
        async with self._admin:
            self._live(queue)
            merged = dict(queue.attributes)
            for key, value in given.items():
                if value == "":
                    merged.pop(key, None)
                else:
                    merged[key] = value
            check_fifo_throughput(merged)
            if given.get("RedrivePolicy"):
                self._check_dead_letter_target(given["RedrivePolicy"], queue.fifo)
            now = int(time.time())
            retention = float(merged["MessageRetentionPeriod"]) if "MessageRetentionPeriod" in given else None
            await self.store.update(queue.id, merged, queue.tags, now, retention=retention)
            queue.attributes, queue.last_modified = merged, now
        self._notify(queue.id)

    async def get_attributes(self, queue: Queue, names: list[str] | None) -> dict[str, str]:
        if not names:
            return {}
        for name in names:
            if name != "All" and name not in ATTRIBUTE_ORDER:
                raise invalid_attribute_name(name)
        wanted = set(ATTRIBUTE_ORDER) if "All" in names else set(names)
        computed: dict[str, str] = {}
        if wanted & {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                     "ApproximateNumberOfMessagesDelayed"}:
            counts = await self.store.counts(queue.id, time.time())
            computed.update(ApproximateNumberOfMessages=str(counts.visible),
                            ApproximateNumberOfMessagesNotVisible=str(counts.in_flight),
                            ApproximateNumberOfMessagesDelayed=str(counts.delayed))
        computed.update(CreatedTimestamp=str(queue.created_at), LastModifiedTimestamp=str(queue.last_modified),
                        QueueArn=queue.arn)
        out = {}
        for name in ATTRIBUTE_ORDER:
            if name in wanted:
                value = computed.get(name) if name in COMPUTED else queue.attributes.get(name)
                if value is not None:
                    out[name] = value
        return out

    async def tag(self, queue: Queue, tags: dict[str, str]) -> None:
        async with self._admin:
            self._live(queue)
            merged = {**queue.tags, **tags}
            if len(merged) > 50:
                raise invalid_parameter("Too many tags added for queue " + queue.name + ".")
            await self.store.update(queue.id, queue.attributes, merged, queue.last_modified)
            queue.tags = merged

    async def untag(self, queue: Queue, keys: list[str]) -> None:
        async with self._admin:
            self._live(queue)
            drop = set(keys)
            kept = {k: v for k, v in queue.tags.items() if k not in drop}
            await self.store.update(queue.id, queue.attributes, kept, queue.last_modified)
            queue.tags = kept

    async def purge(self, queue: Queue) -> None:
        now = time.monotonic()
        last = self._purged.get(queue.id)
        if last is not None and now - last < self.config.purge_interval:
            raise SqsError("PurgeQueueInProgress", f"Only one PurgeQueue operation on {queue.name} is allowed every "
                                                   f"{self.config.purge_interval:g} seconds.")
        self._purged[queue.id] = now
        await self.store.purge(self._live(queue).id)

    # ------------------------------------------------------------------------------------------ sending

    async def send(self, queue: Queue, messages: list[OutgoingMessage]) -> list[SendResult | SqsError]:
        """Send messages in one transaction. Each outcome is its result, or the error that kept it out."""
        now = time.time()
        outcomes: list[tuple[NewMessage, SendResult] | SqsError] = []
        for message in messages:
            try:
                outcomes.append(prepare_message(queue, message, now))
            except SqsError as err:
                outcomes.append(err)
        ready = [o[0] for o in outcomes if not isinstance(o, SqsError)]
        self._live(queue)
        try:
            stored = iter(await self.store.insert(queue.id, ready, self.config.deduplication_window) if ready else [])
        except QueueMissing:
            raise queue_missing() from None
        self._notify(queue.id)
        results: list[SendResult | SqsError] = []
        for outcome in outcomes:
            if isinstance(outcome, SqsError):
                results.append(outcome)
                continue
            result, row = outcome[1], next(stored)
            result.message_id = row.message_id
            if queue.fifo:
                result.sequence_number = sequence_number(row.seq)
            results.append(result)
        return results

    # ------------------------------------------------------------------------------------------ receiving

    async def receive(self, queue: Queue, max_messages: int = 1, visibility_timeout: int | None = None,
                      wait_seconds: float | None = None, *, system_attributes: frozenset[str] = SYSTEM_ATTRIBUTES,
                      message_attributes: list[str] | None = None,
                      wait_through_shutdown: bool = False) -> list[ReceivedMessage]:
        """ReceiveMessage. Waits up to `wait_seconds` (default: the queue's ReceiveMessageWaitTimeSeconds) and
        answers as soon as a message can be had; it is woken by sends and by visibility changes, and by a timer
        when the earliest hidden message reappears, never by polling. `message_attributes` are names as
        ReceiveMessage takes them (None: none). Long polls end when the server shuts down, at `stop_waiting()`,
        or, `wait_through_shutdown`, at `close()`."""
        if not 1 <= max_messages <= 10:
            raise invalid_parameter(f"Value {max_messages} for parameter MaxNumberOfMessages is invalid. "
                                    "Reason: Must be between 1 and 10, if provided.")
        visibility = queue.setting("VisibilityTimeout") if visibility_timeout is None else visibility_timeout
        if not 0 <= visibility <= MAX_VISIBILITY:
            raise invalid_parameter(f"Value {visibility} for parameter VisibilityTimeout is invalid. "
                                    f"Reason: Must be between 0 and {MAX_VISIBILITY}, if provided.")
        wait = queue.setting("ReceiveMessageWaitTimeSeconds") if wait_seconds is None else wait_seconds
        if not 0 <= wait <= MAX_WAIT:
            raise invalid_parameter(f"Value {wait} for parameter WaitTimeSeconds is invalid. "
                                    f"Reason: Must be >= 0 and <= {MAX_WAIT}, if provided.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            self._live(queue)
            # Taken before looking, so a send that commits while we look still wakes us.
            changed = self._changes.setdefault(queue.id, _Changes()).future() if wait > 0 else None
            claim = await self._claim(queue, max_messages, visibility)
            if claim.messages:
                return [self._received(queue, m, system_attributes, message_attributes) for m in claim.messages]
            remaining = deadline - loop.time()
            if changed is None or remaining <= 0 or self._closed or (self._draining and not wait_through_shutdown):
                return []
            if claim.next_visible_at is not None:
                remaining = min(remaining, claim.next_visible_at - time.time() + 0.001)
            await asyncio.wait([changed], timeout=max(remaining, 0.0))

    async def _claim(self, queue: Queue, limit: int, visibility: int) -> Claim:
        redrive = self._redrive(queue)
        try:
            claim = await self.store.claim(queue.id, time.time(), limit, visibility, fifo=queue.fifo, redrive=redrive)
        except QueueMissing:  # the dead-letter queue went away meanwhile
            claim = await self.store.claim(queue.id, time.time(), limit, visibility, fifo=queue.fifo, redrive=None)
        if claim.moved and redrive is not None:
            self._notify(redrive.dlq_id)
        return claim

    def _redrive(self, queue: Queue) -> Redrive | None:
        policy = queue.attributes.get("RedrivePolicy")
        if not policy:
            return None
        target, max_receive = parse_redrive_policy(policy)
        dlq = self._find_arn(target)
        if dlq is None:
            return None
        return Redrive(dlq.id, max_receive, queue.arn, dlq.setting("MessageRetentionPeriod"), queue.fifo)

    def _received(self, queue: Queue, m: ClaimedMessage, system: frozenset[str],
                  names: list[str] | None) -> ReceivedMessage:
        attributes: dict[str, str] = {}
        if system:
            values = {
                "SenderId": self.arns.account_id,
                "SentTimestamp": str(int(m.sent_at * 1000)),
                "ApproximateReceiveCount": str(m.receive_count),
                "ApproximateFirstReceiveTimestamp": str(int(m.first_received_at * 1000)),
                "MessageGroupId": m.group_id,
                "AWSTraceHeader": m.trace_header,
                "DeadLetterQueueSourceArn": m.dlq_source,
            }
            if queue.fifo:
                values["SequenceNumber"] = sequence_number(m.seq)
                values["MessageDeduplicationId"] = m.dedup_id
            attributes = {k: v for k, v in values.items() if k in system and v is not None}
        selected: dict[str, dict[str, Any]] = {}
        md5 = None
        if m.attributes and names:
            stored = _decode_attributes(m.attributes)
            selected = select_message_attributes(stored, names)
            if selected:
                md5 = m.attributes_md5 if len(selected) == len(stored) else md5_of_attributes(selected)
        return ReceivedMessage(m.message_id, receipt_handle(queue.id, m.seq, m.receipt), m.body, m.body_md5,
                               attributes, selected, md5)

    # ------------------------------------------------------------------------------------------ receipts

    def _handles(self, queue: Queue, handles: list[str]) -> list[tuple[int, str] | SqsError]:
        out: list[tuple[int, str] | SqsError] = []
        for handle in handles:
            try:
                queue_id, seq, nonce = parse_receipt_handle(handle)
            except SqsError as err:
                out.append(err)
                continue
            if queue_id != queue.id:
                out.append(SqsError("ReceiptHandleIsInvalid",
                                    f'The input receipt handle "{handle}" is not a valid receipt handle.'))
            else:
                out.append((seq, nonce))
        return out

    async def delete_messages(self, queue: Queue, handles: list[str]) -> list[SqsError | None]:
        """DeleteMessage(Batch): one outcome per handle, None when deleted (or already gone)."""
        parsed = self._handles(queue, handles)
        valid = [p for p in parsed if not isinstance(p, SqsError)]
        done = iter(await self.store.delete_messages(self._live(queue).id, valid, strict=queue.fifo, now=time.time())
                    if valid else [])
        out: list[SqsError | None] = []
        for handle, p in zip(handles, parsed):
            if isinstance(p, SqsError):
                out.append(p)
            elif not next(done):
                out.append(SqsError("ReceiptHandleIsInvalid", f'The receipt handle "{handle}" has expired.'))
            else:
                out.append(None)
        return out

    async def change_visibility(self, queue: Queue, changes: list[tuple[str, int]]) -> list[SqsError | None]:
        """ChangeMessageVisibility(Batch): one outcome per (handle, timeout), None when changed."""
        parsed = self._handles(queue, [h for h, _ in changes])
        valid: list[tuple[int, str, int]] = []
        for i, (p, (_, timeout)) in enumerate(zip(parsed, changes)):
            if isinstance(p, SqsError):
                continue
            if not 0 <= timeout <= MAX_VISIBILITY:
                parsed[i] = invalid_parameter(f"Value {timeout} for parameter VisibilityTimeout is invalid. "
                                              f"Reason: Must be between 0 and {MAX_VISIBILITY}, if provided.")
            else:
                valid.append((p[0], p[1], timeout))
        statuses = iter(await self.store.change_visibility(self._live(queue).id, valid, time.time(), MAX_VISIBILITY)
                        if valid else [])
        out: list[SqsError | None] = []
        for (handle, timeout), p in zip(changes, parsed):
            if isinstance(p, SqsError):
                out.append(p)
                continue
            status = next(statuses)
            if status == "ok":
                out.append(None)
            elif status == "not_in_flight":
                out.append(SqsError("MessageNotInflight", "The message referred to isn't in flight."))
            elif status == "too_long":
                out.append(invalid_parameter(
                    f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout "
                    f"for the message is beyond the limit [{MAX_VISIBILITY} seconds]"))
            else:
                out.append(invalid_parameter(
                    f"Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is "
                    "not available for visibility timeout change."))
        if valid:
            self._notify(queue.id)
        return out

    # ------------------------------------------------------------------------------------------ for the server

    async def exists(self, queue_arn: str) -> bool:
        return self._find_arn(queue_arn) is not None

    async def send_by_arn(self, queue_arn: str, body: str, *, message_attributes: dict | None = None,
                          message_group_id: str | None = None, deduplication_id: str | None = None,
                          delay_seconds: int | None = None) -> str:
        """Send one message; returns its message id. Raises `SqsError` (a `JsonServiceError` whose code is
        `AWS.SimpleQueueService.NonExistentQueue` for a missing queue) like SendMessage."""
        queue = self.by_arn(queue_arn)
        outcome = (await self.send(queue, [OutgoingMessage(body, message_attributes, None, delay_seconds,
                                                           message_group_id, deduplication_id)]))[0]
        if isinstance(outcome, SqsError):
            raise outcome
        return outcome.message_id

    async def receive_by_arn(self, queue_arn: str, max_messages: int, visibility_timeout: int | None = None,
                             wait_seconds: float = 0) -> list[ReceivedMessage]:
        """Receive with every system and message attribute."""
        return await self.receive(self.by_arn(queue_arn), max_messages, visibility_timeout, wait_seconds,
                                  message_attributes=["All"], wait_through_shutdown=True)

    async def delete_by_arn(self, queue_arn: str, receipt_handle: str) -> None:
        error = (await self.delete_messages(self.by_arn(queue_arn), [receipt_handle]))[0]
        if error is not None:
            raise error

    async def change_visibility_by_arn(self, queue_arn: str, receipt_handle: str, timeout: int) -> None:
        error = (await self.change_visibility(self.by_arn(queue_arn), [(receipt_handle, timeout)]))[0]
        if error is not None:
            raise error


def _decode_attributes(text: str) -> dict[str, dict[str, Any]]:
    attributes = json.loads(text)
    for value in attributes.values():
        if "BinaryValue" in value:
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
    return attributes
