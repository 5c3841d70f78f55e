"""Small helpers for the background tasks every service runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


async def finish_or_cancel(task: asyncio.Task | None, timeout: float) -> None:
    """Let a background task end by itself within `timeout` (its owner has asked it to stop), then cancel it.
    Stopping services use this so a pass in progress can commit its writes but shutdown stays bounded."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Passes:
    """A background task of passes over some work: `run_once()` makes one, then the task waits until `notify()`
    or until the time `_next_pass()` names. `start()`; `close()` lets a pass in progress finish (bounded)."""

    task_name = "passes"

    def __init__(self, clock: Callable[[], float] = time.time, retry_after: float = 1.0):
        self._now = clock
        self._retry_after = retry_after  # seconds after a pass that failed
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.task_name)

    async def run_once(self) -> int:
        """One pass; returns how much it did."""
        raise NotImplementedError

    async def _next_pass(self, done: int) -> float | None:
        """When the next pass is due (a `clock` time), given what this one did; None: when notified."""
        raise NotImplementedError

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                due = await self._next_pass(await self.run_once())
            except Exception:
                log.exception("%s pass failed", self.task_name)
                due = self._now() + self._retry_after
            if self._stopping:
                return
            timeout = None if due is None else due - self._now()
            if timeout is not None and timeout <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def close(self, timeout: float = 10.0) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        await finish_or_cancel(task, timeout)
