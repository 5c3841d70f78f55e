"""The lifecycle of event source mappings: one poller task per enabled mapping, started at start-up and
whenever a mapping is created, updated or enabled; stopped when it is disabled or deleted. States move as
Lambda reports them (Creating/Enabling/Updating -> Enabled, Disabling -> Disabled)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from faas import ids
from faas.events.patterns import compile_pattern
from faas.invoke.router import InvokeRequest, InvokeResult
from faas.store.mappings import Mapping, Mappings

if TYPE_CHECKING:
    from faas.services import Services

log = logging.getLogger(__name__)


@dataclass
class PollSettings:
    idle_poll: float = 1.0  # seconds a queue poller long-polls / a stream poller waits when there is nothing
    retry_delay: float = 1.0  # before a failed stream batch is tried again (doubles, up to 30 s)
    scale_interval: float = 1.0  # how often queue pollers are added or removed with the backlog


class Source:
    """A poller for one mapping. Subclasses implement `run()`; the manager cancels it to stop."""

    def __init__(self, mapping: Mapping, manager: MappingManager):
        self.mapping = mapping
        self.manager = manager
        self.svc = manager.svc
        self.settings = manager.settings
        self.filters = [compile_pattern(p) for p in mapping.config.filters]

    def passes(self, record: dict[str, Any]) -> bool:
        """FilterCriteria: any pattern matching keeps the record (no filters keeps everything)."""
        return not self.filters or any(f.matches(record) for f in self.filters)

    async def invoke(self, payload: Any) -> InvokeResult:
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        return await self.svc.router.invoke(InvokeRequest(
            function_name=self.mapping.function_name, qualifier=self.mapping.config.qualifier, payload=body,
            request_id=ids.request_id(),
        ))

    async def report(self, result: str) -> None:
        if result != self.mapping.last_result:
            self.mapping.last_result = result
            await self.manager.store.set_result(self.mapping.uuid, result)

    async def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def batch_item_failures(result: InvokeResult) -> list[str] | None:
    """The identifiers a function reported with ReportBatchItemFailures, or None when the response does not
    use the format (then the whole batch failed or succeeded by the function error alone)."""
    try:
        doc = msgspec.json.decode(result.payload)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict) or "batchItemFailures" not in doc:
        return None
    items = doc.get("batchItemFailures") or []
    if not isinstance(items, list):
        return None
    return [str(i.get("itemIdentifier")) for i in items if isinstance(i, dict)]


class MappingManager:
    def __init__(self, store: Mappings, settings: PollSettings):
        self.store = store
        self.settings = settings
        self.svc: Services | None = None  # set once all services exist
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _source(self, mapping: Mapping) -> Source:
        kind = mapping.config.kind
        if kind == "sqs":
            from faas.events.sources.sqs import QueueSource

            return QueueSource(mapping, self)
        if kind == "kinesis":
            from faas.events.sources.kinesis import StreamSource

            return StreamSource(mapping, self)
        if kind == "mqtt":
            from faas.events.sources.mqtt import MqttSource

            return MqttSource(mapping, self)
        if kind == "amqp":
            from faas.events.sources.amqp import AmqpSource

            return AmqpSource(mapping, self)
        raise ValueError(f"no poller for {kind}")

    async def apply(self, mapping: Mapping) -> None:
        """Bring the poller in line with the mapping's configuration (restarting it on any change)."""
        await self._stop(mapping.uuid)
        if not mapping.config.enabled:
            if mapping.state != "Disabled":
                mapping.state = "Disabled"
                await self.store.set_state(mapping.uuid, "Disabled")
            return
        source = self._source(mapping)
        task = asyncio.create_task(self._run(source), name=f"faas-esm-{mapping.uuid}")
        self._tasks[mapping.uuid] = task
        if mapping.state != "Enabled":
            await self.store.set_state(mapping.uuid, "Enabled")

    async def _run(self, source: Source) -> None:
        delay = self.settings.retry_delay
        while True:
            try:
                await source.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("event source mapping %s failed; restarting", source.mapping.uuid)
                await source.report(f"PROBLEM: {type(exc).__name__}")
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def _stop(self, uuid: str) -> None:
        task = self._tasks.pop(uuid, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def remove(self, uuid: str) -> None:
        await self._stop(uuid)

    async def begin(self) -> None:
        for mapping in await self.store.list():
            try:
                await self.apply(mapping)
            except Exception:
                log.exception("could not start event source mapping %s", mapping.uuid)

    async def close(self) -> None:
        for mapping_id in list(self._tasks):
            await self._stop(mapping_id)
