"""The log store's database (`<data_dir>/logs.db`): `LogDatabase`, whose methods do all of the store's SQLite
work, one call at a time, on the thread or in the process `faas.store.logstore.LogStore` runs them on; and how
one invocation's text becomes events.

A row of `log_events` holds one event, or a run of `event_count` one-line events of one invocation (usually
all of them): the row's id is its first event's id and the others follow, so the event ids are those one row
per event would have had. Every row and index entry costs the writer; reads split rows back into events.

Nothing here imports asyncio: the log store's process (`faas.store.log_child`) imports this module only.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from faas.store.log_filter import Matcher

# CloudWatch counts 26 bytes of overhead per event on top of its UTF-8 message.
EVENT_OVERHEAD = 26
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_groups (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, retention_days INTEGER);
CREATE TABLE IF NOT EXISTS log_streams (
    id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, name TEXT NOT NULL, created_ms INTEGER NOT NULL,
    first_event_ms INTEGER, last_event_ms INTEGER, last_ingestion_ms INTEGER,
    stored_bytes INTEGER NOT NULL DEFAULT 0, UNIQUE (group_id, name));
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, stream_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    ingested INTEGER NOT NULL, message TEXT NOT NULL, event_count INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS log_events_stream ON log_events (stream_id);
CREATE INDEX IF NOT EXISTS log_events_group_ts ON log_events (group_id, ts);
"""
# Version 1 stored one row per event: each of its rows is a row of one event.
_MIGRATE = {1: "ALTER TABLE log_events ADD COLUMN event_count INTEGER NOT NULL DEFAULT 1;"}
_SIZE = f"length(CAST(message AS BLOB)) + {EVENT_OVERHEAD} * event_count"
_INSERT_ROWS = 128  # of 7 parameters each, under the 999 that SQLite before 3.32 allows a statement
_INSERT = {n: "INSERT INTO log_events(id, group_id, stream_id, ts, ingested, message, event_count) VALUES "
              + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n) for n in (_INSERT_ROWS >> k for k in range(8))}
_DELETE_CHUNK = 20000
_FILTER_CHUNK = 1000
_FILTER_SCAN = 200_000  # events one FilterLogEvents call examines before it answers with a nextToken
_RESPONSE_BYTES = 1_048_576
_NO_ID = 1 << 63  # past every event id (SQLite's are below it)


class LogSettings(msgspec.Struct, frozen=True):
    retention_days: int = 0  # for groups without a retention policy; 0: kept until the size cap
    max_bytes: int = 1 << 30  # all events together, as CloudWatch counts them; 0: no cap
    flush_interval: float = 0.2
    flush_records: int = 4096  # invocation logs waiting that trigger a flush before the interval
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
    return _split(text.decode("utf-8", "replace"))


def _split(text: str) -> list[str]:
    lines = text.split("\n")
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


def event_rows(text: bytes) -> list[tuple[int, str]]:
    """`split_events(text)` as rows to store: (1, an event) or (n, a run of n one-line events joined), each
    row under ~`MAX_EVENT_CHARS` unless it is one event. Text without a traceback, a `\\r` or a line too long
    for one event, as most invocations write, is one row of its lines, found without splitting it."""
    whole = text.decode("utf-8", "replace")
    if len(whole) <= MAX_EVENT_CHARS and "\r" not in whole and _TRACEBACK not in whole:
        if not whole.endswith("\n"):
            whole += "\n"
        return [(whole.count("\n"), whole)]
    rows: list[tuple[int, str]] = []
    run: list[str] = []
    chars = 0
    for event in _split(whole):
        one_line = event.find("\n") == len(event) - 1
        if run and (not one_line or chars >= MAX_EVENT_CHARS):
            rows.append((len(run), "".join(run)))
            run, chars = [], 0
        if one_line:
            run.append(event)
            chars += len(event)
        else:
            rows.append((1, event))
    if run:
        rows.append((len(run), "".join(run)))
    return rows


def row_events(count: int, message: str) -> list[str]:
    """The events of a row that `event_rows` made."""
    if count == 1:
        return [message]
    return [line + "\n" for line in message[:-1].split("\n")]


# -- the database ---------------------------------------------------------------------------------------


Record = tuple[str, str, bytes, float]  # one invocation's log: group, stream, text, when (epoch seconds)
_RECORDS = msgspec.msgpack.Decoder(list[Record])


def packed_header(count: int) -> bytes:
    """What precedes `count` msgpack-encoded records to make them the array `write_packed` reads."""
    return b"\xdd" + count.to_bytes(4, "big")  # msgpack's array of up to 2**32 - 1 items


class Pacer:
    """Breaks a long stretch of CPU work into slices: `tick()`, called often, sleeps `pause` seconds once
    `work` seconds have passed since the last pause. On a small VM one process's burst of milliseconds delays
    the others' wake-ups: a 5 ms burst every 0.2 s in the log process gave invocations 5-10 ms latency spikes
    at 5,000/s, where the same work in 0.5 ms slices with 0.5 ms sleeps between gave 2-4 ms."""

    def __init__(self, work: float = 0.0005, pause: float = 0.0005):
        self.work, self.pause = work, pause
        self.start()

    def start(self) -> None:
        """A stretch of work begins: `work` seconds from now before the first pause."""
        self._since = time.perf_counter()

    def tick(self) -> None:
        if time.perf_counter() - self._since >= self.work:
            time.sleep(self.pause)
            self._since = time.perf_counter()


class LogDatabase:
    """The SQLite file at `path`: `open()` first, `close()` last, nothing at the same time. With a `pacer`,
    writing pauses now and then (the log store's process sets one)."""

    def __init__(self, path: Path, pacer: Pacer | None = None):
        self.path = path
        self.pacer = pacer
        self.stored_bytes = 0  # as of the last write or pass
        self._conn: sqlite3.Connection | None = None
        self._groups: dict[str, int] = {}
        self._streams: dict[tuple[str, str], tuple[int, int]] = {}  # (group, stream) names -> their ids

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < _SCHEMA_VERSION:
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA};{_MIGRATE.get(version, '')}"
                               f"PRAGMA user_version={_SCHEMA_VERSION};COMMIT;")
        self._conn = conn
        self.stored_bytes = conn.execute("SELECT COALESCE(SUM(stored_bytes), 0) FROM log_streams").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def write_packed(self, packed: bytearray) -> None:
        """`write` for records msgpack-encoded one by one after a `packed_header` (what the process writer
        is sent)."""
        self.write(_RECORDS.decode(packed))

    def write(self, batch: list[Record]) -> None:
        """Each invocation's text as events of its group's stream (both created when missing), in one
        transaction."""
        now = int(time.time() * 1000)
        rows: list[tuple[int, int, int, int, int, str, int]] = []
        touched: dict[int, list[int]] = {}  # stream id -> [bytes, first ts, last ts]
        pacer = self.pacer
        if pacer is not None:
            pacer.start()
        with self._transaction() as conn:
            # The ids SQLite would give one row per event: one past the last event's.
            top = conn.execute("SELECT id + event_count FROM log_events ORDER BY id DESC LIMIT 1").fetchone()
            next_id = 1 if top is None else top[0]
            for n, (group, stream, text, when) in enumerate(batch):
                if pacer is not None and n % 16 == 15:
                    pacer.tick()
                ts = int(when * 1000)
                ids = self._streams.get((group, stream))
                gid, sid = ids if ids is not None else self._stream_id(group, stream, ts)
                size = 0
                for count, message in event_rows(text):
                    rows.append((next_id, gid, sid, ts, now, message, count))
                    next_id += count
                    size += len(message.encode()) + EVENT_OVERHEAD * count
                agg = touched.get(sid)
                if agg is None:
                    touched[sid] = [size, ts, ts]
                else:
                    agg[0] += size
                    agg[1] = min(agg[1], ts)
                    agg[2] = max(agg[2], ts)
            self._insert(conn, rows, pacer)
            conn.executemany(
                "UPDATE log_streams SET stored_bytes = stored_bytes + ?,"
                " first_event_ms = MIN(COALESCE(first_event_ms, ?), ?),"
                " last_event_ms = MAX(COALESCE(last_event_ms, ?), ?), last_ingestion_ms = ? WHERE id = ?",
                [(b, first, first, last, last, now, sid) for sid, (b, first, last) in touched.items()],
            )
        self.stored_bytes += sum(agg[0] for agg in touched.values())

    @staticmethod
    def _insert(conn: sqlite3.Connection, rows: list[tuple[int, int, int, int, int, str, int]],
                pacer: Pacer | None = None) -> None:
        """Insert `rows` with a few INSERTs of many rows: `executemany` lets go of the GIL and takes it back for
        every row, each time waiting for, then stalling, the event loop's thread. The INSERTs take 128, 64, ...
        or 1 rows, so that their few statements stay in the connection's cache."""
        done, size = 0, _INSERT_ROWS
        while done < len(rows):
            while len(rows) - done < size:
                size //= 2
            conn.execute(_INSERT[size], [value for row in rows[done:done + size] for value in row])
            done += size
            if pacer is not None:
                pacer.tick()

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

    def _stream_id(self, group: str, name: str, now_ms: int) -> tuple[int, int]:
        """The ids of `group` and its stream `name`, both created when missing."""
        ids = self._streams.get((group, name))
        if ids is None:
            gid = self._group_id(group, now_ms)
            conn = self._db
            conn.execute("INSERT OR IGNORE INTO log_streams(group_id, name, created_ms) VALUES (?, ?, ?)",
                         (gid, name, now_ms))
            sid = conn.execute("SELECT id FROM log_streams WHERE group_id = ? AND name = ?", (gid, name)).fetchone()[0]
            ids = self._streams[(group, name)] = (gid, sid)
        return ids

    def maintain(self, now: float, settings: LogSettings) -> int:
        """One pass: events past their group's retention, then the oldest events over the size cap. Returns
        how many events were deleted."""
        deleted = self._expire(now, settings)
        if settings.max_bytes and self.stored_bytes > settings.max_bytes:
            deleted += self._trim(self.stored_bytes - settings.max_bytes)
        return deleted

    def _expire(self, now: float, settings: LogSettings) -> int:
        conn = self._db
        deleted = 0
        default = settings.retention_days
        for gid, days in conn.execute("SELECT id, retention_days FROM log_groups").fetchall():
            days = days or default
            if not days:
                continue
            cutoff = int((now - days * settings.day_seconds) * 1000)
            while True:
                rows = conn.execute(f"SELECT id, stream_id, {_SIZE}, event_count FROM log_events"
                                    " WHERE group_id = ? AND ts < ? LIMIT ?", (gid, cutoff, _DELETE_CHUNK)).fetchall()
                if not rows:
                    break
                deleted += self._delete(rows, "DELETE FROM log_events WHERE id = ?", [(r[0],) for r in rows])
        return deleted

    def _trim(self, excess: int) -> int:
        """Delete the oldest events (by arrival) until `excess` bytes are gone: of the last row it reaches,
        only the first events when they are enough."""
        conn = self._db
        deleted = 0
        after = 0
        while excess > 0:
            rows = conn.execute(f"SELECT id, stream_id, {_SIZE}, event_count FROM log_events WHERE id > ?"
                                " ORDER BY id LIMIT ?", (after, _DELETE_CHUNK)).fetchall()
            if not rows:
                break
            take, rest = [], None
            for row in rows:
                if row[2] > excess and row[3] > 1:
                    row, rest = self._split_row(row, excess)
                take.append(row)
                excess -= row[2]
                if excess <= 0:
                    break
            after = take[-1][0]
            deleted += self._delete(take, "DELETE FROM log_events WHERE id <= ?", [(after,)], rest)
        return deleted

    def _split_row(self, row: tuple[int, int, int, int],
                   excess: int) -> tuple[tuple[int, int, int, int], tuple[int, int, str, int] | None]:
        """A row of several events as its first events that hold `excess` bytes, as (id, stream id, bytes,
        events) for `_delete`, and the row that is left (id, new id, message, events), None when it is all."""
        rid, sid, _, count = row
        (message,) = self._db.execute("SELECT message FROM log_events WHERE id = ?", (rid,)).fetchone()
        events = row_events(count, message)
        freed = taken = 0
        while freed < excess:
            freed += len(events[taken].encode()) + EVENT_OVERHEAD
            taken += 1
        if taken == count:
            return row, None
        return (rid, sid, freed, taken), (rid, rid + taken, "".join(events[taken:]), count - taken)

    def _delete(self, rows: list[tuple[int, int, int, int]], sql: str, params: list[tuple[int]],
                rest: tuple[int, int, str, int] | None = None) -> int:
        """Delete `rows` (id, stream id, bytes, events) with `sql`; `rest` is what is left of the last one,
        which keeps its later events. Returns how many events were deleted."""
        freed: dict[int, int] = {}
        for _, sid, size, _ in rows:
            freed[sid] = freed.get(sid, 0) + size
        with self._transaction() as conn:
            if rest is not None:  # first, so that its new id is past the rows `sql` deletes
                conn.execute("UPDATE log_events SET id = ?, message = ?, event_count = ? WHERE id = ?",
                             (*rest[1:], rest[0]))
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
        return sum(row[3] for row in rows)

    def create_group(self, name: str, now_ms: int) -> bool:
        cur = self._db.execute("INSERT OR IGNORE INTO log_groups(name, created_ms) VALUES (?, ?)", (name, now_ms))
        return cur.rowcount == 1

    def delete_group(self, name: str) -> None:
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

    def set_retention(self, name: str, days: int | None) -> None:
        self._db.execute("UPDATE log_groups SET retention_days = ? WHERE id = ?", (days, self._gid(name)))

    def _gid(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM log_groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound("group")
        return row[0]

    def list_groups(self, prefix: str | None, contains: str | None, after: str | None, limit: int,
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

    def list_streams(self, group: str, prefix: str | None, by_time: bool, descending: bool,
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

    def events(self, group: str, stream: str, start_ms: int | None, end_ms: int | None,
                token: tuple[str, int] | None, limit: int, from_head: bool) -> EventPage:
        conn = self._db
        gid = self._gid(group)
        row = conn.execute("SELECT id FROM log_streams WHERE group_id = ? AND name = ?", (gid, stream)).fetchone()
        if row is None:
            raise NotFound("stream")
        sid = row[0]
        where, params = ["stream_id = ?"], [sid]
        if start_ms is not None:
            where.append("ts >= ?")
            params.append(start_ms)
        if end_ms is not None:
            where.append("ts < ?")
            params.append(end_ms)
        forward = from_head if token is None else token[0] == "f"
        after, before = 0, _NO_ID  # the ids of the events wanted lie between
        if token is not None and forward:  # rows ending past it, from the one holding the token's event (or before)
            after = token[1]
            where.append("id >= COALESCE((SELECT MAX(id) FROM log_events WHERE stream_id = ? AND id <= ?), 0)"
                         " AND id + event_count - 1 > ?")
            params += [sid, after, after]
        elif token is not None:
            before = token[1]
            where.append("id < ?")
            params.append(before)
        # Each row holds at least one event past the token: `limit` rows are enough.
        rows = conn.execute(
            f"SELECT id, ts, ingested, message, event_count FROM log_events WHERE {' AND '.join(where)}"
            f" ORDER BY id {'ASC' if forward else 'DESC'} LIMIT ?", (*params, limit)).fetchall()
        if not forward:
            rows.reverse()
        events = [(eid, ts, ingested, text) for first, ts, ingested, message, count in rows
                  for eid, text in enumerate(row_events(count, message), first) if after < eid < before]
        kept: list[LogEvent] = []
        size = 0
        for eid, ts, ingested, text in events if forward else reversed(events):
            size += len(text) + EVENT_OVERHEAD
            if len(kept) == limit or (kept and size > _RESPONSE_BYTES):
                break
            kept.append(LogEvent(eid, stream, ts, ingested, text))
        if not forward:
            kept.reverse()
        if kept:
            return EventPage(kept, f"f/{kept[-1].id}", f"b/{kept[0].id}")
        if token is None:
            return EventPage([], "f/0", "b/0")
        if forward:  # at the end: the same forward token again
            return EventPage([], f"f/{token[1]}", f"b/{token[1] + 1}")
        return EventPage([], f"f/{max(token[1] - 1, 0)}", f"b/{token[1]}")

    def filter(self, group: str, streams: list[str] | None, stream_prefix: str | None, start_ms: int | None,
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
        if matcher.json:  # of a row of several events, any line may be the object
            where.append("(substr(ltrim(e.message), 1, 1) = '{' OR (e.event_count > 1 AND instr(e.message, '{') > 0))")
        # Rows whose last event is past the cursor; the tests above, of a row of several, are tested again on
        # each of its events.
        sql = (f"SELECT e.id, e.stream_id, e.ts, e.ingested, e.message, e.event_count FROM log_events e"
               f" WHERE {' AND '.join(where)} AND e.ts >= ? AND (e.ts, e.id + e.event_count - 1) > (?, ?)"
               " ORDER BY e.ts, e.id LIMIT ?")
        position = cursor or (-1, -1)
        found: list[LogEvent] = []
        scanned = size = 0
        accepts = matcher.accepts
        while True:
            rows = conn.execute(sql, (*params, position[0], *position, _FILTER_CHUNK)).fetchall()
            for first, sid, ts, ingested, message, count in rows:
                for eid, text in enumerate(row_events(count, message), first):
                    if (ts, eid) <= position or (count > 1 and not _prefilter(matcher, text)):
                        continue
                    scanned += 1
                    position = (ts, eid)
                    if accepts is None or accepts(text):
                        size += len(text) + EVENT_OVERHEAD
                        found.append(LogEvent(eid, names.get(sid, ""), ts, ingested, text))
                        if len(found) >= limit or size >= _RESPONSE_BYTES:
                            return FilterPage(found, list(names.values()), position)
                    if scanned == _FILTER_SCAN:
                        return FilterPage(found, list(names.values()), position)
            if len(rows) < _FILTER_CHUNK:
                return FilterPage(found, list(names.values()), None)


def _prefilter(matcher: Matcher, message: str) -> bool:
    """What `LogDatabase.filter`'s SQL tests of an event's message."""
    return (all(term in message for term in matcher.required)
            and (not matcher.json or message.lstrip(" ").startswith("{")))
