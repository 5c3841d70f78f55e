"""Aliases in SQLite, with a read-through cache for the invoke path (this process is the only writer)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from faas.errors import ResourceConflictException
from faas.store.db import Database
from faas.store.records import new_revision

_routing_decoder = msgspec.json.Decoder(dict[str, float])
_COLUMNS = "function_name, name, function_version, description, routing, revision_id"


class Alias(msgspec.Struct):
    function_name: str
    name: str
    function_version: str
    description: str = ""
    # At most one extra version and the share of traffic it gets (0.0-1.0).
    routing: dict[str, float] = msgspec.field(default_factory=dict)
    revision_id: str = ""


def _from_row(row) -> Alias:
    return Alias(
        function_name=row["function_name"], name=row["name"], function_version=row["function_version"],
        description=row["description"], routing=_routing_decoder.decode(row["routing"]),
        revision_id=row["revision_id"],
    )


def _params(a: Alias) -> tuple:
    return (a.function_name, a.name, a.function_version, a.description,
            msgspec.json.encode(a.routing).decode(), a.revision_id)


class Aliases:
    def __init__(self, db: Database):
        self.db = db
        self._cache: dict[tuple[str, str], Alias | None] = {}

    def forget(self, function_name: str) -> None:
        for key in [k for k in self._cache if k[0] == function_name]:
            del self._cache[key]

    async def create(self, alias: Alias, conflict_message: str) -> Alias:
        alias = msgspec.structs.replace(alias, revision_id=new_revision())
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT 1 FROM aliases WHERE function_name = ? AND name = ?", (alias.function_name, alias.name)
            ) as cur:
                if await cur.fetchone():
                    raise ResourceConflictException(conflict_message)
            await conn.execute(f"INSERT INTO aliases({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", _params(alias))
        self.forget(alias.function_name)
        return alias

    async def get(self, function_name: str, name: str) -> Alias | None:
        key = (function_name, name)
        if key not in self._cache:
            row = await self.db.fetchone(
                f"SELECT {_COLUMNS} FROM aliases WHERE function_name = ? AND name = ?", key
            )
            self._cache[key] = _from_row(row) if row else None
        return self._cache[key]

    async def list(self, function_name: str, version: str | None, after: str | None, limit: int) -> list[Alias]:
        sql = f"SELECT {_COLUMNS} FROM aliases WHERE function_name = ? AND name > ?"
        params: list = [function_name, after or ""]
        if version is not None:
            sql += " AND (function_version = ? OR EXISTS (SELECT 1 FROM json_each(aliases.routing) WHERE key = ?))"
            params += [version, version]
        rows = await self.db.fetchall(sql + " ORDER BY name LIMIT ?", (*params, limit))
        return [_from_row(r) for r in rows]

    async def update(self, function_name: str, name: str, change: Callable[[Alias], Alias]) -> Alias | None:
        """Apply `change` inside one transaction; None when the alias does not exist."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                f"SELECT {_COLUMNS} FROM aliases WHERE function_name = ? AND name = ?", (function_name, name)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            updated = msgspec.structs.replace(change(_from_row(row)), revision_id=new_revision())
            await conn.execute(
                "UPDATE aliases SET function_version = ?, description = ?, routing = ?, revision_id = ?"
                " WHERE function_name = ? AND name = ?",
                (*_params(updated)[2:], function_name, name),
            )
        self.forget(function_name)
        return updated

    async def delete(self, function_name: str, name: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM aliases WHERE function_name = ? AND name = ?", (function_name, name))
        self.forget(function_name)
