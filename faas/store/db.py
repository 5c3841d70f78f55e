"""The SQLite database: one aiosqlite connection (one writer thread), WAL, numbered migrations."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

_MIGRATION_NAME = re.compile(r"(\d+)_([\w-]+)\.sql")


def migrations_dir() -> Path:
    """`migrations/` inside the installed package, or beside the package in a source checkout."""
    packaged = Path(str(resources.files("faas"))) / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def _migration_files(folder: Path) -> list[tuple[int, str, Path]]:
    found = []
    for path in folder.iterdir():
        m = _MIGRATION_NAME.fullmatch(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {folder}")
    return found


class Database:
    """One SQLite file. Writes go through `transaction()`, serialised by a lock, so a transaction is
    never interleaved with another coroutine's statements on the shared connection."""

    def __init__(self, path: Path, *, synchronous: str = "FULL"):
        self.path = path
        self._synchronous = synchronous
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._batch: list[tuple[list[tuple[str, tuple[Any, ...]]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self, migrations: Path | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self._synchronous}")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
            await self._migrate(migrations or migrations_dir())
        except BaseException:
            self._conn = None
            await conn.close()
            raise

    async def _migrate(self, folder: Path) -> None:
        await self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with self.conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {r["version"] for r in await cur.fetchall()}
        for version, name, path in _migration_files(folder):
            if version in applied:
                continue
            script = path.read_text()
            stamp = datetime.now(timezone.utc).isoformat()
            # One script, one transaction: a crash mid-migration leaves the previous schema intact.
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n;"
                f"INSERT INTO schema_migrations(version, name, applied_at) VALUES ({version}, '{name}', '{stamp}');"
                "\nCOMMIT;"
            )

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"] or 0) if row else 0

    async def close(self) -> None:
        if self._conn is None:
            return
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._flusher), 10)
        conn, self._conn = self._conn, None
        async with self._lock:
            with contextlib.suppress(Exception):
                await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await conn.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            conn = self.conn
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            else:
                await asyncio.shield(conn.execute("COMMIT"))

    async def write(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run statements in a transaction shared with other concurrent `write()` calls (group commit): many
        small writes cost one commit, not one each. Returns once they are durable; each call's statements
        apply together or not at all, but a failing call fails the whole batch it shared."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((list(statements), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, []
            try:
                async with self.transaction() as conn:
                    for statements, _ in batch:
                        for sql, params in statements:
                            await conn.execute(sql, params)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    # Reads outside a transaction take the lock too: on the shared connection they would otherwise see
    # another coroutine's uncommitted writes. Inside `transaction()`, read through the yielded connection.
    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())
