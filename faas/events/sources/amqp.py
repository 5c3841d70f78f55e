"""RabbitMQ sources: a self-managed broker (`SelfManagedEventSource.Endpoints.AMQP_URL`) whose queues (`Queues`)
feed a function in batches, with Lambda's RabbitMQ event::

    {"eventSource": "aws:rmq", "eventSourceArn": <EventSourceArn, else the mapping's ARN>,
     "rmqMessagesByQueue": {"<queue>::<virtual host>": [
         {"basicProperties": {"contentType": ..., "contentEncoding": ..., "headers": {...}, "deliveryMode": 1,
                              "priority": 0, "correlationId": ..., "replyTo": ..., "expiration": "60000",
                              "messageId": ..., "timestamp": "Jan 1, 1970, 12:33:41 AM", "type": ...,
                              "userId": ..., "appId": ..., "clusterId": ..., "bodySize": 80},
          "redelivered": false, "data": <base64 body>}]}}

As in Lambda, string headers appear as `{"bytes": [...]}` and absent properties as null. FilterCriteria patterns
see each message with `data` decoded: JSON when it parses, else the UTF-8 text, else the base64 string.

Delivery is at least once: messages are consumed with manual acknowledgements and a prefetch of BatchSize; a
batch is acknowledged once the function succeeded and negatively acknowledged with requeue when it failed (the
broker redelivers it with `redelivered` true, and the queue's own dead-lettering or delivery limit applies),
then the source waits a doubling delay before the next batch. Messages a filter drops are acknowledged.
Anything unacknowledged when the connection or faas goes away is requeued by the broker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from faas.errors import LambdaError
from faas.events.mappings import MappingManager, Source
from faas.events.sources.batching import decoded_for_filter, gather
from faas.store.mappings import Mapping

log = logging.getLogger(__name__)

CONNECTION_PROBLEM = "PROBLEM: Connection error. Please check your event source connection configuration."


def virtual_host(url: str) -> str:
    """The virtual host an AMQP URL names: the path without its leading slash, or "/" when there is none."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _java_date(value: datetime) -> str:
    # Lambda renders AMQP timestamps with Java's default date format, in UTC.
    value = value.astimezone(timezone.utc) if value.tzinfo else value
    return f"{value:%b} {value.day}, {value.year}, {value.hour % 12 or 12}:{value:%M:%S} {value:%p}"


def header_value(value: Any) -> Any:
    """An AMQP field value as Lambda shows it: strings as their bytes, tables and arrays recursively."""
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": list(bytes(value))}
    if isinstance(value, dict):
        return {str(k): header_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [header_value(v) for v in value]
    if isinstance(value, datetime):
        return _java_date(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def basic_properties(m: AbstractIncomingMessage) -> dict[str, Any]:
    expiration = m.expiration
    if isinstance(expiration, (int, float)):
        expiration = str(round(expiration * 1000))  # aio-pika turns the wire's milliseconds into seconds
    elif expiration is not None:
        expiration = str(expiration)
    return {
        "contentType": m.content_type,
        "contentEncoding": m.content_encoding,
        "headers": header_value(m.headers) if m.headers else None,
        "deliveryMode": int(m.delivery_mode) if m.delivery_mode is not None else None,
        "priority": m.priority,
        "correlationId": m.correlation_id,
        "replyTo": m.reply_to,
        "expiration": expiration,
        "messageId": m.message_id,
        "timestamp": _java_date(m.timestamp) if isinstance(m.timestamp, datetime) else None,
        "type": m.type,
        "userId": m.user_id,
        "appId": m.app_id,
        "clusterId": getattr(m, "cluster_id", None) or None,
        "bodySize": len(m.body),
    }


class AmqpSource(Source):
    """One connection and channel per mapping, one consumer per queue; batches are handled one at a time."""

    def __init__(self, mapping: Mapping, manager: MappingManager):
        super().__init__(mapping, manager)
        self.arn = self.mapping.source_arn or (
            f"arn:aws:lambda:{self.svc.arns.region}:{self.svc.arns.account_id}:event-source-mapping:{self.mapping.uuid}"
        )
        self._delay = self.settings.retry_delay

    async def run(self) -> None:
        config = self.mapping.config
        urls = list((config.endpoints or {}).get("AMQP_URL") or [])
        if not urls or not config.queues:
            await self.report("PROBLEM: AMQP_URL and Queues are required.")
            return
        attempt = 0
        while True:
            url = urls[attempt % len(urls)]  # several URLs: fail over in turn
            try:
                await self._session(url)
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                log.warning("mapping %s: %s", self.mapping.uuid, exc)
                await self.report("PROBLEM: Queue not found. Please check the Queues of this event source mapping.")
            except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError,
                    TimeoutError) as exc:
                log.warning("mapping %s: AMQP broker: %r", self.mapping.uuid, exc)
                await self.report(CONNECTION_PROBLEM)
            attempt += 1
            await asyncio.sleep(self._delay)
            self._delay = min(30.0, self._delay * 2)

    async def _session(self, url: str) -> None:
        config = self.mapping.config
        connection = await aio_pika.connect(url, timeout=10)
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(*_: Any) -> None:
            if not lost.done():
                lost.set_exception(ConnectionError("the broker closed the connection or channel"))

        try:
            connection.close_callbacks.add(on_close)
            channel = await connection.channel()
            channel.close_callbacks.add(on_close)
            await channel.set_qos(prefetch_count=max(1, min(65535, config.batch_size)))
            inbox: asyncio.Queue[tuple[str, AbstractIncomingMessage]] = asyncio.Queue()
            vhost = virtual_host(url)
            for name in config.queues:
                queue = await channel.get_queue(name, ensure=True)
                key = f"{name}::{vhost}"

                async def arrived(message: AbstractIncomingMessage, key: str = key) -> None:
                    inbox.put_nowait((key, message))

                await queue.consume(arrived, no_ack=False)
            self._delay = self.settings.retry_delay
            while True:
                batch = await gather(inbox, lost, max(1, config.batch_size), config.window,
                                     lambda: ConnectionError("the broker connection closed"))
                await self._deliver(batch)
        finally:
            if lost.done() and not lost.cancelled():
                lost.exception()  # retrieved: it only ended this session
            lost.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close())

    async def _deliver(self, batch: list[tuple[str, AbstractIncomingMessage]]) -> None:
        by_queue: dict[str, list[dict[str, Any]]] = {}
        keep: list[AbstractIncomingMessage] = []
        for key, m in batch:
            record = {"basicProperties": basic_properties(m), "redelivered": bool(m.redelivered),
                      "data": base64.b64encode(m.body).decode()}
            if self.passes({**record, "data": decoded_for_filter(m.body)}):
                by_queue.setdefault(key, []).append(record)
                keep.append(m)
            else:
                await m.ack()  # Lambda drops what the filters leave out
        if not keep:
            return
        event = {"eventSource": "aws:rmq", "eventSourceArn": self.arn, "rmqMessagesByQueue": by_queue}
        try:
            result = await self.invoke(event)
        except LambdaError as exc:
            problem: str | None = f"PROBLEM: {exc.code}"
        else:
            problem = "PROBLEM: function error" if result.function_error else None
        for m in keep:
            if problem is None:
                await m.ack()
            else:
                await m.nack(requeue=True)
        await self.report(problem or "OK")
        if problem is None:
            self._delay = self.settings.retry_delay
        else:
            await asyncio.sleep(self._delay)
            self._delay = min(30.0, self._delay * 2)
