"""Queue sources: batches of messages from a built-in queue, with Lambda's SQS event shape, partial batch
failures, filters, and pollers that scale with the backlog up to ScalingConfig.MaximumConcurrency."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

import msgspec

from faas.errors import LambdaError, TooManyRequestsException
from faas.events.mappings import Source, batch_item_failures

DEFAULT_POLLERS = 5


def _lambda_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    out = {}
    for name, value in (attributes or {}).items():
        item: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value.get("DataType")}
        if value.get("StringValue") is not None:
            item["stringValue"] = value["StringValue"]
        if value.get("BinaryValue") is not None:
            raw = value["BinaryValue"]
            item["binaryValue"] = base64.b64encode(raw).decode() if isinstance(raw, bytes) else raw
        out[name] = item
    return out


def _body_for_filter(body: str) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body


class QueueSource(Source):
    async def run(self) -> None:
        config = self.mapping.config
        limit = config.max_concurrency or DEFAULT_POLLERS
        pollers: set[asyncio.Task[None]] = set()
        self._busy_batches = 0

        def add() -> None:
            task = asyncio.create_task(self._poll_loop(pollers))
            pollers.add(task)
            task.add_done_callback(pollers.discard)

        add()
        try:
            while True:
                await asyncio.sleep(self.settings.scale_interval)
                # A full batch means a backlog: add a poller, up to the limit.
                if self._full and len(pollers) < limit:
                    add()
                self._full = False
        finally:
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)

    _full = False

    async def _poll_loop(self, pollers: set[asyncio.Task[None]]) -> None:
        empty = 0
        while True:
            got = await self.poll_once()
            if got == 0:
                empty += 1
                if empty >= 3 and len(pollers) > 1:
                    return  # the backlog is gone: scale down
            else:
                empty = 0

    async def _collect(self) -> list[Any]:
        """Up to BatchSize messages: with no batching window, what one long poll brings plus whatever is
        ready at once; with a window, whatever arrives before it closes or the batch is full."""
        config = self.mapping.config
        arn = self.mapping.source_arn
        receive = self.svc.queues.receive_by_arn
        batch: list[Any] = []
        if config.window == 0:
            got = await receive(arn, min(10, config.batch_size), wait_seconds=self.settings.idle_poll)
            batch.extend(got)
            while got and len(batch) < config.batch_size:
                got = await receive(arn, min(10, config.batch_size - len(batch)), wait_seconds=0)
                batch.extend(got)
            return batch
        deadline = time.monotonic() + config.window
        while len(batch) < config.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch.extend(await receive(arn, min(10, config.batch_size - len(batch)), wait_seconds=min(remaining, 20.0)))
        return batch

    async def poll_once(self) -> int:
        """Receive one batch, invoke the function with it, delete what succeeded. Returns the batch size."""
        messages = await self._collect()
        if not messages:
            return 0
        if len(messages) >= self.mapping.config.batch_size:
            self._full = True
        region = self.svc.arns.region
        records, keep = [], []
        for m in messages:
            record = {
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": dict(m.attributes),
                "messageAttributes": _lambda_attributes(m.message_attributes),
                "md5OfMessageAttributes": m.md5_of_message_attributes,
                "md5OfBody": m.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": self.mapping.source_arn,
                "awsRegion": region,
            }
            if self.passes({**record, "body": _body_for_filter(m.body)}):
                records.append(record)
                keep.append(m)
            else:
                # Lambda deletes messages its filters leave out.
                await self.svc.queues.delete_by_arn(self.mapping.source_arn, m.receipt_handle)
        if not records:
            return len(messages)
        try:
            result = await self.invoke({"Records": records})
        except TooManyRequestsException:
            await self.report("PROBLEM: function throttled")
            await asyncio.sleep(self.settings.retry_delay)
            return len(messages)
        except LambdaError as exc:
            await self.report(f"PROBLEM: {exc.code}")
            await asyncio.sleep(self.settings.retry_delay)
            return len(messages)
        failed: set[str] | None = set()
        if result.function_error:
            failed = None  # the whole batch returns to the queue after its visibility timeout
        elif "ReportBatchItemFailures" in self.mapping.config.response_types:
            reported = batch_item_failures(result)
            ids = {m.message_id for m in keep}
            if reported is not None:
                failed = None if any(r not in ids for r in reported) else set(reported)
        if failed is not None:
            for m in keep:
                if m.message_id not in failed:
                    with contextlib.suppress(LambdaError):
                        await self.svc.queues.delete_by_arn(self.mapping.source_arn, m.receipt_handle)
        await self.report("OK" if not result.function_error else "PROBLEM: function error")
        return len(messages)
