"""Provisioned concurrency settings and reserved concurrency, in SQLite."""

from __future__ import annotations

import msgspec

from faas.store.db import Database


class ProvisionedSetting(msgspec.Struct):
    function_name: str
    qualifier: str
    requested: int
    last_modified: str


class ConcurrencySettings:
    def __init__(self, db: Database):
        self.db = db

    async def reserved(self) -> dict[str, int]:
        rows = await self.db.fetchall(
            "SELECT name, reserved_concurrency FROM functions WHERE reserved_concurrency IS NOT NULL"
        )
        return {r["name"]: int(r["reserved_concurrency"]) for r in rows}

    async def set_reserved(self, name: str, value: int | None) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute("UPDATE functions SET reserved_concurrency = ? WHERE name = ?", (value, name))
            return cur.rowcount > 0

    async def put_provisioned(self, setting: ProvisionedSetting) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO provisioned_concurrency(function_name, qualifier, requested, last_modified)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(function_name, qualifier)"
                " DO UPDATE SET requested = excluded.requested, last_modified = excluded.last_modified",
                (setting.function_name, setting.qualifier, setting.requested, setting.last_modified),
            )

    async def provisioned(self, name: str | None = None) -> list[ProvisionedSetting]:
        sql = "SELECT function_name, qualifier, requested, last_modified FROM provisioned_concurrency"
        rows = await (self.db.fetchall(sql + " WHERE function_name = ? ORDER BY qualifier", (name,)) if name
                      else self.db.fetchall(sql + " ORDER BY function_name, qualifier"))
        return [ProvisionedSetting(r["function_name"], r["qualifier"], int(r["requested"]), r["last_modified"])
                for r in rows]

    async def delete_provisioned(self, name: str, qualifier: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM provisioned_concurrency WHERE function_name = ? AND qualifier = ?", (name, qualifier)
            )
            return cur.rowcount > 0
