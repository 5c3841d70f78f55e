"""Schedule expressions (`rate(...)`, `cron(...)`) and the scheduler that fires schedule rules.

Expressions
    rate(N unit)   N a positive integer; unit `minute`/`hour`/`day` when N is 1, `minutes`/`hours`/`days` otherwise
                   (as EventBridge requires). Ticks fall at anchor + k*period, k >= 1, where the anchor is the time
                   the rule was put or last enabled.
    cron(min hour day-of-month month day-of-week year), UTC, six fields as EventBridge reads them:
        minutes 0-59, hours 0-23            `,` `-` `*` `/`
        day-of-month 1-31                   `,` `-` `*` `/` `?`, `L` (last day), `LW` (last weekday),
                                            `nW` (weekday nearest day n, within the month)
        month 1-12 or JAN-DEC               `,` `-` `*` `/`
        day-of-week 1-7 (SUN=1) or SUN-SAT  `,` `-` `*` `/` `?`, `L` (Saturday), `nL` (last day n of the month),
                                            `n#k` (k-th day n of the month)
        year 1970-2199                      `,` `-` `*` `/`
    Exactly one of day-of-month and day-of-week must be `?`. Ranges may wrap (`FRI-MON`, `22-2`); `a/s` steps
    from a to the field's maximum. Names are case-insensitive. (Own implementation: no cron library reads AWS's
    day-of-week numbering, `?` or year field without a translation layer as large as this.)

Time scale
    `events.minute_seconds` is the length in real seconds of a schedule minute (60 by default). Schedules run on
    a clock that goes 60/minute_seconds times as fast as real time from a fixed origin (2024-01-01T00:00:00Z), so
    with 0.5 a `rate(1 minute)` rule fires every half second and `cron(* * * * ? *)` as often.

Firing and downtime
    Each pass looks, for every ENABLED schedule rule, for the latest tick at or before now that is after both
    the rule's anchor and its persisted `last_fired`. If there is one, the rule fires ONCE (an event whose `time`
    is that tick) and `last_fired` becomes that tick, in the same transaction as the deliveries it makes. So
    after downtime a rule catches up at most one missed tick, then continues on its schedule; a rule that was
    disabled does not catch up at all (enabling restarts its anchor).
"""

from __future__ import annotations

import calendar
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from faas.tasks import Passes

if TYPE_CHECKING:
    from faas.services.bus import EventBus


ORIGIN = 1704067200.0  # 2024-01-01T00:00:00Z: where the scaled schedule clock and real time agree
_TOLERANCE = 1.0  # schedule-clock seconds; ticks are at least a minute apart
_HORIZON_YEARS = 30

_MONTHS = {n: i for i, n in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_DAYS = {n: i for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)}


class InvalidSchedule(ValueError):
    pass


class Schedule(Protocol):
    expression: str

    def latest(self, at: float, anchor: float) -> float | None:
        """The latest tick at or before `at` (schedule-clock epoch seconds), or None."""

    def following(self, after: float, anchor: float) -> float | None:
        """The first tick after `after`, or None."""


def parse_schedule(expression: str) -> Schedule:
    """Raises `InvalidSchedule`."""
    m = re.fullmatch(r"\s*(rate|cron)\((.*)\)\s*", expression, re.DOTALL)
    if m is None:
        raise InvalidSchedule("a schedule expression is rate(...) or cron(...)")
    return Rate(expression, m.group(2)) if m.group(1) == "rate" else Cron(expression, m.group(2))


_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class Rate:
    def __init__(self, expression: str, body: str):
        m = re.fullmatch(r"\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*", body)
        if m is None:
            raise InvalidSchedule("rate(N minute|minutes|hour|hours|day|days)")
        n, unit = int(m.group(1)), m.group(2)
        if n < 1:
            raise InvalidSchedule("the rate must be a positive number")
        if (n == 1) == unit.endswith("s"):
            raise InvalidSchedule("use the singular unit for 1 and the plural for more")
        self.expression = expression
        self.period = float(n * _UNIT_SECONDS[unit.rstrip("s")])

    def latest(self, at: float, anchor: float) -> float | None:
        k = math.floor((at - anchor) / self.period)
        return anchor + k * self.period if k >= 1 else None

    def following(self, after: float, anchor: float) -> float | None:
        k = max(math.floor((after - anchor) / self.period) + 1, 1)
        return anchor + k * self.period


def _number(token: str, lo: int, hi: int, names: dict[str, int] | None) -> int:
    value = names.get(token.upper()) if names else None
    if value is None:
        if not token.isdigit():
            raise InvalidSchedule(f"{token!r} is not a number")
        value = int(token)
    if not lo <= value <= hi:
        raise InvalidSchedule(f"{token} is outside {lo}-{hi}")
    return value


def _values(text: str, lo: int, hi: int, names: dict[str, int] | None = None) -> set[int]:
    """A field of `,`-separated items, each `*`, `n`, `a-b` (may wrap) or any of those `/step`."""
    out: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidSchedule(f"bad step in {item!r}")
            step = int(step_text)
        if base == "*":
            seq = list(range(lo, hi + 1))
        elif "-" in base:
            a_text, _, b_text = base.partition("-")
            a, b = _number(a_text, lo, hi, names), _number(b_text, lo, hi, names)
            seq = list(range(a, b + 1)) if a <= b else list(range(a, hi + 1)) + list(range(lo, b + 1))
        else:
            a = _number(base, lo, hi, names)
            seq = list(range(a, hi + 1)) if slash else [a]
        out.update(seq[::step])
    return out


def _weekday(year: int, month: int, day: int) -> int:
    """1 = Sunday ... 7 = Saturday."""
    return (calendar.weekday(year, month, day) + 1) % 7 + 1


def _nearest_weekday(year: int, month: int, day: int) -> int:
    last = calendar.monthrange(year, month)[1]
    day = min(day, last)
    wd = _weekday(year, month, day)
    if wd == 7:  # Saturday: the Friday before, or the Monday after when the 1st is a Saturday
        return day - 1 if day > 1 else day + 2
    if wd == 1:  # Sunday: the Monday after, or the Friday before at the month's end
        return day + 1 if day < last else day - 2
    return day


DayRule = Callable[[int, int], set[int]]


def _day_of_month(text: str) -> list[DayRule]:
    rules: list[DayRule] = []
    plain: list[str] = []
    for item in text.split(","):
        up = item.upper()
        if up == "L":
            rules.append(lambda y, m: {calendar.monthrange(y, m)[1]})
        elif up == "LW":
            rules.append(lambda y, m: {_nearest_weekday(y, m, calendar.monthrange(y, m)[1])})
        elif up.endswith("W") and up[:-1].isdigit():
            n = _number(up[:-1], 1, 31, None)
            rules.append(lambda y, m, n=n: {_nearest_weekday(y, m, n)})
        else:
            plain.append(item)
    if plain:
        days = _values(",".join(plain), 1, 31)
        rules.append(lambda y, m: {d for d in days if d <= calendar.monthrange(y, m)[1]})
    return rules


def _day_of_week(text: str) -> list[DayRule]:
    rules: list[DayRule] = []
    plain: list[str] = []
    for item in text.split(","):
        up = item.upper()
        if up == "L":
            plain.append("7")
        elif up.endswith("L"):
            wd = _number(up[:-1], 1, 7, _DAYS)

            def last(y: int, m: int, wd: int = wd) -> set[int]:
                end = calendar.monthrange(y, m)[1]
                return {end - (_weekday(y, m, end) - wd) % 7}
            rules.append(last)
        elif "#" in up:
            wd_text, _, k_text = up.partition("#")
            wd, k = _number(wd_text, 1, 7, _DAYS), _number(k_text, 1, 5, None)

            def nth(y: int, m: int, wd: int = wd, k: int = k) -> set[int]:
                day = 1 + (wd - _weekday(y, m, 1)) % 7 + 7 * (k - 1)
                return {day} if day <= calendar.monthrange(y, m)[1] else set()
            rules.append(nth)
        else:
            plain.append(item)
    if plain:
        weekdays = _values(",".join(plain), 1, 7, _DAYS)
        rules.append(lambda y, m: {d for d in range(1, calendar.monthrange(y, m)[1] + 1)
                                   if _weekday(y, m, d) in weekdays})
    return rules


class Cron:
    def __init__(self, expression: str, body: str):
        fields = body.split()
        if len(fields) != 6:
            raise InvalidSchedule("cron() takes six fields: minutes hours day-of-month month day-of-week year")
        minutes, hours, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise InvalidSchedule("exactly one of day-of-month and day-of-week must be '?'")
        self.expression = expression
        try:
            self.minutes = sorted(_values(minutes, 0, 59))
            self.hours = sorted(_values(hours, 0, 23))
            self.months = _values(month, 1, 12, _MONTHS)
            self.years = None if year == "*" else _values(year, 1970, 2199)
            self._day_rules = _day_of_month(dom) if dom != "?" else _day_of_week(dow)
        except InvalidSchedule:
            raise
        except ValueError as exc:
            raise InvalidSchedule(str(exc)) from None
        self._days = lru_cache(maxsize=64)(self._month_days)

    def _month_days(self, year: int, month: int) -> list[int]:
        out: set[int] = set()
        for rule in self._day_rules:
            out |= rule(year, month)
        return sorted(out)

    def _month_ok(self, year: int, month: int) -> bool:
        return month in self.months and (self.years is None or year in self.years)

    def _limits(self, year: int) -> tuple[int, int]:
        if self.years is not None:
            return min(self.years), max(self.years)
        return max(1, year - _HORIZON_YEARS), min(9999, year + _HORIZON_YEARS)

    def following(self, after: float, anchor: float = 0.0) -> float | None:
        start = _datetime(math.floor(after / 60) * 60 + 60)
        if start is None:
            return None
        y, m, d, h, mi = start.year, start.month, start.day, start.hour, start.minute
        _, last_year = self._limits(y)
        while y <= last_year:
            if self._month_ok(y, m):
                for day in self._days(y, m):
                    if day < d:
                        continue
                    for hour in self.hours:
                        if day == d and hour < h:
                            continue
                        for minute in self.minutes:
                            if day == d and hour == h and minute < mi:
                                continue
                            return datetime(y, m, day, hour, minute, tzinfo=UTC).timestamp()
            m, d, h, mi = m + 1, 1, 0, 0
            if m > 12:
                y, m = y + 1, 1
        return None

    def latest(self, at: float, anchor: float = 0.0) -> float | None:
        end = _datetime(math.floor(at / 60) * 60)
        if end is None:
            return None
        y, m, d, h, mi = end.year, end.month, end.day, end.hour, end.minute
        first_year, _ = self._limits(y)
        while y >= first_year:
            if self._month_ok(y, m):
                for day in reversed(self._days(y, m)):
                    if day > d:
                        continue
                    for hour in reversed(self.hours):
                        if day == d and hour > h:
                            continue
                        for minute in reversed(self.minutes):
                            if day == d and hour == h and minute > mi:
                                continue
                            tick = datetime(y, m, day, hour, minute, tzinfo=UTC).timestamp()
                            return tick if tick > anchor else None
            m, d, h, mi = m - 1, 31, 23, 59
            if m < 1:
                y, m = y - 1, 12
        return None


def _datetime(epoch: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError, OSError):
        return None


class ScheduleClock:
    """Real time <-> schedule time, which runs `60 / minute_seconds` times as fast from `ORIGIN`."""

    def __init__(self, minute_seconds: float):
        self.scale = 60.0 / minute_seconds

    def to_schedule(self, real: float) -> float:
        return ORIGIN + (real - ORIGIN) * self.scale

    def to_real(self, scheduled: float) -> float:
        return ORIGIN + (scheduled - ORIGIN) / self.scale


class Scheduler(Passes):
    """Fires ENABLED schedule rules of the default bus through the bus's target delivery. `notify()` when rules
    change, so the next pass is planned again."""

    task_name = "event-scheduler"

    def __init__(self, bus: EventBus, *, minute_seconds: float, max_sleep: float,
                 clock: Callable[[], float] = time.time):
        super().__init__(clock, retry_after=max_sleep)
        self.bus = bus
        self.clock = ScheduleClock(minute_seconds)
        self.max_sleep = max_sleep
        self._next_wake: float | None = None
        self._schedules: dict[str, Schedule | None] = {}

    async def run_once(self) -> int:
        """Fire every rule that has a tick due; returns how many fired. Plans the next wake-up."""
        async with self._lock:
            now = self._now()
            now_s = self.clock.to_schedule(now)
            fired = 0
            next_tick: float | None = None
            for rule in await self.bus.store.enabled_rules():
                schedule = self._schedule(rule.schedule) if rule.schedule else None
                if schedule is None:
                    continue
                anchor = self.clock.to_schedule(rule.anchor)
                since = max(anchor, self.clock.to_schedule(rule.last_fired) if rule.last_fired else anchor)
                tick = schedule.latest(now_s, anchor)
                if tick is not None and tick > since + _TOLERANCE:
                    await self._fire(rule.bus, rule.name, self.clock.to_real(tick))
                    fired += 1
                upcoming = schedule.following(now_s, anchor)
                if upcoming is not None:
                    upcoming_real = self.clock.to_real(upcoming)
                    next_tick = upcoming_real if next_tick is None else min(next_tick, upcoming_real)
            self._next_wake = next_tick
            return fired

    def _schedule(self, expression: str) -> Schedule | None:
        if expression not in self._schedules:
            try:
                self._schedules[expression] = parse_schedule(expression)
            except InvalidSchedule:
                self._schedules[expression] = None
        return self._schedules[expression]

    async def _fire(self, bus: str, rule: str, tick: float) -> None:
        rule_arn = self.bus.rule_arn(bus, rule)
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.bus.arns.account_id,
            "time": event_time(tick),
            "region": self.bus.arns.region,
            "resources": [rule_arn],
            "detail": {},
        }
        deliveries = await self.bus.deliveries_for_rule(bus, rule, event)
        await self.bus.store.fire_schedule(bus, rule, tick, deliveries)
        if deliveries:
            self.bus.outbox.notify()

    async def _next_pass(self, done: int) -> float | None:
        """The next rule's tick, or `max_sleep` from now (rules changed meanwhile call `notify()`)."""
        now = self._now()
        return now + self.max_sleep if self._next_wake is None else min(self._next_wake, now + self.max_sleep)


def event_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
