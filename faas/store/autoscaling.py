"""Application Auto Scaling state in SQLite: scalable targets, target tracking policies, scheduled actions and
scaling activities. Times are epoch seconds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from faas.store.db import Database


class TargetKey(msgspec.Struct, frozen=True):
    namespace: str
    resource_id: str
    dimension: str

    def params(self) -> tuple[str, str, str]:
        return self.namespace, self.resource_id, self.dimension


class ScalableTarget(msgspec.Struct):
    key: TargetKey
    function_name: str
    qualifier: str
    arn: str
    min_capacity: int
    max_capacity: int
    role_arn: str
    created: float
    suspend_in: bool = False
    suspend_out: bool = False
    suspend_scheduled: bool = False
    tags: dict[str, str] = {}
    last_scale_out: float | None = None
    last_scale_in: float | None = None


class TargetTracking(msgspec.Struct, omit_defaults=True):
    """A TargetTrackingScalingPolicyConfiguration; members left out by the caller stay None."""

    target_value: float
    metric_type: str
    resource_label: str | None = None
    scale_out_cooldown: int | None = None
    scale_in_cooldown: int | None = None
    disable_scale_in: bool | None = None


class Alarm(msgspec.Struct):
    name: str
    arn: str


class ScalingPolicy(msgspec.Struct):
    key: TargetKey
    name: str
    arn: str
    policy_type: str
    tracking: TargetTracking
    alarms: list[Alarm]
    created: float

    def alarm(self, kind: str) -> Alarm:
        """The policy's `AlarmHigh` or `AlarmLow`."""
        return next((a for a in self.alarms if f"-{kind}-" in a.name), self.alarms[0])


class ScheduledAction(msgspec.Struct):
    key: TargetKey
    name: str
    arn: str
    schedule: str
    created: float
    timezone: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    min_capacity: int | None = None
    max_capacity: int | None = None
    last_run: float | None = None


class NotScaledReason(msgspec.Struct, omit_defaults=True):
    code: str
    current_capacity: int
    min_capacity: int | None = None
    max_capacity: int | None = None


class ScalingActivity(msgspec.Struct):
    activity_id: str
    key: TargetKey
    description: str
    cause: str
    start_time: float
    status_code: str
    end_time: float | None = None
    status_message: str | None = None
    desired: int | None = None
    not_scaled: list[NotScaledReason] | None = None


_KEY = "service_namespace = ? AND resource_id = ? AND scalable_dimension = ?"
_TARGET_COLUMNS = (
    "service_namespace, resource_id, scalable_dimension, function_name, qualifier, arn, min_capacity, max_capacity,"
    " role_arn, suspend_in, suspend_out, suspend_scheduled, tags, created, last_scale_out, last_scale_in"
)
_POLICY_COLUMNS = (
    "service_namespace, resource_id, scalable_dimension, name, arn, policy_type, configuration, alarms, created"
)
_ACTION_COLUMNS = (
    "service_namespace, resource_id, scalable_dimension, name, arn, schedule, timezone, start_time, end_time,"
    " min_capacity, max_capacity, created, last_run"
)
_ACTIVITY_COLUMNS = (
    "activity_id, service_namespace, resource_id, scalable_dimension, description, cause, start_time, end_time,"
    " status_code, status_message, desired, not_scaled"
)
_tracking_decoder = msgspec.json.Decoder(TargetTracking)
_alarms_decoder = msgspec.json.Decoder(list[Alarm])
_reasons_decoder = msgspec.json.Decoder(list[NotScaledReason])
_tags_decoder = msgspec.json.Decoder(dict[str, str])


def _key(row: Any) -> TargetKey:
    return TargetKey(row["service_namespace"], row["resource_id"], row["scalable_dimension"])


def _filters(namespace: str, resource_ids: Sequence[str] | None, dimension: str | None,
             names: Sequence[str] | None = None) -> tuple[str, list[Any]]:
    where, params = ["service_namespace = ?"], [namespace]
    if resource_ids:
        where.append(f"resource_id IN ({','.join('?' * len(resource_ids))})")
        params.extend(resource_ids)
    if dimension:
        where.append("scalable_dimension = ?")
        params.append(dimension)
    if names:
        where.append(f"name IN ({','.join('?' * len(names))})")
        params.extend(names)
    return " AND ".join(where), params


class AutoscalingStore:
    def __init__(self, db: Database):
        self.db = db

    # -- scalable targets ---------------------------------------------------------------------------

    @staticmethod
    def _target(row: Any) -> ScalableTarget:
        return ScalableTarget(
            _key(row), row["function_name"], row["qualifier"], row["arn"], int(row["min_capacity"]),
            int(row["max_capacity"]), row["role_arn"], float(row["created"]), bool(row["suspend_in"]),
            bool(row["suspend_out"]), bool(row["suspend_scheduled"]), _tags_decoder.decode(row["tags"]),
            row["last_scale_out"], row["last_scale_in"],
        )

    async def targets(self, namespace: str | None = None, resource_ids: Sequence[str] | None = None,
                      dimension: str | None = None) -> list[ScalableTarget]:
        sql = f"SELECT {_TARGET_COLUMNS} FROM scalable_targets"
        params: list[Any] = []
        if namespace is not None:
            where, params = _filters(namespace, resource_ids, dimension)
            sql += f" WHERE {where}"
        rows = await self.db.fetchall(sql + " ORDER BY created, rowid", params)
        return [self._target(r) for r in rows]

    async def target(self, key: TargetKey) -> ScalableTarget | None:
        row = await self.db.fetchone(f"SELECT {_TARGET_COLUMNS} FROM scalable_targets WHERE {_KEY}", key.params())
        return self._target(row) if row else None

    async def put_target(self, t: ScalableTarget) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO scalable_targets({_TARGET_COLUMNS}) VALUES ({','.join('?' * 16)})"
                " ON CONFLICT(service_namespace, resource_id, scalable_dimension) DO UPDATE SET"
                " min_capacity = excluded.min_capacity, max_capacity = excluded.max_capacity,"
                " role_arn = excluded.role_arn, suspend_in = excluded.suspend_in,"
                " suspend_out = excluded.suspend_out, suspend_scheduled = excluded.suspend_scheduled",
                (*t.key.params(), t.function_name, t.qualifier, t.arn, t.min_capacity, t.max_capacity, t.role_arn,
                 int(t.suspend_in), int(t.suspend_out), int(t.suspend_scheduled),
                 msgspec.json.encode(t.tags).decode(), t.created, t.last_scale_out, t.last_scale_in),
            )

    async def set_bounds(self, key: TargetKey, min_capacity: int, max_capacity: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(f"UPDATE scalable_targets SET min_capacity = ?, max_capacity = ? WHERE {_KEY}",
                               (min_capacity, max_capacity, *key.params()))

    async def set_scaled(self, key: TargetKey, *, out: float | None = None, in_: float | None = None) -> None:
        """Record when a policy last scaled the target out or in (for cooldowns)."""
        async with self.db.transaction() as conn:
            if out is not None:
                await conn.execute(f"UPDATE scalable_targets SET last_scale_out = ? WHERE {_KEY}",
                                   (out, *key.params()))
            if in_ is not None:
                await conn.execute(f"UPDATE scalable_targets SET last_scale_in = ? WHERE {_KEY}",
                                   (in_, *key.params()))

    async def delete_target(self, key: TargetKey) -> bool:
        """Deregister a target; its policies and scheduled actions go with it."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(f"DELETE FROM scalable_targets WHERE {_KEY}", key.params())
            return cur.rowcount > 0

    # -- scaling policies ---------------------------------------------------------------------------

    @staticmethod
    def _policy(row: Any) -> ScalingPolicy:
        return ScalingPolicy(
            _key(row), row["name"], row["arn"], row["policy_type"], _tracking_decoder.decode(row["configuration"]),
            _alarms_decoder.decode(row["alarms"]), float(row["created"]),
        )

    async def policies(self, namespace: str, resource_id: str | None = None, dimension: str | None = None,
                       names: Sequence[str] | None = None) -> list[ScalingPolicy]:
        where, params = _filters(namespace, [resource_id] if resource_id else None, dimension, names)
        rows = await self.db.fetchall(
            f"SELECT {_POLICY_COLUMNS} FROM scaling_policies WHERE {where} ORDER BY created, rowid", params
        )
        return [self._policy(r) for r in rows]

    async def put_policy(self, p: ScalingPolicy) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO scaling_policies({_POLICY_COLUMNS}) VALUES ({','.join('?' * 9)})"
                " ON CONFLICT(service_namespace, resource_id, scalable_dimension, name) DO UPDATE SET"
                " policy_type = excluded.policy_type, configuration = excluded.configuration",
                (*p.key.params(), p.name, p.arn, p.policy_type, msgspec.json.encode(p.tracking).decode(),
                 msgspec.json.encode(p.alarms).decode(), p.created),
            )

    async def delete_policy(self, key: TargetKey, name: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(f"DELETE FROM scaling_policies WHERE {_KEY} AND name = ?", (*key.params(), name))
            return cur.rowcount > 0

    # -- scheduled actions --------------------------------------------------------------------------

    @staticmethod
    def _action(row: Any) -> ScheduledAction:
        return ScheduledAction(
            _key(row), row["name"], row["arn"], row["schedule"], float(row["created"]), row["timezone"],
            row["start_time"], row["end_time"], row["min_capacity"], row["max_capacity"], row["last_run"],
        )

    async def scheduled_actions(self, namespace: str, resource_id: str | None = None, dimension: str | None = None,
                                names: Sequence[str] | None = None) -> list[ScheduledAction]:
        where, params = _filters(namespace, [resource_id] if resource_id else None, dimension, names)
        rows = await self.db.fetchall(
            f"SELECT {_ACTION_COLUMNS} FROM scheduled_actions WHERE {where} ORDER BY created, rowid", params
        )
        return [self._action(r) for r in rows]

    async def put_scheduled_action(self, a: ScheduledAction) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO scheduled_actions({_ACTION_COLUMNS}) VALUES ({','.join('?' * 13)})"
                " ON CONFLICT(service_namespace, resource_id, scalable_dimension, name) DO UPDATE SET"
                " schedule = excluded.schedule, timezone = excluded.timezone, start_time = excluded.start_time,"
                " end_time = excluded.end_time, min_capacity = excluded.min_capacity,"
                " max_capacity = excluded.max_capacity, last_run = excluded.last_run",
                (*a.key.params(), a.name, a.arn, a.schedule, a.timezone, a.start_time, a.end_time, a.min_capacity,
                 a.max_capacity, a.created, a.last_run),
            )

    async def set_last_run(self, key: TargetKey, name: str, when: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(f"UPDATE scheduled_actions SET last_run = ? WHERE {_KEY} AND name = ?",
                               (when, *key.params(), name))

    async def delete_scheduled_action(self, key: TargetKey, name: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(f"DELETE FROM scheduled_actions WHERE {_KEY} AND name = ?",
                                     (*key.params(), name))
            return cur.rowcount > 0

    # -- scaling activities -------------------------------------------------------------------------

    @staticmethod
    def _activity(row: Any) -> ScalingActivity:
        reasons = _reasons_decoder.decode(row["not_scaled"]) if row["not_scaled"] else None
        return ScalingActivity(
            row["activity_id"], _key(row), row["description"], row["cause"], float(row["start_time"]),
            row["status_code"], row["end_time"], row["status_message"], row["desired"], reasons,
        )

    async def add_activity(self, a: ScalingActivity) -> None:
        """Record an activity. A new change of capacity overrides one of the same target still in progress."""
        async with self.db.transaction() as conn:
            if a.desired is not None:
                await conn.execute(
                    f"UPDATE scaling_activities SET status_code = 'Overridden', end_time = ? WHERE {_KEY}"
                    " AND status_code = 'InProgress'", (a.start_time, *a.key.params()),
                )
            reasons = msgspec.json.encode(a.not_scaled).decode() if a.not_scaled else None
            await conn.execute(
                f"INSERT INTO scaling_activities({_ACTIVITY_COLUMNS}) VALUES ({','.join('?' * 12)})",
                (a.activity_id, *a.key.params(), a.description, a.cause, a.start_time, a.end_time, a.status_code,
                 a.status_message, a.desired, reasons),
            )

    async def finish_activity(self, activity_id: str, status_code: str, message: str, end_time: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE scaling_activities SET status_code = ?, status_message = ?, end_time = ?"
                " WHERE activity_id = ? AND status_code = 'InProgress'", (status_code, message, end_time, activity_id),
            )

    async def in_progress(self) -> list[ScalingActivity]:
        rows = await self.db.fetchall(
            f"SELECT {_ACTIVITY_COLUMNS} FROM scaling_activities WHERE status_code = 'InProgress'"
        )
        return [self._activity(r) for r in rows]

    async def activities(self, namespace: str, resource_id: str | None, dimension: str | None, *,
                         include_not_scaled: bool, offset: int, limit: int) -> list[ScalingActivity]:
        """Newest first."""
        where, params = _filters(namespace, [resource_id] if resource_id else None, dimension)
        if not include_not_scaled:
            where += " AND not_scaled IS NULL"
        rows = await self.db.fetchall(
            f"SELECT {_ACTIVITY_COLUMNS} FROM scaling_activities WHERE {where}"
            " ORDER BY start_time DESC, rowid DESC LIMIT ? OFFSET ?", (*params, limit, offset),
        )
        return [self._activity(r) for r in rows]

    async def prune_activities(self, before: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM scaling_activities WHERE start_time < ?", (before,))

