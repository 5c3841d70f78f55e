"""Asynchronous invocation events and event invoke configs, in SQLite.

Writes are group-committed (`Database.write`): concurrent calls share one transaction, so the accept rate is
not bounded by one fsync per event.
"""

from __future__ import annotations

import msgspec

from faas.store.db import Database


class AsyncEvent(msgspec.Struct):
    seq: int
    request_id: str
    function_name: str
    qualifier: str | None
    payload: bytes
    enqueued_at: float
    due_at: float
    attempts: int


class EventInvokeConfig(msgspec.Struct):
    function_name: str
    qualifier: str
    max_retries: int | None = None
    max_age: int | None = None
    on_success: str | None = None
    on_failure: str | None = None
    last_modified: float = 0.0


_EVENT_COLUMNS = "seq, request_id, function_name, qualifier, payload, enqueued_at, due_at, attempts"
_CONFIG_COLUMNS = "function_name, qualifier, max_retries, max_age, on_success, on_failure, last_modified"


def _event(row) -> AsyncEvent:
    return AsyncEvent(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])


def _config(row) -> EventInvokeConfig:
    return EventInvokeConfig(*tuple(row))


class AsyncEvents:
    def __init__(self, db: Database):
        self.db = db

    async def add(self, request_id: str, function_name: str, qualifier: str | None, payload: bytes,
                  now: float) -> None:
        """Commit one event (group-committed with concurrent writes); returns once it is durable."""
        await self.db.write((
            "INSERT INTO async_events(request_id, function_name, qualifier, payload, enqueued_at, due_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (request_id, function_name, qualifier, payload, now, now),
        ))

    async def recover(self) -> int:
        """Events that were running when the server stopped are due again (at-least-once)."""
        async with self.db.transaction() as conn:
            cur = await conn.execute("UPDATE async_events SET running = 0 WHERE running = 1")
            return cur.rowcount

    async def claim_due(self, now: float, limit: int, skip_functions: set[str]) -> list[AsyncEvent]:
        """Mark up to `limit` due events as running and return them, oldest due first, leaving out
        functions that have no room for more in-flight events."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM async_events WHERE running = 0 AND due_at <= ?"
                " ORDER BY due_at, seq LIMIT ?",
                (now, limit * 4),
            ) as cur:
                rows = [_event(r) for r in await cur.fetchall()]
            chosen = [e for e in rows if e.function_name not in skip_functions][:limit]
            if chosen:
                await conn.executemany(
                    "UPDATE async_events SET running = 1 WHERE seq = ?", [(e.seq,) for e in chosen]
                )
        return chosen

    async def next_due(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(due_at) FROM async_events WHERE running = 0")
        return row[0] if row and row[0] is not None else None

    async def reschedule(self, seq: int, due_at: float, attempts: int) -> None:
        await self.db.write(
            ("UPDATE async_events SET running = 0, due_at = ?, attempts = ? WHERE seq = ?", (due_at, attempts, seq))
        )

    async def finish(self, seq: int, dropped: tuple[str, str] | None = None) -> None:
        """Remove a handled event; `dropped` = (function, reason) counts an event given up on."""
        statements: list[tuple[str, tuple]] = [("DELETE FROM async_events WHERE seq = ?", (seq,))]
        if dropped is not None:
            statements.append((
                "INSERT INTO async_dropped(function_name, reason, count) VALUES (?, ?, 1)"
                " ON CONFLICT(function_name, reason) DO UPDATE SET count = count + 1",
                dropped,
            ))
        await self.db.write(*statements)

    async def depth(self) -> list[dict]:
        rows = await self.db.fetchall(
            "SELECT function_name, COUNT(*) AS queued, MIN(enqueued_at) AS oldest FROM async_events"
            " GROUP BY function_name ORDER BY function_name"
        )
        return [{"function": r[0], "queued": r[1], "oldest_enqueued_at": r[2]} for r in rows]

    async def dropped(self) -> list[dict]:
        rows = await self.db.fetchall("SELECT function_name, reason, count FROM async_dropped ORDER BY 1, 2")
        return [{"function": r[0], "reason": r[1], "count": r[2]} for r in rows]

    # -- event invoke configs -------------------------------------------------------------------------

    async def get_config(self, function_name: str, qualifier: str) -> EventInvokeConfig | None:
        row = await self.db.fetchone(
            f"SELECT {_CONFIG_COLUMNS} FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?",
            (function_name, qualifier),
        )
        return _config(row) if row else None

    async def list_configs(self, function_name: str) -> list[EventInvokeConfig]:
        rows = await self.db.fetchall(
            f"SELECT {_CONFIG_COLUMNS} FROM event_invoke_configs WHERE function_name = ? ORDER BY qualifier",
            (function_name,),
        )
        return [_config(r) for r in rows]

    async def put_config(self, config: EventInvokeConfig) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT OR REPLACE INTO event_invoke_configs({_CONFIG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                tuple(msgspec.structs.astuple(config)),
            )

    async def delete_config(self, function_name: str, qualifier: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?", (function_name, qualifier)
            )
            return cur.rowcount > 0
