"""Asynchronous invocation: events are committed to SQLite before the caller gets its 202, then dispatched
through the same router as synchronous calls, with Lambda's retries, maximum event age, destinations and
dead-letter queue.

At-least-once: an event is deleted only after it was handled (its destination delivered); events that were
running when the server died run again after a restart, with the same request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

from faas import ids
from faas.arn import LATEST
from faas.errors import LambdaError, ResourceNotFoundException, TooManyRequestsException
from faas.invoke.destinations import Destinations, Outcome
from faas.invoke.router import InvokeRequest, Router
from faas.store.async_events import AsyncEvent, AsyncEvents, EventInvokeConfig

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2
DEFAULT_MAX_AGE = 21600


@dataclass
class AsyncSettings:
    retry_delays: tuple[float, ...] = (60.0, 120.0)  # before the 2nd and 3rd attempts, as Lambda
    throttle_backoff: float = 1.0  # first delay after a throttle or system error; doubles up to the max
    throttle_backoff_max: float = 300.0
    workers: int = 64  # events in flight at once
    per_function: int = 16  # ... of which one function may hold
    age_scale: float = 1.0  # multiplies MaximumEventAgeInSeconds (tests shorten it)


class AsyncQueue:
    """`enqueue()` for the API and triggers; a dispatcher task (`start`/`run_once`/`close`) for the rest."""

    def __init__(self, store: AsyncEvents, router: Router, destinations: Destinations, settings: AsyncSettings):
        self.store = store
        self.router = router
        self.destinations = destinations
        self.settings = settings
        self._wake = asyncio.Event()
        self._inflight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    async def enqueue(self, function_name: str, qualifier: str | None, payload: bytes,
                      request_id: str | None = None) -> str:
        """Durably queue an event for a function (which must exist); returns its request id."""
        await self.router.resolve(function_name, qualifier)
        request_id = request_id or ids.request_id()
        await self.store.add(request_id, function_name, qualifier, payload or b"{}", time.time())
        self._wake.set()
        return request_id

    # -- dispatching ----------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Start every due event there is room for. Returns how many were started."""
        room = self.settings.workers - sum(self._inflight.values())
        if room <= 0 or self._closing:
            return 0
        full = {name for name, n in self._inflight.items() if n >= self.settings.per_function}
        events = await self.store.claim_due(time.time(), room, full)
        started = 0
        for event in events:
            if self._inflight[event.function_name] >= self.settings.per_function:
                await self.store.reschedule(event.seq, event.due_at, event.attempts)
                continue
            self._inflight[event.function_name] += 1
            task = asyncio.create_task(self._handle(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def _loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self.run_once()
                due = await self.store.next_due()
            except Exception:
                log.exception("async dispatch pass failed")
                due = None
            delay = 1.0 if due is None else max(0.0, min(1.0, due - time.time()))
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _handle(self, event: AsyncEvent) -> None:
        try:
            await self._process(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("async event %s failed unexpectedly; it will be retried", event.request_id)
            with contextlib.suppress(Exception):
                await self.store.reschedule(event.seq, time.time() + self.settings.throttle_backoff, event.attempts)
        finally:
            self._inflight[event.function_name] -= 1
            if self._inflight[event.function_name] <= 0:
                del self._inflight[event.function_name]
            self._wake.set()

    async def _config(self, event: AsyncEvent) -> EventInvokeConfig:
        qualifier = event.qualifier or LATEST
        found = await self.store.get_config(event.function_name, qualifier)
        return found or EventInvokeConfig(event.function_name, qualifier)

    async def _process(self, event: AsyncEvent) -> None:
        config = await self._config(event)
        max_age = (config.max_age if config.max_age is not None else DEFAULT_MAX_AGE) * self.settings.age_scale
        retries = config.max_retries if config.max_retries is not None else DEFAULT_RETRIES
        now = time.time()
        outcome = Outcome(event=event, config=config)
        if now - event.enqueued_at > max_age:
            await self._give_up(event, outcome, "EventAgeExceeded")
            return
        try:
            result = await self.router.invoke(InvokeRequest(
                function_name=event.function_name, qualifier=event.qualifier, payload=event.payload,
                request_id=event.request_id,
            ))
        except TooManyRequestsException as exc:
            if exc.extra.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded" and \
                    self.router.pools.reserved.get(event.function_name) == 0:
                await self._give_up(event, outcome, "ZeroReservedConcurrency")
                return
            await self._backoff(event, max_age)
            return
        except ResourceNotFoundException:
            await self.store.finish(event.seq, (event.function_name, "FunctionNotFound"))
            return
        except LambdaError as exc:
            log.warning("async event %s: %s; retrying", event.request_id, exc.message)
            await self._backoff(event, max_age)
            return
        attempts = event.attempts + 1
        outcome.attempts = attempts
        outcome.result = result
        if result.function_error is None:
            await self.destinations.deliver(outcome, "Success")
            await self.store.finish(event.seq)
            return
        if attempts <= retries:
            delays = self.settings.retry_delays or (0.0,)
            delay = delays[min(attempts - 1, len(delays) - 1)]
            if time.time() + delay - event.enqueued_at > max_age:
                await self._give_up(event, outcome, "EventAgeExceeded")
                return
            await self.store.reschedule(event.seq, time.time() + delay, attempts)
            return
        await self._give_up(event, outcome, "RetriesExhausted")

    async def _backoff(self, event: AsyncEvent, max_age: float) -> None:
        """Throttles and system errors retry with backoff until the event is too old; they do not count as
        attempts. The delay doubles with each consecutive one (counted in the due time's distance)."""
        now = time.time()
        waited = max(0.0, now - event.enqueued_at)
        delay = min(self.settings.throttle_backoff_max, max(self.settings.throttle_backoff, waited))
        if now + delay - event.enqueued_at > max_age:
            delay = max(0.0, event.enqueued_at + max_age - now) + 0.001
        await self.store.reschedule(event.seq, now + delay, event.attempts)

    async def _give_up(self, event: AsyncEvent, outcome: Outcome, condition: str) -> None:
        delivered = await self.destinations.deliver(outcome, condition)
        await self.store.finish(event.seq, None if delivered else (event.function_name, condition))

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="faas-async-dispatcher")

    async def begin(self) -> None:
        """Before dispatching starts: events left running by a previous process are due again."""
        recovered = await self.store.recover()
        if recovered:
            log.info("async queue: %d event(s) in flight at the last stop will run again", recovered)

    async def close(self, timeout: float = 10.0) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            # Running events finish if they can; the rest stay marked running and run again after a restart.
            done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
