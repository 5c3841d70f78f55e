"""MQTT sources: a self-managed broker (`SelfManagedEventSource.Endpoints.MQTT_BROKER_URL`) whose topic filters
(`Topics`) feed a function in batches.

The event (faas's own, in the style of Lambda's Kafka and MQ events)::

    {"eventSource": "faas:mqtt", "eventSourceArn": <EventSourceArn, else the mapping's ARN>,
     "Records": [{"topic": "sensors/1/temp", "payload": <base64>, "qos": 1, "retain": false,
                  "timestamp": <epoch ms when faas received it>}]}

FilterCriteria patterns see each record with `payload` decoded: JSON when it parses, else the UTF-8 text, else
the base64 string; `topic`, `qos` and `retain` can be matched too.

Delivery is at least once. The source connects with MQTT 5, a client id derived from the mapping and a persistent
session (`SESSION_EXPIRY`), subscribes with QoS 1, and sends each PUBACK only after the function has handled
the batch (or a filter dropped the message). A failing batch is retried in order, with a doubling delay, until
it succeeds (or `MaximumRetryAttempts` is spent, when given: then it is dropped). Whatever was not acknowledged
when the connection or faas went away is redelivered by the broker on the next connection, and a disabled
mapping's session keeps collecting QoS 1 messages (within the broker's own queue limits) until it is enabled.
QoS 0 publications stay QoS 0: they are never redelivered. The broker sends at most BatchSize unacknowledged
messages at a time (MQTT 5 Receive Maximum), so a slow function is not flooded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from faas.errors import LambdaError
from faas.events.mappings import MappingManager, Source
from faas.events.sources.batching import decoded_for_filter, gather
from faas.store.mappings import Mapping

log = logging.getLogger(__name__)

# How long the broker keeps a mapping's session (and the messages queued for it) while faas is not connected:
# long enough to ride out a restart or a disabled week, bounded so a deleted mapping's session goes away.
SESSION_EXPIRY = 7 * 24 * 3600
CONNECTION_PROBLEM = "PROBLEM: Connection error. Please check your event source connection configuration."


class BrokerAddress(msgspec.Struct, frozen=True):
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://[user:password@]host[:port]` (also `tcp://`); `mqtts://` or `ssl://` for TLS."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        raise ValueError(f"not an MQTT broker URL: {url!r}")
    tls = scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname, port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None, tls=tls,
    )


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class _Received(msgspec.Struct):
    message: aiomqtt.Message
    at_ms: int


class MqttSource(Source):
    """One broker connection per mapping; batches are handled one at a time, in arrival order."""

    def __init__(self, mapping: Mapping, manager: MappingManager):
        super().__init__(mapping, manager)
        self.arn = self.mapping.source_arn or (
            f"arn:aws:lambda:{self.svc.arns.region}:{self.svc.arns.account_id}:event-source-mapping:{self.mapping.uuid}"
        )
        # MQTT servers need only accept 23-character client ids; the mapping's UUID keeps the session across restarts.
        self.identifier = "faas-" + self.mapping.uuid.replace("-", "")[:18]
        self.manual_acks = True

    async def run(self) -> None:
        config = self.mapping.config
        urls = list((config.endpoints or {}).get("MQTT_BROKER_URL") or [])
        if not urls or not config.topics:
            await self.report("PROBLEM: MQTT_BROKER_URL and Topics are required.")
            return
        addresses = [parse_broker_url(u) for u in urls]
        delay = self.settings.retry_delay
        attempt = 0
        while True:
            address = addresses[attempt % len(addresses)]  # several URLs: fail over in turn
            try:
                async with self._client(address) as client:
                    await self._subscribe(client)
                    attempt, delay = 0, self.settings.retry_delay
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                log.warning("mapping %s: MQTT broker %s:%s: %s", self.mapping.uuid, address.host, address.port, exc)
                await self.report(CONNECTION_PROBLEM)
            attempt += 1
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    def _client(self, address: BrokerAddress) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        props.ReceiveMaximum = max(1, min(65535, self.mapping.config.batch_size))
        client = aiomqtt.Client(
            address.host, address.port, username=address.username, password=address.password,
            identifier=self.identifier, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
            tls_context=ssl.create_default_context() if address.tls else None,
        )
        # aiomqtt has no public switch for paho's manual acknowledgements yet (empicano/aiomqtt#345); without
        # it PUBACK goes out on receipt, and a crash mid-batch loses that batch.
        paho = getattr(client, "_client", None)
        self.manual_acks = hasattr(paho, "manual_ack_set") and hasattr(paho, "ack")
        if self.manual_acks:
            paho.manual_ack_set(True)
        return client

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        # Retain handling 1: retained messages come with a new subscription, not again on every reconnect.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        granted = await client.subscribe([(topic, options) for topic in self.mapping.config.topics])
        refused = [t for t, code in zip(self.mapping.config.topics, granted) if getattr(code, "is_failure", False)]
        if refused:
            raise aiomqtt.MqttError(f"subscription refused for {', '.join(refused)}")

    async def _consume(self, client: aiomqtt.Client) -> None:
        inbox: asyncio.Queue[_Received] = asyncio.Queue()

        async def pump() -> None:
            async for message in client.messages:
                inbox.put_nowait(_Received(message, int(time.time() * 1000)))

        pumping = asyncio.create_task(pump())
        config = self.mapping.config
        try:
            while True:
                batch = await gather(inbox, pumping, max(1, config.batch_size), config.window,
                                     lambda: aiomqtt.MqttError("Disconnected from the broker"))
                await self._deliver(client, batch)
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pumping

    async def _deliver(self, client: aiomqtt.Client, batch: list[_Received]) -> None:
        records = []
        for item in batch:
            m = item.message
            data = payload_bytes(m.payload)
            record = {
                "topic": str(m.topic), "payload": base64.b64encode(data).decode(), "qos": m.qos,
                "retain": bool(m.retain), "timestamp": item.at_ms,
            }
            if self.passes({**record, "payload": decoded_for_filter(data)}):
                records.append(record)
        if records:
            await self._invoke_until_handled({"eventSource": "faas:mqtt", "eventSourceArn": self.arn,
                                              "Records": records})
        if self.manual_acks:
            for item in batch:  # in order of arrival, as MQTT asks
                if item.message.qos > 0:
                    # A dead connection cannot take the ack; the broker redelivers on the next one.
                    with contextlib.suppress(Exception):
                        client._client.ack(item.message.mid, item.message.qos)

    async def _invoke_until_handled(self, event: dict[str, Any]) -> None:
        delay = self.settings.retry_delay
        failures = 0
        max_retries = self.mapping.config.max_retries
        while True:
            try:
                result = await self.invoke(event)
            except LambdaError as exc:
                problem = f"PROBLEM: {exc.code}"
            else:
                if not result.function_error:
                    await self.report("OK")
                    return
                problem = "PROBLEM: function error"
            await self.report(problem)
            failures += 1
            if 0 <= max_retries < failures:
                log.warning("mapping %s: dropping a batch of %d after %d attempts", self.mapping.uuid,
                            len(event["Records"]), failures)
                return
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
