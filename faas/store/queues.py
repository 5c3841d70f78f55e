"""Queues and their messages (the built-in SQS), in SQLite.

Every change is one transaction, committed before the caller answers its client. A receive claims its messages
(new visibility deadline, receive count, receipt nonce) in the same transaction that finds them, so two
receivers never get the same message while it is in flight.
"""

from __future__ import annotations

import secrets
import sqlite3

import msgspec

from faas.store.db import Database

_json_encoder = msgspec.json.Encoder()
_str_map = msgspec.json.Decoder(dict[str, str])


class QueueMissing(Exception):
    """The queue was deleted while the operation ran."""


class QueueRow(msgspec.Struct):
    id: int
    name: str
    attributes: dict[str, str]
    tags: dict[str, str]
    created_at: int
    last_modified: int


class NewMessage(msgspec.Struct):
    """A message ready to store. `attributes` is its message attributes as JSON text (SQS's shape, binary
    values base64); `dedup_key` is set for FIFO queues only."""

    message_id: str
    body: str
    body_md5: str
    attributes: str | None
    attributes_md5: str | None
    trace_header: str | None
    group_id: str | None
    dedup_id: str | None
    dedup_key: str | None
    sent_at: float
    visible_at: float
    expires_at: float


class Stored(msgspec.Struct):
    """The outcome of storing one message: its id and sequence, or those of the earlier duplicate."""

    message_id: str
    seq: int
    duplicate: bool = False


class ClaimedMessage(msgspec.Struct):
    seq: int
    message_id: str
    body: str
    body_md5: str
    attributes: str | None
    attributes_md5: str | None
    trace_header: str | None
    group_id: str | None
    dedup_id: str | None
    sent_at: float
    receive_count: int
    first_received_at: float
    dlq_source: str | None
    receipt: str


class Redrive(msgspec.Struct):
    """Where a queue's messages go after `max_receive` receives. FIFO queues restart the retention clock of a
    moved message (`reset_enqueue`); standard queues keep its original enqueue time."""

    dlq_id: int
    max_receive: int
    source_arn: str
    retention: float
    reset_enqueue: bool


class Claim(msgspec.Struct):
    messages: list[ClaimedMessage]
    # Messages moved to the dead-letter queue by this receive.
    moved: int = 0
    # When nothing was claimed: the earliest time a hidden message becomes visible, if any.
    next_visible_at: float | None = None


class Counts(msgspec.Struct):
    visible: int
    in_flight: int
    delayed: int


_MESSAGE_COLUMNS = (
    "seq, message_id, body, body_md5, attributes, attributes_md5, trace_header, group_id, dedup_id, sent_at,"
    " receive_count, first_received_at, dlq_source"
)
_STANDARD_CANDIDATES = (
    f"SELECT {_MESSAGE_COLUMNS} FROM queue_messages WHERE queue_id = ? AND visible_at <= ? AND expires_at > ?"
    " ORDER BY visible_at, seq LIMIT ?"
)
# A FIFO message is deliverable when no earlier message of its group is hidden (in flight or delayed): the
# hidden messages of a queue are few, so their groups' first hidden seq is gathered first, then the queue is
# walked in order until enough messages are found.
_FIFO_CANDIDATES = (
    "WITH blocked AS (SELECT group_id, MIN(seq) AS first FROM queue_messages"
    " WHERE queue_id = ?1 AND visible_at > ?2 GROUP BY group_id)"
    f" SELECT {', '.join('m.' + c.strip() for c in _MESSAGE_COLUMNS.split(','))}"
    " FROM queue_messages AS m LEFT JOIN blocked AS b ON b.group_id = m.group_id"
    " WHERE m.queue_id = ?1 AND m.group_id IS NOT NULL AND m.visible_at <= ?2 AND m.expires_at > ?2"
    " AND (b.first IS NULL OR m.seq < b.first) ORDER BY m.seq LIMIT ?3"
)
_INSERT = (
    "INSERT INTO queue_messages(queue_id, message_id, body, body_md5, attributes, attributes_md5, trace_header,"
    " group_id, dedup_id, sent_at, visible_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# For group-committed writes, which must not fail (a failure fails the whole group): a message for a queue
# deleted meanwhile is dropped, as it would have been deleted with the queue.
_INSERT_IF_QUEUE = (
    "INSERT INTO queue_messages(queue_id, message_id, body, body_md5, attributes, attributes_md5, trace_header,"
    " group_id, dedup_id, sent_at, visible_at, expires_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM queues WHERE id = ?)"
)


class QueueStore:
    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------------------------------------ queues

    async def load(self) -> list[QueueRow]:
        rows = await self.db.fetchall(
            "SELECT id, name, attributes, tags, created_at, last_modified FROM queues ORDER BY name"
        )
        return [
            QueueRow(r["id"], r["name"], _str_map.decode(r["attributes"]), _str_map.decode(r["tags"]),
                     r["created_at"], r["last_modified"])
            for r in rows
        ]

    async def create(self, name: str, attributes: dict[str, str], tags: dict[str, str], now: int) -> QueueRow:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO queues(name, attributes, tags, created_at, last_modified) VALUES (?, ?, ?, ?, ?)",
                (name, _json_encoder.encode(attributes), _json_encoder.encode(tags), now, now),
            )
            return QueueRow(int(cur.lastrowid or 0), name, attributes, tags, now, now)

    async def update(self, queue_id: int, attributes: dict[str, str], tags: dict[str, str], last_modified: int,
                     *, retention: float | None = None) -> None:
        """Save a queue's attributes and tags; a new `retention` also applies to the messages it holds."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE queues SET attributes = ?, tags = ?, last_modified = ? WHERE id = ?",
                (_json_encoder.encode(attributes), _json_encoder.encode(tags), last_modified, queue_id),
            )
            if retention is not None:
                await conn.execute(
                    "UPDATE queue_messages SET expires_at = sent_at + ? WHERE queue_id = ?", (retention, queue_id)
                )

    async def delete(self, queue_id: int) -> None:
        """Deletes the queue, its messages and its deduplication ids (cascading)."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM queues WHERE id = ?", (queue_id,))

    async def purge(self, queue_id: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM queue_messages WHERE queue_id = ?", (queue_id,))

    async def counts(self, queue_id: int, now: float) -> Counts:
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS total, COALESCE(SUM(visible_at <= ?), 0) AS visible,"
            " COALESCE(SUM(visible_at > ? AND receive_count > 0), 0) AS in_flight"
            " FROM queue_messages WHERE queue_id = ? AND expires_at > ?",
            (now, now, queue_id, now),
        )
        total, visible, in_flight = (int(row["total"]), int(row["visible"]), int(row["in_flight"])) if row else (0,) * 3
        return Counts(visible, in_flight, total - visible - in_flight)

    # ------------------------------------------------------------------------------------------ messages

    async def insert(self, queue_id: int, messages: list[NewMessage], dedup_window: float) -> list[Stored]:
        """Store messages in one transaction. A FIFO message whose deduplication key was seen in the last
        `dedup_window` seconds is not stored again: its outcome names the earlier message. Messages without a
        deduplication key (standard queues) get no `seq` (0)."""
        if all(m.dedup_key is None for m in messages):
            # No reads needed: share a commit with concurrent writers.
            await self.db.write(*[(_INSERT_IF_QUEUE, (
                queue_id, m.message_id, m.body, m.body_md5, m.attributes, m.attributes_md5, m.trace_header,
                m.group_id, m.dedup_id, m.sent_at, m.visible_at, m.expires_at, queue_id,
            )) for m in messages])
            return [Stored(m.message_id, 0) for m in messages]
        out: list[Stored] = []
        try:
            async with self.db.transaction() as conn:
                for m in messages:
                    if m.dedup_key is not None:
                        cur = await conn.execute(
                            "SELECT message_id, seq FROM queue_dedup"
                            " WHERE queue_id = ? AND dedup_key = ? AND expires_at > ?",
                            (queue_id, m.dedup_key, m.sent_at),
                        )
                        seen = await cur.fetchone()
                        if seen is not None:
                            out.append(Stored(seen["message_id"], int(seen["seq"]), True))
                            continue
                    cur = await conn.execute(_INSERT, (
                        queue_id, m.message_id, m.body, m.body_md5, m.attributes, m.attributes_md5, m.trace_header,
                        m.group_id, m.dedup_id, m.sent_at, m.visible_at, m.expires_at,
                    ))
                    seq = int(cur.lastrowid or 0)
                    if m.dedup_key is not None:
                        await conn.execute(
                            "INSERT OR REPLACE INTO queue_dedup(queue_id, dedup_key, message_id, seq, expires_at)"
                            " VALUES (?, ?, ?, ?, ?)",
                            (queue_id, m.dedup_key, m.message_id, seq, m.sent_at + dedup_window),
                        )
                    out.append(Stored(m.message_id, seq))
        except sqlite3.IntegrityError:
            raise QueueMissing() from None
        return out

    async def claim(self, queue_id: int, now: float, limit: int, visibility: float, *, fifo: bool,
                    redrive: Redrive | None) -> Claim:
        """Receive up to `limit` messages: hide them until `now + visibility`, count the receive and give each a
        new receipt nonce. Candidates already received `max_receive` times move to the dead-letter queue."""
        claimed: list[ClaimedMessage] = []
        moved = 0
        next_at = None
        try:
            async with self.db.transaction() as conn:
                while len(claimed) < limit:
                    want = limit - len(claimed)
                    params = (queue_id, now, want) if fifo else (queue_id, now, now, want)
                    cur = await conn.execute(_FIFO_CANDIDATES if fifo else _STANDARD_CANDIDATES, params)
                    rows = await cur.fetchall()
                    if not rows:
                        break
                    to_move = []
                    updates = []
                    for r in rows:
                        if redrive is not None and r["receive_count"] >= redrive.max_receive:
                            expires = (now if redrive.reset_enqueue else r["sent_at"]) + redrive.retention
                            to_move.append((redrive.dlq_id, now, expires, redrive.source_arn, r["seq"]))
                            continue
                        nonce = secrets.token_hex(8)
                        first = r["first_received_at"] if r["first_received_at"] is not None else now
                        updates.append((now + visibility, first, now, nonce, r["seq"]))
                        claimed.append(ClaimedMessage(
                            r["seq"], r["message_id"], r["body"], r["body_md5"], r["attributes"],
                            r["attributes_md5"], r["trace_header"], r["group_id"], r["dedup_id"], r["sent_at"],
                            r["receive_count"] + 1, first, r["dlq_source"], nonce,
                        ))
                    if to_move:
                        await conn.executemany(
                            "UPDATE queue_messages SET queue_id = ?, visible_at = ?, expires_at = ?, dlq_source = ?"
                            " WHERE seq = ?", to_move,
                        )
                        moved += len(to_move)
                    if updates:
                        await conn.executemany(
                            "UPDATE queue_messages SET visible_at = ?, receive_count = receive_count + 1,"
                            " first_received_at = ?, received_at = ?, receipt = ? WHERE seq = ?", updates,
                        )
                    if not to_move or len(rows) < want:
                        break
                if not claimed:
                    cur = await conn.execute(
                        "SELECT MIN(visible_at) AS t FROM queue_messages WHERE queue_id = ? AND visible_at > ?",
                        (queue_id, now),
                    )
                    row = await cur.fetchone()
                    next_at = row["t"] if row else None
        except sqlite3.IntegrityError:  # the dead-letter queue was deleted meanwhile
            raise QueueMissing() from None
        return Claim(claimed, moved, next_at)

    async def delete_messages(self, queue_id: int, handles: list[tuple[int, str]], *, strict: bool,
                              now: float) -> list[bool]:
        """Delete by (seq, receipt nonce). A message already gone counts as deleted. With `strict` (FIFO queues)
        the handle must be the latest one and still in flight; otherwise (False) nothing is deleted."""
        out: list[bool] = []
        async with self.db.transaction() as conn:
            for seq, nonce in handles:
                if strict:
                    cur = await conn.execute(
                        "SELECT receipt, visible_at FROM queue_messages WHERE seq = ? AND queue_id = ?", (seq, queue_id)
                    )
                    row = await cur.fetchone()
                    if row is not None and (row["receipt"] != nonce or row["visible_at"] <= now):
                        out.append(False)
                        continue
                await conn.execute("DELETE FROM queue_messages WHERE seq = ? AND queue_id = ?", (seq, queue_id))
                out.append(True)
        return out

    async def change_visibility(self, queue_id: int, changes: list[tuple[int, str, int]], now: float,
                                max_total: float) -> list[str]:
        """Set new visibility timeouts by (seq, receipt nonce, seconds). Each outcome is "ok", "missing" (no such
        message, or an older receipt), "not_in_flight", or "too_long" (over `max_total` since it was received)."""
        out: list[str] = []
        async with self.db.transaction() as conn:
            for seq, nonce, timeout in changes:
                cur = await conn.execute(
                    "SELECT receipt, visible_at, received_at FROM queue_messages WHERE seq = ? AND queue_id = ?",
                    (seq, queue_id),
                )
                row = await cur.fetchone()
                if row is None or row["receipt"] != nonce:
                    out.append("missing")
                elif row["visible_at"] <= now:
                    out.append("not_in_flight")
                elif now + timeout - row["received_at"] > max_total:
                    out.append("too_long")
                else:
                    await conn.execute("UPDATE queue_messages SET visible_at = ? WHERE seq = ?", (now + timeout, seq))
                    out.append("ok")
        return out

    async def sweep(self, now: float) -> int:
        """Delete messages past their retention and expired deduplication ids; returns the messages deleted."""
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM queue_messages WHERE expires_at <= ?", (now,))
            deleted = cur.rowcount
            await conn.execute("DELETE FROM queue_dedup WHERE expires_at <= ?", (now,))
        return max(deleted, 0)
