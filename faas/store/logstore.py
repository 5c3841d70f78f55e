"""Invocation logs in their own SQLite file (`<data_dir>/logs.db`), apart from the registry, so that
writing logs never waits on, or holds up, the registry's writer.

`record()` is called on the invocation path and only appends to an in-memory buffer. One thread owns the
database: it takes the buffer every `flush_interval` (or sooner when `flush_records` are waiting), splits each
invocation's text into events and inserts them in one transaction. Reads run on the same thread after a
flush, so a query sees every log recorded before it was made. A periodic pass deletes events older than their
group's retention, then the oldest events while the file holds more than `max_bytes`.

Logs are buffered by design: a crash may lose the last `flush_interval` of them (the invocation results are
not affected). When the writer falls behind by `max_pending_bytes`, new logs are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

log = logging.getLogger(__name__)
T = TypeVar("T")

# CloudWatch counts 26 bytes of overhead per event on top of its UTF-8 message.
EVENT_OVERHEAD = 26
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_groups (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, retention_days INTEGER);
CREATE TABLE IF NOT EXISTS log_streams (
    id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, name TEXT NOT NULL, created_ms INTEGER NOT NULL,
    first_event_ms INTEGER, last_event_ms INTEGER, last_ingestion_ms INTEGER,
    stored_bytes INTEGER NOT NULL DEFAULT 0, UNIQUE (group_id, name));
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, stream_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    ingested INTEGER NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_events_stream ON log_events (stream_id);
CREATE INDEX IF NOT EXISTS log_events_group_ts ON log_events (group_id, ts);
"""
_SIZE = f"length(CAST(message AS BLOB)) + {EVENT_OVERHEAD}"
_DELETE_CHUNK = 20000
_FILTER_CHUNK = 1000
_FILTER_SCAN = 200_000  # rows one FilterLogEvents call examines before it answers with a nextToken
_RESPONSE_BYTES = 1_048_576


class LogSettings(msgspec.Struct, frozen=True):
    retention_days: int = 0  # for groups without a retention policy; 0: kept until the size cap
    max_bytes: int = 1 << 30  # all events together, as CloudWatch counts them; 0: no cap
    flush_interval: float = 0.1
    flush_records: int = 256  # invocation logs waiting that trigger a flush before the interval
    max_pending_bytes: int = 64 << 20
    maintenance_interval: float = 60.0
    day_seconds: float = 86400.0  # the length of a retention day; tests shorten it


class LogGroupInfo(msgspec.Struct, frozen=True):
    name: str
    created_ms: int
    retention_days: int | None
    stored_bytes: int


class LogStreamInfo(msgspec.Struct, frozen=True):
    id: int
    name: str
    created_ms: int
    first_event_ms: int | None
    last_event_ms: int | None
    last_ingestion_ms: int | None
    stored_bytes: int


class LogEvent(msgspec.Struct, frozen=True):
    id: int
    stream: str
    ts: int
    ingested: int
    message: str


class EventPage(msgspec.Struct, frozen=True):
    events: list[LogEvent]
    forward: str  # GetLogEvents: "f/<id>", "b/<id>"
    backward: str


class FilterPage(msgspec.Struct, frozen=True):
    events: list[LogEvent]
    streams: list[str]
    cursor: tuple[int, int] | None  # (ts, id) of the last row examined, when there may be more


class NotFound(Exception):
    """The named log group (`what == "group"`) or log stream does not exist."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class Matcher(msgspec.Struct, frozen=True):
    """A compiled filter: `accepts(message)`; what SQL can test first: substrings every accepted message
    contains, and whether only JSON objects can match."""

    accepts: Callable[[str], bool] | None = None
    required: tuple[str, ...] = ()
    json: bool = False


# -- splitting one invocation's text into events -----------------------------------------------------

_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(: .*)?")
# Lambda's error block ("[ERROR] Type: message") and its Python log records ("[LEVEL]\ttime\trequest id\t...").
_RECORD_START = re.compile(r"\[(?:ERROR|WARNING|WARN|INFO|DEBUG|CRITICAL|FATAL|TRACE)\][ \t]")
MAX_EVENT_CHARS = 256 * 1024 - EVENT_OVERHEAD  # CloudWatch's event size; longer lines become several events
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = (_TRACEBACK, "During handling of the above exception, another exception occurred:",
            "The above exception was the direct cause of the following exception:")


def split_events(text: bytes) -> list[str]:
    """One event per line, as Lambda sends lines to CloudWatch, each keeping its newline; a `\\r` inside a
    line is a newline within one record. A Python traceback stays one event, with the log record or Lambda
    `[ERROR]` line it follows: its frames (indented), its exception line and any chained tracebacks."""
    lines = text.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    events: list[str] = []
    trace = chain = False  # in a traceback; just after one (a chained one may follow)
    for n, raw in enumerate(lines):
        line = raw.removesuffix("\r").replace("\r", "\n")
        if len(line) > MAX_EVENT_CHARS:
            events.extend(line[k:k + MAX_EVENT_CHARS] + "\n" for k in range(0, len(line), MAX_EVENT_CHARS))
            trace = chain = False
            continue
        if events and (
            (line == _TRACEBACK and (chain or _RECORD_START.match(events[-1])))
            or (trace and (line[:1] in (" ", "\t") or _EXCEPTION_LINE.fullmatch(line)))
            or (chain and (line in _CHAINED or (line == "" and n + 1 < len(lines) and lines[n + 1] in _CHAINED)))
        ):
            events[-1] += line + "\n"
        else:
            events.append(line + "\n")
            chain = False
        if line == _TRACEBACK:
            trace, chain = True, False
        elif trace and line[:1] not in (" ", "\t"):
            trace, chain = False, _EXCEPTION_LINE.fullmatch(line) is not None
    return events


# -- the store ----------------------------------------------------------------------------------------


class LogStore:
    """Log groups, streams and events in `path`. Call `open()`, then `start()` for the periodic pass."""

    def __init__(self, path: Path, settings: LogSettings | None = None):
        self.path = path
        self.settings = settings or LogSettings()
        self.dropped = 0  # invocation logs dropped because the writer was behind
        self.stored_bytes = 0  # as of the last write or pass
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None  # used on the executor's thread only
        self._groups: dict[str, int] = {}
        self._streams: dict[tuple[int, str], int] = {}
        self._pending: list[tuple[str, str, bytes, float]] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Future[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faas-logs")
        await self._run(self._open_db)

    def start(self) -> None:
        self._task = asyncio.create_task(self._maintain_forever(), name="faas-log-retention")

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (waiting up to `timeout`), then close the file. Idempotent."""
        if self._closed or self._executor is None:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(asyncio.shield(self.flush()), timeout)
        except Exception:
            log.warning("log store: buffered logs not written before shutdown", exc_info=True)
        executor, self._executor = self._executor, None
        await asyncio.get_running_loop().run_in_executor(executor, self._close_db)
        executor.shutdown(wait=False)

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < _SCHEMA_VERSION:
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA};PRAGMA user_version={_SCHEMA_VERSION};COMMIT;")
        self._conn = conn
        self.stored_bytes = conn.execute("SELECT COALESCE(SUM(stored_bytes), 0) FROM log_streams").fetchone()[0]

    def _close_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("log store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the database thread after everything recorded so far is written."""
        self._flush_now()
        return await self._run(fn, *args)

    # -- writing ----------------------------------------------------------------------------------

    def record(self, function_name: str, log_group: str, stream: str, text: bytes, when: float) -> None:
        """Queue one invocation's log text for `stream` of `log_group`, its events stamped `when` (epoch
        seconds). Never blocks; drops the text when the writer is `max_pending_bytes` behind."""
        if self._closed or not text:
            return
        if self._pending_bytes + len(text) > self.settings.max_pending_bytes:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("log writer behind: %d invocation log(s) dropped (latest of %s)", self.dropped,
                            function_name)
            return
        self._pending.append((log_group, stream, text, when))
        self._pending_bytes += len(text)
        if len(self._pending) >= self.settings.flush_records:
            self._flush_now()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.settings.flush_interval, self._flush_now)

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self._executor is None:
            return
        batch, self._pending = self._pending, []
        size = sum(len(t) for _, _, t, _ in batch)
        future = asyncio.wrap_future(self._executor.submit(self._write, batch))
        self._inflight.add(future)
        future.add_done_callback(lambda f: self._written(f, size))

    def _written(self, future: asyncio.Future[None], size: int) -> None:
        self._inflight.discard(future)
        self._pending_bytes -= size
        if not future.cancelled() and future.exception() is not None:
            log.error("writing invocation logs failed", exc_info=future.exception())
        cap = self.settings.max_bytes
        if cap and self.stored_bytes > cap * 1.25:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything recorded so far."""
        self._flush_now()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def _write(self, batch: list[tuple[str, str, bytes, float]]) -> None:
        now = int(time.time() * 1000)
        rows: list[tuple[int, int, int, int, str]] = []
        touched: dict[int, list[int]] = {}  # stream id -> [bytes, first ts, last ts]
        with self._transaction() as conn:
            for group, stream, text, when in batch:
                ts = int(when * 1000)
                gid = self._group_id(group, ts)
                sid = self._stream_id(gid, stream, ts)
                size = 0
                for message in split_events(text):
                    rows.append((gid, sid, ts, now, message))
                    size += len(message.encode()) + EVENT_OVERHEAD
                agg = touched.get(sid)
                if agg is None:
                    touched[sid] = [size, ts, ts]
                else:
                    agg[0] += size
                    agg[1] = min(agg[1], ts)
                    agg[2] = max(agg[2], ts)
            conn.executemany(
                "INSERT INTO log_events(group_id, stream_id, ts, ingested, message) VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany(
                "UPDATE log_streams SET stored_bytes = stored_bytes + ?,"
                " first_event_ms = MIN(COALESCE(first_event_ms, ?), ?),"
                " last_event_ms = MAX(COALESCE(last_event_ms, ?), ?), last_ingestion_ms = ? WHERE id = ?",
                [(b, first, first, last, last, now, sid) for sid, (b, first, last) in touched.items()],
            )
        self.stored_bytes += sum(agg[0] for agg in touched.values())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            self._groups.clear()
            self._streams.clear()
            raise
        conn.execute("COMMIT")

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("log store is not open")
        return self._conn

    def _group_id(self, name: str, now_ms: int) -> int:
        gid = self._groups.get(name)
        if gid is None:
            conn = self._db
            conn.execute("INSERT OR IGNORE INTO log_groups(name, created_ms) VALUES (?, ?)", (name, now_ms))
            gid = self._groups[name] = conn.execute("SELECT id FROM log_groups WHERE name = ?", (name,)).fetchone()[0]
        return gid

    def _stream_id(self, gid: int, name: str, now_ms: int) -> int:
        sid = self._streams.get((gid, name))
        if sid is None:
            conn = self._db
            conn.execute("INSERT OR IGNORE INTO log_streams(group_id, name, created_ms) VALUES (?, ?, ?)",
                         (gid, name, now_ms))
            sid = conn.execute("SELECT id FROM log_streams WHERE group_id = ? AND name = ?", (gid, name)).fetchone()[0]
            self._streams[(gid, name)] = sid
        return sid

    # -- retention and the size cap -----------------------------------------------------------------

    async def run_once(self, now: float | None = None) -> int:
        """One pass: drop events past their group's retention, then the oldest events over the size cap.
        Returns how many events were deleted."""
        return await self._read(self._maintain, time.time() if now is None else now)

    async def _maintain_forever(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.maintenance_interval)
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:  # the next pass tries again
                log.exception("log retention pass failed")

    def _maintain(self, now: float) -> int:
        deleted = self._expire(now)
        if self.settings.max_bytes and self.stored_bytes > self.settings.max_bytes:
            deleted += self._trim(self.stored_bytes - self.settings.max_bytes)
        return deleted

    def _expire(self, now: float) -> int:
        conn = self._db
        deleted = 0
        default = self.settings.retention_days
        for gid, days in conn.execute("SELECT id, retention_days FROM log_groups").fetchall():
            days = days or default
            if not days:
                continue
            cutoff = int((now - days * self.settings.day_seconds) * 1000)
            while True:
                rows = conn.execute(
                    f"SELECT id, stream_id, {_SIZE} FROM log_events WHERE group_id = ? AND ts < ? LIMIT ?",
                    (gid, cutoff, _DELETE_CHUNK)).fetchall()
                if not rows:
                    break
                deleted += self._delete(rows, "DELETE FROM log_events WHERE id = ?", [(r[0],) for r in rows])
        return deleted

    def _trim(self, excess: int) -> int:
        """Delete the oldest events (by arrival) until `excess` bytes are gone."""
        conn = self._db
        deleted = 0
        after = 0
        while excess > 0:
            rows = conn.execute(f"SELECT id, stream_id, {_SIZE} FROM log_events WHERE id > ? ORDER BY id LIMIT ?",
                                (after, _DELETE_CHUNK)).fetchall()
            if not rows:
                break
            take = []
            for row in rows:
                take.append(row)
                excess -= row[2]
                if excess <= 0:
                    break
            after = take[-1][0]
            deleted += self._delete(take, "DELETE FROM log_events WHERE id <= ?", [(after,)])
        return deleted

    def _delete(self, rows: list[tuple[int, int, int]], sql: str, params: list[tuple[int]]) -> int:
        freed: dict[int, int] = {}
        for _, sid, size in rows:
            freed[sid] = freed.get(sid, 0) + size
        with self._transaction() as conn:
            conn.executemany(sql, params)
            conn.executemany("UPDATE log_streams SET stored_bytes = stored_bytes - ? WHERE id = ?",
                             [(b, sid) for sid, b in freed.items()])
            # Streams left without events go too; a live instance's next log creates its stream again.
            emptied = [(sid,) for sid in freed
                       if conn.execute("SELECT 1 FROM log_events WHERE stream_id = ? LIMIT 1", (sid,)).fetchone()
                       is None]
            conn.executemany("DELETE FROM log_streams WHERE id = ?", emptied)
        if emptied:
            self._streams.clear()
        self.stored_bytes -= sum(freed.values())
        return len(rows)

    # -- groups -------------------------------------------------------------------------------------

    async def create_group(self, name: str, now: float | None = None) -> bool:
        """False when the group already exists."""
        return await self._read(self._create_group, name, int((now or time.time()) * 1000))

    def _create_group(self, name: str, now_ms: int) -> bool:
        cur = self._db.execute("INSERT OR IGNORE INTO log_groups(name, created_ms) VALUES (?, ?)", (name, now_ms))
        return cur.rowcount == 1

    async def delete_group(self, name: str) -> None:
        await self._read(self._delete_group, name)

    def _delete_group(self, name: str) -> None:
        gid = self._gid(name)
        with self._transaction() as conn:
            freed = conn.execute("SELECT COALESCE(SUM(stored_bytes), 0) FROM log_streams WHERE group_id = ?",
                                 (gid,)).fetchone()[0]
            conn.execute("DELETE FROM log_events WHERE group_id = ?", (gid,))
            conn.execute("DELETE FROM log_streams WHERE group_id = ?", (gid,))
            conn.execute("DELETE FROM log_groups WHERE id = ?", (gid,))
        self._groups.pop(name, None)
        self._streams.clear()
        self.stored_bytes -= freed

    async def set_retention(self, name: str, days: int | None) -> None:
        await self._read(self._set_retention, name, days)

    def _set_retention(self, name: str, days: int | None) -> None:
        self._db.execute("UPDATE log_groups SET retention_days = ? WHERE id = ?", (days, self._gid(name)))

    def _gid(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM log_groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("group")
        return row[0]

    async def groups(self, prefix: str | None, contains: str | None, after: str | None, limit: int,
                     names: list[str] | None = None) -> list[LogGroupInfo]:
        """Groups by name: those starting with `prefix`, or containing `contains` in any case, or named."""
        return await self._read(self._list_groups, prefix, contains, after, limit, names)

    def _list_groups(self, prefix: str | None, contains: str | None, after: str | None, limit: int,
                     names: list[str] | None) -> list[LogGroupInfo]:
        where, params = ["1"], []
        if prefix:
            where.append("substr(name, 1, ?) = ?")
            params += [len(prefix), prefix]
        if contains:
            where.append("instr(lower(name), lower(?)) > 0")
            params.append(contains)
        if names is not None:
            where.append(f"name IN ({','.join('?' * len(names))})")
            params += names
        if after is not None:
            where.append("name > ?")
            params.append(after)
        rows = self._db.execute(
            "SELECT name, created_ms, retention_days,"
            " (SELECT COALESCE(SUM(stored_bytes), 0) FROM log_streams WHERE group_id = g.id)"
            f" FROM log_groups g WHERE {' AND '.join(where)} ORDER BY name LIMIT ?", (*params, limit)).fetchall()
        return [LogGroupInfo(*r) for r in rows]

    # -- streams ------------------------------------------------------------------------------------

    async def streams(self, group: str, prefix: str | None, by_time: bool, descending: bool,
                      after: tuple[Any, int] | None, limit: int) -> list[LogStreamInfo]:
        """A group's streams by name, or by last event time; `after` is the (key, id) of the previous page's
        last stream."""
        return await self._read(self._list_streams, group, prefix, by_time, descending, after, limit)

    def _list_streams(self, group: str, prefix: str | None, by_time: bool, descending: bool,
                      after: tuple[Any, int] | None, limit: int) -> list[LogStreamInfo]:
        where, params = ["group_id = ?"], [self._gid(group)]
        if prefix:
            where.append("substr(name, 1, ?) = ?")
            params += [len(prefix), prefix]
        key = "COALESCE(last_event_ms, 0)" if by_time else "name"
        direction, cmp = ("DESC", "<") if descending else ("ASC", ">")
        if after is not None:
            where.append(f"({key}, id) {cmp} (?, ?)")
            params += list(after)
        rows = self._db.execute(
            "SELECT id, name, created_ms, first_event_ms, last_event_ms, last_ingestion_ms, stored_bytes"
            f" FROM log_streams WHERE {' AND '.join(where)} ORDER BY {key} {direction}, id {direction} LIMIT ?",
            (*params, limit)).fetchall()
        return [LogStreamInfo(*r) for r in rows]

    # -- events -------------------------------------------------------------------------------------

    async def events(self, group: str, stream: str, *, start_ms: int | None, end_ms: int | None,
                     token: tuple[str, int] | None, limit: int, from_head: bool) -> EventPage:
        """GetLogEvents: a page of one stream's events in arrival order. `token` is ("f", id): after that
        event, ("b", id): the page before it; without one, the first page (`from_head`) or the last."""
        return await self._read(self._events, group, stream, start_ms, end_ms, token, limit, from_head)

    def _events(self, group: str, stream: str, start_ms: int | None, end_ms: int | None,
                token: tuple[str, int] | None, limit: int, from_head: bool) -> EventPage:
        conn = self._db
        gid = self._gid(group)
        row = conn.execute("SELECT id FROM log_streams WHERE group_id = ? AND name = ?", (gid, stream)).fetchone()
        if row is None:
            raise NotFound("stream")
        where, params = ["stream_id = ?"], [row[0]]
        if start_ms is not None:
            where.append("ts >= ?")
            params.append(start_ms)
        if end_ms is not None:
            where.append("ts < ?")
            params.append(end_ms)
        forward = from_head if token is None else token[0] == "f"
        if token is not None:
            where.append("id > ?" if forward else "id < ?")
            params.append(token[1])
        rows = conn.execute(
            f"SELECT id, ts, ingested, message FROM log_events WHERE {' AND '.join(where)}"
            f" ORDER BY id {'ASC' if forward else 'DESC'} LIMIT ?", (*params, limit)).fetchall()
        kept, size = [], 0
        for r in rows:
            size += len(r[3]) + EVENT_OVERHEAD
            if kept and size > _RESPONSE_BYTES:
                break
            kept.append(LogEvent(r[0], stream, r[1], r[2], r[3]))
        if not forward:
            kept.reverse()
        if kept:
            return EventPage(kept, f"f/{kept[-1].id}", f"b/{kept[0].id}")
        if token is None:
            return EventPage([], "f/0", "b/0")
        if forward:  # at the end: the same forward token again
            return EventPage([], f"f/{token[1]}", f"b/{token[1] + 1}")
        return EventPage([], f"f/{max(token[1] - 1, 0)}", f"b/{token[1]}")

    async def filter(self, group: str, *, streams: list[str] | None, stream_prefix: str | None,
                     start_ms: int | None, end_ms: int | None, cursor: tuple[int, int] | None, limit: int,
                     matcher: Matcher) -> FilterPage:
        """FilterLogEvents: events of a group's streams by time, then arrival, that the matcher accepts."""
        return await self._read(self._filter, group, streams, stream_prefix, start_ms, end_ms, cursor, limit,
                                matcher)

    def _filter(self, group: str, streams: list[str] | None, stream_prefix: str | None, start_ms: int | None,
                end_ms: int | None, cursor: tuple[int, int] | None, limit: int, matcher: Matcher) -> FilterPage:
        conn = self._db
        gid = self._gid(group)
        s_where, s_params = ["group_id = ?"], [gid]
        if streams is not None:
            s_where.append(f"name IN ({','.join('?' * len(streams))})")
            s_params += streams
        if stream_prefix:
            s_where.append("substr(name, 1, ?) = ?")
            s_params += [len(stream_prefix), stream_prefix]
        names = dict(conn.execute(f"SELECT id, name FROM log_streams WHERE {' AND '.join(s_where)}", s_params))
        if streams is not None or stream_prefix:
            if not names:
                return FilterPage([], [], None)
            where = [f"e.stream_id IN ({','.join('?' * len(names))})"]
            params: list[Any] = list(names)
        else:
            where, params = [], []
        where.append("e.group_id = ?")
        params.append(gid)
        if start_ms is not None:
            where.append("e.ts >= ?")
            params.append(start_ms)
        if end_ms is not None:
            where.append("e.ts < ?")
            params.append(end_ms)
        for term in matcher.required:
            where.append("instr(e.message, ?) > 0")
            params.append(term)
        if matcher.json:
            where.append("substr(ltrim(e.message), 1, 1) = '{'")
        sql = (f"SELECT e.id, e.stream_id, e.ts, e.ingested, e.message FROM log_events e WHERE {' AND '.join(where)}"
               " AND (e.ts, e.id) > (?, ?) ORDER BY e.ts, e.id LIMIT ?")
        position = cursor or (-1, -1)
        found: list[LogEvent] = []
        scanned = size = 0
        accepts = matcher.accepts
        while True:
            rows = conn.execute(sql, (*params, *position, _FILTER_CHUNK)).fetchall()
            for r in rows:
                scanned += 1
                position = (r[2], r[0])
                if accepts is None or accepts(r[4]):
                    size += len(r[4]) + EVENT_OVERHEAD
                    found.append(LogEvent(r[0], names.get(r[1], ""), r[2], r[3], r[4]))
                    if len(found) >= limit or size >= _RESPONSE_BYTES:
                        return FilterPage(found, list(names.values()), position)
            if len(rows) < _FILTER_CHUNK:
                return FilterPage(found, list(names.values()), None)
            if scanned >= _FILTER_SCAN:
                return FilterPage(found, list(names.values()), position)
