"""EventBridge buses, rules, targets and the delivery outbox, in SQLite."""

from __future__ import annotations

from typing import Literal

import msgspec

from faas.store.db import Database


class BusRow(msgspec.Struct):
    name: str
    description: str | None
    created_at: float
    last_modified: float


class RuleRow(msgspec.Struct):
    bus: str
    name: str
    event_pattern: str | None
    schedule: str | None
    state: str
    description: str | None
    role_arn: str | None
    anchor: float
    last_fired: float | None = None


class TargetRow(msgspec.Struct):
    bus: str
    rule: str
    id: str
    arn: str
    spec: str  # the Target as given (JSON)
    position: int = 0


class NewDelivery(msgspec.Struct):
    target_arn: str
    body: str
    message_group_id: str | None
    rule_arn: str
    target_id: str
    max_attempts: int
    expires_at: float
    next_attempt: float


class Delivery(msgspec.Struct):
    id: int
    target_arn: str
    body: str
    message_group_id: str | None
    rule_arn: str
    target_id: str
    attempts: int
    max_attempts: int
    expires_at: float
    next_attempt: float


_BUS = "name, description, created_at, last_modified"
_RULE = "bus, name, event_pattern, schedule, state, description, role_arn, anchor, last_fired"
_TARGET = "bus, rule, id, arn, spec, position"
_DELIVERY = ("id, target_arn, body, message_group_id, rule_arn, target_id, attempts, max_attempts, expires_at,"
             " next_attempt")
_INSERT_DELIVERY = (
    "INSERT INTO event_deliveries(target_arn, body, message_group_id, rule_arn, target_id, max_attempts,"
    " expires_at, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _delivery_params(d: NewDelivery) -> tuple[object, ...]:
    return (d.target_arn, d.body, d.message_group_id, d.rule_arn, d.target_id, d.max_attempts, d.expires_at,
            d.next_attempt)


class EventStore:
    def __init__(self, db: Database):
        self.db = db

    # --- buses ---------------------------------------------------------------------------------------------

    async def create_bus(self, name: str, description: str | None, now: float) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO event_buses(name, description, created_at, last_modified) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO NOTHING",
                (name, description, now, now),
            )
            return cur.rowcount > 0

    async def get_bus(self, name: str) -> BusRow | None:
        row = await self.db.fetchone(f"SELECT {_BUS} FROM event_buses WHERE name = ?", (name,))
        return BusRow(*tuple(row)) if row else None

    async def list_buses(self, prefix: str, after: str, limit: int) -> list[BusRow]:
        rows = await self.db.fetchall(
            f"SELECT {_BUS} FROM event_buses WHERE substr(name, 1, ?) = ? AND name > ? ORDER BY name LIMIT ?",
            (len(prefix), prefix, after, limit),
        )
        return [BusRow(*tuple(r)) for r in rows]

    async def delete_bus(self, name: str) -> Literal["deleted", "missing", "has_rules"]:
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM event_rules WHERE bus = ? LIMIT 1", (name,)) as cur:
                if await cur.fetchone():
                    return "has_rules"
            cur = await conn.execute("DELETE FROM event_buses WHERE name = ?", (name,))
            return "deleted" if cur.rowcount else "missing"

    # --- rules ---------------------------------------------------------------------------------------------

    async def put_rule(self, rule: RuleRow) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO event_rules({_RULE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(bus, name) DO UPDATE SET event_pattern = excluded.event_pattern,"
                " schedule = excluded.schedule, state = excluded.state, description = excluded.description,"
                " role_arn = excluded.role_arn, anchor = excluded.anchor, last_fired = excluded.last_fired",
                (rule.bus, rule.name, rule.event_pattern, rule.schedule, rule.state, rule.description,
                 rule.role_arn, rule.anchor, rule.last_fired),
            )

    async def get_rule(self, bus: str, name: str) -> RuleRow | None:
        row = await self.db.fetchone(f"SELECT {_RULE} FROM event_rules WHERE bus = ? AND name = ?", (bus, name))
        return RuleRow(*tuple(row)) if row else None

    async def list_rules(self, bus: str, prefix: str, after: str, limit: int) -> list[RuleRow]:
        rows = await self.db.fetchall(
            f"SELECT {_RULE} FROM event_rules WHERE bus = ? AND substr(name, 1, ?) = ? AND name > ?"
            " ORDER BY name LIMIT ?",
            (bus, len(prefix), prefix, after, limit),
        )
        return [RuleRow(*tuple(r)) for r in rows]

    async def set_state(self, bus: str, name: str, state: str, anchor: float) -> bool:
        """Enable or disable a rule. Enabling restarts its schedule at `anchor`: ticks missed while it was
        disabled are not fired."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE event_rules SET anchor = CASE WHEN state = ? THEN anchor ELSE ? END,"
                " last_fired = CASE WHEN state = ? THEN last_fired ELSE NULL END, state = ?"
                " WHERE bus = ? AND name = ?",
                (state, anchor, state, state, bus, name),
            )
            return cur.rowcount > 0

    async def delete_rule(self, bus: str, name: str) -> Literal["deleted", "missing", "has_targets"]:
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT 1 FROM event_targets WHERE bus = ? AND rule = ? LIMIT 1", (bus, name)
            ) as cur:
                if await cur.fetchone():
                    return "has_targets"
            cur = await conn.execute("DELETE FROM event_rules WHERE bus = ? AND name = ?", (bus, name))
            return "deleted" if cur.rowcount else "missing"

    async def enabled_rules(self) -> list[RuleRow]:
        rows = await self.db.fetchall(
            f"SELECT {_RULE} FROM event_rules WHERE state != 'DISABLED' ORDER BY bus, name"
        )
        return [RuleRow(*tuple(r)) for r in rows]

    # --- targets -------------------------------------------------------------------------------------------

    async def put_targets(self, bus: str, rule: str, targets: list[TargetRow],
                          limit: int) -> Literal["ok", "missing", "limit"]:
        """Add or replace targets by id, keeping the order they were first added in. Nothing is written if
        the rule would then have more than `limit` targets."""
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM event_rules WHERE bus = ? AND name = ?", (bus, rule)) as cur:
                if await cur.fetchone() is None:
                    return "missing"
            async with conn.execute(
                "SELECT id, position FROM event_targets WHERE bus = ? AND rule = ?", (bus, rule)
            ) as cur:
                positions = {r[0]: r[1] for r in await cur.fetchall()}
            if len(positions.keys() | {t.id for t in targets}) > limit:
                return "limit"
            following = max(positions.values(), default=-1) + 1
            for t in targets:
                if t.id not in positions:
                    positions[t.id], following = following, following + 1
                await conn.execute(
                    f"INSERT INTO event_targets({_TARGET}) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(bus, rule, id) DO UPDATE SET arn = excluded.arn, spec = excluded.spec",
                    (bus, rule, t.id, t.arn, t.spec, positions[t.id]),
                )
            return "ok"

    async def remove_targets(self, bus: str, rule: str, ids: list[str]) -> None:
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM event_targets WHERE bus = ? AND rule = ? AND id = ?", [(bus, rule, i) for i in ids]
            )

    async def list_targets(self, bus: str, rule: str, after_position: int = -1,
                           limit: int = 1000) -> list[TargetRow]:
        rows = await self.db.fetchall(
            f"SELECT {_TARGET} FROM event_targets WHERE bus = ? AND rule = ? AND position > ?"
            " ORDER BY position LIMIT ?",
            (bus, rule, after_position, limit),
        )
        return [TargetRow(*tuple(r)) for r in rows]

    async def enabled_targets(self) -> list[TargetRow]:
        rows = await self.db.fetchall(
            f"SELECT {', '.join('t.' + c for c in _TARGET.split(', '))} FROM event_targets t"
            " JOIN event_rules r ON r.bus = t.bus AND r.name = t.rule"
            " WHERE r.state != 'DISABLED' ORDER BY t.bus, t.rule, t.position"
        )
        return [TargetRow(*tuple(r)) for r in rows]

    # --- the outbox ----------------------------------------------------------------------------------------

    async def add_deliveries(self, deliveries: list[NewDelivery]) -> None:
        """Commit deliveries (group-committed with concurrent writes); returns once they are durable."""
        if deliveries:
            await self.db.write(*[(_INSERT_DELIVERY, _delivery_params(d)) for d in deliveries])

    async def fire_schedule(self, bus: str, rule: str, fired: float, deliveries: list[NewDelivery]) -> None:
        """Record a schedule tick and the deliveries it makes, in one transaction."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE event_rules SET last_fired = ? WHERE bus = ? AND name = ?", (fired, bus, rule)
            )
            if deliveries:
                await conn.executemany(_INSERT_DELIVERY, [_delivery_params(d) for d in deliveries])

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        rows = await self.db.fetchall(
            f"SELECT {_DELIVERY} FROM event_deliveries WHERE next_attempt <= ? ORDER BY next_attempt, id LIMIT ?",
            (now, limit),
        )
        return [Delivery(*tuple(r)) for r in rows]

    async def next_due(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(next_attempt) FROM event_deliveries")
        return None if row is None or row[0] is None else float(row[0])

    async def settle(self, done: list[int], retry: list[tuple[int, float]]) -> None:
        """Remove delivered (or given up) deliveries; count an attempt on the others and set their next one."""
        if not done and not retry:
            return
        async with self.db.transaction() as conn:
            if done:
                await conn.executemany("DELETE FROM event_deliveries WHERE id = ?", [(i,) for i in done])
            if retry:
                await conn.executemany(
                    "UPDATE event_deliveries SET attempts = attempts + 1, next_attempt = ? WHERE id = ?",
                    [(at, i) for i, at in retry],
                )

    async def pending_deliveries(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM event_deliveries")
        return int(row[0]) if row else 0
