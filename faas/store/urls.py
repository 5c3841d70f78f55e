"""Function URL configurations in SQLite, with a cache for the request path keyed by URL id."""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import msgspec

from faas.errors import ResourceConflictException
from faas.store.db import Database

_ID_ALPHABET = string.ascii_lowercase + string.digits
_COLUMNS = "url_id, function_name, qualifier, auth_type, cors, invoke_mode, created_at, last_modified"
_SELECT_WITH_LATEST = (
    "SELECT u.url_id, u.function_name, u.qualifier, u.auth_type, u.cors, u.invoke_mode, u.created_at,"
    " u.last_modified, v.revision_id FROM function_urls u"
    " JOIN versions v ON v.function_name = u.function_name AND v.version = '$LATEST' WHERE u.url_id = ?"
)
_cors_decoder = msgspec.json.Decoder(dict[str, Any])


class UrlConfig(msgspec.Struct):
    url_id: str  # 32 lowercase letters and digits, the first label of the URL's host name
    function_name: str
    qualifier: str | None  # None: the function's own URL ($LATEST); else an alias name
    auth_type: str
    cors: dict[str, Any] | None = None  # the Cors member as sent (AllowOrigins, ...)
    invoke_mode: str | None = None  # None: never set explicitly, which reads as BUFFERED
    created_at: str = ""
    last_modified: str = ""


def new_url_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(32))


def url_timestamp() -> str:
    """CreationTime / LastModifiedTime as AWS writes them: 2024-01-01T12:00:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_row(row) -> UrlConfig:
    return UrlConfig(
        url_id=row["url_id"], function_name=row["function_name"], qualifier=row["qualifier"] or None,
        auth_type=row["auth_type"], cors=_cors_decoder.decode(row["cors"]) if row["cors"] else None,
        invoke_mode=row["invoke_mode"], created_at=row["created_at"], last_modified=row["last_modified"],
    )


def _params(c: UrlConfig) -> tuple:
    cors = msgspec.json.encode(c.cors).decode() if c.cors is not None else None
    return (c.url_id, c.function_name, c.qualifier or "", c.auth_type, cors, c.invoke_mode, c.created_at,
            c.last_modified)


class FunctionUrls:
    """URL configs. `lookup` serves the request path from memory; every other method reads SQLite."""

    def __init__(self, db: Database):
        self.db = db
        # url id -> (config, revision id of the function's $LATEST when the row was read). Deleting a function
        # deletes its URLs in SQL (ON DELETE CASCADE) and changes, or removes, its $LATEST; a mismatch with
        # the registry's $LATEST therefore sends the lookup back to SQLite, so no cached URL outlives its
        # function, even one deleted and created again under the same name.
        self._by_id: dict[str, tuple[UrlConfig, str]] = {}

    def _forget(self, url_id: str) -> None:
        self._by_id.pop(url_id, None)

    async def lookup(self, url_id: str, latest_revision: Callable[[str], Awaitable[str | None]]) -> UrlConfig | None:
        """The config of a URL id, or None. `latest_revision(function_name)` is awaited for the revision id
        of the function's $LATEST as the registry knows it now (None when the function is gone)."""
        hit = self._by_id.get(url_id)
        if hit is not None and await latest_revision(hit[0].function_name) == hit[1]:
            return hit[0]
        row = await self.db.fetchone(_SELECT_WITH_LATEST, (url_id,))
        if row is None:
            self._forget(url_id)
            return None
        config = _from_row(row)
        self._by_id[url_id] = (config, row["revision_id"])
        return config

    async def create(self, config: UrlConfig, conflict_message: str) -> UrlConfig:
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT 1 FROM function_urls WHERE function_name = ? AND qualifier = ?",
                (config.function_name, config.qualifier or ""),
            ) as cur:
                if await cur.fetchone():
                    raise ResourceConflictException(conflict_message)
            await conn.execute(f"INSERT INTO function_urls({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               _params(config))
        return config

    async def get(self, function_name: str, qualifier: str | None) -> UrlConfig | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM function_urls WHERE function_name = ? AND qualifier = ?",
            (function_name, qualifier or ""),
        )
        return _from_row(row) if row else None

    async def list(self, function_name: str, after: str | None, limit: int) -> list[UrlConfig]:
        """A function's URLs ordered by qualifier (its own URL first), starting after the marker qualifier."""
        sql = f"SELECT {_COLUMNS} FROM function_urls WHERE function_name = ?"
        params: list[Any] = [function_name]
        if after is not None:
            sql += " AND qualifier > ?"
            params.append(after)
        rows = await self.db.fetchall(sql + " ORDER BY qualifier LIMIT ?", (*params, limit))
        return [_from_row(r) for r in rows]

    async def update(self, function_name: str, qualifier: str | None,
                     change: Callable[[UrlConfig], UrlConfig]) -> UrlConfig | None:
        """Apply `change` inside one transaction; None when there is no such URL."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                f"SELECT {_COLUMNS} FROM function_urls WHERE function_name = ? AND qualifier = ?",
                (function_name, qualifier or ""),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            updated = msgspec.structs.replace(change(_from_row(row)), last_modified=url_timestamp())
            p = _params(updated)
            await conn.execute(
                "UPDATE function_urls SET auth_type = ?, cors = ?, invoke_mode = ?, last_modified = ?"
                " WHERE url_id = ?",
                (p[3], p[4], p[5], p[7], updated.url_id),
            )
        self._forget(updated.url_id)
        return updated

    async def delete(self, function_name: str, qualifier: str | None) -> bool:
        async with self.db.transaction() as conn:
            async with conn.execute(
                "DELETE FROM function_urls WHERE function_name = ? AND qualifier = ? RETURNING url_id",
                (function_name, qualifier or ""),
            ) as cur:
                rows = await cur.fetchall()
        for row in rows:
            self._forget(row[0])
        return bool(rows)
