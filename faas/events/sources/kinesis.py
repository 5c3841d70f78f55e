"""Stream sources: one poller per shard reading a built-in stream in order, checkpointing in SQLite after
each handled batch, retrying a failing batch in order (with bisection), reporting partial failures, and
giving up on retries or record age to the OnFailure destination with Lambda's record."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
import zlib
from datetime import datetime, timezone
from typing import Any

import msgspec

from faas.errors import LambdaError, TooManyRequestsException
from faas.events.mappings import Source, batch_item_failures
from faas.invoke.router import InvokeResult


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _data_for_filter(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return base64.b64encode(data).decode()


class StreamSource(Source):
    _role = ""

    async def run(self) -> None:
        fv = await self.svc.registry.get_version(self.mapping.function_name)
        self._role = fv.config.role if fv else ""
        shards = await self.svc.streams.describe(self.mapping.source_arn)
        checkpoints = await self.manager.store.checkpoints(self.mapping.uuid)
        await asyncio.gather(*(self._shard(shard, checkpoints.get(shard)) for shard in shards))

    async def _start_position(self, shard: str) -> tuple[str | None, dict[str, Any]]:
        """Where a shard without a checkpoint starts; LATEST is pinned by a checkpoint so a restart does not
        skip what arrived meanwhile."""
        config = self.mapping.config
        if config.starting_position == "LATEST":
            latest = await self.svc.streams.latest_sequence(self.mapping.source_arn, shard)
            if latest is not None:
                await self.manager.store.checkpoint(self.mapping.uuid, shard, latest)
            return latest, {}
        if config.starting_position == "AT_TIMESTAMP" and config.starting_timestamp is not None:
            return None, {"at_timestamp": config.starting_timestamp}
        return None, {"from_trim_horizon": True}

    async def _shard(self, shard: str, checkpoint: tuple[str, str | None] | None) -> None:
        config = self.mapping.config
        if checkpoint is None:
            after, where = await self._start_position(shard)
            state: dict[str, Any] = {}
        else:
            after, where = checkpoint[0], {}
            state = msgspec.json.decode(checkpoint[1]) if checkpoint[1] else {}
        self._window_state = state
        while True:
            records = await self._collect(shard, after, where)
            if not records:
                await asyncio.sleep(self.settings.idle_poll)
                continue
            where = {}
            end = records[-1].sequence_number
            kept = [r for r in records if self.passes(self._kinesis(r) | {"data": _data_for_filter(r.data)})]
            if kept:
                await self._handle(shard, kept)
            after = end
            await self.manager.store.checkpoint(
                self.mapping.uuid, shard, end, msgspec.json.encode(self._window_state).decode() if config.tumbling else None
            )

    async def _collect(self, shard: str, after: str | None, where: dict[str, Any]) -> list[Any]:
        config = self.mapping.config
        read = self.svc.streams.read
        batch = list(await read(self.mapping.source_arn, shard, after, config.batch_size, **where))
        deadline = time.monotonic() + config.window
        while config.window and len(batch) < config.batch_size and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            last = batch[-1].sequence_number if batch else after
            more = await read(self.mapping.source_arn, shard, last, config.batch_size - len(batch),
                              **(where if not batch else {}))
            batch.extend(more)
        return batch

    def _kinesis(self, r: Any) -> dict[str, Any]:
        return {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": r.partition_key,
            "sequenceNumber": r.sequence_number,
            "data": base64.b64encode(r.data).decode(),
            "approximateArrivalTimestamp": r.approximate_arrival,
        }

    def _event(self, shard: str, records: list[Any]) -> dict[str, Any]:
        return {"Records": [{
            "kinesis": self._kinesis(r),
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard}:{r.sequence_number}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self._role,
            "awsRegion": self.svc.arns.region,
            "eventSourceARN": self.mapping.source_arn,
        } for r in records]}

    async def _handle(self, shard: str, records: list[Any]) -> None:
        """Process records in order until all are handled or given up on."""
        factor = max(1, self.mapping.config.parallelization)
        if factor == 1 or self.mapping.config.tumbling:
            await self._process(shard, records)
            return
        # ParallelizationFactor: lanes by partition key, so order holds per key while lanes run together.
        lanes: list[list[Any]] = [[] for _ in range(factor)]
        for r in records:
            lanes[zlib.crc32(r.partition_key.encode()) % factor].append(r)
        await asyncio.gather(*(self._process(shard, lane) for lane in lanes if lane))

    async def _process(self, shard: str, records: list[Any]) -> None:
        config = self.mapping.config
        attempts = 0
        delay = self.settings.retry_delay
        pending = records
        while pending:
            if config.max_age != -1 and time.time() - pending[0].approximate_arrival > config.max_age:
                await self._give_up(shard, pending, "RecordAgeExceeded", attempts, None)
                return
            try:
                result = await self.invoke(self._payload(shard, pending))
            except (TooManyRequestsException, LambdaError) as exc:
                await self.report(f"PROBLEM: {getattr(exc, 'code', 'error')}")
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            attempts += 1
            failed_at = self._failed_index(result, pending)
            if failed_at is None:
                self._after_success(result)
                await self.report("OK")
                return
            if failed_at > 0:
                # Partial failure: records before the lowest failed one are done; retry from it.
                pending = pending[failed_at:]
            if config.max_retries != -1 and attempts > config.max_retries:
                await self._give_up(shard, pending, "RetryAttemptsExhausted", attempts, result)
                return
            if config.bisect and len(pending) > 1 and result.function_error:
                half = len(pending) // 2
                await self._process(shard, pending[:half])
                await self._process(shard, pending[half:])
                return
            await self.report("PROBLEM: function error")
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    def _failed_index(self, result: InvokeResult, records: list[Any]) -> int | None:
        """None when the batch succeeded; else the index of the lowest failed record (0 = all)."""
        if result.function_error:
            return 0
        if "ReportBatchItemFailures" not in self.mapping.config.response_types:
            return None
        reported = batch_item_failures(result)
        if not reported:
            return None
        positions = {r.sequence_number: i for i, r in enumerate(records)}
        if any(seq not in positions for seq in reported):
            return 0
        return min(positions[seq] for seq in reported)

    def _payload(self, shard: str, records: list[Any]) -> dict[str, Any]:
        event = self._event(shard, records)
        tumbling = self.mapping.config.tumbling
        if not tumbling:
            return event
        start = int(records[0].approximate_arrival // tumbling * tumbling)
        window = self._window_state.get("window")
        if window and window.get("start") != _iso(start):
            self._window_state = {}
        event.update(
            window={"start": _iso(start), "end": _iso(start + tumbling)},
            state=self._window_state.get("state", {}),
            shardId=shard,
            eventSourceARN=self.mapping.source_arn,
            isFinalInvokeForWindow=time.time() >= start + tumbling,
            isWindowTerminatedEarly=False,
        )
        self._window_state["window"] = event["window"]
        return event

    def _after_success(self, result: InvokeResult) -> None:
        if not self.mapping.config.tumbling:
            return
        try:
            doc = msgspec.json.decode(result.payload)
        except msgspec.DecodeError:
            return
        if isinstance(doc, dict) and isinstance(doc.get("state"), dict):
            self._window_state["state"] = doc["state"]

    async def _give_up(self, shard: str, records: list[Any], condition: str, attempts: int,
                       result: InvokeResult | None) -> None:
        target = self.mapping.config.on_failure
        await self.report(f"PROBLEM: {condition}")
        if not target:
            return
        record: dict[str, Any] = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.svc.arns.function(self.mapping.function_name),
                "condition": condition,
                "approximateInvokeCount": max(attempts, 1),
            },
        }
        if result is not None and condition != "RecordAgeExceeded":
            functional = "ReportBatchItemFailures" in self.mapping.config.response_types and not result.function_error
            record["responseContext"] = {
                "statusCode": 200, "executedVersion": result.executed_version,
                "functionError": None if functional else "Unhandled",
            }
        record.update(
            version="1.0",
            timestamp=_iso(time.time()),
            KinesisBatchInfo={
                "shardId": shard,
                "startSequenceNumber": records[0].sequence_number,
                "endSequenceNumber": records[-1].sequence_number,
                "approximateArrivalOfFirstRecord": _iso(records[0].approximate_arrival),
                "approximateArrivalOfLastRecord": _iso(records[-1].approximate_arrival),
                "batchSize": len(records),
                "streamArn": self.mapping.source_arn,
            },
        )
        body = msgspec.json.encode(record).decode()
        service = target.split(":")[2]
        if service == "sns":
            await self.svc.topics.publish_by_arn(target, body)
        else:
            await self.svc.queues.send_by_arn(target, body)
