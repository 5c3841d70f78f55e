
"""Application Auto Scaling of Lambda provisioned concurrency: the scaler behind the API in `autoscaling_api`.

A background service samples each scalable target's utilization (busy provisioned instances / allocated ones)
every `sample_interval`, and every `interval` runs one pass: scheduled actions that fell due set the target's
minimum and maximum capacity, and target tracking policies move the provisioned concurrency towards
`ceil(capacity * utilization / TargetValue)`, averaged over `window` and clamped to [MinCapacity, MaxCapacity].
Every change is recorded as a scaling activity, InProgress until the provisioner reports the instances READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from faas.api.json_protocol import JsonServiceError
from faas.errors import LambdaError
from faas.invoke.provisioning import Provisioner
from faas.runtime.pool import Pools
from faas.store.autoscaling import (
    AutoscalingStore,
    NotScaledReason,
    ScalableTarget,
    ScalingActivity,
    ScalingPolicy,
    ScheduledAction,
    TargetKey,
)
from faas.store.provisioned import ConcurrencySettings, ProvisionedSetting
from faas.store.records import aws_timestamp
from faas.store.registry import Registry
from faas.tasks import finish_or_cancel

log = logging.getLogger(__name__)

NAMESPACE = "lambda"
DIMENSION = "lambda:function:ProvisionedConcurrency"
METRIC = "LambdaProvisionedConcurrencyUtilization"
ACTIVITY_RETENTION = 42 * 86400.0  # AWS keeps six weeks of scaling activities
_PRUNE_EVERY = 3600.0


def resource_parts(resource_id: str) -> tuple[str, str]:
    """`function:NAME:QUALIFIER` -> (NAME, QUALIFIER); the id was validated when the target was registered."""
    _, name, qualifier = resource_id.split(":", 2)
    return name, qualifier


# -- schedules ------------------------------------------------------------------------------------------

_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\(([^()]*)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# A number in a day-of-week field that names a day, not the n of `#n` or a step.
_DOW_NUMBER = re.compile(r"(?<![#/\d])([1-7])(L?)(?!\d)")


def _aws_dow(field: str) -> str:
    """AWS numbers days 1-7 from Sunday and writes the last Friday of the month `6L`; croniter counts 0-6
    from Sunday and writes it `L5`."""
    def shift(m: re.Match[str]) -> str:
        day = int(m.group(1)) - 1
        return f"L{day}" if m.group(2) else str(day)

    return _DOW_NUMBER.sub(shift, field)


class Schedule:
    """When a scheduled action runs: `at(yyyy-mm-ddThh:mm:ss)`, `rate(N minutes|hours|days)` or a six-field
    `cron(minutes hours day-of-month month day-of-week year)`, in `tz` (UTC unless given), between optional
    start and end times. Raises ValueError, with a message for the client, when the expression is invalid."""

    def __init__(self, expression: str, tz: str | None, start: float | None, end: float | None, anchor: float):
        try:
            self.zone = ZoneInfo(tz) if tz else timezone.utc
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"Timezone '{tz}' is not a valid IANA time zone") from None
        self.start, self.end, self.anchor = start, end, anchor
        self.at: float | None = None
        self.period: float | None = None
        self.cron: str | None = None
        if m := _AT.fullmatch(expression):
            try:
                when = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
            except ValueError:
                raise ValueError(f"Invalid date in schedule expression '{expression}'") from None
            self.at = when.replace(tzinfo=self.zone).timestamp()
        elif m := _RATE.fullmatch(expression):
            value = int(m.group(1))
            if value < 1:
                raise ValueError(f"The rate in schedule expression '{expression}' must be a positive number")
            self.period = value * _UNIT_SECONDS[m.group(2).rstrip("s")]
        elif m := _CRON.fullmatch(expression):
            fields = m.group(1).split()
            if len(fields) != 6:
                raise ValueError(f"Cron expression '{expression}' must have six fields: "
                                 "minutes hours day-of-month month day-of-week year")
            minute, hour, dom, month, dow, year = fields
            if (dom == "?") == (dow == "?"):
                raise ValueError(f"Cron expression '{expression}' must give '?' in exactly one of day-of-month "
                                 "and day-of-week")
            self.cron = " ".join([minute, hour, dom.replace("?", "*"), month, _aws_dow(dow).replace("?", "*"),
                                  "0", year])
            if not croniter.is_valid(self.cron):
                raise ValueError(f"Invalid cron expression '{expression}'")
        else:
            raise ValueError(f"Invalid schedule expression '{expression}': expected at(yyyy-mm-ddThh:mm:ss), "
                             "rate(value unit) or cron(fields)")

    def latest(self, after: float, now: float) -> float | None:
        """The last occurrence later than `after` and no later than `now`, within the start and end times."""
        until = min(now, self.end) if self.end is not None else now
        when: float | None
        if self.at is not None:
            when = self.at
        elif self.period is not None:
            base = self.start if self.start is not None else self.anchor
            k = math.floor((until - base) / self.period)
            first = 0 if self.start is not None else 1
            when = base + k * self.period if k >= first else None
        else:
            assert self.cron is not None
            try:
                when = croniter(self.cron, datetime.fromtimestamp(until + 0.001, self.zone)).get_prev(float)
            except CroniterError:  # e.g. 31 February, or a year gone by
                when = None
        if when is None or when <= after or when > until:
            return None
        if self.start is not None and when < self.start:
            return None
        return when


# -- the scaler -----------------------------------------------------------------------------------------


class ConcurrentUpdateException(JsonServiceError):
    def __init__(self) -> None:
        super().__init__("ConcurrentUpdateException", "You already have a pending update to an Auto Scaling resource.")


class Autoscaler:
    """A background service: `run_once()` applies due scheduled actions and target tracking policies to every
    scalable target; `sample()` records utilization between passes. API changes go through `updating()` so
    they never interleave with a pass."""

    def __init__(self, store: AutoscalingStore, registry: Registry, concurrency: ConcurrencySettings,
                 provisioner: Provisioner, pools: Pools, *, minimum_unreserved: int, interval: float = 60.0,
                 sample_interval: float = 1.0, window: float = 60.0, update_timeout: float = 10.0):
        self.store = store
        self.registry = registry
        self.concurrency = concurrency
        self.provisioner = provisioner
        self.pools = pools
        self.minimum_unreserved = minimum_unreserved
        self.interval = interval
        self.sample_interval = min(sample_interval, interval)
        self.window = window
        self.update_timeout = update_timeout
        self._lock = asyncio.Lock()
        self._watched: dict[TargetKey, tuple[str, str]] = {}
        self._samples: dict[TargetKey, deque[tuple[float, float]]] = {}
        self._since: dict[TargetKey, float] = {}
        self._not_scaled: dict[TargetKey, str] = {}
        self._pruned = 0.0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="faas-autoscaler")

    async def close(self, timeout: float = 10.0) -> None:
        """Let a pass in progress finish (up to `timeout`), then stop. Safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        await finish_or_cancel(task, timeout)

    async def _loop(self) -> None:
        next_pass = time.time()
        while not self._stopping.is_set():
            now = time.time()
            try:
                if now >= next_pass:
                    next_pass = now + self.interval
                    await self.run_once(now)
                else:
                    self.sample(now)
            except Exception:
                log.exception("autoscaling pass failed")
            delay = max(0.0, min(self.sample_interval, next_pass - time.time()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    @contextlib.asynccontextmanager
    async def updating(self) -> AsyncIterator[None]:
        """Hold off passes while an API call changes targets, policies or scheduled actions."""
        try:
            await asyncio.wait_for(self._lock.acquire(), self.update_timeout)
        except asyncio.TimeoutError:
            raise ConcurrentUpdateException() from None
        try:
            yield
        finally:
            self._lock.release()

    # -- utilization ------------------------------------------------------------------------------

    def watch(self, target: ScalableTarget, now: float | None = None) -> None:
        if target.key not in self._watched:
            self._watched[target.key] = (target.function_name, target.qualifier)
            self._reset(target.key, time.time() if now is None else now)

    def forget(self, key: TargetKey) -> None:
        self._watched.pop(key, None)
        self._samples.pop(key, None)
        self._since.pop(key, None)
        self._not_scaled.pop(key, None)

    def _reset(self, key: TargetKey, now: float) -> None:
        """Samples taken at another capacity say nothing about this one: start a new window."""
        self._samples[key] = deque()
        self._since[key] = now

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key, (name, qualifier) in self._watched.items():
            allocated = self.pools.provisioned_count(name, qualifier)
            busy = self.pools.provisioned_busy(name, qualifier)
            samples = self._samples.setdefault(key, deque())
            samples.append((now, min(busy / allocated, 1.0) if allocated else 0.0))
            while samples and samples[0][0] <= now - self.window:
                samples.popleft()

    def utilization(self, key: TargetKey, now: float) -> float | None:
        """The average over the window, once a whole window has been sampled since the last change."""
        since = self._since.get(key)
        samples = [u for t, u in self._samples.get(key, ()) if t > now - self.window]
        if since is None or now - since < self.window - 1e-6 or not samples:
            return None
        return sum(samples) / len(samples)

    # -- one pass ---------------------------------------------------------------------------------

    async def run_once(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        async with self._lock:
            targets = await self.store.targets()
            for key in [k for k in self._watched if k not in {t.key for t in targets}]:
                self.forget(key)
            for target in targets:
                self.watch(target, now)
            self.sample(now)
            await self._settle(now)
            policies: dict[TargetKey, list[ScalingPolicy]] = {}
            for policy in await self.store.policies(NAMESPACE):
                policies.setdefault(policy.key, []).append(policy)
            actions: dict[TargetKey, list[ScheduledAction]] = {}
            for action in await self.store.scheduled_actions(NAMESPACE):
                actions.setdefault(action.key, []).append(action)
            for target in targets:
                for action in actions.get(target.key, []):
                    target = await self._run_scheduled(target, action, now)
                await self._track(target, policies.get(target.key, []), now)
            if now - self._pruned >= _PRUNE_EVERY:
                self._pruned = now
                await self.store.prune_activities(now - ACTIVITY_RETENTION)

    async def _settle(self, now: float) -> None:
        """Finish InProgress activities whose instances are ready (or failed, or were changed by someone else)."""
        for activity in await self.store.in_progress():
            if activity.desired is None:
                continue
            name, qualifier = resource_parts(activity.key.resource_id)
            if await self.capacity(name, qualifier) != activity.desired:
                await self.store.finish_activity(activity.activity_id, "Overridden", "Overridden by another change "
                                                 "of the provisioned concurrency.", now)
                continue
            status = self.provisioner.status(name, qualifier)
            if status.status == "READY" and status.allocated == activity.desired:
                await self.store.finish_activity(
                    activity.activity_id, "Successful", f"Successfully set desired concurrency to "
                    f"{activity.desired}. Change successfully fulfilled by lambda.", now,
                )
            elif status.status == "FAILED":
                await self.store.finish_activity(
                    activity.activity_id, "Failed",
                    f"Failed to set desired concurrency to {activity.desired}. {status.reason}", now,
                )

    async def _run_scheduled(self, target: ScalableTarget, action: ScheduledAction, now: float) -> ScalableTarget:
        try:
            schedule = Schedule(action.schedule, action.timezone, action.start_time, action.end_time, action.created)
        except ValueError:
            log.warning("scheduled action %s has an invalid schedule %r", action.name, action.schedule)
            return target
        due = schedule.latest(action.last_run if action.last_run is not None else action.created, now)
        if due is None:
            return target
        await self.store.set_last_run(action.key, action.name, due)
        if target.suspend_scheduled:
            return target
        low = action.min_capacity if action.min_capacity is not None else target.min_capacity
        high = action.max_capacity if action.max_capacity is not None else target.max_capacity
        cause = f"scheduled action name {action.name} was triggered"
        activity = self._activity(target.key, f"Setting min capacity to {low} and max capacity to {high}", cause,
                                  now)
        if low > high:
            activity.status_code, activity.end_time = "Failed", now
            activity.status_message = (f"Failed to set min capacity to {low} and max capacity to {high}: the minimum "
                                       "capacity cannot be greater than the maximum capacity.")
            await self.store.add_activity(activity)
            return target
        activity.status_code, activity.end_time = "Successful", now
        activity.status_message = f"Successfully set min capacity to {low} and max capacity to {high}"
        await self.store.set_bounds(target.key, low, high)
        await self.store.add_activity(activity)
        target.min_capacity, target.max_capacity = low, high
        await self.enforce_bounds(target, now)
        return target

    async def _track(self, target: ScalableTarget, policies: list[ScalingPolicy], now: float) -> None:
        """Target tracking: scale out when any policy asks for more, in only when all ask for less."""
        if not policies:
            return
        utilization = self.utilization(target.key, now)
        if utilization is None:
            return
        capacity = await self.capacity(target.function_name, target.qualifier)
        wanted: list[tuple[int, ScalingPolicy]] = []
        for policy in policies:
            raw = math.ceil(round(capacity * utilization / policy.tracking.target_value, 6))
            if policy.tracking.disable_scale_in:
                raw = max(raw, capacity)
            wanted.append((raw, policy))
        raw, policy = max(wanted, key=lambda w: w[0])
        desired = min(max(raw, target.min_capacity), target.max_capacity)
        cooldown_out = policy.tracking.scale_out_cooldown or 0
        cooldown_in = policy.tracking.scale_in_cooldown or 0
        if desired > capacity:
            if target.suspend_out or (target.last_scale_out is not None and now - target.last_scale_out < cooldown_out):
                return
            alarm = policy.alarm("AlarmHigh")
            await self.store.set_scaled(target.key, out=now)
            target.last_scale_out = now
        elif desired < capacity:
            last = max(target.last_scale_out or 0.0, target.last_scale_in or 0.0)
            if target.suspend_in or now - last < cooldown_in:
                return
            alarm = policy.alarm("AlarmLow")
            await self.store.set_scaled(target.key, in_=now)
            target.last_scale_in = now
        else:
            if raw != capacity:
                await self._not_scaled_activity(target, policy, raw, capacity, now)
            return
        cause = f"monitor alarm {alarm.name} in state ALARM triggered policy {policy.name}"
        await self.set_capacity(target, desired, cause, now)

    async def _not_scaled_activity(self, target: ScalableTarget, policy: ScalingPolicy, raw: int, capacity: int,
                                   now: float) -> None:
        if raw > capacity:
            reason = NotScaledReason("AlreadyAtMaxCapacity", capacity, max_capacity=target.max_capacity)
            alarm = policy.alarm("AlarmHigh")
        else:
            reason = NotScaledReason("AlreadyAtMinCapacity", capacity, min_capacity=target.min_capacity)
            alarm = policy.alarm("AlarmLow")
        if self._not_scaled.get(target.key) == reason.code:
            return  # said once is enough, until something changes
        self._not_scaled[target.key] = reason.code
        activity = self._activity(target.key, "Attempting to scale due to alarm triggered",
                                  f"monitor alarm {alarm.name} in state ALARM triggered policy {policy.name}", now)
        activity.status_code, activity.end_time = "Failed", now
        activity.status_message = f"Failed to set desired concurrency to {raw}."
        activity.not_scaled = [reason]
        await self.store.add_activity(activity)

    # -- changing capacity ------------------------------------------------------------------------

    async def capacity(self, name: str, qualifier: str) -> int:
        """The provisioned concurrency requested for the alias or version; 0 when there is no config."""
        for setting in await self.concurrency.provisioned(name):
            if setting.qualifier == qualifier:
                return setting.requested
        return 0

    async def enforce_bounds(self, target: ScalableTarget, now: float) -> None:
        """Bring the capacity inside [MinCapacity, MaxCapacity], as AWS does when they change."""
        capacity = await self.capacity(target.function_name, target.qualifier)
        if capacity < target.min_capacity:
            await self.set_capacity(target, target.min_capacity,
                                    f"minimum capacity was set to {target.min_capacity}", now)
        elif capacity > target.max_capacity:
            await self.set_capacity(target, target.max_capacity,
                                    f"maximum capacity was set to {target.max_capacity}", now)

    async def set_capacity(self, target: ScalableTarget, desired: int, cause: str, now: float) -> ScalingActivity:
        """Set the provisioned concurrency and record the activity. A change the Lambda side refuses (reserved
        concurrency too low, the alias gone) is a Failed activity, as on AWS."""
        activity = self._activity(target.key, f"Setting desired concurrency to {desired}.", cause, now, desired)
        # Shielded: a close() cancelling the pass must not leave the config changed without its activity.
        await asyncio.shield(self._apply(target, activity))
        self._reset(target.key, now)
        self._not_scaled.pop(target.key, None)
        return activity

    async def _apply(self, target: ScalableTarget, activity: ScalingActivity) -> None:
        name, qualifier, desired = target.function_name, target.qualifier, activity.desired
        assert desired is not None
        try:
            await self._check(name, qualifier, desired)
        except LambdaError as exc:
            activity.status_code, activity.end_time = "Failed", activity.start_time
            activity.status_message = f"Failed to set desired concurrency to {desired}. {exc.message}"
            await self.store.add_activity(activity)
            return
        if desired == 0:
            await self.concurrency.delete_provisioned(name, qualifier)
            self.provisioner.changed(name, qualifier, None)
            activity.status_code, activity.end_time = "Successful", activity.start_time
            activity.status_message = ("Successfully set desired concurrency to 0. Change successfully fulfilled "
                                       "by lambda.")
            await self.store.add_activity(activity)
            await self.pools.unprovision(name, qualifier)
            return
        await self.concurrency.put_provisioned(ProvisionedSetting(name, qualifier, desired, aws_timestamp()))
        self.provisioner.changed(name, qualifier, desired)
        await self.store.add_activity(activity)

    async def _check(self, name: str, qualifier: str, value: int) -> None:
        """What PutProvisionedConcurrencyConfig would refuse."""
        if qualifier.isdigit():
            exists = await self.registry.get_version(name, qualifier) is not None
        else:
            exists = await self.registry.aliases.get(name, qualifier) is not None
        if not exists:
            raise LambdaError(f"The function {name} has no alias or version {qualifier}.")
        await self.provisioner.check(name, qualifier, value, self.minimum_unreserved)

    @staticmethod
    def _activity(key: TargetKey, description: str, cause: str, now: float,
                  desired: int | None = None) -> ScalingActivity:
        return ScalingActivity(str(uuid.uuid4()), key, description, cause, now, "InProgress", desired=desired)
