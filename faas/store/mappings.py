"""Event source mappings and stream checkpoints, in SQLite."""

from __future__ import annotations

import msgspec

from faas.store.db import Database


class MappingConfig(msgspec.Struct, omit_defaults=True):
    """What a mapping was created or updated with (the API's fields)."""

    kind: str  # "sqs", "kinesis", "mqtt", "amqp"
    function_arn: str
    qualifier: str | None = None
    enabled: bool = True
    batch_size: int = 10
    window: int = 0
    filters: list[str] = msgspec.field(default_factory=list)
    filters_given: bool = False
    response_types: list[str] = msgspec.field(default_factory=list)
    max_concurrency: int | None = None
    starting_position: str | None = None
    starting_timestamp: float | None = None
    bisect: bool = False
    max_retries: int = -1
    max_age: int = -1
    parallelization: int = 1
    tumbling: int = 0
    on_failure: str | None = None
    topics: list[str] = msgspec.field(default_factory=list)
    queues: list[str] = msgspec.field(default_factory=list)
    endpoints: dict[str, list[str]] | None = None


class Mapping(msgspec.Struct):
    uuid: str
    function_name: str
    source_arn: str
    config: MappingConfig
    state: str
    state_reason: str
    last_modified: float
    last_result: str | None = None


_decoder = msgspec.json.Decoder(MappingConfig)
_COLUMNS = "uuid, function_name, source_arn, config, state, state_reason, last_modified, last_result"


def _row(r) -> Mapping:
    return Mapping(r[0], r[1], r[2], _decoder.decode(r[3]), r[4], r[5], r[6], r[7])


class Mappings:
    def __init__(self, db: Database):
        self.db = db

    async def put(self, m: Mapping) -> None:
        await self.db.write((
            f"INSERT OR REPLACE INTO event_source_mappings({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (m.uuid, m.function_name, m.source_arn, msgspec.json.encode(m.config).decode(), m.state,
             m.state_reason, m.last_modified, m.last_result),
        ))

    async def set_state(self, uuid: str, state: str, last_result: str | None = None) -> None:
        if last_result is None:
            await self.db.write(("UPDATE event_source_mappings SET state = ? WHERE uuid = ?", (state, uuid)))
        else:
            await self.db.write((
                "UPDATE event_source_mappings SET state = ?, last_result = ? WHERE uuid = ?", (state, last_result, uuid)
            ))

    async def set_result(self, uuid: str, last_result: str) -> None:
        await self.db.write(("UPDATE event_source_mappings SET last_result = ? WHERE uuid = ?", (last_result, uuid)))

    async def get(self, uuid: str) -> Mapping | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM event_source_mappings WHERE uuid = ?", (uuid,))
        return _row(row) if row else None

    async def list(self, function_name: str | None = None, source_arn: str | None = None) -> list[Mapping]:
        sql = f"SELECT {_COLUMNS} FROM event_source_mappings WHERE 1 = 1"
        params: list = []
        if function_name is not None:
            sql += " AND function_name = ?"
            params.append(function_name)
        if source_arn is not None:
            sql += " AND source_arn = ?"
            params.append(source_arn)
        rows = await self.db.fetchall(sql + " ORDER BY last_modified, uuid", params)
        return [_row(r) for r in rows]

    async def delete(self, uuid: str) -> None:
        await self.db.write(("DELETE FROM event_source_mappings WHERE uuid = ?", (uuid,)))

    async def checkpoints(self, uuid: str) -> dict[str, tuple[str, str | None]]:
        rows = await self.db.fetchall(
            "SELECT shard_id, sequence_number, state FROM esm_checkpoints WHERE uuid = ?", (uuid,)
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def checkpoint(self, uuid: str, shard_id: str, sequence_number: str, state: str | None = None) -> None:
        await self.db.write((
            "INSERT INTO esm_checkpoints(uuid, shard_id, sequence_number, state) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(uuid, shard_id) DO UPDATE SET sequence_number = excluded.sequence_number,"
            " state = excluded.state",
            (uuid, shard_id, sequence_number, state),
        ))
