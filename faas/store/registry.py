"""The function registry: functions and their versions in SQLite, with a read-through cache.

This process is the only writer of the database, so the cache is invalidated on every write it makes and
never goes stale; the invoke path reads versions from memory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import msgspec

from faas.arn import LATEST
from faas.errors import (
    REVISION_MISMATCH,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
)
from faas.store.code import CodePackage
from faas.store.db import Database
from faas.store.layers import package_in_use
from faas.store.aliases import Aliases
from faas.store.records import FunctionConfig, FunctionRecord, FunctionVersion, aws_timestamp, new_revision

_config_encoder = msgspec.json.Encoder()
_config_decoder = msgspec.json.Decoder(FunctionConfig)
_tags_decoder = msgspec.json.Decoder(dict[str, str])

_VERSION_COLUMNS = (
    "function_name, version, config, code_sha256, revision_id, last_modified,"
    " state, state_reason, state_reason_code, last_update"
)


_SELECT_VERSION = (
    f"SELECT {_VERSION_COLUMNS}, p.size AS code_size FROM versions"
    " JOIN code_packages p ON p.sha256 = versions.code_sha256"
)
# $LATEST first, then published versions in numeric order.
_VERSION_ORDER = "CASE WHEN version = '$LATEST' THEN -1 ELSE CAST(version AS INTEGER) END"


def _version_from_row(row, code_size: int) -> FunctionVersion:
    return FunctionVersion(
        function_name=row["function_name"],
        version=row["version"],
        config=_config_decoder.decode(row["config"]),
        code_sha256=row["code_sha256"],
        code_size=code_size,
        revision_id=row["revision_id"],
        last_modified=row["last_modified"],
        state=row["state"],
        state_reason=row["state_reason"],
        state_reason_code=row["state_reason_code"],
        last_update=row["last_update"],
    )


def _same_config(a: FunctionVersion, b: FunctionVersion) -> bool:
    """Equal apart from the description, which PublishVersion may override."""
    return msgspec.structs.replace(a.config, description="") == msgspec.structs.replace(b.config, description="")


def _version_params(v: FunctionVersion) -> tuple:
    return (
        v.function_name,
        v.version,
        _config_encoder.encode(v.config).decode(),
        v.code_sha256,
        v.revision_id,
        v.last_modified,
        v.state,
        v.state_reason,
        v.state_reason_code,
        v.last_update,
    )


class Registry:
    """Functions and versions. Methods raise `faas.errors` exceptions for conflicts AWS reports."""

    def __init__(self, db: Database):
        self.db = db
        self.aliases = Aliases(db)
        self._versions: dict[tuple[str, str], FunctionVersion | None] = {}

    def _forget(self, name: str) -> None:
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]
        self.aliases.forget(name)

    async def _ensure_package(self, conn, pkg: CodePackage) -> None:
        await conn.execute(
            "INSERT OR IGNORE INTO code_packages(sha256, size, unzipped_size, created_at) VALUES (?, ?, ?, ?)",
            (pkg.sha256, pkg.size, pkg.unzipped_size, datetime.now(timezone.utc).isoformat()),
        )

    async def create_function(
        self, name: str, config: FunctionConfig, pkg: CodePackage, tags: dict[str, str], state: str,
        state_reason: str | None = None, state_reason_code: str | None = None,
    ) -> FunctionVersion:
        latest = FunctionVersion(
            function_name=name, version=LATEST, config=config, code_sha256=pkg.sha256, code_size=pkg.size,
            revision_id=new_revision(), last_modified=aws_timestamp(), state=state,
            state_reason=state_reason, state_reason_code=state_reason_code,
        )
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM functions WHERE name = ?", (name,)) as cur:
                if await cur.fetchone():
                    raise ResourceConflictException(f"Function already exist: {name}")
            await self._ensure_package(conn, pkg)
            await conn.execute(
                "INSERT INTO functions(name, created_at, tags) VALUES (?, ?, ?)",
                (name, latest.last_modified, msgspec.json.encode(tags).decode()),
            )
            await conn.execute(
                f"INSERT INTO versions({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _version_params(latest),
            )
        self._forget(name)
        return latest

    def cached_version(self, name: str, version: str) -> FunctionVersion | None:
        """The version if it is cached (the warm path's lookup, nothing awaited); None: ask `get_version`."""
        return self._versions.get((name, version))

    async def get_version(self, name: str, version: str = LATEST) -> FunctionVersion | None:
        key = (name, version)
        if key in self._versions:
            return self._versions[key]
        row = await self.db.fetchone(f"{_SELECT_VERSION} WHERE function_name = ? AND version = ?", (name, version))
        found = _version_from_row(row, row["code_size"]) if row else None
        self._versions[key] = found
        return found

    async def get_function(self, name: str) -> FunctionRecord | None:
        row = await self.db.fetchone(
            "SELECT name, created_at, tags, reserved_concurrency FROM functions WHERE name = ?", (name,)
        )
        if row is None:
            return None
        return FunctionRecord(
            name=row["name"], created_at=row["created_at"], tags=_tags_decoder.decode(row["tags"]),
            reserved_concurrency=row["reserved_concurrency"],
        )

    async def list_latest(self, after: str | None, limit: int) -> list[FunctionVersion]:
        """`$LATEST` of each function, ordered by name, starting after the marker name."""
        rows = await self.db.fetchall(
            f"{_SELECT_VERSION} WHERE version = ? AND function_name > ? ORDER BY function_name LIMIT ?",
            (LATEST, after or "", limit),
        )
        return [_version_from_row(r, r["code_size"]) for r in rows]

    async def update_latest(
        self, name: str, change: Callable[[FunctionVersion], FunctionVersion], pkg: CodePackage | None = None
    ) -> tuple[FunctionVersion, FunctionVersion] | None:
        """Apply `change` to `$LATEST` inside one transaction. Returns (before, after), or None when the
        function does not exist. `change` may raise to abort (e.g. a RevisionId precondition)."""
        async with self.db.transaction() as conn:
            async with conn.execute(f"{_SELECT_VERSION} WHERE function_name = ? AND version = ?", (name, LATEST)) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            before = _version_from_row(row, row["code_size"])
            after = change(before)
            after = msgspec.structs.replace(after, revision_id=new_revision(), last_modified=aws_timestamp())
            if pkg is not None:
                await self._ensure_package(conn, pkg)
            await conn.execute(
                "UPDATE versions SET config = ?, code_sha256 = ?, revision_id = ?, last_modified = ?,"
                " state = ?, state_reason = ?, state_reason_code = ?, last_update = ?"
                " WHERE function_name = ? AND version = ?",
                _version_params(after)[2:] + (name, LATEST),
            )
        self._forget(name)
        return before, after

    async def list_all_versions(self, after: tuple[str, int] | None, limit: int) -> list[FunctionVersion]:
        """Every version of every function, by name then version, starting after (name, version order)."""
        name, order = after or ("", -2)
        rows = await self.db.fetchall(
            f"{_SELECT_VERSION} WHERE (function_name, {_VERSION_ORDER}) > (?, ?)"
            f" ORDER BY function_name, {_VERSION_ORDER} LIMIT ?",
            (name, order, limit),
        )
        return [_version_from_row(r, r["code_size"]) for r in rows]

    async def list_versions(self, name: str, after: int | None, limit: int) -> list[FunctionVersion]:
        """One function's versions, $LATEST first, starting after a version order (-1 is $LATEST)."""
        rows = await self.db.fetchall(
            f"{_SELECT_VERSION} WHERE function_name = ? AND {_VERSION_ORDER} > ?"
            f" ORDER BY {_VERSION_ORDER} LIMIT ?",
            (name, -2 if after is None else after, limit),
        )
        return [_version_from_row(r, r["code_size"]) for r in rows]

    async def publish_version(
        self, name: str, *, description: str | None, code_sha256_b64: str | None, revision_id: str | None,
    ) -> FunctionVersion | None:
        """Snapshot $LATEST as the next version number, or return the newest version when nothing changed
        since it was published. None when the function does not exist."""
        async with self.db.transaction() as conn:
            async with conn.execute(f"{_SELECT_VERSION} WHERE function_name = ? AND version = ?", (name, LATEST)) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            latest = _version_from_row(row, row["code_size"])
            if revision_id is not None and revision_id != latest.revision_id:
                raise PreconditionFailedException(REVISION_MISMATCH)
            if code_sha256_b64 is not None and code_sha256_b64 != latest.code_sha256_b64:
                raise InvalidParameterValueException(
                    f"CodeSHA256 ({code_sha256_b64}) is different from current CodeSHA256 in $LATEST "
                    f"({latest.code_sha256_b64}). Please try again with the CodeSHA256 in $LATEST."
                )
            async with conn.execute(
                f"{_SELECT_VERSION} WHERE function_name = ? AND version != ? ORDER BY {_VERSION_ORDER} DESC LIMIT 1",
                (name, LATEST),
            ) as cur:
                row = await cur.fetchone()
            newest = _version_from_row(row, row["code_size"]) if row else None
            if newest is not None and newest.code_sha256 == latest.code_sha256 and _same_config(newest, latest):
                return newest
            async with conn.execute("SELECT next_version FROM functions WHERE name = ?", (name,)) as cur:
                number = (await cur.fetchone())[0]
            await conn.execute("UPDATE functions SET next_version = ? WHERE name = ?", (number + 1, name))
            config = latest.config
            if description is not None:
                config = msgspec.structs.replace(config, description=description)
            published = msgspec.structs.replace(
                latest, version=str(number), config=config, revision_id=new_revision(),
                last_modified=aws_timestamp(), state="Active", state_reason=None, state_reason_code=None,
                last_update="Successful",
            )
            await conn.execute(
                f"INSERT INTO versions({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _version_params(published),
            )
        self._forget(name)
        return published

    async def delete_version(self, name: str, version: str) -> list[str] | None:
        """Delete one published version. Returns code digests no longer used, or None when the version does
        not exist. Raises ResourceConflictException while an alias points at it."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT code_sha256 FROM versions WHERE function_name = ? AND version = ?", (name, version)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            async with conn.execute(
                "SELECT name FROM aliases WHERE function_name = ? AND (function_version = ?"
                " OR EXISTS (SELECT 1 FROM json_each(aliases.routing) WHERE key = ?)) ORDER BY name",
                (name, version, version),
            ) as cur:
                users = [r[0] for r in await cur.fetchall()]
            if users:
                raise ResourceConflictException(
                    f"Unable to delete version because the following aliases reference it: [{', '.join(users)}]"
                )
            await conn.execute("DELETE FROM versions WHERE function_name = ? AND version = ?", (name, version))
            unused = await self._drop_unused_packages(conn, [row[0]])
        self._forget(name)
        return unused

    async def set_tags(self, name: str, add: dict[str, str], remove: list[str]) -> bool:
        """Merge `add` into a function's tags and drop `remove`. False when there is no such function."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT tags FROM functions WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return False
            tags = _tags_decoder.decode(row[0])
            tags.update(add)
            for key in remove:
                tags.pop(key, None)
            await conn.execute(
                "UPDATE functions SET tags = ? WHERE name = ?", (msgspec.json.encode(tags).decode(), name)
            )
        return True

    async def set_state(
        self, name: str, version: str, *, state: str | None = None, last_update: str | None = None,
        reason: str | None = None, reason_code: str | None = None,
    ) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE versions SET state = COALESCE(?, state), last_update = COALESCE(?, last_update),"
                " state_reason = ?, state_reason_code = ? WHERE function_name = ? AND version = ?",
                (state, last_update, reason, reason_code, name, version),
            )
        self._forget(name)

    async def delete_function(self, name: str) -> list[str] | None:
        """Delete a function and all its versions. Returns code digests no longer used by any version,
        or None when there was no such function."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT DISTINCT code_sha256 FROM versions WHERE function_name = ?", (name,)
            ) as cur:
                digests = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute("DELETE FROM functions WHERE name = ?", (name,))
            if cur.rowcount == 0:
                return None
            unused = await self._drop_unused_packages(conn, digests)
        self._forget(name)
        return unused

    async def _drop_unused_packages(self, conn, digests: list[str]) -> list[str]:
        unused = []
        for digest in digests:
            if await package_in_use(conn, digest):
                continue
            await conn.execute("DELETE FROM code_packages WHERE sha256 = ?", (digest,))
            unused.append(digest)
        return unused

    async def unused_packages_after(self, digest: str) -> list[str]:
        async with self.db.transaction() as conn:
            return await self._drop_unused_packages(conn, [digest])

    async def layer_lists(self) -> list[list[str]]:
        """The code digests of the layers of every function version that has some, in each one's order."""
        rows = await self.db.fetchall(
            "SELECT DISTINCT json_extract(config, '$.Layers') AS layers FROM versions"
            " WHERE json_array_length(config, '$.Layers') > 0"
        )
        return [[ref["sha256"] for ref in msgspec.json.decode(row["layers"])] for row in rows]

    async def usage(self) -> tuple[int, int]:
        """(number of functions, total code size of all versions) for GetAccountSettings."""
        row = await self.db.fetchone(
            "SELECT (SELECT COUNT(*) FROM functions) AS n,"
            " (SELECT COALESCE(SUM(p.size), 0) FROM versions v JOIN code_packages p ON p.sha256 = v.code_sha256)"
            " AS total"
        )
        assert row is not None
        return int(row["n"]), int(row["total"])

    async def reserved_total(self) -> int:
        row = await self.db.fetchone("SELECT COALESCE(SUM(reserved_concurrency), 0) AS s FROM functions")
        return int(row["s"]) if row else 0
