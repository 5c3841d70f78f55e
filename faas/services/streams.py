"""Data streams with Kinesis's semantics: shards own ranges of the 128-bit hash key space, a record goes to the
shard whose range holds the MD5 of its partition key (or its explicit hash key), and each shard numbers its
records with strictly increasing sequence numbers. Records are kept for the stream's retention period; a
background pass deletes older ones.

`Streams` is what the Kinesis API handlers call, and what event source mappings poll through `describe`,
`read`, `latest_sequence` and `exists`. Errors are Kinesis's own (`JsonServiceError` with its codes).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable

import msgspec

from faas.api.json_protocol import JsonServiceError
from faas.arn import Arns
from faas.config import StreamsConfig
from faas.store.db import Database
from faas.store.streams import NewRecord, ShardLimitExceeded, ShardRow, StreamExists, StreamRow, StreamStore

log = logging.getLogger(__name__)

HASH_SPACE = 1 << 128
ON_DEMAND_SHARDS = 4
DEFAULT_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 8760
DEFAULT_RECORD_KIB = 1024
GET_RECORDS_MAX_BYTES = 10 * 1024 * 1024

_SHARD_ID = re.compile(r"(?:shardId-)?(\d{1,12})")
_SEQ_WIDTH = 56  # "49" + stream id (15 digits) + shard index (10) + counter (29), like AWS's 56-digit numbers


class StreamRecord(msgspec.Struct, frozen=True):
    sequence_number: str
    partition_key: str
    data: bytes
    approximate_arrival: float


class Position(msgspec.Struct, array_like=True, frozen=True):
    """What a shard iterator encodes: a stream (by id, never reused, and by name for messages), a shard, the
    counter of the last record already read, and when the iterator was issued (epoch milliseconds)."""

    version: int
    stream_id: int
    stream_name: str
    shard_index: int
    after: int
    issued_ms: int


class Batch(msgspec.Struct, frozen=True):
    records: list[StreamRecord]
    next_iterator: str
    millis_behind: int


class PutResult(msgspec.Struct, frozen=True):
    shard_id: str
    sequence_number: str


def shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


def hash_ranges(count: int) -> list[tuple[int, int]]:
    """The hash key space 0..2^128-1 split evenly over `count` shards, the last taking the remainder."""
    width = HASH_SPACE // count
    return [(i * width, HASH_SPACE - 1 if i == count - 1 else (i + 1) * width - 1) for i in range(count)]


def partition_hash(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False).digest(), "big")


def _java_date(epoch: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(epoch))


class Streams:
    """All streams of the account; also the background service that trims records past their retention."""

    def __init__(self, db: Database, arns: Arns, config: StreamsConfig, *, clock: Callable[[], float] = time.time):
        self.store = StreamStore(db)
        self.arns = arns
        self.config = config
        self.clock = clock
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- names and errors -------------------------------------------------------------------------------

    def arn(self, name: str) -> str:
        return f"arn:aws:kinesis:{self.arns.region}:{self.arns.account_id}:stream/{name}"

    def not_found(self, name: str) -> JsonServiceError:
        return JsonServiceError("ResourceNotFoundException",
                                f"Stream {name} under account {self.arns.account_id} not found.")

    def _name_of_arn(self, arn: str) -> str:
        parts = arn.split(":", 5)
        if len(parts) != 6 or not parts[5].startswith("stream/"):
            raise JsonServiceError("InvalidArgumentException", f"Invalid StreamARN {arn}.")
        name = parts[5][len("stream/"):]
        if parts[3] != self.arns.region or parts[4] != self.arns.account_id:
            raise JsonServiceError("ResourceNotFoundException", f"Stream {name} under account {parts[4]} not found.")
        return name

    def resolve_name(self, stream_name: str | None, stream_arn: str | None) -> str:
        """The stream a request names, by StreamName or StreamARN (both must agree when both are given)."""
        if stream_arn:
            name = self._name_of_arn(stream_arn)
            if stream_name and stream_name != name:
                raise JsonServiceError("InvalidArgumentException",
                                       f"StreamName {stream_name} does not match the stream of StreamARN {stream_arn}.")
            return name
        if stream_name:
            return stream_name
        raise JsonServiceError("InvalidArgumentException", "Either StreamName or StreamARN must be provided.")

    def status(self, stream: StreamRow) -> str:
        return "CREATING" if self.clock() < stream.active_at else "ACTIVE"

    async def get(self, name: str) -> StreamRow:
        stream = await self.store.get(name)
        if stream is None:
            raise self.not_found(name)
        return stream

    async def get_active(self, name: str, *, for_data: bool = False) -> StreamRow:
        """The stream, which must be ACTIVE: data operations find no CREATING stream (as AWS answers), control
        operations are refused as in use."""
        stream = await self.get(name)
        state = self.status(stream)
        if state != "ACTIVE":
            if for_data:
                raise self.not_found(name)
            raise JsonServiceError(
                "ResourceInUseException",
                f"Stream {name} under account {self.arns.account_id} not ACTIVE, instead in state {state}",
            )
        return stream

    async def _shard(self, stream: StreamRow, shard: str) -> ShardRow:
        m = _SHARD_ID.fullmatch(shard)
        row = await self.store.shard(stream.id, int(m.group(1))) if m else None
        if row is None:
            raise JsonServiceError(
                "ResourceNotFoundException",
                f"Shard {shard} in stream {stream.name} under account {self.arns.account_id} does not exist",
            )
        return row

    # -- sequence numbers and iterators -----------------------------------------------------------------

    @staticmethod
    def sequence_number(stream: StreamRow, shard_index: int, counter: int) -> str:
        return f"49{stream.id:015d}{shard_index:010d}{counter:029d}"

    def _counter(self, stream: StreamRow, shard: ShardRow, value: str) -> int:
        """The shard counter a sequence number names; InvalidArgumentException when it is not one of this
        shard's numbers."""
        prefix = f"49{stream.id:015d}{shard.index:010d}"
        if len(value) != _SEQ_WIDTH or not value.startswith(prefix) or not value.isdigit():
            raise JsonServiceError(
                "InvalidArgumentException",
                f"StartingSequenceNumber {value} used in GetShardIterator on shard {shard_id(shard.index)} in stream"
                f" {stream.name} under account {self.arns.account_id} is invalid because it did not come from"
                " this stream.",
            )
        counter = int(value[len(prefix):])
        if counter > shard.last_seq:
            raise JsonServiceError(
                "InvalidArgumentException",
                f"StartingSequenceNumber {value} used in GetShardIterator on shard {shard_id(shard.index)} in stream"
                f" {stream.name} under account {self.arns.account_id} is invalid.",
            )
        return counter

    def _iterator(self, stream: StreamRow, shard_index: int, after: int) -> str:
        pos = Position(1, stream.id, stream.name, shard_index, after, int(self.clock() * 1000))
        return base64.b64encode(msgspec.msgpack.encode(pos)).decode()

    def _position(self, iterator: str) -> Position:
        try:
            pos = msgspec.msgpack.decode(base64.b64decode(iterator, validate=True), type=Position)
        except (ValueError, msgspec.DecodeError):
            raise JsonServiceError("InvalidArgumentException", "Invalid ShardIterator.") from None
        if pos.version != 1:
            raise JsonServiceError("InvalidArgumentException", "Invalid ShardIterator.")
        now = self.clock()
        if now * 1000 - pos.issued_ms > self.config.iterator_ttl * 1000:
            raise JsonServiceError(
                "ExpiredIteratorException",
                f"Iterator expired. The iterator was created at time {_java_date(pos.issued_ms / 1000)} while right"
                f" now it is {_java_date(now)} which is further in the future than the tolerated delay of"
                f" {int(self.config.iterator_ttl * 1000)} milliseconds.",
            )
        return pos

    # -- control plane ----------------------------------------------------------------------------------

    async def create(self, name: str, shard_count: int | None, mode: str | None,
                     max_record_kib: int | None = None) -> StreamRow:
        if mode is None:
            mode = "PROVISIONED" if shard_count is not None else "ON_DEMAND"
        if mode == "ON_DEMAND":
            shard_count = ON_DEMAND_SHARDS
        elif shard_count is None:
            raise JsonServiceError("InvalidArgumentException",
                                   "ShardCount must be specified for a stream in PROVISIONED mode.")
        now = self.clock()
        try:
            return await self.store.create(
                name, mode, DEFAULT_RETENTION_HOURS, max_record_kib or DEFAULT_RECORD_KIB, now,
                now + self.config.creating_delay, hash_ranges(shard_count), self.config.shard_limit,
            )
        except StreamExists:
            raise JsonServiceError("ResourceInUseException",
                                   f"Stream {name} under account {self.arns.account_id} already exists.") from None
        except ShardLimitExceeded as exc:
            raise JsonServiceError(
                "LimitExceededException",
                f"This request would exceed the shard limit for the account {self.arns.account_id} in"
                f" {self.arns.region}. Current limit of shards is {self.config.shard_limit}, current number of"
                f" shards is {exc.current}, requested {shard_count} shards.",
            ) from None

    async def delete(self, name: str) -> None:
        stream = await self.get_active(name)
        if not await self.store.delete(stream.id):
            raise self.not_found(name)

    async def set_retention(self, name: str, hours: int, *, increase: bool) -> None:
        stream = await self.get_active(name)
        current = stream.retention_hours
        if hours > MAX_RETENTION_HOURS:
            raise JsonServiceError("InvalidArgumentException", f"Maximum allowed retention period is"
                                   f" {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too"
                                   " long.")
        if hours < DEFAULT_RETENTION_HOURS:
            raise JsonServiceError("InvalidArgumentException", f"Minimum allowed retention period is"
                                   f" {DEFAULT_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is"
                                   " too short.")
        if increase and hours < current:
            raise JsonServiceError(
                "InvalidArgumentException",
                f"Requested retention period ({hours} hours) for stream {name} can not be shorter than existing"
                f" retention period ({current} hours). Use DecreaseRetentionPeriod API.",
            )
        if not increase and hours > current:
            raise JsonServiceError(
                "InvalidArgumentException",
                f"Requested retention period ({hours} hours) for stream {name} can not be longer than existing"
                f" retention period ({current} hours). Use IncreaseRetentionPeriod API.",
            )
        if not await self.store.set_retention(stream.id, hours):
            raise self.not_found(name)

    # -- data plane -------------------------------------------------------------------------------------

    async def put(self, stream: StreamRow, entries: list[tuple[str, bytes, str | None]]) -> list[PutResult]:
        """Append (partition key, data, explicit hash key) entries to a stream got by `get_active`; all are
        committed before this returns."""
        shards = await self.store.shards(stream.id)
        starts = [s.starting_hash for s in shards]
        records = []
        for key, data, explicit in entries:
            if explicit is not None:
                value = int(explicit)
                if value >= HASH_SPACE:
                    raise JsonServiceError(
                        "InvalidArgumentException",
                        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified"
                        f" value was {explicit}",
                    )
            else:
                value = partition_hash(key)
            shard = shards[bisect.bisect_right(starts, value) - 1]
            records.append(NewRecord(shard.index, key, data))
        # Arrival times are kept to the millisecond (truncated), as the API reports them, so AT_TIMESTAMP with a
        # reported time finds that record.
        counters = await self.store.append(stream.id, records, int(self.clock() * 1000) / 1000)
        if counters is None:
            raise self.not_found(stream.name)
        return [PutResult(shard_id(r.shard_index), self.sequence_number(stream, r.shard_index, c))
                for r, c in zip(records, counters)]

    async def shard_iterator(self, name: str, shard: str, kind: str, sequence: str | None,
                             timestamp: float | None) -> str:
        stream = await self.get_active(name, for_data=True)
        row = await self._shard(stream, shard)
        if kind == "TRIM_HORIZON":
            after = 0
        elif kind == "LATEST":
            after = row.last_seq
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if sequence is None:
                raise JsonServiceError("InvalidArgumentException",
                                       f"StartingSequenceNumber must be specified for ShardIteratorType {kind}.")
            counter = self._counter(stream, row, sequence)
            after = counter - 1 if kind == "AT_SEQUENCE_NUMBER" else counter
        else:  # AT_TIMESTAMP
            after = await self._after_timestamp(stream, row, timestamp)
        return self._iterator(stream, row.index, max(after, 0))

    async def _after_timestamp(self, stream: StreamRow, shard: ShardRow, timestamp: float | None) -> int:
        if timestamp is None:
            raise JsonServiceError("InvalidArgumentException", "Must specify timestampInMillis parameter for"
                                   " iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.")
        now = self.clock()
        if timestamp > now:
            raise JsonServiceError(
                "InvalidArgumentException",
                "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis."
                f" timestampInMillis: {int(timestamp * 1000)}, currentTimestampInMillis: {int(now * 1000)}",
            )
        first = await self.store.first_at(stream.id, shard.index, timestamp)
        return shard.last_seq if first is None else first - 1

    async def get_records(self, iterator: str, limit: int | None) -> Batch:
        pos = self._position(iterator)
        stream = await self.store.get_by_id(pos.stream_id)
        if stream is None:
            raise self.not_found(pos.stream_name)
        rows = await self.store.read(stream.id, pos.shard_index, pos.after, limit or 10000, GET_RECORDS_MAX_BYTES)
        after = rows[-1].seq if rows else pos.after
        waiting = await self.store.next_arrival(stream.id, pos.shard_index, after)
        behind = 0 if waiting is None else max(0, int((self.clock() - waiting) * 1000))
        records = [StreamRecord(self.sequence_number(stream, pos.shard_index, r.seq), r.partition_key, r.data,
                                r.arrival) for r in rows]
        return Batch(records, self._iterator(stream, pos.shard_index, after), behind)

    # -- the interface event source mappings poll ------------------------------------------------------

    async def exists(self, stream_arn: str) -> bool:
        try:
            name = self._name_of_arn(stream_arn)
        except JsonServiceError:
            return False
        return await self.store.get(name) is not None

    async def describe(self, stream_arn: str) -> list[str]:
        """The stream's shard ids, in order."""
        stream = await self.get(self._name_of_arn(stream_arn))
        return [shard_id(s.index) for s in await self.store.shards(stream.id)]

    async def latest_sequence(self, stream_arn: str, shard: str) -> str | None:
        """The sequence number of the shard's latest record (even if since trimmed), None when it has had none."""
        stream = await self.get(self._name_of_arn(stream_arn))
        row = await self._shard(stream, shard)
        return self.sequence_number(stream, row.index, row.last_seq) if row.last_seq else None

    async def read(self, stream_arn: str, shard: str, after_sequence: str | None, limit: int, *,
                   at_timestamp: float | None = None, from_trim_horizon: bool = False) -> list[StreamRecord]:
        """Up to `limit` records of a shard, oldest first: those after `after_sequence` when given, else those
        that arrived at or after `at_timestamp`, else from the oldest record kept (`from_trim_horizon`, also
        what no position at all means)."""
        stream = await self.get(self._name_of_arn(stream_arn))
        row = await self._shard(stream, shard)
        if after_sequence is not None:
            after = self._counter(stream, row, after_sequence)
        elif at_timestamp is not None and not from_trim_horizon:
            first = await self.store.first_at(stream.id, row.index, at_timestamp)
            after = row.last_seq if first is None else first - 1
        else:
            after = 0
        rows = await self.store.read(stream.id, row.index, after, limit, GET_RECORDS_MAX_BYTES)
        return [StreamRecord(self.sequence_number(stream, row.index, r.seq), r.partition_key, r.data, r.arrival)
                for r in rows]

    # -- retention --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._closing.clear()
            self._task = asyncio.create_task(self._trim_loop())

    async def run_once(self) -> int:
        """Delete every record older than its stream's retention period; returns how many were deleted."""
        deleted = 0
        hour = self.config.retention_hour_seconds
        for stream in await self.store.all():
            cutoff = self.clock() - stream.retention_hours * hour
            for index in range(stream.shard_count):
                deleted += await self.store.trim(stream.id, index, cutoff)
        return deleted

    async def _trim_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.config.trim_interval)
                return
            try:
                await self.run_once()
            except Exception:
                log.exception("trimming stream records failed")

    async def close(self, timeout: float = 5.0) -> None:
        self._closing.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout)
            except TimeoutError:
                pass  # wait_for has cancelled the pass
        await self.store.close(timeout)
