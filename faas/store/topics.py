"""Topics, subscriptions and the delivery outbox of the SNS-compatible service, in SQLite.

Publishing commits the message and one delivery row per subscriber in one transaction; the deliverer removes a
row once the subscriber has the message, and the message with its last row. Writes go through the database's
group commit where they need no reads.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from faas.store.db import Database

_json = msgspec.json.Encoder()


def _dict(text: str) -> dict[str, str]:
    return msgspec.json.decode(text, type=dict[str, str])


class TopicRecord(msgspec.Struct):
    arn: str
    name: str
    fifo: bool
    attributes: dict[str, str]
    tags: dict[str, str]
    subscriptions_deleted: int = 0
    created_at: float = 0.0


class SubscriptionRecord(msgspec.Struct):
    arn: str
    topic_arn: str
    protocol: str
    endpoint: str
    attributes: dict[str, str]
    created_at: float = 0.0


class MessageAttribute(msgspec.Struct, rename="pascal"):
    """A message attribute as SNS hands it to subscribers: binary values base64-encoded."""

    type: str
    value: str


class MessageRecord(msgspec.Struct):
    id: str
    topic_arn: str
    message: str
    subject: str | None
    structured: bool
    attributes: dict[str, MessageAttribute]
    published_at: float
    group_id: str | None = None
    dedup_id: str | None = None
    sequence_number: str | None = None


class NewMessage(msgspec.Struct):
    """A message to publish and the subscriptions it goes to (filter policies already applied)."""

    record: MessageRecord
    subscriptions: list[str]
    dedup_key: str | None = None  # FIFO topics: the key deduplicated within the window


class Published(msgspec.Struct):
    message_id: str
    sequence_number: str | None


class Delivery(msgspec.Struct):
    id: int
    attempts: int
    subscription_arn: str
    message: MessageRecord
    subscription: SubscriptionRecord | None  # None: unsubscribed since


class Settled(msgspec.Struct):
    """The outcome of one delivery pass."""

    done: list[int] = []  # delivered or abandoned
    retries: list[tuple[int, int, float]] = []  # (id, attempts, due_at)
    holds: list[tuple[str, int, float]] = []  # FIFO: (subscription, id, due_at): its later rows wait until then


_TOPIC_COLUMNS = "arn, name, fifo, attributes, tags, subscriptions_deleted, created_at"
_SUB_COLUMNS = "arn, topic_arn, protocol, endpoint, attributes, created_at"


def _topic(r: sqlite3.Row) -> TopicRecord:
    return TopicRecord(r["arn"], r["name"], bool(r["fifo"]), _dict(r["attributes"]), _dict(r["tags"]),
                       int(r["subscriptions_deleted"]), float(r["created_at"]))


def _subscription(r: sqlite3.Row, prefix: str = "") -> SubscriptionRecord:
    return SubscriptionRecord(r[prefix + "arn"], r[prefix + "topic_arn"], r[prefix + "protocol"],
                              r[prefix + "endpoint"], _dict(r[prefix + "attributes"]), float(r[prefix + "created_at"]))


_DELIVERY = "INSERT INTO topic_deliveries(message_id, subscription_arn, due_at) VALUES (?, ?, ?)"
# A FIFO topic's row is never due before the rows ahead of it (one of them may be waiting for a retry).
_FIFO_DELIVERY = ("INSERT INTO topic_deliveries(message_id, subscription_arn, due_at)"
                  " SELECT ?, ?, MAX(?, COALESCE(MAX(due_at), 0)) FROM topic_deliveries WHERE subscription_arn = ?")


def _message_statements(new: NewMessage, now: float) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows of one published message: the message and a delivery per subscription (none: nothing kept)."""
    if not new.subscriptions:
        return []
    msg = new.record
    return [(
        ("INSERT INTO topic_messages(id, topic_arn, message, subject, structured, attributes, group_id, dedup_id,"
         " sequence_number, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        (msg.id, msg.topic_arn, msg.message, msg.subject, int(msg.structured), _json.encode(msg.attributes).decode(),
         msg.group_id, msg.dedup_id, msg.sequence_number, msg.published_at),
    )] + [
        (_FIFO_DELIVERY, (msg.id, arn, now, arn)) if new.dedup_key is not None else (_DELIVERY, (msg.id, arn, now))
        for arn in new.subscriptions
    ]


class TopicStore:
    def __init__(self, db: Database):
        self.db = db

    async def load(self) -> tuple[list[TopicRecord], list[SubscriptionRecord]]:
        topics = await self.db.fetchall(f"SELECT {_TOPIC_COLUMNS} FROM topics")
        subs = await self.db.fetchall(f"SELECT {_SUB_COLUMNS} FROM topic_subscriptions ORDER BY created_at")
        return [_topic(r) for r in topics], [_subscription(r) for r in subs]

    # -- topics ---------------------------------------------------------------------------------------

    async def create_topic(self, topic: TopicRecord) -> None:
        await self.db.write((
            "INSERT INTO topics(arn, name, fifo, attributes, tags, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (topic.arn, topic.name, int(topic.fifo), _json.encode(topic.attributes).decode(),
             _json.encode(topic.tags).decode(), topic.created_at),
        ))

    async def delete_topic(self, arn: str) -> None:
        """The topic, its subscriptions and everything they had pending."""
        await self.db.write(
            (("DELETE FROM topic_deliveries WHERE subscription_arn IN"
              " (SELECT arn FROM topic_subscriptions WHERE topic_arn = ?)"), (arn,)),
            ("DELETE FROM topic_messages WHERE topic_arn = ?", (arn,)),
            ("DELETE FROM topics WHERE arn = ?", (arn,)),
        )

    async def set_topic_attributes(self, arn: str, attributes: dict[str, str]) -> None:
        await self.db.write(("UPDATE topics SET attributes = ? WHERE arn = ?",
                             (_json.encode(attributes).decode(), arn)))

    async def set_topic_tags(self, arn: str, tags: dict[str, str]) -> None:
        await self.db.write(("UPDATE topics SET tags = ? WHERE arn = ?", (_json.encode(tags).decode(), arn)))

    # -- subscriptions --------------------------------------------------------------------------------

    async def add_subscription(self, sub: SubscriptionRecord) -> None:
        await self.db.write((
            f"INSERT INTO topic_subscriptions({_SUB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (sub.arn, sub.topic_arn, sub.protocol, sub.endpoint, _json.encode(sub.attributes).decode(),
             sub.created_at),
        ))

    async def delete_subscription(self, arn: str, topic_arn: str) -> None:
        """The subscription and its pending deliveries; the topic counts it as deleted."""
        await self.db.write(
            ("DELETE FROM topic_deliveries WHERE subscription_arn = ?", (arn,)),
            (("DELETE FROM topic_messages WHERE topic_arn = ? AND NOT EXISTS"
              " (SELECT 1 FROM topic_deliveries d WHERE d.message_id = topic_messages.id)"), (topic_arn,)),
            ("DELETE FROM topic_subscriptions WHERE arn = ?", (arn,)),
            ("UPDATE topics SET subscriptions_deleted = subscriptions_deleted + 1 WHERE arn = ?", (topic_arn,)),
        )

    async def set_subscription_attributes(self, arn: str, attributes: dict[str, str]) -> None:
        await self.db.write(("UPDATE topic_subscriptions SET attributes = ? WHERE arn = ?",
                             (_json.encode(attributes).decode(), arn)))

    # -- publishing -----------------------------------------------------------------------------------

    async def publish(self, topic_arn: str, messages: list[NewMessage], *, now: float,
                      dedup_window: float) -> list[Published] | None:
        """Commit messages and their deliveries. FIFO messages (those with a dedup key) get the topic's next
        sequence number, and one whose dedup key was seen within the window is accepted but not delivered again
        (its first message id and sequence number are returned). None when the topic does not exist."""
        if all(new.dedup_key is None for new in messages):
            # Standard topics: no reads needed, so concurrent publishes share one commit.
            statements = [s for new in messages for s in _message_statements(new, now)]
            if statements:
                await self.db.write(*statements)
            return [Published(new.record.id, None) for new in messages]
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT sequence FROM topics WHERE arn = ?", (topic_arn,)) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            sequence = first = int(row["sequence"])
            await conn.execute("DELETE FROM topic_dedup WHERE topic_arn = ? AND expires_at <= ?", (topic_arn, now))
            out: list[Published] = []
            for new in messages:
                msg = new.record
                async with conn.execute(
                    "SELECT message_id, sequence_number FROM topic_dedup WHERE topic_arn = ? AND dedup_id = ?",
                    (topic_arn, new.dedup_key),
                ) as cur:
                    seen = await cur.fetchone()
                if seen is not None:
                    out.append(Published(seen["message_id"], seen["sequence_number"]))
                    continue
                sequence += 1
                msg.sequence_number = str(10**19 + sequence)
                await conn.execute(
                    "INSERT INTO topic_dedup(topic_arn, dedup_id, message_id, sequence_number, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (topic_arn, new.dedup_key, msg.id, msg.sequence_number, now + dedup_window),
                )
                out.append(Published(msg.id, msg.sequence_number))
                for sql, params in _message_statements(new, now):
                    await conn.execute(sql, params)
            if sequence != first:
                await conn.execute("UPDATE topics SET sequence = ? WHERE arn = ?", (sequence, topic_arn))
        return out

    # -- the outbox -----------------------------------------------------------------------------------

    async def due(self, now: float, limit: int) -> list[Delivery]:
        """Deliveries due by `now`, oldest first (the order FIFO subscriptions must see)."""
        rows = await self.db.fetchall(
            "SELECT d.id AS d_id, d.attempts AS d_attempts, d.subscription_arn AS d_subscription, m.*, s.arn AS s_arn, s.topic_arn AS s_topic_arn,"
            " s.protocol AS s_protocol, s.endpoint AS s_endpoint, s.attributes AS s_attributes,"
            " s.created_at AS s_created_at"
            " FROM topic_deliveries d JOIN topic_messages m ON m.id = d.message_id"
            " LEFT JOIN topic_subscriptions s ON s.arn = d.subscription_arn"
            " WHERE d.due_at <= ? ORDER BY d.id LIMIT ?", (now, limit),
        )
        out = []
        for r in rows:
            msg = MessageRecord(
                r["id"], r["topic_arn"], r["message"], r["subject"], bool(r["structured"]),
                msgspec.json.decode(r["attributes"], type=dict[str, MessageAttribute]), float(r["published_at"]),
                r["group_id"], r["dedup_id"], r["sequence_number"],
            )
            sub = _subscription(r, "s_") if r["s_arn"] is not None else None
            out.append(Delivery(int(r["d_id"]), int(r["d_attempts"]), r["d_subscription"], msg, sub))
        return out

    async def next_due(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(due_at) AS t FROM topic_deliveries")
        return float(row["t"]) if row and row["t"] is not None else None

    async def settle(self, settled: Settled) -> None:
        """Remove delivered (or abandoned) rows, and messages with none left; reschedule failed ones."""
        async with self.db.transaction() as conn:
            if settled.retries:
                await conn.executemany("UPDATE topic_deliveries SET attempts = ?, due_at = ? WHERE id = ?",
                                       [(attempts, due, i) for i, attempts, due in settled.retries])
            if settled.holds:
                await conn.executemany(
                    "UPDATE topic_deliveries SET due_at = MAX(due_at, ?) WHERE subscription_arn = ? AND id > ?",
                    [(due, sub, i) for sub, i, due in settled.holds])
            done = settled.done
            if done:
                marks = ",".join("?" * len(done))
                async with conn.execute(
                    f"SELECT DISTINCT message_id FROM topic_deliveries WHERE id IN ({marks})", done,
                ) as cur:
                    messages = [r["message_id"] for r in await cur.fetchall()]
                await conn.execute(f"DELETE FROM topic_deliveries WHERE id IN ({marks})", done)
                await conn.executemany(
                    "DELETE FROM topic_messages WHERE id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM topic_deliveries d WHERE d.message_id = ?)", [(m, m) for m in messages],
                )

    async def pending(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM topic_deliveries")
        return int(row["n"]) if row else 0
