"""Data streams in SQLite: streams, shards (hash key ranges and sequence counters) and their records.

Appends are group-committed: concurrent `append()` calls share one transaction, so the accept rate is bounded by
SQLite's commit rate divided by the batch, not by one fsync per PutRecord.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec

from faas.store.db import Database

_STREAM_COLUMNS = (
    "s.id, s.name, s.mode, s.retention_hours, s.max_record_kib, s.created_at, s.active_at,"
    " (SELECT COUNT(*) FROM stream_shards h WHERE h.stream_id = s.id)"
)


class StreamRow(msgspec.Struct, frozen=True):
    id: int
    name: str
    mode: str
    retention_hours: int
    max_record_kib: int
    created_at: float
    active_at: float
    shard_count: int


class ShardRow(msgspec.Struct, frozen=True):
    index: int
    starting_hash: int
    ending_hash: int
    last_seq: int


class StoredRecord(msgspec.Struct, frozen=True):
    seq: int
    partition_key: str
    data: bytes
    arrival: float


class NewRecord(msgspec.Struct, frozen=True):
    shard_index: int
    partition_key: str
    data: bytes


class StreamExists(Exception):
    pass


class ShardLimitExceeded(Exception):
    def __init__(self, current: int):
        super().__init__(current)
        self.current = current


def _stream(row) -> StreamRow:
    return StreamRow(*tuple(row))


class StreamStore:
    def __init__(self, db: Database):
        self.db = db
        self._pending: list[tuple[int, list[NewRecord], float, asyncio.Future[list[int] | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- streams ----------------------------------------------------------------------------------------

    async def create(self, name: str, mode: str, retention_hours: int, max_record_kib: int, created_at: float,
                     active_at: float, ranges: list[tuple[int, int]], shard_limit: int) -> StreamRow:
        """Raises `StreamExists`, or `ShardLimitExceeded` when the account would hold more than `shard_limit`."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM streams WHERE name = ?", (name,)) as cur:
                if await cur.fetchone() is not None:
                    raise StreamExists(name)
            async with conn.execute("SELECT COUNT(*) FROM stream_shards") as cur:
                current = (await cur.fetchone())[0]
            if current + len(ranges) > shard_limit:
                raise ShardLimitExceeded(current)
            cur = await conn.execute(
                "INSERT INTO streams(name, mode, retention_hours, max_record_kib, created_at, active_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, mode, retention_hours, max_record_kib, created_at, active_at),
            )
            stream_id = cur.lastrowid
            await conn.executemany(
                "INSERT INTO stream_shards(stream_id, shard_index, starting_hash, ending_hash) VALUES (?, ?, ?, ?)",
                [(stream_id, i, str(lo), str(hi)) for i, (lo, hi) in enumerate(ranges)],
            )
        return StreamRow(stream_id, name, mode, retention_hours, max_record_kib, created_at, active_at, len(ranges))

    async def get(self, name: str) -> StreamRow | None:
        row = await self.db.fetchone(f"SELECT {_STREAM_COLUMNS} FROM streams s WHERE s.name = ?", (name,))
        return _stream(row) if row else None

    async def get_by_id(self, stream_id: int) -> StreamRow | None:
        row = await self.db.fetchone(f"SELECT {_STREAM_COLUMNS} FROM streams s WHERE s.id = ?", (stream_id,))
        return _stream(row) if row else None

    async def list(self, after: str | None, limit: int) -> list[StreamRow]:
        rows = await self.db.fetchall(
            f"SELECT {_STREAM_COLUMNS} FROM streams s WHERE s.name > ? ORDER BY s.name LIMIT ?", (after or "", limit)
        )
        return [_stream(r) for r in rows]

    async def all(self) -> list[StreamRow]:
        return [_stream(r) for r in await self.db.fetchall(f"SELECT {_STREAM_COLUMNS} FROM streams s ORDER BY s.id")]

    async def delete(self, stream_id: int) -> bool:
        """Removes the stream with its shards and records (by cascade)."""
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM streams WHERE id = ?", (stream_id,))
            return cur.rowcount > 0

    async def set_retention(self, stream_id: int, hours: int) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute("UPDATE streams SET retention_hours = ? WHERE id = ?", (hours, stream_id))
            return cur.rowcount > 0

    # -- shards -----------------------------------------------------------------------------------------

    async def shards(self, stream_id: int) -> list[ShardRow]:
        rows = await self.db.fetchall(
            "SELECT shard_index, starting_hash, ending_hash, last_seq FROM stream_shards WHERE stream_id = ?"
            " ORDER BY shard_index",
            (stream_id,),
        )
        return [ShardRow(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]

    async def shard(self, stream_id: int, index: int) -> ShardRow | None:
        row = await self.db.fetchone(
            "SELECT shard_index, starting_hash, ending_hash, last_seq FROM stream_shards"
            " WHERE stream_id = ? AND shard_index = ?",
            (stream_id, index),
        )
        return ShardRow(row[0], int(row[1]), int(row[2]), row[3]) if row else None

    # -- records ----------------------------------------------------------------------------------------

    async def append(self, stream_id: int, records: list[NewRecord], arrival: float) -> list[int] | None:
        """Commit records and return each one's sequence counter (increasing per shard, in the order given),
        or None when the stream no longer exists. Returns once the records are durable."""
        future: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
        self._pending.append((stream_id, records, arrival, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def close(self, timeout: float) -> None:
        """Wait for appends already accepted for commit."""
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(flusher), timeout)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._commit(batch)
            except Exception as exc:  # every waiter learns its records were not accepted
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (*_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)

    async def _commit(self, batch) -> list[list[int] | None]:
        results: list[list[int] | None] = []
        async with self.db.transaction() as conn:
            counters: dict[int, dict[int, int]] = {}
            rows = []
            for stream_id, records, arrival, _ in batch:
                if stream_id not in counters:
                    async with conn.execute(
                        "SELECT shard_index, last_seq FROM stream_shards WHERE stream_id = ?", (stream_id,)
                    ) as cur:
                        counters[stream_id] = {r[0]: r[1] for r in await cur.fetchall()}
                last = counters[stream_id]
                if not last or any(r.shard_index not in last for r in records):
                    results.append(None)
                    continue
                seqs = []
                for r in records:
                    last[r.shard_index] += 1
                    seqs.append(last[r.shard_index])
                    rows.append((stream_id, r.shard_index, last[r.shard_index], r.partition_key, r.data, arrival))
                results.append(seqs)
            await conn.executemany(
                "INSERT INTO stream_records(stream_id, shard_index, seq, partition_key, data, arrival)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            await conn.executemany(
                "UPDATE stream_shards SET last_seq = ? WHERE stream_id = ? AND shard_index = ?",
                [(seq, stream_id, index) for stream_id, last in counters.items() for index, seq in last.items()],
            )
        return results

    async def read(self, stream_id: int, shard_index: int, after_seq: int, limit: int,
                   max_bytes: int) -> list[StoredRecord]:
        """Up to `limit` records after `after_seq`, oldest first, stopping before `max_bytes` of data is passed
        (at least one record is returned when there is one)."""
        sizes = await self.db.fetchall(
            "SELECT seq, length(data) + length(CAST(partition_key AS BLOB)) FROM stream_records"
            " WHERE stream_id = ? AND shard_index = ? AND seq > ? ORDER BY seq LIMIT ?",
            (stream_id, shard_index, after_seq, limit),
        )
        if not sizes:
            return []
        last, total = sizes[0][0], 0
        for seq, size in sizes:
            total += size
            if total > max_bytes and seq != sizes[0][0]:
                break
            last = seq
        rows = await self.db.fetchall(
            "SELECT seq, partition_key, data, arrival FROM stream_records"
            " WHERE stream_id = ? AND shard_index = ? AND seq > ? AND seq <= ? ORDER BY seq",
            (stream_id, shard_index, after_seq, last),
        )
        return [StoredRecord(r[0], r[1], bytes(r[2]), r[3]) for r in rows]

    async def next_arrival(self, stream_id: int, shard_index: int, after_seq: int) -> float | None:
        """The arrival time of the first record after `after_seq`, if any."""
        row = await self.db.fetchone(
            "SELECT arrival FROM stream_records WHERE stream_id = ? AND shard_index = ? AND seq > ?"
            " ORDER BY seq LIMIT 1",
            (stream_id, shard_index, after_seq),
        )
        return row[0] if row else None

    async def first_at(self, stream_id: int, shard_index: int, timestamp: float) -> int | None:
        """The counter of the first record that arrived at or after `timestamp`."""
        row = await self.db.fetchone(
            "SELECT MIN(seq) FROM stream_records WHERE stream_id = ? AND shard_index = ? AND arrival >= ?",
            (stream_id, shard_index, timestamp),
        )
        return row[0] if row and row[0] is not None else None

    async def trim(self, stream_id: int, shard_index: int, before: float, batch: int = 1000) -> int:
        """Delete the shard's records that arrived before `before`, `batch` rows a transaction so that writers
        are not held up by a long backlog."""
        deleted = 0
        while True:
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    "DELETE FROM stream_records WHERE stream_id = ? AND shard_index = ? AND seq IN ("
                    " SELECT seq FROM stream_records WHERE stream_id = ? AND shard_index = ? AND arrival < ?"
                    " ORDER BY seq LIMIT ?)",
                    (stream_id, shard_index, stream_id, shard_index, before, batch),
                )
                count = cur.rowcount
            deleted += count
            if count < batch:
                return deleted
