"""The built-in event bus: buses, rules and targets (kept in SQLite), PutEvents routing, and the outbox that
delivers matched events to Lambda functions (asynchronous invocation), SQS queues and SNS topics.

Durability: PutEvents matches each event against the ENABLED rules of its bus and commits one outbox row per
(event, target) with the target's input already rendered, before it answers. The outbox dispatcher hands rows to
their targets and deletes them once handed over, so delivery is at-least-once: a restart, even after SIGKILL,
delivers whatever was still pending. A failed hand-over is retried with exponential backoff within the target's
RetryPolicy (185 retries and 24 hours by default); a client-side error such as a function or queue that does not
exist is not retried. Given-up deliveries are logged; dead-letter queues are not supported yet.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from faas.api.json_protocol import JsonServiceError
from faas.arn import Arns
from faas.errors import LambdaError
from faas.events.patterns import InvalidPattern, Pattern, compile_pattern
from faas.services.schedules import Scheduler, event_time
from faas.store.events import Delivery, EventStore, NewDelivery, RuleRow, TargetRow
from faas.tasks import Passes

if TYPE_CHECKING:
    from faas.config import EventsConfig
    from faas.services import Services

log = logging.getLogger(__name__)

DEFAULT_BUS = "default"
MAX_TARGETS = 5
_BUS_ARN = re.compile(r"arn:aws[\w-]*:events:[^:]*:\d{12}:event-bus/(?P<name>.+)")
_LAMBDA_ARN = re.compile(r"arn:aws[\w-]*:lambda:[^:]+:\d{12}:function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?")
_SQS_ARN = re.compile(r"arn:aws[\w-]*:sqs:[^:]+:\d{12}:[\w-]+(?:\.fifo)?")
_SNS_ARN = re.compile(r"arn:aws[\w-]*:sns:[^:]+:\d{12}:[\w-]+(?:\.fifo)?")


class TargetSpec(msgspec.Struct):
    """A stored target, ready to render inputs for."""

    id: str
    arn: str
    input: str | None = None
    input_path: list[str | int] | None = None
    paths: dict[str, list[str | int]] | None = None  # InputTransformer.InputPathsMap
    template: str | None = None  # InputTransformer.InputTemplate
    message_group_id: str | None = None
    max_attempts: int = 185  # RetryPolicy.MaximumRetryAttempts
    max_age: int = 86400  # RetryPolicy.MaximumEventAgeInSeconds


def _invalid(message: str) -> JsonServiceError:
    return JsonServiceError("ValidationException", message)


_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def parse_json_path(path: str) -> list[str | int]:
    """The JSONPath subset targets use: `$`, then `.name`, `['name']` or `[index]` steps."""
    if not path.startswith("$"):
        raise ValueError(path)
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_STEP.match(path, pos)
        if m is None:
            raise ValueError(path)
        name, index, quoted, double = m.groups()
        steps.append(int(index) if index is not None else next(v for v in (name, quoted, double) if v is not None))
        pos = m.end()
    return steps


_MISSING = object()


def _walk(value: Any, steps: list[str | int]) -> Any:
    for step in steps:
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        if in_list or (isinstance(step, str) and isinstance(value, dict) and step in value):
            value = value[step]
        else:
            return _MISSING
    return value


def parse_target(target: dict[str, Any]) -> TargetSpec | None:
    """Check a PutTargets target. None for a target this server cannot deliver to; ValidationException for
    malformed input settings."""
    tid, arn = target["Id"], target["Arn"]
    if not (_LAMBDA_ARN.fullmatch(arn) or _SQS_ARN.fullmatch(arn) or _SNS_ARN.fullmatch(arn)):
        return None
    given = [k for k in ("Input", "InputPath", "InputTransformer") if target.get(k) is not None]
    if len(given) > 1:
        raise _invalid(f"Only one of Input, InputPath, or InputTransformer must be provided for target {tid}.")
    spec = TargetSpec(tid, arn)
    if target.get("Input") is not None:
        try:
            msgspec.json.decode(target["Input"])
        except msgspec.DecodeError:
            raise _invalid(f"Input for target {tid} must be valid JSON text.") from None
        spec.input = target["Input"]
    if target.get("InputPath") is not None:
        try:
            spec.input_path = parse_json_path(target["InputPath"])
        except ValueError:
            raise _invalid(f"InputPath for target {tid} must be a valid JsonPath.") from None
    transformer = target.get("InputTransformer")
    if transformer is not None:
        spec.template, spec.paths = transformer["InputTemplate"], {}
        for key, path in (transformer.get("InputPathsMap") or {}).items():
            if key.startswith("aws.") or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                raise _invalid(f"InputPathsMap key {key} of target {tid} is not valid.")
            try:
                spec.paths[key] = parse_json_path(path)
            except ValueError:
                raise _invalid(f"InputPathsMap value {path} of target {tid} must be a valid JsonPath.") from None
    if arn.endswith(".fifo") and _SQS_ARN.fullmatch(arn):
        spec.message_group_id = (target.get("SqsParameters") or {}).get("MessageGroupId")
        if not spec.message_group_id:
            raise _invalid(f"Parameter(s) SqsParameters must be specified for target: {tid}.")
    policy = target.get("RetryPolicy") or {}
    if policy.get("MaximumRetryAttempts") is not None:
        spec.max_attempts = policy["MaximumRetryAttempts"]
    if policy.get("MaximumEventAgeInSeconds") is not None:
        spec.max_age = policy["MaximumEventAgeInSeconds"]
    return spec


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _fill_template(template: str, values: dict[str, Any]) -> str:
    """Replace `<name>` placeholders. In a JSON template a placeholder inside a string literal takes the value's
    text (escaped for the string), elsewhere its JSON; in a plain-text template, strings go in as they are."""
    json_mode = template.lstrip()[:1] in ("{", "[", '"')
    out: list[str] = []
    in_string = False
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if in_string and ch == "\\":
            out.append(template[i:i + 2])
            i += 2
            continue
        if ch == '"' and json_mode:
            in_string = not in_string
        elif ch == "<":
            end = template.find(">", i + 1)
            name = template[i + 1:end] if end > 0 else ""
            if name in values:
                value = values[name]
                if not json_mode or in_string:
                    text = "" if value is _MISSING or value is None else (
                        value if isinstance(value, str) else _json(value))
                    out.append(_json(text)[1:-1] if in_string else text)
                else:
                    out.append("null" if value is _MISSING else _json(value))
                i = end + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def render_input(spec: TargetSpec, event: dict[str, Any], rule_name: str, rule_arn: str, now: float) -> str:
    """What the target receives: the event, or what Input / InputPath / InputTransformer make of it."""
    if spec.input is not None:
        return spec.input
    if spec.input_path is not None:
        value = _walk(event, spec.input_path)
        return "null" if value is _MISSING else _json(value)
    if spec.template is not None:
        values: dict[str, Any] = {
            "aws.events.rule-arn": rule_arn, "aws.events.rule-name": rule_name,
            "aws.events.event.ingestion-time": event_time(now),
            "aws.events.event": event, "aws.events.event.json": event,
        }
        for key, steps in (spec.paths or {}).items():
            values[key] = _walk(event, steps)
        return _fill_template(spec.template, values)
    return _json(event)


class DeliveryFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool):
        super().__init__(reason)
        self.permanent = permanent


class _Route(msgspec.Struct):
    bus: str
    name: str
    arn: str
    pattern: Pattern | None
    targets: list[TargetSpec]


class _Routes(msgspec.Struct):
    by_bus: dict[str, list[_Route]]
    by_rule: dict[tuple[str, str], _Route]


def rule_not_found(bus: str, name: str) -> JsonServiceError:
    return JsonServiceError("ResourceNotFoundException", f"Rule {name} does not exist on EventBus {bus}.")


def bus_not_found(bus: str) -> JsonServiceError:
    return JsonServiceError("ResourceNotFoundException", f"Event bus {bus} does not exist.")


class EventBus:
    """Buses, rules and targets; PutEvents; and the background outbox and scheduler (`start`/`close`)."""

    def __init__(self, store: EventStore, arns: Arns, settings: EventsConfig,
                 *, clock: Callable[[], float] = time.time):
        self.store = store
        self.arns = arns
        self.settings = settings
        self.services: Services | None = None  # set by `attach`: deliveries go through its async queue and queues
        self._now = clock
        self._prefix = f"arn:aws:events:{arns.region}:{arns.account_id}:"
        self._routes: _Routes | None = None
        self._generation = 0
        self._routes_lock = asyncio.Lock()
        self.outbox = Outbox(store, self._send, settings, clock=clock)
        self.scheduler = Scheduler(self, minute_seconds=settings.minute_seconds, max_sleep=settings.schedule_tick,
                                   clock=clock)

    def attach(self, services: Services) -> None:
        self.services = services

    async def begin(self) -> None:
        """Before serving: one scheduler pass, so a schedule that missed ticks while the server was down fires
        its one catch-up tick now."""
        await self.scheduler.run_once()

    def start(self) -> None:
        if self.settings.dispatch:
            self.outbox.start()
        self.scheduler.start()

    async def close(self, timeout: float = 10.0) -> None:
        await self.scheduler.close(timeout)
        await self.outbox.close(timeout)

    # --- names and ARNs ------------------------------------------------------------------------------------

    def bus_arn(self, name: str) -> str:
        return f"{self._prefix}event-bus/{name}"

    def rule_arn(self, bus: str, name: str) -> str:
        return f"{self._prefix}rule/{name}" if bus == DEFAULT_BUS else f"{self._prefix}rule/{bus}/{name}"

    @staticmethod
    def bus_name(value: str | None) -> str:
        """An EventBusName member (name or ARN); absent means the default bus."""
        if not value:
            return DEFAULT_BUS
        m = _BUS_ARN.fullmatch(value)
        return m.group("name") if m else value

    async def require_bus(self, name: str) -> None:
        if await self.store.get_bus(name) is None:
            raise bus_not_found(name)

    async def require_rule(self, bus: str, name: str) -> RuleRow:
        rule = await self.store.get_rule(bus, name)
        if rule is None:
            raise rule_not_found(bus, name)
        return rule

    def changed(self) -> None:
        """Rules or targets changed: routes are reloaded before the next event, schedules replanned."""
        self._generation += 1
        self._routes = None
        self.scheduler.notify()

    # --- buses ---------------------------------------------------------------------------------------------

    async def create_bus(self, name: str, description: str | None) -> str:
        if name == DEFAULT_BUS or not await self.store.create_bus(name, description, self._now()):
            raise JsonServiceError("ResourceAlreadyExistsException", f"Event bus {name} already exists.")
        return self.bus_arn(name)

    async def delete_bus(self, name: str) -> None:
        if name == DEFAULT_BUS:
            raise JsonServiceError("ValidationException", "Cannot delete event bus default.")
        if await self.store.delete_bus(name) == "has_rules":
            raise JsonServiceError("ValidationException",
                                   f"Cannot delete event bus {name} while it has rules: delete them first.")
        self.changed()

    # --- rules ---------------------------------------------------------------------------------------------

    async def put_rule(self, rule: RuleRow) -> str:
        """Create or replace a rule (targets are kept). The schedule restarts when the schedule expression or
        the state changes."""
        await self.require_bus(rule.bus)
        old = await self.store.get_rule(rule.bus, rule.name)
        if old is not None and old.schedule == rule.schedule and old.state == rule.state:
            rule.anchor, rule.last_fired = old.anchor, old.last_fired
        else:
            rule.anchor, rule.last_fired = self._now(), None
        await self.store.put_rule(rule)
        self.changed()
        return self.rule_arn(rule.bus, rule.name)

    async def set_state(self, bus: str, name: str, state: str) -> None:
        if not await self.store.set_state(bus, name, state, self._now()):
            raise rule_not_found(bus, name)
        self.changed()

    async def delete_rule(self, bus: str, name: str) -> None:
        if await self.store.delete_rule(bus, name) == "has_targets":
            raise JsonServiceError("ValidationException", "Rule can't be deleted since it has targets.")
        self.changed()

    # --- targets -------------------------------------------------------------------------------------------

    async def put_targets(self, bus: str, rule: str, targets: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Validate and store targets; returns the failed entries (targets this server cannot deliver to)."""
        failed: list[dict[str, str]] = []
        rows: list[TargetRow] = []
        for target in targets:
            spec = parse_target(target)  # malformed input raises ValidationException for the request
            if spec is None:
                failed.append({
                    "TargetId": target["Id"], "ErrorCode": "ValidationException",
                    "ErrorMessage": f"Target {target['Arn']} is not supported: this server delivers to Lambda "
                                    "functions, SQS queues and SNS topics.",
                })
                continue
            rows.append(TargetRow(bus, rule, target["Id"], target["Arn"], msgspec.json.encode(target).decode()))
        outcome = await self.store.put_targets(bus, rule, rows, MAX_TARGETS)
        if outcome == "missing":
            raise rule_not_found(bus, rule)
        if outcome == "limit":
            raise JsonServiceError("LimitExceededException",
                                   f"The requested resource exceeds the maximum number allowed ({MAX_TARGETS}).")
        self.changed()
        return failed

    async def remove_targets(self, bus: str, rule: str, ids: list[str]) -> None:
        await self.require_rule(bus, rule)
        await self.store.remove_targets(bus, rule, ids)
        self.changed()

    # --- routing -------------------------------------------------------------------------------------------

    async def _current_routes(self) -> _Routes:
        routes = self._routes
        if routes is not None:
            return routes
        async with self._routes_lock:
            if self._routes is not None:
                return self._routes
            generation = self._generation
            rules = await self.store.enabled_rules()
            targets = await self.store.enabled_targets()
            by_rule: dict[tuple[str, str], _Route] = {}
            for r in rules:
                try:
                    pattern = compile_pattern(r.event_pattern) if r.event_pattern else None
                except InvalidPattern:
                    pattern = None
                by_rule[(r.bus, r.name)] = _Route(r.bus, r.name, self.rule_arn(r.bus, r.name), pattern, [])
            for t in targets:
                route = by_rule.get((t.bus, t.rule))
                spec = parse_target(msgspec.json.decode(t.spec)) if route is not None else None
                if route is not None and spec is not None:
                    route.targets.append(spec)
            by_bus: dict[str, list[_Route]] = {}
            for route in by_rule.values():
                if route.pattern is not None:
                    by_bus.setdefault(route.bus, []).append(route)
            routes = _Routes(by_bus, by_rule)
            if generation == self._generation:  # no change committed while loading
                self._routes = routes
            return routes

    def _deliveries(self, route: _Route, event: dict[str, Any], now: float) -> list[NewDelivery]:
        out = []
        for t in route.targets:
            out.append(NewDelivery(
                target_arn=t.arn, body=render_input(t, event, route.name, route.arn, now),
                message_group_id=t.message_group_id, rule_arn=route.arn, target_id=t.id,
                max_attempts=t.max_attempts + 1, expires_at=now + t.max_age, next_attempt=now,
            ))
        return out

    async def deliveries_for_rule(self, bus: str, rule: str, event: dict[str, Any]) -> list[NewDelivery]:
        route = (await self._current_routes()).by_rule.get((bus, rule))
        return self._deliveries(route, event, self._now()) if route is not None else []

    async def put_events(self, entries: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Route each entry; commit the deliveries; return PutEvents' result entries (in order)."""
        routes = await self._current_routes()
        now = self._now()
        results: list[dict[str, str]] = []
        deliveries: list[NewDelivery] = []
        known_buses: dict[str, bool] = {DEFAULT_BUS: True}
        for entry in entries:
            try:
                bus, event = await self._envelope(entry, now, known_buses)
            except DeliveryFailed as failure:
                code, _, message = str(failure).partition(": ")
                results.append({"ErrorCode": code, "ErrorMessage": message})
                continue
            for route in routes.by_bus.get(bus, ()):
                if route.pattern is not None and route.pattern.matches(event):
                    deliveries.extend(self._deliveries(route, event, now))
            results.append({"EventId": event["id"]})
        await self.store.add_deliveries(deliveries)
        if deliveries:
            self.outbox.notify()
        return results

    async def _envelope(self, entry: dict[str, Any], now: float,
                        known_buses: dict[str, bool]) -> tuple[str, dict[str, Any]]:
        for member in ("Source", "DetailType", "Detail"):
            if not entry.get(member):
                raise DeliveryFailed(f"InvalidArgument: Parameter {member} is not valid. "
                                     f"Reason: {member} is a required argument.", permanent=True)
        try:
            detail = msgspec.json.decode(entry["Detail"])
        except msgspec.DecodeError:
            detail = None
        if not isinstance(detail, dict):
            raise DeliveryFailed("MalformedDetail: Detail is malformed.", permanent=True)
        bus = self.bus_name(entry.get("EventBusName"))
        if bus not in known_buses:
            known_buses[bus] = await self.store.get_bus(bus) is not None
        if not known_buses[bus]:
            raise DeliveryFailed(f"ResourceNotFoundException: Event bus {bus} does not exist.", permanent=True)
        at = entry.get("Time")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": entry["DetailType"],
            "source": entry["Source"],
            "account": self.arns.account_id,
            "time": event_time(float(at) if isinstance(at, (int, float)) else now),
            "region": self.arns.region,
            "resources": list(entry.get("Resources") or []),
            "detail": detail,
        }
        return bus, event

    # --- delivery ------------------------------------------------------------------------------------------

    async def _send(self, d: Delivery) -> None:
        svc = self.services
        if svc is None:
            raise DeliveryFailed("the event bus is not attached to the server's services", permanent=False)
        m = _LAMBDA_ARN.fullmatch(d.target_arn)
        if m is not None:
            await svc.async_queue.enqueue(m.group("name"), m.group("qualifier"), d.body.encode())
            return
        if _SNS_ARN.fullmatch(d.target_arn):
            await svc.topics.publish_by_arn(d.target_arn, d.body)
            return
        extra: dict[str, Any] = {}
        if d.target_arn.endswith(".fifo"):
            extra = {"message_group_id": d.message_group_id, "deduplication_id": f"events-{d.id}"}
        await svc.queues.send_by_arn(d.target_arn, d.body, **extra)


def _failure(exc: DeliveryFailed | LambdaError) -> DeliveryFailed:
    """Client-side errors (a missing function or queue, a payload too large) are not retried; throttles and
    service errors are."""
    if isinstance(exc, DeliveryFailed):
        return exc
    throttled = exc.code in ("TooManyRequestsException", "ThrottlingException")
    return DeliveryFailed(f"{exc.code}: {exc.message}", permanent=exc.status < 500 and not throttled)


class Outbox(Passes):
    """Delivers committed outbox rows to their targets: `start()`, a single pass `run_once()`, `close()` (pending
    rows stay for the next start)."""

    task_name = "event-outbox"

    def __init__(self, store: EventStore, send: Callable[[Delivery], Awaitable[None]], settings: EventsConfig,
                 *, clock: Callable[[], float] = time.time):
        super().__init__(clock, retry_after=settings.retry_delay)
        self.store = store
        self.send = send
        self.settings = settings

    async def run_once(self) -> int:
        """Attempt every due delivery (up to one batch); returns how many were attempted."""
        async with self._lock:
            now = self._now()
            due = await self.store.due_deliveries(now, self.settings.delivery_batch)
            if not due:
                return 0
            limit = asyncio.Semaphore(self.settings.delivery_workers)

            async def attempt(d: Delivery) -> DeliveryFailed | None:
                async with limit:
                    try:
                        await self.send(d)
                    except (DeliveryFailed, LambdaError) as exc:
                        return _failure(exc)
                    except Exception as exc:
                        log.exception("delivery to %s failed", d.target_arn)
                        return DeliveryFailed(repr(exc), permanent=False)
                    return None

            outcomes = await asyncio.gather(*(attempt(d) for d in due))
            done: list[int] = []
            retry: list[tuple[int, float]] = []
            now = self._now()
            for d, failure in zip(due, outcomes):
                if failure is None:
                    done.append(d.id)
                    continue
                delay = min(self.settings.retry_delay * 2 ** d.attempts, self.settings.retry_delay_max)
                if failure.permanent or d.attempts + 1 >= d.max_attempts or now + delay > d.expires_at:
                    log.warning("event for %s (rule %s, target %s) dropped after %d attempt(s): %s",
                                d.target_arn, d.rule_arn, d.target_id, d.attempts + 1, failure)
                    done.append(d.id)
                else:
                    retry.append((d.id, now + delay))
            # Recorded even if close() cancels the pass: an unrecorded success would be delivered twice.
            await asyncio.shield(self.store.settle(done, retry))
            return len(due)

    async def _next_pass(self, done: int) -> float | None:
        return self._now() if done else await self.store.next_due()
